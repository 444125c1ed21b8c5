"""Pictures, style files and the report (``outputs:``): real files that match the raster."""

from __future__ import annotations

import base64
import io
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
import rasterio
import zarr
from PIL import Image

from pipeline.products import pictures
from pipeline.jobs.config import build_config
from pipeline.products.extras import extra_paths
from pipeline.jobs.run import run
from pipeline.products.styles import palette_from_legend

from conftest import B2, B10, data_path

ALL_OUTPUTS = {"quicklook": True, "quicklook_format": ["png", "jpeg"], "quicklook_size": 256,
               "histogram_plot": True, "legend_image": True, "qml": True, "sld": True,
               "gdal_color_file": True, "report": True}


def _run(folder: Path, name: str, **over):
    data = {"input": str(data_path(B2)), "nodata": 0, "classes": {"scheme": "natural_breaks", "count": 7},
            "output": {"path": str(folder / name)}, "outputs": ALL_OUTPUTS}
    data.update(over)
    return run(build_config(data, base_dir=folder, source="test"))


@pytest.fixture(scope="module")
def b2(tmp_path_factory):
    """B2 (uint16, nodata 0), natural breaks, paletted COG with every extra output."""
    return _run(tmp_path_factory.mktemp("b2"), "b2_classes.tif")


@pytest.fixture(scope="module")
def b2_rgb(tmp_path_factory):
    """The same classification written as an RGB COG (``output.mode: rgb``)."""
    folder = tmp_path_factory.mktemp("b2rgb")
    return _run(folder, "b2_rgb.tif", output={"path": str(folder / "b2_rgb.tif"), "mode": "rgb"},
                outputs={"quicklook": True, "quicklook_size": 256})


def _ids(path: Path) -> np.ndarray:
    with rasterio.open(path) as src:
        return src.read(1)


def _png(path_or_bytes) -> Image.Image:
    img = Image.open(io.BytesIO(path_or_bytes) if isinstance(path_or_bytes, bytes) else path_or_bytes)
    img.load()
    return img


# ------------------------------------------------------------------------------ the files
def test_files_named_from_output_and_complete(b2):
    paths = extra_paths(b2.output)
    folder = b2.output.parent
    for key in ("quicklook_png", "quicklook_jpeg", "histogram_plot", "legend_image", "qml", "sld",
                "gdal_color_file", "report"):
        assert paths[key].exists(), key
        assert paths[key].name.startswith("b2_classes.")
    assert paths["qml"].name == "b2_classes.qml"  # QGIS picks up NAME.qml beside NAME.tif
    assert not list(folder.glob(".*sceneclass-partial*"))  # written atomically, nothing left over


def test_no_extras_by_default(tmp_path):
    res = _run(tmp_path, "plain.tif", outputs={})
    assert not any(p.exists() for p in extra_paths(res.output).values())
    assert not [p for p in tmp_path.iterdir() if p.suffix in (".png", ".jpg", ".qml", ".sld", ".txt", ".html")]


# ------------------------------------------------------------------------------ style files
def _legend_entries(legend):
    return [(c["id"], c["color"][:7], c["rgba"][3], c["label"]) for c in legend["classes"]]


def test_qml_lists_the_legend(b2):
    root = ET.parse(extra_paths(b2.output)["qml"]).getroot()
    assert root.tag == "qgis"
    (renderer,) = root.iter("rasterrenderer")
    assert renderer.get("type") == "paletted" and renderer.get("band") == "1"
    entries = [(int(e.get("value")), e.get("color"), int(e.get("alpha")), e.get("label"))
               for e in renderer.iter("paletteEntry")]
    assert entries == _legend_entries(b2.legend)
    lo, hi = (float(t) for t in entries[0][3].split(" to "))  # "lo to hi", the class's value range
    assert lo == pytest.approx(b2.legend["classes"][0]["lower"], abs=1) and hi == pytest.approx(b2.legend["classes"][0]["upper"], abs=1)
    # the colours are those embedded in the COG
    with rasterio.open(b2.output) as src:
        cmap = src.colormap(1)
    assert [tuple(c["rgba"]) for c in b2.legend["classes"]] == [cmap[i] for i in range(1, 8)]


def test_sld_lists_the_legend(b2):
    ns = {"sld": "http://www.opengis.net/sld"}
    root = ET.parse(extra_paths(b2.output)["sld"]).getroot()
    assert root.tag == "{http://www.opengis.net/sld}StyledLayerDescriptor" and root.get("version") == "1.0.0"
    (cmap,) = root.iterfind(".//sld:RasterSymbolizer/sld:ColorMap", ns)
    assert cmap.get("type") == "intervals"
    entries = cmap.findall("sld:ColorMapEntry", ns)
    assert entries[0].get("quantity") == "1" and entries[0].get("opacity") == "0"  # id 0: nodata
    got = [(int(e.get("quantity")) - 1, e.get("color"), e.get("label")) for e in entries[1:]]
    assert got == [(i, c, lab) for i, c, _, lab in _legend_entries(b2.legend)]
    assert all(e.get("opacity") is None for e in entries[1:])  # opaque classes


