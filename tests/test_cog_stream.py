"""The COG writer (tasks compress tiles, the client writes the file front to back) against
GDAL's own COG driver: the same full-resolution pixels copied with ``driver="COG"`` give the same
pixels at every overview level (NEAREST and MODE), the same overview count, and the file passes
rio-cogeo's strict validator with GDAL reading the colour table, nodata and georeferencing.

Chunk sizes do not divide the scenes, odd sizes, blocksizes 64, 128 and 256; paletted, RGB and
RGBA; uint16 and float32 inputs; the real 677 x 775 Landsat band 10. The same writer on a real
``dask scheduler`` + 2 workers (which do not even see the output folder) is compared in
test_no_shared_fs.py.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import rasterio
import yaml
from rasterio.transform import from_origin
from rio_cogeo.cogeo import cog_validate

from pipeline.jobs.batch import run_batch
from pipeline.jobs.config import load_config
from pipeline.scene import open_scene
from pipeline.writers.cog import write_cog

from conftest import B10, data_path


def make_input(path: Path, shape: tuple[int, int], dtype: str, seed: int = 0) -> Path:
    """A smooth field with noise, a nodata border (0) and a georeferenced grid."""
    rng = np.random.default_rng(seed)
    h, w = shape
    base = np.kron(rng.random((h // 16 + 2, w // 16 + 2)), np.ones((16, 16)))[:h, :w]
    values = (base + 0.4 * rng.random((h, w))) * 1000 + 1
    values[:7] = 0
    values[:, -3:] = 0
    with rasterio.open(path, "w", driver="GTiff", width=w, height=h, count=1, dtype=dtype, nodata=0,
                       crs="EPSG:32633", transform=from_origin(500000, 4000000, 30, 30)) as dst:
        dst.write(values.astype(dtype), 1)
    return path


def config(folder: Path, source: Path, **output) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    chunk = output.pop("chunk")
    cfg = {"input": str(source), "classes": {"scheme": "equal_interval", "count": 9},
           "output": {"path": str(folder / "out.tif"), **output}, "processing": {"chunk": chunk}}
    path = folder / "job.yaml"
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return path


def run_with(cfg: Path) -> Path:
    result = run_batch(load_config(cfg, []))
    assert [j.status for j in result.jobs] == ["done"], [j.error for j in result.jobs]
    return Path(load_config(cfg, []).output.path)


def levels(path: Path) -> list[np.ndarray]:
    with rasterio.open(path) as src:
        n = len(src.overviews(1))
    out = []
    for level in [None, *range(n)]:
        with rasterio.open(path, overview_level=level) as src:
            out.append(src.read())
    return out


def gdal_cog(path: Path, pixels: np.ndarray, folder: Path, resampling: str, blocksize: int,
             compression: str = "zstd") -> Path:
    """GDAL's COG driver's file from ``pixels`` ((band, y, x) uint8) with ``path``'s georeferencing,
    colour table and nodata: a GTiff written with rasterio, then ``rasterio.shutil.copy``."""
    with rasterio.open(path) as src:
        profile = {"driver": "GTiff", "width": src.width, "height": src.height, "count": src.count,
                   "dtype": "uint8", "nodata": src.nodata, "crs": src.crs, "transform": src.transform}
        gcps, gcps_crs = src.gcps
        if gcps:
            profile.update(gcps=gcps, crs=gcps_crs)
            del profile["transform"]
        cmap = src.colormap(1) if src.count == 1 else None
        interp = src.colorinterp
    plain = folder / f"{path.stem}.plain.tif"
    with rasterio.open(plain, "w", **profile) as dst:
        dst.write(pixels)
        if cmap is not None:
            dst.write_colormap(1, cmap)
        else:
            dst.colorinterp = interp
    ref = folder / f"{path.stem}.gdal.tif"
    rasterio.shutil.copy(plain, ref, driver="COG", BLOCKSIZE=blocksize, COMPRESS=compression.upper(),
                         OVERVIEW_RESAMPLING=resampling.upper())
    return ref


def assert_same_cog(got: Path, want: Path) -> None:
    """Same pixels at every level, same colour table, nodata, CRS, transform; ``got`` is a strict COG."""
    valid, errors, warnings = cog_validate(got, strict=True, quiet=True)
    assert valid, (errors, warnings)
    with rasterio.open(got) as g, rasterio.open(want) as w:
        assert (g.width, g.height, g.count) == (w.width, w.height, w.count)
        assert g.block_shapes == w.block_shapes
        assert g.overviews(1) == w.overviews(1)
        assert g.nodata == w.nodata and g.crs == w.crs and g.transform == w.transform
        (gg, gcrs), (wg, wcrs) = g.gcps, w.gcps
        assert gcrs == wcrs and [(p.row, p.col, p.x, p.y, p.z) for p in gg] == [(p.row, p.col, p.x, p.y, p.z) for p in wg]
        assert g.colorinterp == w.colorinterp
        assert g.compression == w.compression
        if w.count == 1:
            assert g.colormap(1) == w.colormap(1)
    a, b = levels(got), levels(want)
    assert len(a) == len(b) > 1
    for i, (x, y) in enumerate(zip(a, b)):
        assert x.shape == y.shape, i
        assert np.array_equal(x, y), f"level {i}: {(x != y).sum()} pixels differ"


def class_field(shape: tuple[int, int], seed: int) -> np.ndarray:
    """Class ids 0..7 in patches (so MODE has real majorities and ties) with scattered noise and a
    nodata (0) border."""
    rng = np.random.default_rng(seed)
    h, w = shape
    base = np.kron(rng.integers(1, 7, (h // 5 + 2, w // 5 + 2)), np.ones((5, 5), np.int64))[:h, :w]
    noise = rng.integers(0, 3, (h, w)) * (rng.random((h, w)) < 0.3)
    classes = ((base + noise) % 8).astype(np.uint8)
    classes[:3] = 0
    return classes


WRITER_CASES = [  # shape, chunk, blocksize, resampling, bands
    ((677, 775), 200, 64, "nearest", 0),
    ((677, 775), 200, 64, "mode", 0),
    ((1025, 1537), 384, 128, "mode", 3),  # last chunk column 1 pixel wide: MODE windows straddle it
    ((1025, 1537), 512, 128, "nearest", 0),  # levels 1-2 line up with the chunks (tiles made in the chunk task)
    ((1000, 1003), 256, 64, "mode", 4),
    ((999, 1001), 130, 64, "nearest", 3),
    ((1100, 1301), 600, 256, "nearest", 4),
    ((1100, 1301), 600, 256, "mode", 0),
    ((129, 300), 100, 64, "nearest", 0),  # 129 rows: GDAL's overview count, not ceil's
]


@pytest.mark.parametrize("shape,chunk,blocksize,resampling,bands", WRITER_CASES)
def test_writer_levels_equal_gdal_cog_driver(tmp_path, shape, chunk, blocksize, resampling, bands):
    """write_cog of known class ids: level 0 is those ids (or their colours), every overview is
    what GDAL's COG driver makes of the same pixels, with the exact grid (no padding)."""
    classes = class_field(shape, sum(shape) + chunk)
    rng = np.random.default_rng(1)
    palette = rng.integers(0, 256, (256, 4), dtype=np.uint8)
    palette[0] = 0
    source = tmp_path / "classes.tif"
    with rasterio.open(source, "w", driver="GTiff", width=shape[1], height=shape[0], count=1, dtype="uint8",
                       crs="EPSG:32633", transform=from_origin(500000, 4000000, 30, 30)) as dst:
        dst.write(classes, 1)
    scene = open_scene(str(source), nodata="none")
    out = load_config(config(tmp_path / "job", source, blocksize=blocksize, chunk=chunk,
                             overview_resampling=resampling), []).output
    final = tmp_path / "out.tif"
    write_cog(scene.array.rechunk(chunk), scene, palette, out, final, bands)
    want = classes[None] if not bands else np.moveaxis(palette[:, :bands][classes], 2, 0)
    with rasterio.open(final) as src:
        assert np.array_equal(src.read(), want)
    assert_same_cog(final, gdal_cog(final, want, tmp_path, resampling, blocksize))


