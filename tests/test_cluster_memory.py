"""300 MiB workers finish a scene: a real 2-worker LocalCluster started by the command, its
output compared with the threads run at every overview level.

The issue's case is a 4x scene (``python scripts/bench_cluster.py --size none --bytes-size none
--memory-check 4x``); here a 0.25x synthetic scene (3966 x 3906) with a chunk that does not divide
it keeps the suite fast. The GDAL block cache is set to 16 MiB: with the default 128 MiB the
memory check counts the input's whole uncompressed size (about 30 MiB here) as cache and asks for
330 MiB (see docs/cluster.md).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio

from pipeline.testing.synth import make_scene

from _procs import assert_same_output, partials, sceneclass

SETTINGS = ("--nodata", "0", "--scheme", "quantile", "-k", "12", "--no-progress",
            "--set", "processing.chunk=1000", "--set", "processing.gdal_cache_mb=16",
            "--set", "output.blocksize=256")


@pytest.fixture(scope="module")
def scene(tmp_path_factory) -> Path:
    return make_scene(tmp_path_factory.mktemp("memory") / "scene.tif", size="0.25x", seed=3)


def levels(path: Path) -> list[np.ndarray]:
    """Band 1 at full resolution and at every overview level, as GDAL reads them."""
    with rasterio.open(path) as src:
        count = len(src.overviews(1))
    out = []
    for level in [None, *range(count)]:
        with rasterio.open(path, overview_level=level) if level is not None else rasterio.open(path) as src:
            out.append(src.read(1))
    return out


def test_300mib_workers_finish_a_scene_pixel_for_pixel(tmp_path, scene):
    threads = tmp_path / "threads" / "classes.tif"
    proc = sceneclass("classify", scene, threads, *SETTINGS, "--set", "dask.scheduler=threads", timeout=180)
    assert proc.returncode == 0, proc.stderr

    local = tmp_path / "local" / "classes.tif"
    proc = sceneclass("classify", scene, local, *SETTINGS, "-v",
                      "--set", "dask.scheduler=local", "--set", "dask.workers=2",
                      "--set", "dask.memory_limit=300MiB", "--set", "dask.dashboard_address=127.0.0.1:0",
                      timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "LocalCluster with 2 workers" in proc.stderr, proc.stderr
    assert_same_output(local, threads)
    got, want = levels(local), levels(threads)
    assert len(want) > 2 and len(got) == len(want)
    for i, (a, b) in enumerate(zip(got, want)):
        assert a.shape == b.shape, (i, a.shape, b.shape)
        assert np.array_equal(a, b), f"overview level {i}: {np.count_nonzero(a != b)} pixels differ"
    assert not partials(tmp_path)

