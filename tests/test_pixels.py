"""What a pixel means: per-band metadata, nodata lists, valid ranges, GDAL masks (internal, .msk,
alpha), QA mask rasters, scale/offset (physical values), labels and the legend's pixel counts.

Every case writes real rasters into tmp_path and compares with numpy (and mapclassify) computed
in memory on the physical values of the valid pixels; chunk sizes do not divide the scenes.
"""

from __future__ import annotations

import json
import logging
import warnings

import mapclassify as mc
import numpy as np
import pytest
import rasterio
import yaml
from affine import Affine
from rasterio.enums import ColorInterp
from rasterio.windows import Window

from pipeline.core import classify, fit
from pipeline.errors import ConfigError
from pipeline.jobs.config import EqualInterval, Manual, NaturalBreaks, Quantile, build_config
from pipeline.jobs.progress import ComputeCounter
from pipeline.jobs.run import run
from pipeline.scene import MaskRaster, QA_PIXEL_FLAGS, open_scene

from _procs import read_classes, sceneclass
from conftest import B2, B10, data_path

CRS = "EPSG:32621"
TRANSFORM = Affine(30.0, 0.0, 717345.0, 0.0, -30.0, -2776995.0)

# Landsat Collection 2 Level-2 surface temperature in degrees Celsius
ST_SCALE, ST_OFFSET = 0.00341802, 149.0 - 273.15
ST_FLAGS = ["fill", "dilated_cloud", "cirrus", "cloud", "cloud_shadow"]


# ------------------------------------------------------------------------------ helpers
def write_tif(path, arr, *, nodata=None, block=64, crs=CRS, transform=TRANSFORM, **extra):
    """A tiled GeoTIFF of a (y, x) or (band, y, x) array."""
    arr = arr if arr.ndim == 3 else arr[None]
    profile = {"driver": "GTiff", "width": arr.shape[2], "height": arr.shape[1], "count": arr.shape[0],
               "dtype": arr.dtype.name, "crs": crs, "transform": transform, "tiled": True,
               "blockxsize": block, "blockysize": block, "compress": "deflate", "nodata": nodata, **extra}
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(arr)
    return str(path)