CASES = [  # mode, blocksize, chunk, resampling, compression, dtype, shape
    ("paletted", 64, 200, "nearest", "zstd", "uint16", (677, 775)),
    ("paletted", 128, 300, "mode", "deflate", "float32", (701, 913)),
    ("rgb", 64, 200, "mode", "lzw", "uint16", (515, 389)),
    ("rgba", 128, 300, "nearest", "zstd", "float32", (677, 775)),
    ("rgba", 64, 150, "mode", "none", "uint16", (333, 461)),
    ("rgb", 256, 700, "nearest", "deflate", "uint16", (900, 1201)),
]


@pytest.mark.parametrize("mode,blocksize,chunk,resampling,compression,dtype,shape", CASES)
def test_run_equals_gdal_cog_driver(tmp_path, mode, blocksize, chunk, resampling, compression, dtype, shape):
    """A whole run (value look-up in the write tasks, colours, compression codecs): its overviews
    are GDAL's COG driver's from its own full-resolution pixels."""
    source = make_input(tmp_path / "in.tif", shape, dtype)
    opts = dict(mode=mode, blocksize=blocksize, chunk=chunk, overview_resampling=resampling, compression=compression)
    got = run_with(config(tmp_path / "run", source, **opts))
    with rasterio.open(got) as src:
        full = src.read()
    assert_same_cog(got, gdal_cog(got, full, tmp_path, resampling, blocksize, compression))


