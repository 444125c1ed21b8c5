"""Derived bands (``bands:`` with ``expression:`` or ``index:``) against numpy on the same pixels.

The reference reads the bands with rasterio, computes the expression in float32 with NaN where
either band is nodata or the result is not finite, takes equal-interval edges from
``numpy.histogram_bin_edges`` and quantile edges from ``numpy.quantile``, and assigns classes
with ``numpy.searchsorted`` -- nothing from ``pipeline`` but the entry points under test.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.crs import CRS

from pipeline.errors import ConfigError
from pipeline.jobs.batch import run_batch
from pipeline.jobs.config import IndexName, build_config
from pipeline.jobs.run import run

from _procs import read_classes, read_legend, sceneclass
from conftest import RGBN, data_path

# processing chunks 64 and 100 (100 divides neither 212 nor 276, nor the 64-pixel output tiles)


# ------------------------------------------------------------------------ the reference
def _read(path: Path, band: int = 1) -> tuple[np.ndarray, float | None]:
    with rasterio.open(path) as src:
        return src.read(band), src.nodata


def _ndvi(nir: np.ndarray, red: np.ndarray, bad: np.ndarray) -> np.ndarray:
    n, r = nir.astype(np.float32), red.astype(np.float32)
    with np.errstate(all="ignore"):
        out = (n - r) / (n + r)
    out[bad | ~np.isfinite(out)] = np.nan
    return out


def _classes(values: np.ndarray, scheme: str, count: int) -> tuple[np.ndarray, np.ndarray]:
    """(class ids, edges) of float values with NaN as nodata."""
    ok = np.isfinite(values)
    valid = values[ok]
    if scheme == "equal_interval":
        edges = np.histogram_bin_edges(valid, count).astype(np.float64)
    else:
        edges = np.quantile(valid.astype(np.float64), np.linspace(0, 1, count + 1))
    v = values.astype(np.float64)
    ids = np.searchsorted(edges, v, side="right")
    ids[v == edges[-1]] = count
    ids[~ok | (ids > count)] = 0
    ids = ids.astype(np.uint8)
    if scheme == "equal_interval":  # the reference must agree with numpy.histogram bin for bin
        np.testing.assert_array_equal(np.bincount(ids[ok], minlength=count + 1)[1:],
                                      np.histogram(valid, count)[0])
    return ids, edges


def _rgbn_ndvi(nir: np.ndarray | None = None, red: np.ndarray | None = None) -> np.ndarray:
    """NDVI of the RGBN scene's bands 4 and 1 (or of the given arrays), NaN where either is 0."""
    path = data_path(RGBN)
    assert _read(path, 4)[1] == 0
    nir = _read(path, 4)[0] if nir is None else nir
    red = _read(path, 1)[0] if red is None else red
    bad = (nir == 0) | (red == 0)
    assert 0 < bad.sum() < bad.size  # the scene has nodata
    return _ndvi(nir, red, bad)


def _red_with_holes() -> np.ndarray:
    """Band 1 with 0 (nodata) where band 4 is valid: a pixel is nodata where either band is."""
    path = data_path(RGBN)
    nir, red = _read(path, 4)[0], _read(path, 1)[0].copy()
    red[100:106, 150:260] = 0
    red[7::13, 200] = 0
    assert ((nir != 0) & (red == 0)).sum() > 600
    return red


def _write(path: Path, arr: np.ndarray, nodata, *, tiled: bool = True, crs="EPSG:32618",
           transform: Affine | None = None) -> Path:
    """A real single-band GeoTIFF (tiled 64 x 64, or striped), on the grid of the RGBN scene."""
    with rasterio.open(data_path(RGBN)) as src:
        base_transform, base_crs = src.transform, src.crs
    profile = dict(driver="GTiff", width=arr.shape[1], height=arr.shape[0], count=1, dtype=arr.dtype,
                   crs=CRS.from_user_input(crs) if crs != "EPSG:32618" else base_crs,
                   transform=transform or base_transform, nodata=nodata, compress="deflate")
    if tiled:
        profile.update(tiled=True, blockxsize=64, blockysize=64)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(arr, 1)
    return path