def test_gdal_color_file_lists_the_legend(b2):
    lines = extra_paths(b2.output)["gdal_color_file"].read_text().splitlines()
    assert lines[0] == "nv 0 0 0 0"
    rows = [tuple(int(v) for v in line.split()) for line in lines[1:]]
    assert rows == [(c["id"], *c["rgba"]) for c in b2.legend["classes"]]


def _gdaldem_version() -> tuple[int, ...]:
    out = subprocess.run(["gdaldem", "--version"], capture_output=True, text=True).stdout
    return tuple(int(v) for v in re.search(r"GDAL (\d+)\.(\d+)\.(\d+)", out).groups())


@pytest.mark.parametrize("mode", ["-exact_color_entry", "interpolate"])
def test_gdaldem_reproduces_rgb_output(b2, b2_rgb, tmp_path, mode):
    """``gdaldem color-relief -exact_color_entry`` with the colour file turns the paletted COG
    into the RGB COG, pixel for pixel. GDAL < 3.9.2 compares exact entries against the wrong
    neighbour and colours only the first entry (fixed by OSGeo/gdal#10596), so there the exact
    mode is skipped; the default (interpolating) mode gives the same colours, since every class
    id has its own entry, and runs on any version."""
    if shutil.which("gdaldem") is None:
        pytest.skip("gdaldem (gdal-bin) is not installed")
    if mode == "-exact_color_entry" and _gdaldem_version() < (3, 9, 2):
        pytest.skip(f"gdaldem {_gdaldem_version()} has the -exact_color_entry bug fixed in GDAL 3.9.2")
    out = tmp_path / "relief.tif"
    opts = [mode] if mode.startswith("-") else []
    subprocess.run(["gdaldem", "color-relief", "-q", *opts, str(b2.output),
                    str(extra_paths(b2.output)["gdal_color_file"]), str(out)], check=True)
    with rasterio.open(out) as a, rasterio.open(b2_rgb.output) as b:
        assert a.count == b.count == 3
        np.testing.assert_array_equal(a.read(), b.read())