def np_classes(phys: np.ndarray, valid: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Class ids as numpy.histogram bins them (left-closed, last closed), 0 where invalid or outside."""
    v = phys.astype(np.result_type(phys.dtype, edges.dtype))
    cls = np.searchsorted(edges, v, side="right")
    cls[v == edges[-1]] = len(edges) - 1
    cls[(cls > len(edges) - 1) | ~valid] = 0
    return cls


def run_cfg(tmp_path, name, **cfg):
    out = tmp_path / f"{name}.tif"
    cfg.setdefault("output", {})
    cfg["output"] = {"path": str(out), "blocksize": 64, **cfg["output"]}
    cfg.setdefault("processing", {"chunk": 100})
    result = run(build_config(cfg, base_dir=tmp_path, source="test"))
    return result, read_classes(result.output)


def st_scene(tmp_path, window=Window(0, 0, 280, 300)):
    """A Landsat-like Collection 2 Level-2 ST band from the real uint16 Landsat band (DN, 0 fill
    undeclared) and a synthetic QA_PIXEL (fill, dilated cloud, cloud, cloud shadow, cirrus,
    clear and water bits, confidence bits). Returns (st path, qa path, dn, qa)."""
    with rasterio.open(data_path(B2)) as src:
        dn = src.read(1, window=window)
        transform = src.window_transform(window)
    h, w = dn.shape
    yy, xx = np.mgrid[:h, :w]
    qa = np.zeros((h, w), np.uint16)
    fill = dn == 0
    cloud = (yy - 0.6 * h) ** 2 + (xx - 0.55 * w) ** 2 < (0.15 * min(h, w)) ** 2
    dilated = ((yy - 0.6 * h) ** 2 + (xx - 0.55 * w) ** 2 < (0.2 * min(h, w)) ** 2) & ~cloud
    shadow = (yy > 0.75 * h) & (yy < 0.85 * h) & (xx > 0.1 * w) & (xx < 0.4 * w)
    cirrus = (xx % 97 < 3) & (yy > h // 2)
    water = (xx > 0.8 * w) & (yy < 0.2 * h)
    qa[fill] |= 1 << 0
    qa[dilated] |= 1 << 1
    qa[cirrus] |= 1 << 2
    qa[cloud] |= (1 << 3) | (3 << 8)
    qa[shadow] |= (1 << 4) | (3 << 10)
    qa[water] |= 1 << 7
    qa[~(fill | dilated | cloud | shadow | cirrus)] |= 1 << 6  # clear
    qa[(yy % 11 == 0) & ~fill] |= 1 << 8  # low cloud confidence: not masked
    st = write_tif(tmp_path / "LC08_L2SP_ST_B10.TIF", dn, transform=transform)
    qa_path = write_tif(tmp_path / "LC08_L2SP_QA_PIXEL.TIF", qa, transform=transform)
    return st, qa_path, dn, qa


def st_reference(dn, qa):
    """Physical values (float64 degC) and validity, computed in memory."""
    bits = sum(1 << QA_PIXEL_FLAGS[f] for f in ST_FLAGS)
    phys = dn.astype(np.float64) * ST_SCALE + ST_OFFSET
    valid = (dn != 0) & ((qa & bits) == 0)
    return phys, valid


# -------------------------------------------------- the Landsat C2 L2 surface temperature scene
def test_landsat_st_celsius_equal_interval_and_quantile(tmp_path):
    st, qa_path, dn, qa = st_scene(tmp_path)
    phys, valid = st_reference(dn, qa)
    v = phys[valid]
    mask = MaskRaster(qa_path, 1, tuple(QA_PIXEL_FLAGS[f] for f in ST_FLAGS))
    cases = [(EqualInterval(count=10), np.histogram_bin_edges(v, bins=10)),
             (Quantile(scheme="quantile", count=7), np.quantile(v, np.linspace(0, 1, 8)))]
    for chunk in (100, 130, 200):  # aligned to the 64-pixel tiles: 128, 128, 192; none divides 300 x 280
        scene = open_scene(st, 1, 0, chunk, mask=mask, scale=ST_SCALE, offset=ST_OFFSET, units="degC")
        assert scene.array.chunks[0][0] not in (100, 150, 300)
        for cfg, want in cases:
            with ComputeCounter() as counter:
                fitted = fit(scene, cfg)
            assert counter.computes == 1, "16-bit statistics must take one compute"
            np.testing.assert_array_equal(fitted.edges, want)
            assert fitted.stats.count == v.size
            assert fitted.stats.vmin == v.min() and fitted.stats.vmax == v.max()
            got = classify(scene, fitted).compute()
            np.testing.assert_array_equal(got, np_classes(phys, valid, want))
    removed = fitted.stats.removed
    assert removed["nodata_values"] == {0.0: int((dn == 0).sum())}
    assert removed["masked"] == int((~valid & (dn != 0)).sum()) > 0


def test_landsat_st_natural_breaks_equal_mapclassify(tmp_path):
    """natural_breaks on a crop small enough for mapclassify.FisherJenks (O(n^2)): the same
    partition of the masked physical values (values centred on their median for mapclassify's
    float32 sums, as in test_schemes_extra)."""
    st, qa_path, dn, qa = st_scene(tmp_path, Window(150, 120, 75, 70))
    phys, valid = st_reference(dn, qa)
    assert 0 < valid.sum() < valid.size
    v = phys[valid]
    k = 5
    mask = MaskRaster(qa_path, 1, tuple(QA_PIXEL_FLAGS[f] for f in ST_FLAGS))
    u = np.unique(v)
    med = np.median(u)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = mc.FisherJenks(v - med, k=k)
    idx = np.searchsorted(u - med, m.bins)
    assert ((u - med)[idx] == m.bins).all()
    want = np.concatenate([[u[0]], u[idx[:-1] + 1], [u[-1]]])
    for chunk in (64, 100):
        scene = open_scene(st, 1, 0, chunk, mask=mask, scale=ST_SCALE, offset=ST_OFFSET)
        with ComputeCounter() as counter:
            fitted = fit(scene, NaturalBreaks(scheme="natural_breaks", count=k))
        assert counter.computes == 1
        np.testing.assert_array_equal(fitted.edges, want)
        got = classify(scene, fitted).compute()
        np.testing.assert_array_equal(got[valid], m.yb + 1)
        assert (got[~valid] == 0).all()


def test_landsat_st_run_legend_in_celsius(tmp_path):
    st, qa_path, dn, qa = st_scene(tmp_path)
    phys, valid = st_reference(dn, qa)
    result, got = run_cfg(tmp_path, "st", input=st, nodata=0, scale=ST_SCALE, offset=ST_OFFSET, units="degC",
                          mask={"path": qa_path, "flags": ST_FLAGS}, classes={"count": 6})
    counts, want = np.histogram(phys[valid], bins=6)
    np.testing.assert_array_equal(got, np_classes(phys, valid, want))
    legend = result.legend
    assert legend["edges"] == want.tolist()
    assert [c["count"] for c in legend["classes"]] == counts.tolist()
    assert legend["units"] == "degC" and legend["scale"] == ST_SCALE and legend["offset"] == ST_OFFSET
    assert legend["min"] == phys[valid].min() and legend["max"] == phys[valid].max()
    assert legend["nodata_pixels"] == int((dn == 0).sum())
    assert legend["masked_pixels"] == int((~valid & (dn != 0)).sum())
    assert legend["outside_pixels"] == 0
    assert legend["classes"][0]["label"].endswith(" degC") and " to " in legend["classes"][0]["label"]


def test_example_config_validates_and_points_at_the_demo_scene():
    """configs/landsat_c2_st_celsius.yaml: a valid config with the issue's settings."""
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "configs" / "landsat_c2_st_celsius.yaml"
    from pipeline.jobs.config import load_config

    cfg = load_config(path)
    assert cfg.scale == ST_SCALE and cfg.offset == pytest.approx(ST_OFFSET) and cfg.units == "degC"
    assert cfg.nodata == 0 and set(cfg.mask.flags) == set(ST_FLAGS)


# ------------------------------------------------------------------------- per-band metadata
def _two_band_vrt(tmp_path, b1: np.ndarray, nd1, b2: np.ndarray, nd2) -> str:
    """A VRT (hand-written XML) whose two bands come from two GeoTIFFs with their own dtype and nodata."""
    p1 = write_tif(tmp_path / "b1.tif", b1)
    p2 = write_tif(tmp_path / "b2.tif", b2)
    h, w = b1.shape
    gdal_type = {"uint8": "Byte", "float32": "Float32"}
    bands = []
    for i, (p, a, nd) in enumerate([(p1, b1, nd1), (p2, b2, nd2)], start=1):
        bands.append(
            f'<VRTRasterBand dataType="{gdal_type[a.dtype.name]}" band="{i}"><NoDataValue>{nd}</NoDataValue>'
            f'<SimpleSource><SourceFilename relativeToVRT="0">{p}</SourceFilename><SourceBand>1</SourceBand>'
            f'</SimpleSource></VRTRasterBand>')
    vrt = tmp_path / "two.vrt"
    vrt.write_text(f'<VRTDataset rasterXSize="{w}" rasterYSize="{h}"><SRS>{CRS}</SRS>'
                   f"<GeoTransform>{', '.join(repr(v) for v in TRANSFORM.to_gdal())}</GeoTransform>"
                   + "".join(bands) + "</VRTDataset>")
    return str(vrt)


@pytest.mark.parametrize("band1", ["uint8", "float32"])
def test_band_2_of_a_vrt_uses_its_own_dtype_and_nodata(tmp_path, band1):
    rng = np.random.default_rng(1)
    h, w = 170, 150
    b1 = rng.integers(0, 200, (h, w)).astype(band1)
    b2 = rng.normal(280, 8, (h, w)).astype(np.float32)
    b2[:, :13] = -9999
    b2[40:60, 30:90] = -9999
    vrt = _two_band_vrt(tmp_path, b1, 0 if band1 == "uint8" else -1, b2, -9999)
    scene = open_scene(vrt, 2, "file", 100)
    assert scene.dtype == np.float32 and scene.nodata == -9999
    result, got = run_cfg(tmp_path, f"vrt-{band1}", input=vrt, band=2, classes={"count": 5})
    valid = b2 != -9999
    counts, edges = np.histogram(b2[valid], bins=5)
    assert result.legend["edges"] == edges.tolist() and edges[0] > 200
    assert [c["count"] for c in result.legend["classes"]] == counts.tolist()
    assert result.legend["nodata_pixels"] == int((~valid).sum())
    np.testing.assert_array_equal(got, np_classes(b2, valid, edges))


# ------------------------------------------------------------------------------- GDAL masks
def _masked_uint16(rng, h=150, w=170):
    a = rng.integers(7000, 12001, (h, w)).astype(np.uint16)
    a[:, :16] = 0  # the masked pixels' values: would stretch the edges down to 0
    valid = np.ones((h, w), bool)
    valid[:, :16] = False
    return a, valid


@pytest.mark.parametrize("kind", ["internal", "msk"])
def test_gdal_mask_internal_and_external(tmp_path, kind):
    a, valid = _masked_uint16(np.random.default_rng(2))
    path = tmp_path / f"{kind}.tif"
    env = {"GDAL_TIFF_INTERNAL_MASK": "YES" if kind == "internal" else "NO"}
    with rasterio.Env(**env):
        with rasterio.open(path, "w", driver="GTiff", width=a.shape[1], height=a.shape[0], count=1, dtype="uint16",
                           crs=CRS, transform=TRANSFORM, tiled=True, blockxsize=64, blockysize=64) as dst:
            dst.write(a, 1)
            dst.write_mask(np.where(valid, 255, 0).astype(np.uint8))
    assert (tmp_path / f"{kind}.tif.msk").exists() == (kind == "msk")
    result, got = run_cfg(tmp_path, f"out-{kind}", input=str(path), classes={"count": 5})
    counts, edges = np.histogram(a[valid], bins=5)
    assert edges[0] >= 7000
    assert result.legend["edges"] == edges.tolist()
    assert [c["count"] for c in result.legend["classes"]] == counts.tolist()
    assert result.legend["masked_pixels"] == int((~valid).sum()) and result.legend["nodata_pixels"] == 0
    np.testing.assert_array_equal(got, np_classes(a, valid, edges))
    # gdal_mask: false classifies every pixel (what the file holds without its mask)
    result, got = run_cfg(tmp_path, f"nomask-{kind}", input=str(path), gdal_mask=False, classes={"count": 5})
    assert result.legend["edges"][0] == 0 and result.legend["masked_pixels"] == 0


def test_alpha_band_masks_its_transparent_pixels(tmp_path):
    rng = np.random.default_rng(3)
    h, w = 130, 190
    grey = rng.integers(20, 250, (h, w)).astype(np.uint8)
    alpha = np.full((h, w), 255, np.uint8)
    alpha[100:, :] = 0
    grey[100:, :] = 0
    path = tmp_path / "alpha.tif"
    write_tif(path, np.stack([grey, alpha]), photometric="MINISBLACK")
    with rasterio.open(path, "r+") as dst:
        dst.colorinterp = [ColorInterp.gray, ColorInterp.alpha]
    with rasterio.open(path) as src:
        assert "alpha" in {f.name for f in src.mask_flag_enums[0]}
    valid = alpha > 0
    result, got = run_cfg(tmp_path, "alpha-out", input=str(path), classes={"scheme": "quantile", "count": 4})
    edges = np.quantile(grey[valid], np.linspace(0, 1, 5))
    np.testing.assert_array_equal(result.fit.edges, edges)
    assert result.legend["masked_pixels"] == int((~valid).sum())
    np.testing.assert_array_equal(got, np_classes(grey, valid, edges))


def test_aux_xml_sidecar_nodata(tmp_path):
    rng = np.random.default_rng(4)
    a = rng.integers(1, 1000, (140, 120)).astype(np.int16)
    a[:30] = -5
    path = write_tif(tmp_path / "aux.tif", a)
    (tmp_path / "aux.tif.aux.xml").write_text(
        '<PAMDataset><PAMRasterBand band="1"><NoDataValue>-5</NoDataValue></PAMRasterBand></PAMDataset>')
    result, got = run_cfg(tmp_path, "aux-out", input=path, classes={"count": 4})
    valid = a != -5
    counts, edges = np.histogram(a[valid], bins=4)
    assert result.legend["nodata"] == -5
    assert result.legend["edges"] == edges.tolist()
    assert result.legend["nodata_pixels"] == int((~valid).sum())
    np.testing.assert_array_equal(got, np_classes(a, valid, edges))


# ------------------------------------------------------------------------------ scale/offset
@pytest.mark.parametrize("where", ["file", "config"])
def test_scaled_int16_ndvi_manual_breaks(tmp_path, where):
    rng = np.random.default_rng(5)
    h, w = 160, 140
    ndvi = np.clip(rng.normal(0.3, 0.3, (h, w)), -1, 1)
    raw = np.round(ndvi * 10000).astype(np.int16)
    raw[:20] = -32768
    path = write_tif(tmp_path / "ndvi.tif", raw, nodata=-32768)
    if where == "file":
        with rasterio.open(path, "r+") as dst:
            dst.scales, dst.offsets, dst.units = (0.0001,), (0.0,), ("NDVI",)
        extra = {}
    else:
        extra = {"scale": 0.0001, "offset": 0}
    breaks = [-1, 0, 0.2, 0.4, 0.6, 1]
    result, got = run_cfg(tmp_path, f"ndvi-{where}", input=path, classes={"scheme": "manual", "breaks": breaks},
                          **extra)
    phys = raw.astype(np.float64) * 0.0001
    valid = raw != -32768
    edges = np.asarray(breaks, np.float64)
    counts = np.histogram(phys[valid], bins=edges)[0]
    legend = result.legend
    assert [c["count"] for c in legend["classes"]] == counts.tolist()
    assert legend["classes_effective"] == 5
    tail = " NDVI" if where == "file" else ""
    assert [c["label"] for c in legend["classes"]] == [
        f"{r}{tail}" for r in ("-1 to 0", "0 to 0.2", "0.2 to 0.4", "0.4 to 0.6", "0.6 to 1")]
    assert legend["nodata_pixels"] == 20 * w and legend["outside_pixels"] == 0
    assert legend["scale"] == 0.0001 and legend["units"] == ("NDVI" if where == "file" else None)
    np.testing.assert_array_equal(got, np_classes(phys, valid, edges))


def test_negative_scale_is_a_config_error(tmp_path):
    path = write_tif(tmp_path / "a.tif", np.ones((70, 70), np.uint16))
    with pytest.raises(ConfigError, match="scale"):
        open_scene(path, 1, "file", 64, scale=-0.5)


@pytest.mark.parametrize("dtype", ["float32", "int32"])
def test_scaled_non_lut_dtypes_in_float64(tmp_path, dtype):
    """float32 and int32 data with scale/offset: physical values in float64 per chunk, exact."""
    rng = np.random.default_rng(6)
    raw = (rng.normal(100, 30, (150, 130))).astype(dtype)
    raw[:, :9] = -1
    path = write_tif(tmp_path / f"{dtype}.tif", raw, nodata=-1)
    scene = open_scene(path, 1, "file", 100, scale=0.5, offset=-3.25)
    valid = raw != -1
    phys = raw.astype(np.float64) * 0.5 - 3.25
    for cfg, want in [(EqualInterval(count=7), np.histogram_bin_edges(phys[valid], bins=7)),
                      (Quantile(scheme="quantile", count=6), np.quantile(phys[valid], np.linspace(0, 1, 7)))]:
        fitted = fit(scene, cfg)
        np.testing.assert_array_equal(fitted.edges, want)
        np.testing.assert_array_equal(classify(scene, fitted).compute(), np_classes(phys, valid, want))


# ------------------------------------------------------------------- validity sources combined
def _combined(tmp_path, dtype):
    """nodata list [0, 65535] (or [-9999, 9999]), valid_range, an internal GDAL mask and QA bits."""
    rng = np.random.default_rng(7)
    h, w = 210, 190
    yy, xx = np.mgrid[:h, :w]
    if dtype == "uint16":
        a = rng.integers(1, 65535, (h, w)).astype(np.uint16)
        nodata, vr = [0, 65535], [100, 60000]
    else:
        a = rng.normal(0, 3000, (h, w)).astype(dtype)
        nodata, vr = [-9999, 9999], [-8000, 8000]
    a[:10] = nodata[0]
    a[-7:] = nodata[1]
    a[50:60] = vr[0] - 1
    gdal_ok = ~((xx < 12) | ((yy > 100) & (yy < 120)))
    path = tmp_path / f"comb-{dtype}.tif"
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK="YES"):
        with rasterio.open(path, "w", driver="GTiff", width=w, height=h, count=1, dtype=dtype, crs=CRS,
                           transform=TRANSFORM, tiled=True, blockxsize=64, blockysize=64) as dst:
            dst.write(a, 1)
            dst.write_mask(np.where(gdal_ok, 255, 0).astype(np.uint8))
    qa = np.zeros((h, w), np.uint16)
    qa[(xx > 150) & (yy < 90)] |= 1 << 3
    qa[(xx > 100) & (yy > 160)] |= 1 << 4
    qa[yy % 5 == 0] |= 1 << 6  # clear: not asked for
    qa_path = write_tif(tmp_path / f"qa-{dtype}.tif", qa)
    nod = np.isin(a, np.asarray(nodata, dtype))
    out = ~nod & ((a < vr[0]) | (a > vr[1]))
    masked = ~nod & ~out & (~gdal_ok | ((qa & 0b11000) != 0))
    valid = ~(nod | out | masked)
    expect = {"nodata_pixels": int((nod | out).sum()), "masked_pixels": int(masked.sum())}
    cfg = {"input": str(path), "nodata": nodata, "valid_range": vr, "mask": {"path": qa_path, "bits": [3, 4]},
           "classes": {"count": 6}, "processing": {"chunk": 100}}
    return cfg, a, valid, expect


