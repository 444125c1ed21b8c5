"""Faults of paths and files (issue 13, items 2, 3, 4 and 16), each on real files, real symlinks
and real processes:

* side files (quicklook, legend, styles, report, manifest, ...) that would overwrite an input,
  a sidecar of an input or another output are refused before any work (exit 2, one line
  naming both paths), by ``run``, ``validate`` and ``--dry-run`` alike, through symlinks too;
* symlinks planted in the output folder (as the lock file, at a side file's path, at the
  output's path) are never written through; runs whose output folders nest do not both run;
* an input replaced atomically, or rewritten in place, while a batch reads it fails that
  scene with one line and no output (no SIGBUS), and the batch goes on;
* a GeoTIFF header declaring far more pixels than its file holds is refused at once, naming
  the file; a legitimately huge (sparse) raster gets a bounded number of chunks.

Every test checks that inputs and files outside the output folder are unchanged (SHA-256).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import struct
import threading
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import rasterio
import yaml
from rasterio.transform import from_origin

from pipeline.errors import ConfigError
from pipeline.jobs.batch import LOCK_NAME, plan
from pipeline.jobs.collisions import check_collisions, read_paths
from pipeline.jobs.config import load_config
from pipeline.scene import MAX_CHUNKS, open_scene
from pipeline.testing.synth import make_scene

from _procs import expected_equal_interval, http_server, kill, partials, read_classes, sceneclass, start_sceneclass, wait_for

COUNT = 8


# ------------------------------------------------------------------------ helpers
def sha(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def shas(*paths: Path) -> dict[str, str]:
    return {str(p): sha(p) for p in paths}


def one_error_line(proc) -> str:
    """The process's stderr is exactly one ``sceneclass: error:`` line; returns it."""
    lines = proc.stderr.strip().splitlines()
    errors = [ln for ln in lines if ln.startswith("sceneclass: error:")]
    assert len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr
    return errors[0]


