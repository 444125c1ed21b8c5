"""The float32 block decoder (pipeline._engine.tiffread) against GDAL's own read of the same
windows: the same bits for every window, every value (NaN, infinities, -0.0, subnormals), and
GDAL's read wherever the decoder does not take the file."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.windows import Window

from pipeline import scene as io
from pipeline._engine import tiffread

pytestmark = pytest.mark.skipif(not hasattr(tiffread._fastkernels, "fpred32"), reason="compiled kernels not built")


def _values(shape, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    a = rng.normal(250.0, 80.0, shape).astype(np.float32)
    flat = a.reshape(-1)
    idx = rng.choice(flat.size, 64, replace=False)
    specials = np.array([np.nan, np.inf, -np.inf, -0.0, 0.0, 1e-45, -1e-45, 3.4e38, -3.4e38, 1e-40],
                        np.float32)
    flat[idx] = np.resize(specials, idx.size)
    bits = rng.integers(0, 2**32, 200, dtype=np.uint64).astype(np.uint32)
    flat[rng.choice(flat.size, bits.size, replace=False)] = bits.view(np.float32)  # any bit pattern
    return a


def _write(path, a, block=128, **kw) -> None:
    count = a.shape[0] if a.ndim == 3 else 1
    profile = dict(driver="GTiff", width=a.shape[-1], height=a.shape[-2], count=count, dtype="float32",
                   crs="EPSG:32633", transform=Affine(30, 0, 300000, 0, -30, 4500000), tiled=True,
                   blockxsize=block, blockysize=block, compress="deflate", predictor=3)
    profile.update(kw)
    profile = {k: v for k, v in profile.items() if v is not None}
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(a if a.ndim == 3 else a[None])


WINDOWS = [((0, 300), (0, 270)), ((0, 128), (0, 128)), ((5, 131), (7, 250)), ((129, 300), (250, 270)),
           ((299, 300), (0, 270)), ((17, 18), (3, 4)), ((100, 260), (128, 256))]


def _gdal(path, band, window) -> np.ndarray:
    (y0, y1), (x0, x1) = window
    with rasterio.open(path) as src:
        return src.read(band, window=Window(x0, y0, x1 - x0, y1 - y0))


def _mine(path, band, window) -> np.ndarray | None:
    (y0, y1), (x0, x1) = window
    out = np.full((y1 - y0, x1 - x0), 7.0, np.float32)
    lay = tiffread.layout(str(path), band)
    if lay is None:
        return None
    return out if tiffread.read_window(lay, str(path), window, out) else None


@pytest.mark.parametrize("block,order", [(128, "LITTLE"), (256, "LITTLE"), (128, "BIG")])
def test_same_bits_as_gdal(tmp_path, block, order):
    a = _values((300, 270))
    path = tmp_path / "f.tif"
    _write(path, a, block=block, ENDIANNESS=order)
    for window in WINDOWS:
        got = _mine(path, 1, window)
        assert got is not None, window
        np.testing.assert_array_equal(got.view(np.uint32), _gdal(path, 1, window).view(np.uint32), err_msg=str(window))


def test_band_interleaved_second_band(tmp_path):
    a = np.stack([_values((300, 270), 1), _values((300, 270), 2)])
    path = tmp_path / "f.tif"
    _write(path, a, interleave="band")
    for window in WINDOWS:
        got = _mine(path, 2, window)
        assert got is not None
        np.testing.assert_array_equal(got.view(np.uint32), _gdal(path, 2, window).view(np.uint32))


@pytest.mark.parametrize("kw", [dict(interleave="pixel", bands=2), dict(predictor=2), dict(predictor=1),
                                dict(compress="zstd"), dict(tiled=False)])
def test_other_layouts_are_left_to_gdal(tmp_path, kw):
    kw = dict(kw)
    a = np.stack([_values((300, 270), 1), _values((300, 270), 2)]) if kw.pop("bands", 1) == 2 else _values((300, 270))
    if kw.get("tiled") is False:  # strips
        kw.update(blockxsize=None, blockysize=None)
    path = tmp_path / "f.tif"
    _write(path, a, **kw)
    assert tiffread.layout(str(path), 1) is None
    # the scene's reader still gives GDAL's pixels
    for window in WINDOWS[:3]:
        got = io.read_window(str(path), 1, block_info={None: {"array-location": list(window)}})
        np.testing.assert_array_equal(got.view(np.uint32), _gdal(path, 1, window).view(np.uint32))


def test_sparse_block_falls_back_to_gdal(tmp_path):
    path = tmp_path / "sparse.tif"
    a = _values((300, 270))
    with rasterio.open(path, "w", driver="GTiff", width=270, height=300, count=1, dtype="float32", tiled=True,
                       blockxsize=128, blockysize=128, compress="deflate", predictor=3, SPARSE_OK=True,
                       nodata=-5.0) as dst:
        dst.write(a[:128, :128], 1, window=Window(0, 0, 128, 128))  # the other blocks are never written
    assert _mine(path, 1, ((0, 300), (0, 270))) is None
    assert _mine(path, 1, ((0, 128), (0, 128))) is not None  # only the written block: decoded here
    for window in WINDOWS:
        got = io.read_window(str(path), 1, block_info={None: {"array-location": list(window)}})
        np.testing.assert_array_equal(got.view(np.uint32), _gdal(path, 1, window).view(np.uint32))


def test_damaged_block_is_still_an_input_error(tmp_path):
    """A block that does not inflate is not decoded here: GDAL's read reports the damage."""
    from pipeline.errors import InputError

    path = tmp_path / "f.tif"
    _write(path, _values((300, 270)))
    with rasterio.open(path) as src:
        off = int(src.get_tag_item("BLOCK_OFFSET_1_1", "TIFF", bidx=1))
    with open(path, "r+b") as f:
        f.seek(off + 10)
        f.write(b"\xff" * 64)
    assert _mine(path, 1, ((128, 256), (128, 256))) is None
    with pytest.raises(InputError):
        with io.raster_errors(str(path)):
            io.read_window(str(path), 1, block_info={None: {"array-location": [(128, 256), (128, 256)]}})