@pytest.mark.parametrize("dtype", ["uint16", "float32", "int32"])
def test_validity_sources_combine(tmp_path, dtype):
    cfg, a, valid, expect = _combined(tmp_path, dtype)
    assert all(expect.values())
    result, got = run_cfg(tmp_path, f"comb-out-{dtype}", **cfg)
    counts, edges = np.histogram(a[valid], bins=6)
    legend = result.legend
    assert legend["edges"] == edges.tolist()
    assert [c["count"] for c in legend["classes"]] == counts.tolist()
    assert legend["nodata_pixels"] == expect["nodata_pixels"]
    assert legend["masked_pixels"] == expect["masked_pixels"]
    assert legend["outside_pixels"] == 0
    assert legend["nodata_class"]["count"] == a.size - valid.sum()
    np.testing.assert_array_equal(got, np_classes(a, valid, edges))


@pytest.mark.parametrize("fmt", ["tif", "zarr"])
def test_validity_sources_combine_through_the_cli(tmp_path, fmt):
    cfg, a, valid, expect = _combined(tmp_path, "uint16")
    breaks = [200, 20000, 40000, 50000]  # manual: valid pixels outside them count as outside_pixels
    cfg["classes"] = {"scheme": "manual", "breaks": breaks, "labels": ["low", "mid", "high"]}
    out = tmp_path / f"cli.{fmt}"
    cfg["output"] = {"path": str(out), "blocksize": 64, "mode": "paletted"}
    cfg["outputs"] = {"qml": True}
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(cfg))
    proc = sceneclass("run", str(tmp_path / "job.yaml"), "--set", "processing.chunk=90", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    edges = np.asarray(breaks, np.float64)
    want = np_classes(a, valid, edges)
    np.testing.assert_array_equal(read_classes(out), want)
    legend = json.loads(out.with_name(out.name.rsplit(".", 1)[0] + ".legend.json").read_text()) if fmt == "tif" \
        else json.loads((out / "zarr.json").read_text())["attributes"]["sceneclass_legend"]
    assert legend["nodata_pixels"] == expect["nodata_pixels"]
    assert legend["masked_pixels"] == expect["masked_pixels"]
    inside = (a[valid] >= breaks[0]) & (a[valid] <= breaks[-1])
    assert legend["outside_pixels"] == int((~inside).sum()) > 0
    assert [c["count"] for c in legend["classes"]] == np.bincount(want.ravel(), minlength=4)[1:].tolist()
    assert [c["label"] for c in legend["classes"]] == ["low", "mid", "high"]
    if fmt == "tif":
        assert 'label="mid"' in out.with_suffix(".qml").read_text()


def test_mask_on_another_grid_is_a_config_error(tmp_path):
    a = np.ones((100, 90), np.uint16)
    path = write_tif(tmp_path / "a.tif", a)
    qa = write_tif(tmp_path / "qa.tif", np.zeros((100, 91), np.uint16))
    (tmp_path / "job.yaml").write_text(yaml.safe_dump({
        "input": path, "mask": {"path": qa, "bits": [3]}, "output": {"path": str(tmp_path / "o.tif")}}))
    proc = sceneclass("run", str(tmp_path / "job.yaml"), cwd=tmp_path)
    assert proc.returncode == 2
    line = proc.stderr.strip().splitlines()[-1]
    assert qa in line and path in line and "shape" in line and "Traceback" not in proc.stderr
    assert not (tmp_path / "o.tif").exists()
    shifted = write_tif(tmp_path / "qa2.tif", np.zeros((100, 90), np.uint16), transform=TRANSFORM * Affine.translation(1, 0))
    other_crs = write_tif(tmp_path / "qa3.tif", np.zeros((100, 90), np.uint16), crs="EPSG:32622")
    for q, what in ((shifted, "transform"), (other_crs, "CRS")):
        with pytest.raises(ConfigError, match=what) as err:
            open_scene(path, 1, "file", 64, mask=MaskRaster(q, 1, (3,)))
        assert q in str(err.value) and path in str(err.value)
    with pytest.raises(ConfigError, match="integers"):
        open_scene(path, 1, "file", 64, mask=MaskRaster(write_tif(tmp_path / "f.tif", np.zeros((100, 90), np.float32)),
                                                         1, (3,)))


# --------------------------------------------------------------------- warnings and labels
def test_band10_fill_nodata_warning_and_valid_range(tmp_path, caplog):
    """Landsat 8 band 10 radiance: its fill is 0.0999958, so ``nodata: 0.1`` matches nothing
    (a warning names the scene); ``valid_range`` removes it."""
    path = str(data_path(B10))
    with rasterio.open(path) as src:
        a = src.read(1)
    with caplog.at_level(logging.WARNING, logger="sceneclass"):
        result, _ = run_cfg(tmp_path, "b10-nodata", input=path, nodata=0.1, classes={"count": 5})
    assert any("nodata 0.1 removes no pixel" in r.getMessage() and path in r.getMessage() for r in caplog.records)
    assert result.legend["nodata_pixels"] == 0
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="sceneclass"):
        result, got = run_cfg(tmp_path, "b10-range", input=path, valid_range=[0.1, 1e6], classes={"count": 5})
    assert not [r for r in caplog.records if "removes" in r.getMessage()]
    valid = a >= np.float64(0.1)
    assert 0 < (~valid).sum() < a.size
    counts, edges = np.histogram(a[valid], bins=5)
    assert result.legend["edges"] == edges.tolist()
    assert result.legend["nodata_pixels"] == int((~valid).sum())
    np.testing.assert_array_equal(got, np_classes(a, valid, edges))