@pytest.mark.parametrize("mode,resampling", [("rgb", "nearest"), ("rgba", "mode"), ("paletted", "nearest"),
                                               ("rgb", "mode")])
def test_whole_fill_chunks_equal_one_chunk_run_and_gdal(tmp_path, mode, resampling):
    """Chunks that hold only nodata (the fill around a footprint, including the ragged last chunk
    row and column) are looked up as a broadcast of one colour and their tiles compressed once:
    the file has the pixels of a run whose one chunk is not uniform, and GDAL's overviews."""
    shape, chunk, blocksize = (701, 913), 192, 64
    source = make_input(tmp_path / "in.tif", shape, "uint16")
    with rasterio.open(source, "r+") as dst:
        values = dst.read(1)
        values[:384, :384] = 0  # four whole chunks
        values[:, 768:] = 0  # the last chunk column: 145 px, edge tiles 17 px wide
        values[576:] = 0  # the last chunk row: 125 px
        dst.write(values, 1)
    opts = dict(mode=mode, blocksize=blocksize, overview_resampling=resampling)
    got = run_with(config(tmp_path / "chunked", source, chunk=chunk, **opts))
    one = run_with(config(tmp_path / "one", source, chunk=1024, **opts))
    for x, y in zip(levels(got), levels(one)):
        assert np.array_equal(x, y)
    with rasterio.open(got) as src:
        full = src.read()
    assert_same_cog(got, gdal_cog(got, full, tmp_path, resampling, blocksize))


@pytest.mark.parametrize("resampling", ["nearest", "mode"])
def test_real_band_odd_size(tmp_path, resampling):
    """The real 677 x 775 float32 Landsat band (striped, no declared nodata), blocksize 64."""
    source = data_path(B10)
    got = run_with(config(tmp_path / "run", source, blocksize=64, chunk=200, overview_resampling=resampling))
    with rasterio.open(got) as src:
        full = src.read()
    assert_same_cog(got, gdal_cog(got, full, tmp_path, resampling, 64))
    with rasterio.open(got) as src, rasterio.open(source) as raw:
        assert src.crs == raw.crs and src.transform == raw.transform and src.nodata == 0
        assert src.colormap(1)[0] == (0, 0, 0, 0)


def test_gcps_carried(tmp_path):
    """An input georeferenced by GCPs: the COG carries the GCPs and their CRS, no geotransform."""
    from rasterio.control import GroundControlPoint

    source = make_input(tmp_path / "in.tif", (300, 410), "uint16")
    gcps = [GroundControlPoint(row=r, col=c, x=500000 + 30 * c, y=4000000 - 30 * r, z=0.0)
            for r, c in ((0, 0), (0, 409), (299, 0), (299, 409))]
    with rasterio.open(source, "r+") as dst:
        dst.gcps = (gcps, dst.crs)
    got = run_with(config(tmp_path / "run", source, blocksize=64, chunk=100))
    with rasterio.open(got) as src:
        full = src.read()
        got_gcps, crs = src.gcps
        assert crs == "EPSG:32633" and len(got_gcps) == 4
        assert [(g.row, g.col, g.x, g.y) for g in got_gcps] == [(g.row, g.col, g.x, g.y) for g in gcps]
    assert_same_cog(got, gdal_cog(got, full, tmp_path, "nearest", 64))


