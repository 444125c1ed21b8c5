"""Fast tests of the benchmark (scripts/bench.py, scripts/bench_rows.py) on a tiny scene.

No timing assertions: the rows must produce the same classes as the numpy row (xarray-spatial's
right-closed bins are only reported), the agreement checker must catch corrupted outputs, and a
one-round bench must write its JSON and Markdown.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio

from pipeline.testing.synth import make_scene

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = REPO / "scripts"
SIZE = "400x520"


def _load(name: str):
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


bench_rows = _load("bench_rows")
bench = _load("bench")

HAVE_XRSPATIAL = importlib.util.find_spec("xrspatial") is not None


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """A tiny scene and its reference classes (the numpy row's, as the bench makes them)."""
    d = tmp_path_factory.mktemp("bench")
    scene = make_scene(d / f"scene_{SIZE}_s0.tif", SIZE, seed=0)
    ref = d / "ref.tif"
    assert bench_rows.run_row("reference", scene, ref) == 0
    return d, scene, ref


def _read(path) -> np.ndarray:
    with rasterio.open(path) as src:
        return src.read(1)


def test_cog_options_are_sceneclass_defaults():
    from pipeline.jobs.config import Output
    from pipeline.writers.cog import cog_options

    assert bench_rows.COG_OPTIONS == cog_options(Output(path="x.tif"))


def test_reference_matches_numpy_histogram(work):
    _, scene, ref = work
    arr, cls = _read(scene), _read(ref)
    valid = arr[arr != 0]
    counts, edges = np.histogram(valid, bins=20)
    assert np.array_equal(np.bincount(cls.ravel(), minlength=21)[1:], counts)
    assert np.array_equal(cls == 0, arr == 0)
    with rasterio.open(ref) as src:
        assert np.array_equal(json.loads(src.tags()["BENCH_EDGES"]), edges)


@pytest.mark.parametrize("row", ["numpy", "recipe", "copy", "floor", "xarray-spatial", "sceneclass"])
def test_row_agrees_with_numpy_row(work, row):
    d, scene, ref = work
    out = d / "rows" / f"{row}.tif"
    out.parent.mkdir(exist_ok=True)
    if row == "xarray-spatial" and not HAVE_XRSPATIAL:
        pytest.skip("xarray-spatial not installed (pip install -e '.[bench]')")
    if row == "sceneclass":  # standalone use: the script execs the CLI
        proc = subprocess.run([sys.executable, str(SCRIPTS / "bench_rows.py"), row, str(scene), str(out)],
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
    else:
        assert bench_rows.run_row(row, ref if row == "floor" else scene, out) == 0
    check = bench.check_output(row, out, ref, scene)
    assert check["georef_ok"] and check["overviews"] >= 0 and check["compression"]
    if row == "xarray-spatial":
        print(f"xarray-spatial: {check['mismatches']} pixels differ from numpy.histogram's bins")
        assert not check["fatal"]
        assert check["nodata_mismatches"] == 0 and check["max_abs_diff"] <= 1
    else:
        assert check["ok"] and check["mismatches"] == 0, check
    if row != "copy":
        assert check["dtype"] == "uint8" and check["colormap"]


@pytest.mark.skipif(not HAVE_XRSPATIAL, reason="xarray-spatial not installed (pip install -e '.[bench]')")
def test_xarray_spatial_mismatch_is_reported(tmp_path):
    """Values 1..21 make every class edge an integer: xarray-spatial's right-closed bins put
    each edge value one class lower than numpy.histogram does."""
    from affine import Affine

    arr = (np.arange(64 * 80) % 22).astype(np.uint16).reshape(64, 80)  # 0 = nodata, 1..21
    scene = tmp_path / "ints.tif"
    profile = {"driver": "GTiff", "width": 80, "height": 64, "count": 1, "dtype": "uint16",
               "crs": "EPSG:32633", "transform": Affine(30, 0, 3e5, 0, -30, 4.5e6)}
    with rasterio.open(scene, "w", **profile) as dst:
        dst.write(arr, 1)
    ref, out = tmp_path / "ref.tif", tmp_path / "xrs.tif"
    assert bench_rows.run_row("reference", scene, ref) == 0
    assert bench_rows.run_row("xarray-spatial", scene, out) == 0
    check = bench.check_output("xarray-spatial", out, ref, scene)
    expected = int(np.isin(arr, np.arange(2, 21)).sum())  # the 19 interior edges 2..20
    assert check["mismatches"] == expected and check["max_abs_diff"] == 1
    assert not check["ok"] and not check["fatal"] and check["nodata_mismatches"] == 0
    assert bench.check_text("xarray-spatial", {"check": check}).startswith("reported: ")


def test_read_row_writes_nothing(work, tmp_path):
    _, scene, _ = work
    assert bench_rows.run_row("read", scene, tmp_path / "x.tif") == 0
    assert not (tmp_path / "x.tif").exists()


def test_xarray_spatial_not_installed(work, tmp_path, monkeypatch, capsys):
    _, scene, _ = work
    monkeypatch.setitem(sys.modules, "xrspatial", None)
    monkeypatch.setitem(sys.modules, "xrspatial.classify", None)
    assert bench_rows.run_row("xarray-spatial", scene, tmp_path / "x.tif") == bench_rows.EXIT_NOT_INSTALLED
    assert '"status": "not installed"' in capsys.readouterr().out


def test_checker_detects_corruption(work, tmp_path):
    _, scene, ref = work
    with rasterio.open(ref) as src:
        profile, cls = src.profile, src.read(1)
    bad = cls.copy()
    spots = [(10, 10), (100, 200), (399, 519), (250, 260), (200, 300)]
    for y, x in spots:
        bad[y, x] = (int(bad[y, x]) + 5) % 21  # classes 0..20: changes every pixel
    bad[0, 0] = 7 if cls[0, 0] == 0 else 0  # one nodata disagreement (a corner is fill)
    n = len(spots) + 1
    corrupt = tmp_path / "corrupt.tif"
    with rasterio.open(corrupt, "w", **profile) as dst:
        dst.write(bad, 1)
        dst.write_colormap(1, bench_rows.colormap(bench_rows.palette_rgba()))
    res = bench.compare_rasters(corrupt, ref, rows_per_window=64)
    assert res["mismatches"] == n and res["nodata_mismatches"] >= 1
    assert res["max_abs_diff"] >= 5
    assert sum(res["diff_histogram"].values()) == n
    check = bench.check_output("numpy", corrupt, ref, scene)
    assert check["fatal"] and not check["ok"] and f"{n} pixels differ" in check["problem"]
    tolerated = bench.check_output("xarray-spatial", corrupt, ref, scene)
    assert not tolerated["fatal"] and not tolerated["ok"] and tolerated["mismatches"] == n
    assert bench.check_output("numpy", tmp_path / "missing.tif", ref, scene)["fatal"]
    assert bench.check_output("copy", ref, ref, scene)["fatal"]  # classes are not the input


def test_skips_and_timeout(tmp_path):
    assert bench.parse_skip("recipe@16X") == ("recipe", "16x")
    assert bench.parse_skip("xarray-spatial") == ("xarray-spatial", "*")
    assert bench.skip_note("recipe", "16x", bench.DEFAULT_SKIPS) == "needs ~10 GiB"
    assert bench.skip_note("recipe", "4x", bench.DEFAULT_SKIPS) is None
    res = bench.run_measured([sys.executable, "-c", "import time; time.sleep(60)"], timeout=0.5)
    assert res["timed_out"] and res["exit"] != 0 and res["wall_s"] < 30


def test_one_round_bench(work, tmp_path):
    _, scene, _ = work
    wd = tmp_path / "wd"
    wd.mkdir()
    shutil.copy(scene, wd / scene.name)  # reused, not regenerated
    out = tmp_path / "res"
    rc = bench.main(["--sizes", SIZE, "--rounds", "1", "--workdir", str(wd), "--out", str(out),
                     "--rows", "read", "numpy", "floor", "sceneclass", "--skip", f"read@{SIZE}"])
    assert rc == 0
    res = json.loads((out / "bench.json").read_text())
    assert {"command", "machine", "settings", "sizes", "started", "finished"} <= res.keys()
    assert {"cores", "ram_gib", "python", "numpy", "gdal", "dask"} <= res["machine"].keys()
    assert "--rounds 1" in res["command"]
    sz = res["sizes"][SIZE]
    assert sz["generated_s"] is None and sz["shape"] == [400, 520]
    assert sz["rows"]["read"]["status"] == "skipped"
    for row in ("numpy", "floor", "sceneclass"):
        r = sz["rows"][row]
        assert r["status"] == "ok", r
        assert r["wall_median_s"] > 0 and r["rss_mib_max"] > 10 and r["check"]["mismatches"] == 0
        assert len(r["runs"]) == 1 and r["phases_median_s"]
    assert sz["ratios_wall"]["sceneclass"]["numpy"] > 0
    assert "statistics" in sz["rows"]["sceneclass"]["phases_median_s"]
    md = (out / "bench.md").read_text()
    assert "| `sceneclass` |" in md and "sceneclass ÷ row" in md and "peak RSS MiB" in md