def test_warns_when_a_source_removes_most_pixels(tmp_path, caplog):
    a = np.full((100, 100), 5, np.uint16)
    a[:5] = 9
    path = write_tif(tmp_path / "most.tif", a)
    with caplog.at_level(logging.WARNING, logger="sceneclass"):
        result, _ = run_cfg(tmp_path, "most-out", input=path, nodata=[5, 77], classes={"count": 2})
    msgs = [r.getMessage() for r in caplog.records]
    assert any("nodata 5 removes 95.0% of the pixels" in m and path in m for m in msgs)
    assert any("nodata 77 removes no pixel" in m for m in msgs)
    assert result.legend["nodata_values"] == [5, 77] and result.legend["nodata_pixels"] == 9500


def test_labels_read_well():
    from pipeline.writers.legend import class_labels

    assert class_labels(np.array([-11.1639, -1.84914, 7.46]), "K") == ["-11.2 to -1.8 K", "-1.8 to 7.5 K"]
    assert class_labels(np.array([7000.0, 8250.0, 9500.0])) == ["7000 to 8250", "8250 to 9500"]
    close = class_labels(np.array([0.1, 0.1000001, 0.2]))
    assert close[0].split(" to ")[1] != close[0].split(" to ")[0]


def test_labels_count_must_match_classes(tmp_path):
    with pytest.raises(ConfigError, match="classes.labels"):
        build_config({"input": "x.tif", "output": {"path": "o.tif"}, "classes": {"count": 3, "labels": ["a", "b"]}},
                     base_dir=tmp_path, source="test")
    cfg = build_config({"input": "x.tif", "output": {"path": "o.tif"},
                        "classes": {"scheme": "manual", "breaks": [0, 1], "labels": ["only"]}},
                       base_dir=tmp_path, source="test")
    assert isinstance(cfg.classes, Manual) and cfg.classes.labels == ["only"]