def write_config(path: Path, **cfg) -> Path:
    data = {"nodata": 0, "classes": {"scheme": "equal_interval", "count": COUNT}, **cfg}
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def scenes(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("scenes")
    return {name: make_scene(folder / f"{name}.tif", size=size, seed=seed, blocksize=64)
            for name, size, seed in (("a", "1200x1300", 1), ("a2", "1200x1300", 9), ("b", "200x260", 2),
                                     ("c", "230x190", 3))}


# ------------------------------------------------------- item 2: side files vs inputs
ALL_OUTPUTS = {"quicklook": True, "quicklook_format": ["png", "jpeg"], "histogram_plot": True,
               "legend_image": True, "qml": True, "sld": True, "gdal_color_file": True, "report": True}
SIDE_NAMES = ["scene.quicklook.png", "scene.quicklook.jpg", "scene.histogram.png", "scene.legend.png",
              "scene.legend.json", "scene.manifest.json", "scene.qml", "scene.sld", "scene.colors.txt",
              "scene.report.html"]


@pytest.mark.parametrize("name", SIDE_NAMES)
def test_every_side_file_named_like_the_input_is_refused_at_planning(name, tmp_path, scenes):
    """The input is a real GeoTIFF named like one of the run's side files."""
    inp = tmp_path / name
    shutil.copy(scenes["b"], inp)
    cfg = write_config(tmp_path / "job.yaml", input=name, output={"path": "scene.tif"}, outputs=ALL_OUTPUTS)
    with pytest.raises(ConfigError) as err:
        plan(load_config(cfg))
    assert str(inp) in str(err.value) and str(tmp_path / name) in str(err.value)
    assert err.value.exit_code == 2


@pytest.mark.parametrize("command", [("run",), ("validate",), ("run", "--dry-run")])
def test_quicklook_over_the_input_is_refused_by_run_validate_and_dry_run(command, tmp_path, scenes):
    inp = tmp_path / "scene.quicklook.png"
    shutil.copy(scenes["b"], inp)
    before = shas(inp)
    cfg = write_config(tmp_path / "job.yaml", input=inp.name, output={"path": "scene.tif"},
                       outputs={"quicklook": True})
    proc = sceneclass(*command, cfg, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    line = one_error_line(proc)
    assert f"{inp} (quicklook png of scene.tif) would overwrite {inp} (input)" in line, line
    assert shas(inp) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["job.yaml", inp.name]  # nothing written


def test_aliases_of_an_input_are_caught(tmp_path, scenes):
    """A symlinked folder, ``..`` and a symlinked file all name the input."""
    data = tmp_path / "data"
    data.mkdir()
    shutil.copy(scenes["b"], data / "x.legend.json")  # a GeoTIFF named like a legend
    (tmp_path / "link").symlink_to(data, target_is_directory=True)
    before = shas(data / "x.legend.json")
    cases = [
        ({"input": "data/x.legend.json", "output": {"path": "link/x.tif"}}, "legend of x.tif"),
        ({"input": "link/x.legend.json", "output": {"path": "data/sub/../x.tif"}}, "legend of x.tif"),
    ]
    (tmp_path / "out").mkdir()
    os.symlink(data / "x.legend.json", tmp_path / "out" / "y.legend.json")  # a file symlink to the input
    cases.append(({"input": "data/x.legend.json", "output": {"path": "out/y.tif"}}, "legend of y.tif"))
    for cfg, what in cases:
        path = write_config(tmp_path / "job.yaml", **cfg)
        with pytest.raises(ConfigError) as err:
            plan(load_config(path))
        assert what in str(err.value) and str(data / "x.legend.json") in str(err.value), err.value
    assert shas(data / "x.legend.json") == before
    assert os.readlink(tmp_path / "out" / "y.legend.json") == str(data / "x.legend.json")


def test_outputs_colliding_with_each_other_or_inside_a_zarr_store(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (tmp_path / "alias").symlink_to(out, target_is_directory=True)
    with pytest.raises(ConfigError, match=r"a\.tif \(output for 1\.tif\) and .*alias/a\.tif \(output for 2\.tif\) "
                                          r"are the same file"):
        check_collisions([(out / "a.tif", "output for 1.tif", False),
                          (tmp_path / "alias" / "a.tif", "output for 2.tif", False)], [])
    with pytest.raises(ConfigError, match=r"lies inside .*b\.zarr"):
        check_collisions([(out / "b.zarr", "output for 1.tif", True),
                          (out / "b.zarr" / "c.tif", "output for 2.tif", False)], [])
    with pytest.raises(ConfigError, match=r"would replace a folder holding .*b\.zarr/in\.tif \(input\)"):
        check_collisions([(out / "b.zarr", "output for in.tif", True)], [(out / "b.zarr" / "in.tif", "input")])
    check_collisions([(out / "a.tif", "output", False), (out / "a.legend.json", "legend", False)],
                     [(tmp_path / "a.tif", "input")])  # disjoint: fine
    # a sidecar GDAL would read with the input (its nodata, mask, overviews, world file) is read too
    sidecars = {p.name for p, what in read_paths(str(out / "in.tif")) if what == "sidecar of input"}
    assert {"in.tif.aux.xml", "in.tif.msk", "in.tif.ovr", "in.tfw", "in.wld"} <= sidecars
    with pytest.raises(ConfigError, match=r"in\.tif\.msk \(sidecar of input\)"):
        check_collisions([(out / "in.tif.msk", "output for x.tif", False)], read_paths(str(out / "in.tif")))


def test_batch_outputs_beside_their_inputs_still_run(tmp_path, scenes):
    """Outputs in the input folder that collide with nothing: the check does not get in the way."""
    for n in ("b", "c"):
        shutil.copy(scenes[n], tmp_path / f"{n}.tif")
    before = shas(tmp_path / "b.tif", tmp_path / "c.tif")
    cfg = write_config(tmp_path / "job.yaml", inputs=["?.tif"], output={"folder": ".", "path": "{stem}_classes.tif"},
                       outputs={"qml": True})
    proc = sceneclass("run", cfg, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert shas(tmp_path / "b.tif", tmp_path / "c.tif") == before
    for n in ("b", "c"):
        np.testing.assert_array_equal(read_classes(tmp_path / f"{n}_classes.tif"),
                                      expected_equal_interval(tmp_path / f"{n}.tif", COUNT, 0))
        assert (tmp_path / f"{n}_classes.qml").is_file()


# ----------------------------------------------------------------- item 3: symlinks
def test_symlinks_planted_in_the_output_folder_are_not_written_through(tmp_path, scenes):
    outside = tmp_path / "outside"
    outside.mkdir()
    victims = {name: outside / name for name in ("lock.txt", "legend.txt", "manifest.txt", "qml.txt")}
    for v in victims.values():
        v.write_text(f"precious {v.name}\n")
    before = shas(*victims.values(), scenes["b"])
    out = tmp_path / "out"
    out.mkdir()
    (out / LOCK_NAME).symlink_to(victims["lock.txt"])
    (out / "b.legend.json").symlink_to(victims["legend.txt"])
    (out / "b.manifest.json").symlink_to(victims["manifest.txt"])
    (out / "b.qml").symlink_to(victims["qml.txt"])
    cfg = write_config(tmp_path / "job.yaml", input=str(scenes["b"]), output={"path": "out/b.tif"},
                       outputs={"qml": True}, processing={"chunk": 64})
    proc = sceneclass("run", cfg, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert shas(*victims.values(), scenes["b"]) == before  # nothing outside the folder changed
    for name in (LOCK_NAME, "b.legend.json", "b.manifest.json", "b.qml"):
        assert not (out / name).is_symlink() and (out / name).is_file(), name  # replaced, not followed
    np.testing.assert_array_equal(read_classes(out / "b.tif"), expected_equal_interval(scenes["b"], COUNT, 0))
    assert not partials(out)


def test_a_symlink_at_the_output_path_pointing_outside_is_refused(tmp_path, scenes):
    victim = tmp_path / "victim.tif"
    shutil.copy(scenes["c"], victim)
    before = shas(victim)
    out = tmp_path / "out"
    out.mkdir()
    (out / "c.tif").symlink_to(victim)
    cfg = write_config(tmp_path / "job.yaml", inputs=[str(scenes["c"])], output={"folder": "out", "path": "{stem}.tif"})
    proc = sceneclass("run", cfg, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    line = one_error_line(proc)
    assert str(victim) in line and "outside" in line, line
    assert shas(victim) == before and (out / "c.tif").is_symlink()


@contextmanager
def run_holding(tmp_path: Path, folder: str, scenes) -> object:
    """A real ``sceneclass run`` writing into ``folder``, held mid-run: its input is a URL
    served by a gated HTTP server, so it keeps its locks until the context exits."""
    served = tmp_path / "served"
    served.mkdir(exist_ok=True)
    shutil.copy(scenes["b"], served / "b.tif")
    gate = threading.Event()
    with http_server(served, gate=gate) as (base, _stats):
        cfg = write_config(tmp_path / f"hold-{folder.replace('/', '_')}.yaml", input=f"{base}/b.tif",
                           output={"path": f"{folder}/held.tif"})
        proc = start_sceneclass("run", cfg, cwd=tmp_path)
        lock = tmp_path / folder / LOCK_NAME
        try:
            held = wait_for(lambda: lock.is_file() and f"pid {proc.pid} " in lock.read_text(), timeout=60,
                            interval=0.02, proc=proc)
            assert held, "the first run never took its lock: " + "".join(proc.communicate())
            yield proc
            assert proc.poll() is None  # still running, locks held, all along
            gate.set()
            out, err = proc.communicate(timeout=120)
            assert proc.returncode == 0, err
        finally:
            gate.set()
            kill(proc)


def test_runs_whose_output_folders_nest_do_not_both_run(tmp_path, scenes):
    """One run holds ``out/sub``; a second into the same folder, a folder above it or a folder
    inside it exits 3 naming the first run's pid; one into a disjoint folder runs."""
    guard = shas(scenes["c"])
    with run_holding(tmp_path, "out/sub", scenes) as first:
        for folder, refused in (("out", True), ("out/sub/deeper", True), ("out/x/../sub", True),
                                ("out/sibling", False)):
            cfg = write_config(tmp_path / "second.yaml", inputs=[str(scenes["c"])],
                               output={"folder": folder, "path": "{stem}.tif"})
            proc = sceneclass("run", cfg, cwd=tmp_path, timeout=120)
            if refused:
                assert proc.returncode == 3, (folder, proc.stderr)
                line = one_error_line(proc)
                assert f"pid {first.pid}" in line and "another sceneclass run" in line, line
                assert not (tmp_path / folder / "c.tif").exists()
            else:
                assert proc.returncode == 0, (folder, proc.stderr)
                np.testing.assert_array_equal(read_classes(tmp_path / folder / "c.tif"),
                                              expected_equal_interval(scenes["c"], COUNT, 0))
    assert shas(scenes["c"]) == guard


# ------------------------------------------------------- item 4: inputs that change
def _batch_with_a_changing_input(tmp_path: Path, scenes, change) -> tuple:
    """A batch of three inputs (``a`` large, chunks of 64 pixels, so its passes take a while);
    ``change(path)`` runs on ``a`` as soon as the run says it opened it."""
    inp, out = tmp_path / "in", tmp_path / "out"
    inp.mkdir()
    for n in ("a", "b", "c"):
        shutil.copy(scenes[n], inp / f"{n}.tif")
    others = shas(inp / "b.tif", inp / "c.tif")
    cfg = write_config(tmp_path / "job.yaml", inputs=["in/*.tif"], output={"folder": "out", "path": "{stem}.tif",
                                                                           "blocksize": 64})
    log = tmp_path / "run.log"
    proc = start_sceneclass("run", cfg, "--set", "processing.chunk=64", "--log-file", log, cwd=tmp_path)
    opened = re.compile(r"input .*/in/a\.tif band 1")
    try:
        seen = wait_for(lambda: log.exists() and opened.search(log.read_text()), timeout=120, proc=proc)
        assert seen, "the run never opened a.tif: " + "".join(proc.communicate())
        change(inp / "a.tif")
        stdout, stderr = proc.communicate(timeout=300)
    finally:
        kill(proc)
    assert proc.returncode == 1, (proc.returncode, stderr)  # not -7 (SIGBUS) nor 0
    assert shas(inp / "b.tif", inp / "c.tif") == others
    failed = [ln for ln in stdout.splitlines() if ln.startswith("failed")]
    assert len(failed) == 1 and "/out/a.tif" in failed[0], stdout
    assert "the input changed during the run" in failed[0] and str(inp / "a.tif") in failed[0], failed
    assert "2 done, 0 up to date, 1 failed" in stdout
    assert not (out / "a.tif").exists() and not (out / "a.legend.json").exists()
    for n in ("b", "c"):
        np.testing.assert_array_equal(read_classes(out / f"{n}.tif"), expected_equal_interval(inp / f"{n}.tif", COUNT, 0))
    assert not partials(out)
    return stdout, stderr


def test_input_replaced_atomically_mid_run_fails_that_scene_only(tmp_path, scenes):
    def replace(path: Path) -> None:
        tmp = path.with_name(".a.new")
        shutil.copy(scenes["a2"], tmp)  # same size and layout, other pixels
        os.replace(tmp, path)

    _batch_with_a_changing_input(tmp_path, scenes, replace)


def test_input_truncated_in_place_mid_run_fails_that_scene_without_sigbus(tmp_path, scenes):
    def truncate(path: Path) -> None:
        with open(path, "r+b") as f:
            f.truncate(os.path.getsize(path) // 3)

    _batch_with_a_changing_input(tmp_path, scenes, truncate)


# ----------------------------------------------------- item 16: impossible headers
def patch_size(path: Path, width: int, height: int) -> None:
    """Rewrite a little-endian classic TIFF's ImageWidth and ImageLength (first IFD) as LONGs."""
    with open(path, "r+b") as f:
        head = f.read(8)
        assert head[:4] == b"II*\x00", head
        ifd = struct.unpack("<I", head[4:8])[0]
        f.seek(ifd)
        (n,) = struct.unpack("<H", f.read(2))
        for k in range(n):
            pos = ifd + 2 + 12 * k
            f.seek(pos)
            (tag,) = struct.unpack("<H", f.read(2))
            if tag in (256, 257):
                f.seek(pos + 2)
                f.write(struct.pack("<HII", 4, 1, width if tag == 256 else height))


def small_tiled(path: Path, size: int = 512) -> Path:
    a = np.random.default_rng(0).integers(1, 1000, (size, size)).astype("uint16")
    with rasterio.open(path, "w", driver="GTiff", width=size, height=size, count=1, dtype="uint16", tiled=True,
                       blockxsize=256, blockysize=256, compress="deflate", crs="EPSG:32633",
                       transform=from_origin(300000, 4500000, 30, 30)) as dst:
        dst.write(a, 1)
    return path


@pytest.mark.parametrize("kind", ["huge-header", "truncated"])
def test_a_header_that_cannot_be_right_is_refused_at_once(kind, tmp_path):
    bad = small_tiled(tmp_path / "bad.tif")
    if kind == "huge-header":
        patch_size(bad, 1_000_000, 1_000_000)  # 1e6 x 1e6 pixels declared in a ~400 KB file
    else:
        with open(bad, "r+b") as f:
            f.truncate(os.path.getsize(bad) - 1000)  # the last tile ends past the end of the file
    before = shas(bad)
    cfg = write_config(tmp_path / "job.yaml", input="bad.tif", output={"path": "out/bad.tif"})
    proc = sceneclass("run", cfg, cwd=tmp_path, timeout=120)
    assert proc.returncode == 1, proc.stderr
    line = one_error_line(proc)
    assert str(bad) in line and ("more than a" in line if kind == "huge-header" else "past the end" in line), line
    assert not (tmp_path / "out" / "bad.tif").exists() and not partials(tmp_path / "out")
    assert shas(bad) == before


def test_a_sparse_huge_raster_is_legitimate_and_gets_bounded_chunks(tmp_path, caplog):
    """GDAL's SPARSE_OK file: 400,000 x 300,000 pixels, no tile written (read as nodata). It
    opens; the chunk grows so that the scene has at most MAX_CHUNKS chunks, and the log says so."""
    path = tmp_path / "sparse.tif"
    with rasterio.open(path, "w", driver="GTiff", width=400_000, height=300_000, count=1, dtype="uint8",
                       tiled=True, blockxsize=512, blockysize=512, sparse_ok=True, nodata=0,
                       crs="EPSG:32633", transform=from_origin(0, 0, 30, 30)) as dst:
        dst.write(np.full((512, 512), 7, np.uint8), 1, window=rasterio.windows.Window(0, 0, 512, 512))
    with caplog.at_level("INFO", logger="sceneclass"):
        scene = open_scene(str(path), chunk=512, tile=512)
    assert scene.array.npartitions <= MAX_CHUNKS < (300_000 // 512 + 1) * (400_000 // 512 + 1)
    assert all(c % 512 == 0 for c in scene.array.chunksize)
    assert any("processing.chunk 512 would cut" in r.getMessage() for r in caplog.records)
    corner = np.asarray(scene.array[:600, :600])  # a slice reads only what it covers
    want = np.zeros((600, 600), np.uint8)
    want[:512, :512] = 7
    np.testing.assert_array_equal(corner, want)
