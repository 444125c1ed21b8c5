"""The streamed COG writer (tasks compress tiles, the client writes the file front to back)
against the GDAL-assembled writer it replaces (``write_cog_gdal``: staging files, then GDAL's
COG driver computes the mode overviews), pixel for pixel at every overview level, and against
rio-cogeo's strict validator and GDAL's reading of colour table, nodata and georeferencing.

Chunk sizes do not divide the scenes; blocksizes 64 and 128; paletted, RGB and RGBA; nearest
and mode; uint16 and float32 inputs; the real 677 x 775 Landsat band 10. The same writer on a
real ``dask scheduler`` + 2 workers (which do not even see the output folder) is compared in
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

import pipeline.jobs.run as run_module
from pipeline.jobs.batch import run_batch
from pipeline.jobs.config import load_config
from pipeline.writers.cog import write_cog_gdal, write_cog_streamed

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


def run_with(cfg: Path, writer=None, monkeypatch=None) -> Path:
    if writer is not None:
        monkeypatch.setattr(run_module, "write_cog", writer)
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


def assert_same_cog(got: Path, want: Path) -> None:
    """Same pixels at every level, same colour table, nodata, CRS, transform; ``got`` is a strict COG."""
    valid, errors, warnings = cog_validate(got, strict=True, quiet=True)
    assert valid, (errors, warnings)
    with rasterio.open(got) as g, rasterio.open(want) as w:
        assert (g.width, g.height, g.count) == (w.width, w.height, w.count)
        assert g.block_shapes == w.block_shapes
        assert g.overviews(1) == w.overviews(1)
        assert g.nodata == w.nodata and g.crs == w.crs and g.transform == w.transform
        assert g.colorinterp == w.colorinterp
        assert g.compression == w.compression
        if w.count == 1:
            assert g.colormap(1) == w.colormap(1)
    a, b = levels(got), levels(want)
    assert len(a) == len(b) > 1
    for i, (x, y) in enumerate(zip(a, b)):
        assert x.shape == y.shape, i
        assert np.array_equal(x, y), f"level {i}: {(x != y).sum()} pixels differ"


CASES = [  # mode, blocksize, chunk, resampling, compression, dtype, shape
    ("paletted", 64, 200, "nearest", "zstd", "uint16", (677, 775)),
    ("paletted", 128, 300, "mode", "deflate", "float32", (701, 913)),
    ("rgb", 64, 200, "mode", "lzw", "uint16", (515, 389)),
    ("rgba", 128, 300, "nearest", "zstd", "float32", (677, 775)),
    ("rgba", 64, 150, "mode", "none", "uint16", (333, 461)),
]


@pytest.mark.parametrize("mode,blocksize,chunk,resampling,compression,dtype,shape", CASES)
def test_streamed_equals_gdal_assembled(tmp_path, monkeypatch, mode, blocksize, chunk, resampling, compression,
                                        dtype, shape):
    source = make_input(tmp_path / "in.tif", shape, dtype)
    opts = dict(mode=mode, blocksize=blocksize, chunk=chunk, overview_resampling=resampling, compression=compression)
    new = run_with(config(tmp_path / "new", source, **opts), write_cog_streamed, monkeypatch)
    old = run_with(config(tmp_path / "old", source, **opts), write_cog_gdal, monkeypatch)
    assert_same_cog(new, old)


@pytest.mark.parametrize("resampling", ["nearest", "mode"])
def test_real_band_odd_size(tmp_path, monkeypatch, resampling):
    """The real 677 x 775 float32 Landsat band (striped, no declared nodata), blocksize 64."""
    source = data_path(B10)
    opts = dict(blocksize=64, chunk=200, overview_resampling=resampling)
    new = run_with(config(tmp_path / "new", source, **opts), write_cog_streamed, monkeypatch)
    old = run_with(config(tmp_path / "old", source, **opts), write_cog_gdal, monkeypatch)
    assert_same_cog(new, old)
    with rasterio.open(new) as src, rasterio.open(source) as raw:
        assert src.crs == raw.crs and src.transform == raw.transform and src.nodata == 0
        assert src.colormap(1)[0] == (0, 0, 0, 0)


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