def test_per_input_settings_in_a_batch(tmp_path):
    """``inputs`` entries carry their own nodata, valid range, mask, scale, offset and units."""
    st, qa_path, dn, qa = st_scene(tmp_path, Window(0, 0, 150, 140))
    cfg = build_config({
        "inputs": [{"path": st, "nodata": 0, "scale": ST_SCALE, "offset": ST_OFFSET, "units": "degC",
                    "mask": {"path": qa_path, "flags": ST_FLAGS}, "valid_range": [1, 65535]}],
        "output": {"path": str(tmp_path / "b" / "{stem}.tif"), "blocksize": 64}, "classes": {"count": 4},
        "processing": {"chunk": 100},
    }, base_dir=tmp_path, source="test")
    from pipeline.jobs.batch import plan

    (job,) = plan(cfg)
    assert job.config.scale == ST_SCALE and job.config.units == "degC" and job.config.mask.path == qa_path
    result = run(job.config)
    phys, valid = st_reference(dn, qa)
    assert result.legend["edges"] == np.histogram_bin_edges(phys[valid], bins=4).tolist()


def test_other_schemes_in_physical_values(tmp_path):
    """std_mean, head_tail_breaks, percentiles and box_plot on scaled, masked 16-bit data: the
    edges mapclassify / numpy give on the physical values of the valid pixels."""
    from pipeline.jobs.config import BoxPlot, HeadTailBreaks, Percentiles, StdMean

    st, qa_path, dn, qa = st_scene(tmp_path, Window(0, 0, 200, 180))
    phys, valid = st_reference(dn, qa)
    v = phys[valid]
    scene = open_scene(st, 1, 0, 100, mask=MaskRaster(qa_path, 1, (0, 1, 2, 3, 4)), scale=ST_SCALE, offset=ST_OFFSET)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sm, ht = mc.StdMean(v), mc.HeadTailBreaks(v)
    edges = fit(scene, StdMean(scheme="std_mean")).edges
    np.testing.assert_allclose(edges[1:-1], sm.bins[:4], rtol=1e-10)
    edges = fit(scene, HeadTailBreaks(scheme="head_tail_breaks")).edges
    np.testing.assert_allclose(edges[1:-1], ht.bins[:-1], rtol=1e-10)
    assert edges[0] == v.min() and edges[-1] == v.max()
    edges = fit(scene, Percentiles(scheme="percentiles", pct=[10, 50, 90, 100])).edges
    np.testing.assert_array_equal(edges, [v.min(), *np.percentile(v, [10, 50, 90]), v.max()])
    edges = fit(scene, BoxPlot(scheme="box_plot")).edges
    np.testing.assert_array_equal(edges[2:5], np.quantile(v, [0.25, 0.5, 0.75]))


