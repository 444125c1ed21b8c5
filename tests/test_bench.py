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
bench_targets = _load("bench_targets")
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
    assert bench.skip_note("recipe", "1x", bench.DEFAULT_SKIPS) is None
    assert bench.skip_note("recipe", "4x", bench.DEFAULT_SKIPS)  # no target needs it at 4x
    res = bench.run_measured([sys.executable, "-c", "import time; time.sleep(60)"], timeout=0.5)
    assert res["timed_out"] and res["exit"] != 0 and res["wall_s"] < 30


def test_one_round_bench(work, tmp_path):
    _, scene, _ = work
    wd = tmp_path / "wd"
    wd.mkdir()
    shutil.copy(scene, wd / scene.name)  # reused, not regenerated
    out = tmp_path / "res"
    sc, np_row = "sceneclass/uint16/equal_interval/cog", "numpy/uint16/equal_interval"
    rc = bench.main(["--sizes", SIZE, "--rounds", "1", "--workdir", str(wd), "--out", str(out),
                     "--rows", "read", "numpy", "floor", "sceneclass", "--skip", f"read@{SIZE}",
                     "--dtypes", "uint16", "--schemes", "equal_interval", "--outputs", "cog",
                     "--batch-scenes", "0"])
    assert rc == 0
    res = json.loads((out / "bench.json").read_text())
    assert {"command", "machine", "settings", "sizes", "started", "finished", "targets", "estimate"} <= res.keys()
    assert {"cores", "ram_gib", "python", "numpy", "gdal", "dask"} <= res["machine"].keys()
    assert "--rounds 1" in res["command"]
    sz = res["sizes"][SIZE]
    assert sz["generated_s"] is None and sz["shape"] == [400, 520]
    assert sz["rows"]["read"]["status"] == "skipped"
    for row in (np_row, "floor", sc):
        r = sz["rows"][row]
        assert r["status"] == "ok", r
        assert r["wall_median_s"] > 0 and r["rss_mib_max"] > 10 and r["check"]["mismatches"] == 0
        assert len(r["runs"]) == 1 and r["phases_median_s"]
    assert sz["ratios_wall"][sc][np_row] > 0
    assert "statistics" in sz["rows"][sc]["phases_median_s"]
    md = (out / "bench.md").read_text()
    assert f"| `{sc}` |" in md and "sceneclass ÷ row" in md and "peak RSS MiB" in md and "| target |" in md
    assert any(t["target"].startswith("batch") and t["ok"] is None for t in res["targets"])


# ----------------------------------------------------------------------------- the matrix
@pytest.fixture(scope="module")
def float_work(tmp_path_factory):
    """The float32 form of a tiny scene."""
    d = tmp_path_factory.mktemp("bench_f32")
    return d, make_scene(d / f"scene_{SIZE}_s0_float32.tif", SIZE, seed=0, dtype="float32")


@pytest.mark.parametrize("dtype,scheme", [("uint16", "quantile"), ("uint16", "natural_breaks"),
                                          ("float32", "equal_interval"), ("float32", "quantile"),
                                          ("float32", "natural_breaks")])
def test_numpy_row_and_streamed_reference_agree(work, float_work, tmp_path, dtype, scheme):
    """The in-memory numpy row and the strip-by-strip reference give the same classes, and
    both follow the scheme's definition on the pixels (numpy.quantile; equal widths)."""
    scene = work[1] if dtype == "uint16" else float_work[1]
    n = bench_rows.SCHEMES[scheme]
    ref, out = tmp_path / "ref.tif", tmp_path / "numpy.tif"
    assert bench_rows.run_row("reference", scene, ref, scheme, n) == 0
    assert bench_rows.run_row("numpy", scene, out, scheme, n) == 0
    check = bench.check_output({"kind": "numpy", "output": "cog"}, out, ref, scene)
    assert check["ok"] and check["mismatches"] == 0, check
    arr, cls = _read(scene), _read(ref)
    fill = np.isnan(arr) if dtype == "float32" else arr == 0
    assert np.array_equal(cls == 0, fill) and cls.max() == n
    valid = arr[~fill]
    if scheme == "quantile":
        with rasterio.open(ref) as src:
            edges = np.array(json.loads(src.tags()["BENCH_EDGES"]))
        assert np.allclose(edges, np.quantile(valid, np.linspace(0, 1, n + 1)).astype(np.float64))
        counts = np.bincount(cls[~fill], minlength=n + 1)[1:]
        assert counts.min() > 0.5 * valid.size / n  # about equal counts
    if scheme == "equal_interval":
        expected = np.histogram(valid, bins=n)[0]
        assert np.array_equal(np.bincount(cls[~fill], minlength=n + 1)[1:], expected)