class WriteOnly:
    """A destination that can only be written to (no seek, no tell, no read), like an upload."""

    def __init__(self) -> None:
        self._buf = io.BytesIO()
        self.calls = 0

    def write(self, data) -> int:
        self.calls += 1
        return self._buf.write(data)

    def getvalue(self) -> bytes:
        return self._buf.getvalue()


def test_stream_to_write_only_object(tmp_path):
    """write_cog_stream needs nothing but ``write``: the bytes it streams are a valid COG equal to
    the file the local writer puts in place."""
    from pipeline.jobs.run import prepare
    from pipeline.core import class_lut, fit
    from pipeline.palette import build_palette
    from pipeline.writers.cogstream import write_cog_stream

    source = make_input(tmp_path / "in.tif", (300, 420), "uint16")
    cfg_path = config(tmp_path / "job", source, blocksize=64, chunk=100)
    local = run_with(cfg_path)
    cfg = load_config(cfg_path, [])
    _, scene = prepare(cfg)
    fitted = fit(scene, cfg.classes)
    palette = build_palette(cfg.palette, fitted.n_classes)
    sink = WriteOnly()
    write_cog_stream(scene.array, scene, palette, cfg.output, sink, lut=class_lut(scene, fitted), count=False)
    streamed = tmp_path / "streamed.tif"
    streamed.write_bytes(sink.getvalue())
    assert sink.calls > 1
    assert_same_cog(streamed, local)


@pytest.mark.parametrize("bigtiff", [False, True])
@pytest.mark.parametrize("compression", ["zstd", "deflate", "lzw", "none"])
def test_tiff_structure_decodes_in_gdal(tmp_path, bigtiff, compression):
    """Tiles compressed by the workers' codec and laid out by write_tiff (classic TIFF and
    BigTIFF) read back in GDAL as the numpy pixels they came from, at every level."""
    from affine import Affine
    from rasterio.crs import CRS

    from pipeline.writers import tiff
    from pipeline.writers.tiles import COMPRESSION_CODES, encode_chunk

    rng = np.random.default_rng(3)
    b = 64
    full = rng.integers(0, 6, (150, 203, 3), dtype=np.uint8)
    pyramid = [full, full[1::2, 1::2][:75, :101]]
    rows = [encode_chunk(px, b, compression, 3 if compression == "zstd" else 6 if compression == "deflate" else None)
            for px in pyramid]
    layouts = [tiff.LevelLayout(px.shape[1], px.shape[0], np.array([[len(t) for t in r] for r in tiles], np.int64))
               for px, tiles in zip(pyramid, rows)]
    template = tiff.template_tags(bands=3, palette=None, crs=CRS.from_epsg(3857),
                                  transform=Affine(10, 0, 1000, 0, -10, 5000))
    path = tmp_path / "t.tif"
    with open(path, "wb") as f:
        tiff.write_tiff(f, layouts, template, b, COMPRESSION_CODES[compression], lambda i: iter(rows[i]),
                        bigtiff=bigtiff, bands=3)
    valid, errors, warnings = cog_validate(path, strict=True, quiet=True)
    assert valid, (errors, warnings)
    with rasterio.open(path) as src:
        assert src.crs == CRS.from_epsg(3857) and src.transform == Affine(10, 0, 1000, 0, -10, 5000)
        assert np.array_equal(src.read(), np.moveaxis(full, 2, 0))
        assert src.get_tag_item("GDAL_STRUCTURAL_METADATA", "TIFF").count("LAYOUT=IFDS_BEFORE_DATA") == 1
    with rasterio.open(path, overview_level=0) as ov:
        assert np.array_equal(ov.read(), np.moveaxis(pyramid[1], 2, 0))
    assert (path.read_bytes()[2:4] == b"+\0") == bigtiff