def test_clean_files_read_no_mask(tmp_path):
    """No GDAL mask beyond nodata (or none at all): no mask array, no mask reads, the plain path."""
    a = np.arange(100 * 90, dtype=np.uint16).reshape(100, 90)
    for nodata in (None, 0):
        scene = open_scene(write_tif(tmp_path / f"clean{nodata}.tif", a, nodata=nodata), 1, "file", 64)
        assert scene.mask is None and scene.plain() and scene.mask_sources == ()


def test_mask_values_on_a_classification_raster(tmp_path):
    """``mask.values``: pixels whose mask raster value is one of the listed values are masked."""
    rng = np.random.default_rng(8)
    a = rng.normal(10, 2, (120, 100)).astype(np.float32)
    scl = rng.integers(0, 12, (120, 100)).astype(np.uint8)  # e.g. a Sentinel-2 scene classification
    path = write_tif(tmp_path / "v.tif", a)
    mpath = write_tif(tmp_path / "scl.tif", scl)
    result, got = run_cfg(tmp_path, "v-out", input=path, mask={"path": mpath, "values": [3, 8, 9]},
                          classes={"scheme": "quantile", "count": 5})
    valid = ~np.isin(scl, [3, 8, 9])
    edges = np.quantile(a[valid], np.linspace(0, 1, 6))
    np.testing.assert_array_equal(result.fit.edges, edges)
    assert result.legend["masked_pixels"] == int((~valid).sum())
    np.testing.assert_array_equal(got, np_classes(a, valid, edges))


def test_batch_reruns_when_validity_settings_or_the_mask_change(tmp_path):
    """The manifest's config hash covers nodata, valid_range, gdal_mask, mask, scale, offset and
    units, and the mask raster's size and mtime: changing any of them is not "up to date"."""
    import os

    from pipeline.jobs.manifest import config_hash

    st, qa_path, dn, qa = st_scene(tmp_path, Window(0, 0, 80, 70))
    base = {"input": st, "output": {"path": str(tmp_path / "o.tif")}, "mask": {"path": qa_path, "bits": [3]}}
    h0 = config_hash(build_config(base, base_dir=tmp_path, source="t"))
    for key, value in [("scale", 2.0), ("offset", 1.0), ("units", "K"), ("valid_range", [1, 9]),
                       ("gdal_mask", False), ("nodata", [0, 1]), ("mask", {"path": qa_path, "bits": [4]})]:
        assert config_hash(build_config(dict(base, **{key: value}), base_dir=tmp_path, source="t")) != h0, key
    st_qa = os.stat(qa_path)
    os.utime(qa_path, ns=(st_qa.st_atime_ns, st_qa.st_mtime_ns + 10**9))
    assert config_hash(build_config(base, base_dir=tmp_path, source="t")) != h0
