"""300 MiB workers finish a 4x scene with the default settings: a real 2-worker LocalCluster
started by the command, its output compared with the threads run at every overview level.

The scene has the 4x size (15862 x 15622 uint16, tiled 512, compressed: the decoded chunks are
kept between the passes, as for a real product) and the default processing chunk (2048, which
divides neither side). Its pixels are a cheap pattern (a 512-row strip computed once, shifted
per strip) written with ZSTD level 1, so making it takes seconds, not the minute
:func:`pipeline.testing.synth.make_scene` takes. The memory a worker needs depends on the chunk,
the pixel type and the input's blocks, not on what the pixels are.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin
from rasterio.windows import Window

from pipeline.testing.synth import SIZES

from _procs import assert_same_output, partials, sceneclass, sceneclass_all

SETTINGS = ("--nodata", "0", "--no-progress")


@pytest.fixture(scope="module")
def scene(tmp_path_factory) -> Path:
    """A 4x uint16 scene: varied values in every chunk, a fill border, ZSTD level 1."""
    h, w = SIZES["4x"]
    path = tmp_path_factory.mktemp("memory") / "scene_4x.tif"
    y = np.arange(512, dtype=np.int32)[:, None]
    x = np.arange(w, dtype=np.int32)[None, :]
    strip = (((y // 7) * 7919 + (x // 5) * 104729 + y * x // 61) % 50000).astype(np.uint16)
    with rasterio.Env(GDAL_NUM_THREADS="ALL_CPUS"), \
            rasterio.open(path, "w", driver="GTiff", width=w, height=h, count=1, dtype="uint16", nodata=0,
                          crs="EPSG:32633", transform=from_origin(300000, 5000000, 30, 30), tiled=True,
                          blockxsize=512, blockysize=512, compress="zstd", zstd_level=1) as dst:
        for i, y0 in enumerate(range(0, h, 512)):
            n = min(512, h - y0)
            values = strip[:n] + np.uint16(1 + 479 * i)
            values[:, :200] = 0
            dst.write(values, 1, window=Window(0, y0, w, n))
    return path


def levels(path: Path) -> list[np.ndarray]:
    """Band 1 at full resolution and at every overview level, as GDAL reads them."""
    with rasterio.open(path) as src:
        count = len(src.overviews(1))
    out = []
    for level in [None, *range(count)]:
        with rasterio.open(path, overview_level=level) if level is not None else rasterio.open(path) as src:
            out.append(src.read(1))
    return out


def test_300mib_workers_finish_a_4x_scene_pixel_for_pixel(tmp_path, scene):
    """The threads run (the reference) and the cluster run at the same time: separate output
    folders and processes (the memory limit is the workers', whatever else runs beside them)."""
    threads = tmp_path / "threads" / "classes.tif"
    local = tmp_path / "local" / "classes.tif"
    ref, proc = sceneclass_all(
        ("classify", scene, threads, *SETTINGS, "--set", "dask.scheduler=threads"),
        ("classify", scene, local, *SETTINGS, "-v", "--set", "dask.scheduler=local", "--set", "dask.workers=2",
         "--set", "dask.memory_limit=300MiB", "--set", "dask.dashboard_address=127.0.0.1:0"), timeout=600)
    assert ref.returncode == 0, ref.stderr
    assert proc.returncode == 0, proc.stderr
    assert "LocalCluster with 2 workers" in proc.stderr, proc.stderr
    assert "keeping decoded chunks" in proc.stderr, proc.stderr
    assert_same_output(local, threads)
    got, want = levels(local), levels(threads)
    assert len(want) > 4 and len(got) == len(want)
    assert len(np.unique(want[0])) > 10  # classes in use: not a trivially uniform result
    for i, (a, b) in enumerate(zip(got, want)):
        assert a.shape == b.shape, (i, a.shape, b.shape)
        assert np.array_equal(a, b), f"overview level {i}: {np.count_nonzero(a != b)} pixels differ"
    assert not partials(tmp_path)


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> Path:
    """A 1500 x 1700 uint16 scene, DEFLATE tiles of 256, a fill border."""
    rng = np.random.default_rng(11)
    h, w = 1500, 1700
    values = (np.kron(rng.random((60, 68)), np.ones((25, 25)))[:h, :w] * 3000 + rng.random((h, w)) * 500 + 1)
    values[:, :40] = 0
    path = tmp_path_factory.mktemp("memory-small") / "scene.tif"
    with rasterio.open(path, "w", driver="GTiff", width=w, height=h, count=1, dtype="uint16", nodata=0,
                       crs="EPSG:32633", transform=from_origin(300000, 5000000, 30, 30), tiled=True,
                       blockxsize=256, blockysize=256, compress="deflate") as dst:
        dst.write(values.astype(np.uint16), 1)
    return path


def test_the_minimum_a_refusal_names_is_enough(tmp_path, small):
    """Refused at 200 MiB with the minimum it needs; at exactly that minimum the run finishes,
    pixel for pixel as the threads run (the estimate is not below what the workers use)."""
    import re

    chunk = ("--set", "processing.chunk=700", "--set", "output.blocksize=128")
    threads = tmp_path / "threads" / "classes.tif"
    cluster = ("--set", "dask.scheduler=local", "--set", "dask.workers=2",
               "--set", "dask.dashboard_address=127.0.0.1:0")
    low = tmp_path / "low" / "classes.tif"
    ref, proc = sceneclass_all(  # the reference and the refused run at once (own folders)
        ("classify", small, threads, *SETTINGS, *chunk, "--set", "dask.scheduler=threads"),
        ("classify", small, low, *SETTINGS, *chunk, *cluster, "--set", "dask.memory_limit=200MiB"), timeout=120)
    assert ref.returncode == 0, ref.stderr
    assert proc.returncode == 2, proc.stderr
    m = re.search(r"^sceneclass: error: dask\.memory_limit: .* needs at least (\d+) MiB per worker", proc.stderr,
                  re.MULTILINE)
    assert m, proc.stderr
    minimum = int(m.group(1))
    assert 200 < minimum <= 300
    assert not low.exists() and not partials(tmp_path)

    local = tmp_path / "local" / "classes.tif"
    proc = sceneclass("classify", small, local, *SETTINGS, *chunk, *cluster,
                      "--set", f"dask.memory_limit={minimum}MiB", timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert_same_output(local, threads)
    for i, (a, b) in enumerate(zip(levels(local), levels(threads))):
        assert np.array_equal(a, b), f"overview level {i}"