# --------------------------------------------------------------------------------- quicklook
def _homogeneous(ids: np.ndarray, shape: tuple[int, int], margin: int = 1):
    """Quicklook pixels (r, c) whose full-resolution footprint, widened by ``margin`` quicklook
    pixels, holds one class only: yields (r, c, class id)."""
    H, W = ids.shape
    h, w = shape
    for r in range(0, h, 3):
        y0, y1 = max(0, (r - margin) * H // h), min(H, -(-(r + 1 + margin) * H // h))
        for c in range(0, w, 3):
            x0, x1 = max(0, (c - margin) * W // w), min(W, -(-(c + 1 + margin) * W // w))
            block = ids[y0:y1, x0:x1]
            first = block.flat[0]
            if (block == first).all():
                yield r, c, int(first)


def test_quicklook_png_colours_and_transparency(b2):
    img = _png(extra_paths(b2.output)["quicklook_png"])
    ids = _ids(b2.output)
    shape = pictures.quicklook_shape(*ids.shape, 256)
    assert img.mode == "RGBA" and img.size == (shape[1], shape[0]) and max(img.size) == 256
    px = np.asarray(img)
    palette = palette_from_legend(b2.legend)
    seen = {}
    for r, c, k in _homogeneous(ids, shape):
        assert tuple(px[r, c]) == tuple(palette[k]), (r, c, k)
        seen[k] = seen.get(k, 0) + 1
    assert seen.get(0, 0) > 100  # nodata corners: transparent (palette row 0 has alpha 0)
    assert len([k for k in seen if k > 0]) >= 3 and sum(seen.values()) > 500
    assert (px[..., 3] == 0).any() and (px[..., 3] == 255).any()


def test_quicklook_is_read_from_the_overview(b2):
    """The decimated read is served by the internal overview closest to the asked size (here
    1/4; 512-px tiles stop the overviews there), not by decimating the full resolution."""
    from rasterio.enums import Resampling

    px = np.asarray(_png(extra_paths(b2.output)["quicklook_png"]))
    palette = palette_from_legend(b2.legend)
    with rasterio.open(b2.output) as src:
        assert src.overviews(1) == [2, 4]
    with rasterio.open(b2.output, overview_level=1) as ov:  # the 1/4 overview itself
        ids = ov.read(1, out_shape=px.shape[:2], resampling=Resampling.nearest)
    np.testing.assert_array_equal(px, palette[ids])
    with rasterio.open(b2.output, OVERVIEW_LEVEL="NONE") as full:  # full resolution, decimated
        direct = full.read(1, out_shape=px.shape[:2], resampling=Resampling.nearest)
    assert (palette[direct] != px).any()


def test_quicklook_jpeg(b2):
    img = _png(extra_paths(b2.output)["quicklook_jpeg"])
    ids = _ids(b2.output)
    shape = pictures.quicklook_shape(*ids.shape, 256)
    assert img.format == "JPEG" and img.mode == "RGB" and img.size == (shape[1], shape[0])
    px = np.asarray(img).astype(int)
    palette = palette_from_legend(b2.legend).astype(int)
    for r, c, k in _homogeneous(ids, shape, margin=2):
        want = (255, 255, 255) if k == 0 else tuple(palette[k][:3])  # nodata on white
        assert np.abs(px[r, c] - want).max() <= 40, (r, c, k, px[r, c], want)


def test_quicklook_rgb_output_transparent_nodata(b2, b2_rgb):
    px = np.asarray(_png(extra_paths(b2_rgb.output)["quicklook_png"]))
    ref = np.asarray(_png(extra_paths(b2.output)["quicklook_png"]))
    np.testing.assert_array_equal(px, ref)  # same overview pixels, same colours, same alpha


def test_quicklook_zarr_strided(tmp_path):
    res = _run(tmp_path, "b2.zarr", outputs={"quicklook": True, "quicklook_size": 300})
    ids = np.asarray(zarr.open_group(str(res.output), mode="r")["classes"][:])
    step = -(-max(ids.shape) // 300)
    px = np.asarray(_png(extra_paths(res.output)["quicklook_png"]))
    np.testing.assert_array_equal(px, palette_from_legend(res.legend)[ids[::step, ::step]])


# ---------------------------------------------------------------------------- plots, legend
def _colour_pixels(px: np.ndarray, rgb) -> int:
    return int((px[..., :3] == np.asarray(rgb[:3], np.uint8)).all(axis=-1).sum())


def test_histogram_plot_exact(b2):
    img = _png(extra_paths(b2.output)["histogram_plot"])
    assert img.format == "PNG" and img.size == (1000, 450)
    px = np.asarray(img.convert("RGBA"))
    for c in b2.legend["classes"]:
        if c["percent"] >= 3:  # their bars are wide and tall enough to show solid colour
            assert _colour_pixels(px, c["rgba"]) > 50, c["label"]


def test_histogram_plot_float_uses_fine_histogram(tmp_path):
    """Float data: the plot comes from a 65,536-bin histogram (one extra pass, as the log says)."""
    data = {"input": str(data_path(B10)), "classes": {"scheme": "quantile", "count": 5},
            "output": {"path": str(tmp_path / "b10.tif")}, "outputs": {"histogram_plot": True}}
    res = run(build_config(data, base_dir=tmp_path, source="t"))
    assert ("binned", 65536) in res.passes.kept()
    px = np.asarray(_png(extra_paths(res.output)["histogram_plot"]).convert("RGBA"))
    for c in res.legend["classes"]:  # quantile classes: 20% each
        assert _colour_pixels(px, c["rgba"]) > 50, c["label"]


def test_histogram_plot_float_after_decoded_chunks_are_gone(tmp_path):
    """With the run's decoded chunks kept (and removed at its end), the float histogram pass of
    the plot reads the input itself."""
    from pipeline.jobs.config import Processing

    if "reuse_decoded" not in Processing.model_fields:
        pytest.skip("no processing.reuse_decoded in this version")
    data = {"input": str(data_path(B10)), "classes": {"scheme": "equal_interval", "count": 4},
            "processing": {"reuse_decoded": "always"}, "output": {"path": str(tmp_path / "b10.tif")},
            "outputs": {"histogram_plot": True}}
    res = run(build_config(data, base_dir=tmp_path, source="t"))
    assert _png(extra_paths(res.output)["histogram_plot"]).size == (1000, 450)


def test_legend_image_swatches(b2):
    img = _png(extra_paths(b2.output)["legend_image"])
    px = np.asarray(img.convert("RGBA"))
    assert img.size[1] == pictures.legend_row_top(8) + pictures.LEGEND_MARGIN
    x0, y0, x1, y1 = pictures.LEGEND_SWATCH
    for i, c in enumerate(b2.legend["classes"]):
        top = pictures.legend_row_top(i)
        swatch = px[top + y0 + 2: top + y1 - 2, x0 + 2: x1 - 2]
        assert (swatch == np.asarray(c["rgba"], np.uint8)).all(), c["label"]


def test_report_is_self_contained(b2):
    page = extra_paths(b2.output)["report"].read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>")
    uris = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(uris) == 2  # quicklook and histogram
    for uri in uris:
        assert _png(base64.b64decode(uri)).format == "PNG"
    assert not re.search(r'(src|href)="(https?:|/)', page)  # nothing fetched from elsewhere
    for c in b2.legend["classes"]:
        assert c["label"] in page and c["color"] in page
    assert "&quot;scheme&quot;: &quot;natural_breaks&quot;" in page  # the run's settings