@pytest.mark.parametrize("output", ["cog", "zarr", "rgb"])
def test_sceneclass_outputs_agree_with_reference(float_work, tmp_path, output):
    """A sceneclass row of each output kind, float32 quantile, against the reference: the
    checker reads Zarr's classes and maps RGB colours back to class ids."""
    _, scene = float_work
    ref = tmp_path / "ref.tif"
    assert bench_rows.run_row("reference", scene, ref, "quantile", 10) == 0
    spec = {"id": f"sceneclass/float32/quantile/{output}", "kind": "sceneclass", "dtype": "float32",
            "scheme": "quantile", "count": 10, "output": output}
    out = bench.output_path(tmp_path, spec)
    proc = subprocess.run(bench.row_command(spec, scene, out), capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr
    check = bench.check_output(spec, out, ref, scene)
    assert check["ok"] and check["mismatches"] == 0 and check["pixels"] == 400 * 520, check
    # and it catches a wrong class: the reference shifted by one class in one strip
    with rasterio.open(ref) as src:
        profile, cls = src.profile, src.read(1)
    bad = cls.copy()
    bad[100:110][bad[100:110] > 0] = bad[100:110][bad[100:110] > 0] % 10 + 1
    wrong = tmp_path / "wrong.tif"
    with rasterio.open(wrong, "w", **profile) as dst:
        dst.write(bad, 1)
    check = bench.check_output(spec, out, wrong, scene)
    assert check["fatal"] and check["mismatches"] == int((bad != cls).sum()) > 0


def test_compare_arrays_counts_differences():
    a = np.array([[0, 1, 2, 3], [4, 5, 6, 7]], np.uint8)
    same = bench.compare_arrays(a, a.copy())
    assert same["mismatches"] == 0 and same["max_abs_diff"] == 0 and same["diff_histogram"] == {}
    b = a.copy()
    b[0, 0] = 3  # nodata vs class 3
    b[1, 3] = 6  # one class off
    b[1, 0] = 9  # five classes off
    res = bench.compare_arrays(b, a)
    assert res["mismatches"] == 3 and res["nodata_mismatches"] == 1 and res["max_abs_diff"] == 5
    assert res["diff_histogram"] == {1: 1, 3: 2}


def test_row_specs_and_pattern_skips():
    specs = bench.row_specs(["uint16", "float32"], list(bench_rows.SCHEMES), ["cog", "zarr", "rgb"],
                            list(bench.ROWS))
    ids = [s["id"] for s in specs]
    assert len([i for i in ids if i.startswith("sceneclass/")]) == 18
    assert len([i for i in ids if i.startswith("numpy/")]) == 6 and "floor" in ids and "recipe" in ids
    assert bench.skip_note("numpy/float32/quantile", "16x", bench.DEFAULT_SKIPS)
    assert bench.skip_note("numpy/uint16/equal_interval", "16x", bench.DEFAULT_SKIPS) is None
    assert bench.skip_note("sceneclass/float32/quantile/zarr", "16x", bench.DEFAULT_SKIPS) is None
    assert bench.skip_note("xarray-spatial/uint16/quantile", "16x", bench.DEFAULT_SKIPS)
    assert bench.skip_note("xarray-spatial/uint16/quantile", "1x", bench.DEFAULT_SKIPS) is None
    assert bench.skip_note("numpy/float32/quantile", "4x", bench.DEFAULT_SKIPS) is None  # a 4x target needs it
    big = {"kind": "numpy", "dtype": "float32", "scheme": "quantile"}
    assert bench.memory_skip(big, 10**9, 8 * 2**30) and bench.memory_skip(big, 10**6, 8 * 2**30) is None
    # no 16x numpy/xarray-spatial rows beyond the one the uint16 targets need; every sceneclass case runs
    args = bench.build_parser().parse_args(["--sizes", "16x"])
    plan = bench.plan_size("16x", args, dict(bench.DEFAULT_SKIPS), 64 * 2**30)
    active = {s["id"] for s in plan["active"]}
    assert {i for i in ids if i.startswith("sceneclass/")} <= active
    assert {i for i in active if i.startswith(("numpy/", "xarray-spatial/"))} == {"numpy/uint16/equal_interval"}
    assert plan["rounds"] == 2  # DEFAULT_ROUNDS_AT: 16x ratios are medians of two rounds


def _fake_results(**over) -> dict:
    """A results dict as the bench writes it, with made-up figures."""
    dtypes, schemes, outputs = ["uint16", "float32"], list(bench_rows.SCHEMES), ["cog", "zarr", "rgb"]
    sc = [f"sceneclass/{d}/{s}/{o}" for d in dtypes for s in schemes for o in outputs]

    def size(rss, wall):
        rows = {r: {"status": "ok", "rss_mib_max": rss, "wall_median_s": wall} for r in sc}
        rows.update({r: {"status": "ok", "rss_mib_max": 900.0, "wall_median_s": 10 * wall}
                     for r in ("recipe", "floor", *(f"numpy/{d}/{s}" for d in dtypes for s in schemes),
                               *(f"xarray-spatial/{d}/{s}" for d in dtypes for s in schemes))})
        ratios = {r: {} for r in sc}
        for d in dtypes:
            for s in schemes:
                cog = f"sceneclass/{d}/{s}/cog"
                ratios[cog].update({f"numpy/{d}/{s}": 0.3, "recipe": 0.1, f"xarray-spatial/{d}/{s}": 0.3,
                                    "floor": 1.2, "sceneclass/uint16/equal_interval/cog": 1.1,
                                    f"sceneclass/{d}/equal_interval/cog": 1.1})
                for o in ("zarr", "rgb"):
                    ratios[f"sceneclass/{d}/{s}/{o}"][cog] = 1.2
        return {"rows": rows, "ratios_wall": ratios}

    res = {"settings": {"dtypes": dtypes, "schemes": schemes, "outputs": outputs},
           "sizes": {"1x": size(150.0, 1.0), "4x": size(155.0, 4.0), "16x": size(160.0, 15.0)},
           "batch": {"overhead_per_scene_s": 0.05}}
    for path, value in over.items():
        d = res
        *keys, last = path.split(".")
        for k in keys:
            d = d[k]
        d[last] = value
    return res


def _by_target(rows):
    return {r["target"]: r for r in rows}


def test_targets_all_met_from_fake_results():
    rows = bench_targets.compute_targets(_fake_results())
    assert len(rows) == len({r["target"] for r in rows}) >= 24
    missed = [r for r in rows if r["ok"] is not True]
    assert not missed, missed
    t = _by_target(rows)
    assert t["batch: per-scene overhead at most 0.15 s"]["measured"] == "0.050 s"
    assert "worst 160 MiB" in t["16x: peak RSS at most 300 MiB, every case"]["measured"]
    md = "\n".join(bench_targets.targets_table(rows))
    assert "| 4x: float32 quantile at most 0.4x `numpy` | 0.30 | yes |" in md


def test_targets_missed_and_missing():
    res = _fake_results(**{"batch.overhead_per_scene_s": 0.4})
    res["sizes"]["4x"]["rows"]["sceneclass/float32/quantile/zarr"]["rss_mib_max"] = 320.0  # > 300, > 1.1 x 150
    res["sizes"]["4x"]["ratios_wall"]["sceneclass/float32/quantile/cog"]["numpy/float32/quantile"] = 0.55
    res["sizes"]["4x"]["ratios_wall"]["sceneclass/uint16/natural_breaks/cog"][
        "sceneclass/uint16/equal_interval/cog"] = 1.2
    del res["sizes"]["16x"]
    t = _by_target(bench_targets.compute_targets(res))
    assert t["batch: per-scene overhead at most 0.15 s"]["ok"] is False
    rss = t["4x: peak RSS at most 300 MiB, every case"]
    assert rss["ok"] is False and "float32/quantile/zarr" in rss["measured"]
    assert t["4x: peak RSS within 10% of 1x, every case (ratio ≤ 1.1)"]["ok"] is False
    assert t["4x: float32 quantile at most 0.4x `numpy`"]["ok"] is False
    assert t["4x: float32 equal_interval at most 0.4x `numpy`"]["ok"] is True
    assert t["4x: uint16 natural_breaks within 1.15x of equal_interval"]["ok"] is False
    assert t["4x: float32 natural_breaks within 1.5x of equal_interval"]["ok"] is True
    assert t["16x: uint16 equal_interval at most 0.7x `numpy`"]["ok"] is None
    assert t["16x: peak RSS at most 300 MiB, every case"]["ok"] is None
    res["sizes"]["4x"]["rows"]["sceneclass/uint16/quantile/rgb"]["status"] = "FAILED"
    t = _by_target(bench_targets.compute_targets(res))
    assert "1 not measured" in t["4x: peak RSS at most 300 MiB, every case"]["measured"]