def _split(tmp_path: Path) -> dict:
    """The RGBN scene's bands 4 and 1 as two files: nir tiled 64, red striped (other chunks) with
    holes of its own (:func:`_red_with_holes`)."""
    path = data_path(RGBN)
    nir = _write(tmp_path / "nir.tif", _read(path, 4)[0], 0)
    red = _write(tmp_path / "red.tif", _red_with_holes(), 0, tiled=False)
    return {"nir": {"path": str(nir)}, "red": {"path": str(red)}}


def _one_file() -> dict:
    path = str(data_path(RGBN))
    return {"nir": {"path": path, "band": 4}, "red": {"path": path, "band": 1}}


def _run(tmp_path: Path, bands: dict, name: str, *, chunk: int = 100, classes=None, **keys):
    out = tmp_path / f"{name}.tif"
    data = {"bands": bands, "classes": classes or {"scheme": "equal_interval", "count": 10},
            "output": {"path": str(out), "blocksize": 64}, "processing": {"chunk": chunk}}
    data.update(keys)
    if "index" not in data:
        data.setdefault("expression", "(nir - red) / (nir + red)")
    result = run(build_config(data, base_dir=tmp_path, source="test.yaml"))
    return read_classes(out), json.loads(result.legend_path.read_text())


# ------------------------------------------------------------------------ NDVI against numpy
@pytest.mark.parametrize("layout,scheme,count,chunk", [
    ("one file", "equal_interval", 10, 100), ("one file", "quantile", 7, 64),
    ("two files", "equal_interval", 10, 64), ("two files", "quantile", 7, 100),
])
def test_ndvi_equals_numpy(tmp_path, layout, scheme, count, chunk):
    values = _rgbn_ndvi() if layout == "one file" else _rgbn_ndvi(red=_red_with_holes())
    want, edges = _classes(values, scheme, count)
    bands = _one_file() if layout == "one file" else _split(tmp_path)
    got, legend = _run(tmp_path, bands, "ndvi", chunk=chunk, classes={"scheme": scheme, "count": count})
    assert got.dtype == np.uint8 and got.shape == values.shape
    np.testing.assert_allclose(legend["edges"], edges, rtol=0, atol=1e-6)
    diff = np.count_nonzero(got != want)
    assert diff == 0, f"{diff} pixels differ from numpy"
    assert legend["dtype"] == "float32"
    assert legend["nodata_pixels"] + legend["valid_pixels"] == values.size
    assert legend["valid_pixels"] == int(np.isfinite(values).sum())
    assert legend["expression"] == "(nir - red) / (nir + red)" and legend["band"] is None
    assert legend["bands"]["nir"]["band"] == (4 if layout == "one file" else 1)


def test_index_ndvi_equals_the_expression(tmp_path):
    bands = _one_file()
    a, la = _run(tmp_path, bands, "expr", classes={"scheme": "quantile", "count": 5})
    b, lb = _run(tmp_path, bands, "index", classes={"scheme": "quantile", "count": 5}, index=" NDVI")
    np.testing.assert_array_equal(a, b)
    assert la["edges"] == lb["edges"] and lb["index"] == "ndvi" and lb["input"] == "index ndvi"
    want, _ = _classes(_rgbn_ndvi(), "quantile", 5)
    np.testing.assert_array_equal(b, want)


def test_index_names_are_the_presets():
    from typing import get_args

    from pipeline.expression import INDICES

    assert set(get_args(IndexName)) == set(INDICES)


def test_division_by_zero_is_nodata(tmp_path):
    """Both bands valid (int16, nodata -32768) but nir + red == 0: the pixel is nodata, as are
    pixels where one band is nodata; the other pixels are classified as numpy says."""
    rng = np.random.default_rng(16)
    nir = rng.integers(1, 3000, (150, 170)).astype(np.int16)
    red = rng.integers(1, 3000, (150, 170)).astype(np.int16)
    zero = np.zeros(nir.shape, bool)
    zero[::7, ::5] = True
    red[zero] = -nir[zero]  # valid values summing to zero
    red[3, 4] = nir[3, 4] = 0  # 0 / 0, both valid
    zero[3, 4] = True
    hole = np.zeros(nir.shape, bool)
    hole[40:45, 10:90] = True
    nir[hole] = -32768
    bands = {"nir": {"path": str(_write(tmp_path / "n16.tif", nir, -32768))},
             "red": {"path": str(_write(tmp_path / "r16.tif", red, -32768, tiled=False))}}
    values = _ndvi(nir, red, hole)
    assert np.isnan(values[zero]).all() and np.isfinite(values[~zero & ~hole]).all()
    want, edges = _classes(values, "equal_interval", 8)
    got, legend = _run(tmp_path, bands, "div0", chunk=64, classes={"scheme": "equal_interval", "count": 8})
    assert (got[zero] == 0).all() and (got[hole] == 0).all() and (got[~zero & ~hole] > 0).all()
    np.testing.assert_array_equal(got, want)
    assert legend["nodata_pixels"] == int((zero | hole).sum())
    assert np.isfinite(legend["min"]) and np.isfinite(legend["max"])