def test_a_rewritten_file_is_not_read_with_its_old_layout(tmp_path):
    path = tmp_path / "f.tif"
    _write(path, _values((300, 270), 1), block=128)
    assert tiffread.layout(str(path), 1).block == (128, 128)
    b = _values((300, 270), 2)
    _write(path, b, block=256)  # same path, new blocks
    window = [(0, 300), (0, 270)]
    got = io.read_window(str(path), 1, block_info={None: {"array-location": window}})
    np.testing.assert_array_equal(got.view(np.uint32), b.view(np.uint32))
    assert tiffread.layout(str(path), 1).block == (256, 256)


def test_cog_driver_output_same_bits_as_gdal(tmp_path):
    """GDAL's COG driver puts a size leader before every block and a copy of its last bytes
    after it (its 'ghost area'); the block offsets GDAL reports still find the block itself."""
    from rasterio.shutil import copy

    tiled = tmp_path / "tiled.tif"
    _write(tiled, _values((300, 270), 3), block=256)
    cog = tmp_path / "cog.tif"
    copy(tiled, cog, driver="COG", COMPRESS="DEFLATE", PREDICTOR="YES", BLOCKSIZE=128)
    with rasterio.open(cog) as src:
        assert src.tags(ns="IMAGE_STRUCTURE").get("PREDICTOR") == "3" and src.block_shapes[0] == (128, 128)
    for window in WINDOWS:
        got = _mine(cog, 1, window)
        assert got is not None
        np.testing.assert_array_equal(got.view(np.uint32), _gdal(cog, 1, window).view(np.uint32))


@pytest.mark.parametrize("reuse", ["never", "always"])
def test_run_on_a_predictor_3_scene_gives_numpys_classes(tmp_path, reuse):
    """A whole run (both passes reading the file through the decoder, or the statistics pass
    alone) gives numpy's equal-interval class ids of GDAL's pixels, on chunks that do not divide
    the scene."""
    from pipeline.jobs.config import build_config
    from pipeline.jobs.run import run

    a = _values((1100, 1000), 5)
    a[~(np.abs(a) < 1e6)] = np.nan  # infinities, NaN and the extremes (no room for 12 classes): nodata
    a[:300, :700] = np.nan
    src = tmp_path / "scene.tif"
    _write(src, a, block=256)
    out = tmp_path / "classes.tif"
    cfg = {"input": str(src), "classes": {"scheme": "equal_interval", "count": 12},
           "output": {"path": str(out)}, "processing": {"chunk": 300, "reuse_decoded": reuse}}
    run(build_config(cfg, base_dir=tmp_path, source="test"))
    with rasterio.open(src) as s:
        pixels = s.read(1)
    valid = np.isfinite(pixels)
    edges = np.histogram_bin_edges(pixels[valid], 12)
    want = np.searchsorted(edges, pixels, side="right")
    want[pixels == edges[-1]] = 12
    want[~valid] = 0
    with rasterio.open(out) as o:
        np.testing.assert_array_equal(o.read(1), want.astype(np.uint8))
