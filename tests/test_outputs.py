"""The written products: COG layout (validated), colour modes, Zarr georeferencing and legend,
and no temporaries left behind."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import rasterio
import rioxarray  # noqa: F401  (registers .rio)
import xarray as xr
import zarr
from rasterio.enums import ColorInterp
from rio_cogeo.cogeo import cog_validate

from pipeline.jobs.config import build_config
from pipeline.scene import open_scene
from pipeline.jobs.run import run

from conftest import B2, B10, RGBN, data_path

PARTIAL = "sceneclass-partial"

# scene id -> (file, band, nodata setting or None, classes, palette section or None, chunk)
SCENES = {
    "B2": (B2, 1, 0, {"scheme": "equal_interval", "count": 20}, None, 1000),
    "B10": (B10, 1, None, {"scheme": "quantile", "count": 10}, None, 300),
    # explicit colours, so the colour table has an independent expectation
    "RGBN": (RGBN, 2, None, {"scheme": "equal_interval", "count": 5},
             {"colors": ["#1a9850", [255, 0, 0], "#0000FF", [10, 20, 30], "#fee08b"]}, 100),
    # the same with semi-transparent colours (RGBA modes carry alpha per pixel)
    "RGBN-alpha": (RGBN, 2, None, {"scheme": "equal_interval", "count": 5},
                   {"colors": ["#1a9850", [255, 0, 0], "#0000ff80", [10, 20, 30, 40], "#FFFFFF"]}, 100),
}
EXPLICIT_RGBA = {
    "RGBN": [(0, 0, 0, 0), (0x1a, 0x98, 0x50, 255), (255, 0, 0, 255), (0, 0, 255, 255),
             (10, 20, 30, 255), (0xfe, 0xe0, 0x8b, 255)],
    "RGBN-alpha": [(0, 0, 0, 0), (0x1a, 0x98, 0x50, 255), (255, 0, 0, 255), (0, 0, 255, 0x80),
                   (10, 20, 30, 40), (255, 255, 255, 255)],
}


def _no_partials(folder: Path) -> None:
    left = [str(p) for p in folder.rglob("*") if PARTIAL in p.name]
    left += [n for n in os.listdir(folder) if PARTIAL in n]
    assert not left, f"temporary files left behind: {left}"


def _run(folder: Path, scene_id: str, out_name: str, **output) -> tuple[Path, dict]:
    name, band, nodata, classes, palette, chunk = SCENES[scene_id]
    out = folder / out_name
    cfg = {"input": str(data_path(name)), "band": band, "classes": classes,
           "output": {"path": str(out), **output}, "processing": {"chunk": chunk}}
    if nodata is not None:
        cfg["nodata"] = nodata
    if palette is not None:
        cfg["palette"] = palette
    result = run(build_config(cfg, base_dir=folder, source="test"))
    assert result.output == out and out.exists()
    legend = json.loads(result.legend_path.read_text())
    _no_partials(folder)
    return out, legend


@pytest.fixture(scope="module")
def products(tmp_path_factory):
    """Runs shared by the tests of this module, made on first use: (scene, kind) -> (path, legend)."""
    cache: dict = {}

    def get(scene_id: str, kind: str):
        key = (scene_id, kind)
        if key not in cache:
            folder = tmp_path_factory.mktemp(f"{scene_id}-{kind}")
            if kind == "cog":
                cache[key] = _run(folder, scene_id, "classes.tif")
            elif kind in ("rgb", "rgba"):
                cache[key] = _run(folder, scene_id, f"classes_{kind}.tif", mode=kind)
            elif kind == "zarr":
                cache[key] = _run(folder, scene_id, "classes.zarr")
            elif kind == "zarr-rgba":
                cache[key] = _run(folder, scene_id, "classes.zarr", mode="rgba")
            else:
                raise KeyError(kind)
        return cache[key]

    return get


def _input_georef(scene_id: str):
    name, band, *_ = SCENES[scene_id]
    with rasterio.open(data_path(name)) as src:
        return src.crs, src.transform, src.shape


def _legend_palette(legend: dict) -> np.ndarray:
    rows = [[0, 0, 0, 0]] + [c["rgba"] for c in legend["classes"]]
    return np.array(rows, dtype=np.uint8)


def _classes(path: Path) -> np.ndarray:
    with rasterio.open(path) as src:
        return src.read(1)


# -------------------------------------------------------------------------------------- COG
@pytest.mark.parametrize("scene_id", ["B2", "B10", "RGBN"])
def test_cog_paletted_layout(products, scene_id):
    path, legend = products(scene_id, "cog")
    ok, errors, warnings = cog_validate(str(path), strict=True)
    assert ok and errors == [], (errors, warnings)
    crs, transform, shape = _input_georef(scene_id)
    n = legend["classes_requested"]
    with rasterio.open(path) as src:
        assert src.driver == "GTiff" and src.count == 1
        assert src.dtypes == ("uint8",)
        assert src.nodata == 0
        assert src.block_shapes == [(512, 512)]
        assert src.profile["tiled"]
        assert src.crs == crs
        assert src.transform == transform  # exactly
        assert src.shape == shape
        assert src.colorinterp == (ColorInterp.palette,)
        cmap = src.colormap(1)
        data = src.read(1)
    assert data.max() <= n
    got_table = np.array([cmap[i] for i in range(n + 1)], dtype=np.uint8)
    np.testing.assert_array_equal(got_table, _legend_palette(legend))
    assert legend["nodata_class"]["color"] == "#00000000"
    if scene_id == "RGBN":
        np.testing.assert_array_equal(got_table, np.array(EXPLICIT_RGBA["RGBN"], np.uint8))
        assert [c["color"] for c in legend["classes"]] == ["#1a9850", "#ff0000", "#0000ff", "#0a141e", "#fee08b"]
    # pixel counts in the legend are the file's
    counts = np.bincount(data.ravel(), minlength=n + 1)
    assert [c["count"] for c in legend["classes"]] == counts[1:].tolist()
    assert legend["nodata_pixels"] == counts[0]


@pytest.mark.parametrize("scene_id", ["B2", "B10"])
def test_cog_overviews(products, scene_id):
    path, legend = products(scene_id, "cog")
    with rasterio.open(path) as src:
        factors = src.overviews(1)
        assert factors, "no internal overviews"
        full = src.read(1)
        ov = src.read(1, out_shape=(src.height // factors[0], src.width // factors[0]))
        with rasterio.open(path, overview_level=0) as ovr:
            level0 = ovr.read(1)
    np.testing.assert_array_equal(ov.shape, level0.shape)
    # nearest resampling of class ids: only existing ids, not all zero (rioxarray #410), about the
    # same share of nodata as the full resolution
    assert set(np.unique(level0)) <= set(np.unique(full))
    assert (level0 != 0).any()
    assert abs((level0 == 0).mean() - (full == 0).mean()) < 0.02


@pytest.mark.parametrize("mode,bands", [("rgb", 3), ("rgba", 4)])
@pytest.mark.parametrize("scene_id", ["B2", "RGBN-alpha"])
def test_cog_colour_modes(products, scene_id, mode, bands):
    # class ids from the paletted run (of the opaque-palette twin: same classes, other colours)
    classes_path, legend = products("RGBN" if scene_id == "RGBN-alpha" else scene_id, "cog")
    path, legend_c = products(scene_id, mode)
    ok, errors, warnings = cog_validate(str(path), strict=True)
    assert ok and errors == [], (errors, warnings)
    crs, transform, _ = _input_georef(scene_id)
    classes = _classes(classes_path)
    with rasterio.open(path) as src:
        assert src.count == bands
        assert set(src.dtypes) == {"uint8"}
        assert src.block_shapes == [(512, 512)] * bands
        assert src.crs == crs and src.transform == transform
        if bands == 4:
            assert src.colorinterp == (ColorInterp.red, ColorInterp.green, ColorInterp.blue, ColorInterp.alpha)
        else:
            assert src.colorinterp == (ColorInterp.red, ColorInterp.green, ColorInterp.blue)
        rgb = src.read()
    palette = _legend_palette(legend_c)
    if scene_id in EXPLICIT_RGBA:
        np.testing.assert_array_equal(palette, np.array(EXPLICIT_RGBA[scene_id], np.uint8))
    expected = np.moveaxis(palette[classes][..., :bands], -1, 0)
    np.testing.assert_array_equal(rgb, expected)
    assert legend_c["edges"] == legend["edges"]
    assert [c["count"] for c in legend_c["classes"]] == [c["count"] for c in legend["classes"]]


# ------------------------------------------------------------------------------------- Zarr
@pytest.mark.parametrize("scene_id", ["B2", "B10"])
def test_zarr_store(products, scene_id):
    path, legend = products(scene_id, "zarr")
    cog_path, cog_legend = products(scene_id, "cog")
    crs, transform, shape = _input_georef(scene_id)
    ds = xr.open_zarr(path)
    assert ds.rio.crs == crs
    assert ds.rio.transform() == transform  # exactly
    # rio.transform() falls back on the coordinates; the stored GeoTransform must agree as well
    gt = [float(v) for v in ds["spatial_ref"].attrs["GeoTransform"].split()]
    assert gt == [transform.c, transform.a, transform.b, transform.f, transform.d, transform.e]
    assert rasterio.crs.CRS.from_wkt(ds["spatial_ref"].attrs["crs_wkt"]) == crs
    height, width = shape
    np.testing.assert_array_equal(ds["x"].values, transform.c + transform.a * (np.arange(width) + 0.5))
    np.testing.assert_array_equal(ds["y"].values, transform.f + transform.e * (np.arange(height) + 0.5))
    da_ = ds["classes"]
    assert da_.dtype == np.uint8 and da_.shape == shape
    np.testing.assert_array_equal(da_.values, _classes(cog_path))

    # legend in the attributes, equal to the JSON legend beside the store
    assert ds.attrs["sceneclass_legend"] == legend
    legend_wo, cog_wo = dict(legend), dict(cog_legend)
    legend_wo.pop("output"), cog_wo.pop("output")
    assert legend_wo == cog_wo

    # chunks: the processing chunks the run used (chunk edge, aligned as the run aligns them)
    name, band, nodata, _, _, chunk = SCENES[scene_id]
    scene = open_scene(str(data_path(name)), band, "file" if nodata is None else nodata, chunk, 512)
    assert da_.chunks == scene.array.chunks
    arr = zarr.open_group(str(path), mode="r")["classes"]
    assert arr.chunks == tuple(c[0] for c in scene.array.chunks)
    assert arr.dtype == np.uint8


def test_zarr_rgba_colours(products):
    path, legend = products("RGBN-alpha", "zarr-rgba")
    ds = xr.open_zarr(path)
    classes = ds["classes"].values
    colour = ds["colour"].values
    assert colour.shape == (4, *classes.shape) and colour.dtype == np.uint8
    np.testing.assert_array_equal(colour, np.moveaxis(np.array(EXPLICIT_RGBA["RGBN-alpha"], np.uint8)[classes], -1, 0))
    np.testing.assert_array_equal(classes, _classes(products("RGBN", "cog")[0]))
    assert [c["rgba"] for c in legend["classes"]] == [list(c) for c in EXPLICIT_RGBA["RGBN-alpha"][1:]]


def test_paletted_cog_does_not_silently_drop_alpha(products, tmp_path):
    """A GeoTIFF colour table stores no alpha (GDAL reads 255 back, except the nodata entry).
    A paletted COG must either show the legend's colours, alpha included, or the run must refuse
    semi-transparent colours (naming palette.colors) -- not silently render them opaque."""
    from pipeline.errors import ConfigError

    try:
        path, legend = products("RGBN-alpha", "cog")
    except ConfigError as e:
        assert "palette.colors" in str(e)
        return
    with rasterio.open(path) as src:
        cmap = src.colormap(1)
    n = legend["classes_requested"]
    got = np.array([cmap[i] for i in range(n + 1)], dtype=np.uint8)
    np.testing.assert_array_equal(got, _legend_palette(legend), err_msg="colour table differs from the legend")


@pytest.mark.parametrize("mode", ["paletted", "rgba"])
def test_overviews_are_gdal_nearest_of_the_classes(tmp_path, data, mode):
    """Every overview level holds what GDAL's COG driver (OVERVIEW_RESAMPLING=NEAREST) makes of
    the written full-resolution pixels, on chunks that do not divide the scene."""
    import rasterio
    import rasterio.shutil

    from pipeline.jobs.config import build_config
    from pipeline.jobs.run import run

    out = tmp_path / "b2.tif"
    run(build_config({"input": str(data(B2)), "nodata": 0, "classes": {"count": 9},
                      "output": {"path": str(out), "mode": mode, "blocksize": 256},
                      "processing": {"chunk": 700}}, base_dir=tmp_path, source="test"))
    plain = tmp_path / "plain.tif"
    with rasterio.open(out) as src:
        full = src.read()
        assert src.overviews(1) == [2, 4, 8]
        profile = dict(driver="GTiff", width=src.width, height=src.height, count=src.count, dtype="uint8")
    with rasterio.open(plain, "w", **profile) as dst:
        dst.write(full)
    ref = tmp_path / "ref.tif"
    rasterio.shutil.copy(plain, ref, driver="COG", BLOCKSIZE=256, OVERVIEW_RESAMPLING="NEAREST")
    for level in range(3):
        with rasterio.open(out, overview_level=level) as got, rasterio.open(ref, overview_level=level) as want:
            np.testing.assert_array_equal(got.read(), want.read())


def test_zarr_store_has_every_chunk_fill_included(tmp_path):
    """Every chunk of a local store is written, the all-nodata ones too (no chunk is left for
    the fill value to stand in), and zarr and xarray read numpy's class ids back."""
    from affine import Affine

    rng = np.random.default_rng(7)
    a = rng.uniform(150.0, 370.0, (1100, 1000)).astype(np.float32)
    a[:600, :560] = np.nan  # covers the whole first chunk (512 x 512, aligned to the tiles): class 0 only
    src = tmp_path / "scene.tif"
    with rasterio.open(src, "w", driver="GTiff", width=1000, height=1100, count=1, dtype="float32",
                       crs="EPSG:32633", transform=Affine(30, 0, 300000, 0, -30, 4500000), tiled=True,
                       blockxsize=256, blockysize=256, compress="deflate", predictor=3) as dst:
        dst.write(a, 1)
    out = tmp_path / "classes.zarr"
    cfg = {"input": str(src), "classes": {"scheme": "equal_interval", "count": 20},
           "output": {"path": str(out)}, "processing": {"chunk": 300}}
    run(build_config(cfg, base_dir=tmp_path, source="test"))
    arr = zarr.open_group(str(out), mode="r")["classes"]
    assert arr.nchunks_initialized == arr.nchunks
    valid = ~np.isnan(a)
    edges = np.histogram_bin_edges(a[valid], 20)  # numpy's bins: left-closed, the last closed
    want = np.searchsorted(edges, a, side="right")
    want[a == edges[-1]] = 20
    want[~valid] = 0
    want = want.astype(np.uint8)
    np.testing.assert_array_equal(arr[:], want)
    assert not arr[:512, :512].any()
    np.testing.assert_array_equal(xr.open_zarr(out)["classes"].values, want)