def test_scale_and_offset_per_band(tmp_path):
    """Landsat C2 surface reflectance: raw uint16 * 0.0000275 - 0.2 for one band; the other is
    given in reflectance * 10000 (scale 0.0001); the expression sees physical values."""
    path = data_path(RGBN)
    nir8, red8 = _read(path, 4)[0], _read(path, 1)[0]
    bad = (nir8 == 0) | (red8 == 0)
    nir_raw = np.where(nir8 == 0, 0, nir8.astype(np.uint16) * 97 + 7273).astype(np.uint16)
    red_raw = np.where(red8 == 0, 0, red8.astype(np.uint16) * 31).astype(np.uint16)
    bands = {"nir": {"path": str(_write(tmp_path / "sr_b5.tif", nir_raw, 0)), "scale": 0.0000275, "offset": -0.2},
             "red": {"path": str(_write(tmp_path / "sr_b4.tif", red_raw, 0)), "scale": 0.0001}}
    nir = (nir_raw * 0.0000275 - 0.2).astype(np.float32)
    red = (red_raw * 0.0001).astype(np.float32)
    with np.errstate(all="ignore"):
        values = nir - 2 * red
    values[bad] = np.nan
    want, edges = _classes(values, "equal_interval", 12)
    got, legend = _run(tmp_path, bands, "scaled", classes={"scheme": "equal_interval", "count": 12},
                       expression="nir - 2 * red", units="reflectance")
    np.testing.assert_allclose(legend["edges"], edges, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(got, want)
    assert legend["units"] == "reflectance" and legend["scale"] == 1.0
    # without the scale the values (and so the edges) would be raw counts
    assert legend["max"] < 10


def test_top_level_settings_apply_to_every_band(tmp_path):
    """A top-level nodata is each band's default; a band's own setting wins."""
    path = str(data_path(RGBN))
    bands = {"nir": {"path": path, "band": 4}, "red": {"path": path, "band": 1, "nodata": "none"}}
    nir, red = _read(data_path(RGBN), 4)[0], _read(data_path(RGBN), 1)[0]
    values = _ndvi(nir, red, (nir == 0) | (nir == 255))  # red's 0 is a value here: only nir is masked
    want, _ = _classes(values, "quantile", 6)
    got, _ = _run(tmp_path, bands, "toplevel", classes={"scheme": "quantile", "count": 6}, nodata=[0, 255])
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("reuse,fmt", [("never", "tif"), ("always", "tif"), ("always", "zarr")])
def test_write_pass_with_and_without_kept_chunks(tmp_path, reuse, fmt):
    """The write pass reads the derived values again (reuse_decoded: never) or from the kept
    chunks (always, on disk): the same class ids as numpy either way, COG or Zarr."""
    out = tmp_path / f"ndvi.{fmt}"
    data = {"bands": _split(tmp_path), "index": "ndvi", "classes": {"scheme": "quantile", "count": 9},
            "output": {"path": str(out), "blocksize": 64},
            "processing": {"chunk": 100, "reuse_decoded": reuse, "keep_decoded_in": "disk"}}
    run(build_config(data, base_dir=tmp_path, source="c.yaml"))
    want, _ = _classes(_rgbn_ndvi(red=_red_with_holes()), "quantile", 9)
    np.testing.assert_array_equal(read_classes(out), want)
    assert not list(tmp_path.glob("*decoded*"))


def test_mask_raster_per_band(tmp_path):
    """A QA raster given for one band only: its flagged pixels are nodata in the result."""
    path = data_path(RGBN)
    nir, red = _read(path, 4)[0], _read(path, 1)[0]
    qa = np.zeros(nir.shape, np.uint16)
    qa[20:60, 30:200] = 1 << 3  # "cloud"
    qa[150:, :50] = 1 << 6  # "clear": not flagged
    _write(tmp_path / "qa.tif", qa, None)
    bands = _one_file()
    bands["red"]["mask"] = {"path": str(tmp_path / "qa.tif"), "flags": ["cloud"]}
    values = _ndvi(nir, red, (nir == 0) | (red == 0) | ((qa & 8) != 0))
    want, _ = _classes(values, "equal_interval", 6)
    got, legend = _run(tmp_path, bands, "masked", classes={"scheme": "equal_interval", "count": 6})
    np.testing.assert_array_equal(got, want)
    assert (got[20:60, 30:200] == 0).all()


def test_nodata_of_a_band_in_the_branch_not_taken(tmp_path):
    """where(nir > 0, nir, red): red's nodata makes the pixel nodata although where picks nir
    there (as QGIS's raster calculator: nodata in any band used is nodata in the result)."""
    nir = _read(data_path(RGBN), 4)[0]
    red = _red_with_holes()
    n, r = nir.astype(np.float32), red.astype(np.float32)
    values = np.where(n > 100, n, r)
    values[(nir == 0) | (red == 0)] = np.nan
    assert ((red == 0) & (nir > 100)).sum() > 100  # pixels where only the untaken branch is nodata
    want, _ = _classes(values, "equal_interval", 5)
    got, legend = _run(tmp_path, _split(tmp_path), "where", classes={"scheme": "equal_interval", "count": 5},
                       expression="where(nir > 100, nir, red)", index=None)
    np.testing.assert_array_equal(got, want)


# ------------------------------------------------------------------------ refusals
def test_import_in_expression_is_refused_by_the_command(tmp_path):
    """run, run --dry-run and validate: exit 2, one line naming `expression`, nothing written."""
    cfg = tmp_path / "c.yaml"
    cfg.write_text(json.dumps({"bands": _one_file(), "expression": "__import__('os')",
                               "output": {"path": "out.tif"}}))
    for command in (["run", str(cfg)], ["run", str(cfg), "--dry-run"], ["validate", str(cfg)]):
        p = sceneclass(*command, cwd=tmp_path)
        assert p.returncode == 2, p.stderr
        lines = p.stderr.strip().splitlines()
        assert len(lines) == 1 and "c.yaml: expression: unknown function '__import__'" in lines[0], p.stderr
    assert sorted(os.listdir(tmp_path)) == ["c.yaml"]  # nothing written


@pytest.mark.parametrize("text,says", [
    ("__import__('os').system('touch pwned')", "attribute access"),
    ("nir.real", "attribute access"),
    ("foo(nir)", "unknown function 'foo'"),
    ("eval('1')", "unknown function 'eval'"),
    ("nir + blue", "unknown band 'blue'"),
])
def test_bad_expression_is_refused(tmp_path, text, says):
    data = {"bands": _one_file(), "expression": text, "output": {"path": str(tmp_path / "out.tif")}}
    with pytest.raises(ConfigError) as e:
        build_config(data, base_dir=tmp_path, source="c.yaml")
    message = str(e.value)
    assert e.value.exit_code == 2 and message.startswith("c.yaml: expression: ") and says in message
    assert "\n" not in message
    assert sorted(os.listdir(tmp_path)) == []


@pytest.mark.parametrize("keys,says", [
    ({"input": "x.tif"}, "bands: cannot be combined with 'input'"),
    ({"inputs": ["x.tif"]}, "bands: cannot be combined with 'inputs'"),
    ({"index": "ndvi", "expression": "nir"}, "exactly one of 'expression'"),
    ({"index": "nbr"}, "index: nbr needs the band(s) nir, swir2 under bands; missing swir2"),
    ({"index": "ndxi"}, "index:"),
])
def test_bad_band_config_is_refused(tmp_path, keys, says):
    data = {"bands": _one_file(), "output": {"path": str(tmp_path / "o.tif")}, **keys}
    with pytest.raises(ConfigError) as e:
        build_config(data, base_dir=tmp_path, source="c.yaml")
    assert says in str(e.value) and e.value.exit_code == 2


def test_bad_band_name_and_expression_without_bands(tmp_path):
    with pytest.raises(ConfigError, match=r"bands: name '2nir'"):
        build_config({"bands": {"2nir": {"path": "a.tif"}}, "expression": "1", "output": {"path": "o.tif"}},
                     base_dir=tmp_path, source="c.yaml")
    with pytest.raises(ConfigError, match=r"expression: needs 'bands:'"):
        build_config({"input": "a.tif", "expression": "a", "output": {"path": "o.tif"}},
                     base_dir=tmp_path, source="c.yaml")


def _grid_case(tmp_path: Path, change: str) -> dict:
    path = data_path(RGBN)
    nir, red = _read(path, 4)[0], _read(path, 1)[0]
    with rasterio.open(path) as src:
        t = src.transform
    kw = {}
    if change == "shifted transform":
        kw["transform"] = t * Affine.translation(1, 0)
    elif change == "other shape":
        red = red[:-3]
    else:
        kw["crs"] = "EPSG:32617"
    bands = {"nir": {"path": str(_write(tmp_path / "nir.tif", nir, 0))},
             "red": {"path": str(_write(tmp_path / "red.tif", red, 0, **kw))}}
    return {"bands": bands, "expression": "nir - red", "output": {"path": str(tmp_path / "out" / "o.tif")}}


def test_bands_on_different_grids_are_refused_by_the_command(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(json.dumps(_grid_case(tmp_path, "shifted transform")))
    p = sceneclass("run", str(cfg), cwd=tmp_path)
    assert p.returncode == 2, p.stderr
    line = p.stderr.strip().splitlines()
    assert len(line) == 1 and "'nir'" in line[0] and "'red'" in line[0] and "not on one grid" in line[0], p.stderr
    assert "transform" in line[0] and "Traceback" not in p.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("change", ["shifted transform", "other shape", "other CRS"])
def test_bands_on_different_grids_are_refused(tmp_path, change):
    from pipeline.jobs.batch import check

    cfg = build_config(_grid_case(tmp_path, change), base_dir=tmp_path, source="c.yaml")
    what = {"shifted transform": "transform", "other shape": "shape", "other CRS": "CRS"}[change]
    for attempt in (check, run_batch, lambda c: run_batch(c, dry_run=True)):  # validate, run, --dry-run
        with pytest.raises(ConfigError) as e:
            attempt(cfg)
        message = str(e.value)
        assert "bands: 'nir'" in message and "'red'" in message and f"({what} " in message, message
    assert not (tmp_path / "out").exists()


def test_output_on_a_band_file_is_refused(tmp_path):
    bands = _split(tmp_path)
    before = Path(bands["red"]["path"]).read_bytes()
    for target in (bands["red"]["path"], bands["nir"]["path"] + ".aux.xml"):  # a band file, a sidecar of one
        data = {"bands": bands, "expression": "nir - red", "output": {"path": target}}
        with pytest.raises(ConfigError, match=r"output.path: .*(red\.tif|nir\.tif\.aux\.xml)") as e:
            run_batch(build_config(data, base_dir=tmp_path, source="c.yaml"))
        assert e.value.exit_code == 2
    with pytest.raises(ConfigError, match="is a band file"):  # the library's own check, without a plan
        run(build_config({"bands": bands, "expression": "nir - red", "output": {"path": bands["red"]["path"]}},
                         base_dir=tmp_path, source="c.yaml"))
    assert Path(bands["red"]["path"]).read_bytes() == before
    assert not Path(bands["nir"]["path"] + ".aux.xml").exists()


# ------------------------------------------------------------------------ batches and manifests
def test_replaced_band_file_is_redone(tmp_path):
    """The manifest fingerprints every band file: a rerun is up to date until one band file is
    replaced; then the output is redone, and equals numpy on the new pixels."""
    bands = _split(tmp_path)
    out = tmp_path / "o" / "ndvi.tif"
    data = {"bands": bands, "index": "ndvi", "classes": {"scheme": "quantile", "count": 5},
            "output": {"path": str(out), "blocksize": 64}, "processing": {"chunk": 100}}
    cfg = build_config(data, base_dir=tmp_path, source="c.yaml")
    assert [j.status for j in run_batch(cfg).jobs] == ["done"]
    manifest = json.loads((tmp_path / "o" / "ndvi.manifest.json").read_text())
    assert set(manifest["input_fingerprint"]["files"]) == {bands["nir"]["path"], bands["red"]["path"]}
    assert all("sha256" in fp for fp in manifest["input_fingerprint"]["files"].values())
    assert [j.status for j in run_batch(cfg).jobs] == ["skipped"]
    os.utime(bands["red"]["path"], ns=(1, 1))  # touched, same content: still up to date
    assert [j.status for j in run_batch(cfg).jobs] == ["skipped"]
    nir = _read(Path(bands["nir"]["path"]))[0]
    red = _read(Path(bands["red"]["path"]))[0]
    red2 = np.where(red == 0, 0, np.clip(red.astype(np.int32) // 2 + 1, 1, 255)).astype(np.uint8)
    tmp = _write(tmp_path / "red.new.tif", red2, 0)
    os.replace(tmp, bands["red"]["path"])  # replaced atomically, as a download would
    jobs = run_batch(cfg).jobs
    assert [j.status for j in jobs] == ["done"] and jobs[0].verdict.reason == "input changed"
    want, _ = _classes(_ndvi(nir, red2, (nir == 0) | (red2 == 0)), "quantile", 5)
    np.testing.assert_array_equal(read_classes(out), want)
    assert read_legend(out)["index"] == "ndvi"


def test_band_file_changed_during_the_run_fails_it(tmp_path, monkeypatch):
    """A band file replaced while the passes read it: the run fails naming that file and writes
    nothing (the identity of every band file is checked before the output is committed)."""
    import pipeline.jobs.run as runmod

    bands = _split(tmp_path)
    out = tmp_path / "ndvi.tif"
    data = {"bands": bands, "index": "ndvi", "output": {"path": str(out), "blocksize": 64},
            "processing": {"chunk": 100}}
    cfg = build_config(data, base_dir=tmp_path, source="c.yaml")
    real_write = runmod.write

    def write_and_replace(*args, **kw):  # the passes are under way: another program replaces red.tif
        red = _read(Path(bands["red"]["path"]))[0]
        os.replace(_write(tmp_path / "red.new.tif", red, 0), bands["red"]["path"])
        return real_write(*args, **kw)

    monkeypatch.setattr(runmod, "write", write_and_replace)
    from pipeline.errors import InputError

    with pytest.raises(InputError, match="red.tif: the input changed during the run"):
        run(cfg)
    assert not out.exists() and not (tmp_path / "ndvi.legend.json").exists()


# ------------------------------------------------------------------------ Python API
def test_band_math_api_equals_numpy(tmp_path):
    import rioxarray

    import pipeline as sc

    path = data_path(RGBN)
    both = rioxarray.open_rasterio(path, chunks={"x": 100, "y": 100})
    nir, red = both.sel(band=4), both.sel(band=1)
    red_holes = _red_with_holes()
    red = red.copy(data=red.data.map_blocks(lambda b, block_info=None: red_holes[
        tuple(slice(*r) for r in block_info[0]["array-location"])], dtype=red.dtype))
    ndvi = sc.band_math(index="ndvi", nir=nir, red=red)
    assert ndvi.dtype == np.float32 and ndvi.rio.crs == both.rio.crs and ndvi.attrs["expression"]
    want = _rgbn_ndvi(red=red_holes)
    np.testing.assert_array_equal(ndvi.values, want)  # NaN where either is nodata, as numpy
    same = sc.band_math("(nir - red) / (nir + red)", nir=nir, red=red)
    np.testing.assert_array_equal(same.values, want)
    fitted = sc.fit(ndvi, scheme="quantile", count=5)
    ids, _ = _classes(want, "quantile", 5)
    np.testing.assert_array_equal(sc.classify(ndvi, fitted).values, ids)
    with pytest.raises(ConfigError, match="expression: attribute access"):
        sc.band_math("nir.real", nir=nir)
    with pytest.raises(ConfigError, match="not on one grid"):
        sc.band_math("nir - red", nir=nir, red=red.isel(y=slice(0, 100)))
