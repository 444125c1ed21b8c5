"""Open a raster band lazily as a chunked dask array, with its georeferencing and nodata.

Each chunk is one windowed read with rasterio (a file handle per task, so reads run in
parallel on threads, processes or cluster workers); nothing is read before compute.
xarray is not needed to read: it costs about 0.4 s of imports per run, which matters for a
command that classifies a Landsat band in about two seconds; :meth:`Scene.to_xarray` gives
a georeferenced DataArray for those who want one (the Zarr writer uses it).
"""

from __future__ import annotations

import logging
import math
import os
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import dask
import dask.array as da
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.errors import RasterioError
from rasterio.windows import Window

from .errors import ConfigError, InputError

log = logging.getLogger(__name__.replace("pipeline", "sceneclass", 1))

#: dtypes sceneclass classifies; 8/16-bit integers get exact full-range histograms.
SUPPORTED_DTYPES = ("uint8", "int8", "uint16", "int16", "uint32", "int32", "float32", "float64")


@dataclass(frozen=True)
class Scene:
    """One band of a raster, opened lazily."""

    path: str
    band: int
    array: da.Array  # (y, x), the file's dtype
    nodata: float | None  # the value treated as nodata (NaN is always nodata for floats)
    crs: CRS | None
    transform: Affine
    block_shape: tuple[int, int]

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.array.shape)

    @property
    def dtype(self) -> np.dtype:
        return self.array.dtype

    def coords(self) -> dict[str, np.ndarray]:
        """Pixel-centre coordinates (north-up grids), as rioxarray gives them."""
        t = self.transform
        height, width = self.shape
        return {"y": t.f + t.e * (np.arange(height) + 0.5), "x": t.c + t.a * (np.arange(width) + 0.5)}

    def to_xarray(self):
        """A georeferenced (y, x) xarray.DataArray over the same lazy array."""
        from ._engine.deferred import allow

        allow()
        import rioxarray  # noqa: F401  (registers .rio)
        import xarray as xr

        arr = xr.DataArray(self.array, dims=("y", "x"), coords=self.coords(), name="band_%d" % self.band)
        if self.crs:
            arr = arr.rio.write_crs(self.crs)
        return arr.rio.write_transform(self.transform)


#: name prefix of the dask arrays :func:`open_scene` reads (see :func:`file_backed`)
READ_PREFIX = "read-"


def is_url(path: str) -> bool:
    return "://" in path or path.startswith("/vsi")


def gdal_path(path: str) -> str:
    """Map http(s) URLs to GDAL's /vsicurl/ (range requests); other paths unchanged."""
    if path.startswith(("http://", "https://")):
        return "/vsicurl/" + path
    return path


def aligned_chunks(size: int, block: int, target: int, tile: int = 1) -> int:
    """A chunk edge near ``target`` that is a whole multiple of the file's ``block`` edge and of
    the output's ``tile`` edge (so reads and writes both fall on tile boundaries)."""
    unit = tile if block >= size else math.lcm(block, tile)  # striped files: a strip spans the width
    if unit > 2 * target:
        unit = tile  # input alignment would make chunks too large: keep the output's
    k = max(1, round(target / unit))
    return min(size, k * unit)


def resolve_nodata(declared: float | None, setting: float | str, dtype: np.dtype) -> float | None:
    """The nodata value to honour: the config's number, the file's (``file``) or none (``none``)."""
    if setting == "none":
        return None
    value = declared if setting == "file" else float(setting)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None  # NaN is always nodata for floats; ints cannot hold it
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        if not math.isfinite(value) or value != int(value) or not info.min <= value <= info.max:
            log.warning("nodata %s cannot occur in %s data; no pixel is masked by it", value, dtype)
            return None
    return value


@contextmanager
def raster_errors(path: str) -> Iterator[None]:
    """Turn GDAL/rasterio read failures into one-line :class:`InputError` naming ``path``."""
    try:
        yield
    except RasterioError as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        if "See previous exception" in msg or msg.startswith("Read failed"):
            msg = "the file is damaged: reading its pixels failed"
        raise InputError(f"{path}: {msg}") from None


def read_window(path: str, band: int, block_info=None, out: np.ndarray | None = None) -> np.ndarray:
    """Block kernel: one chunk of ``band``, read with its own file handle (into ``out`` if given)."""
    (y0, y1), (x0, x1) = block_info[None]["array-location"]
    with rasterio.open(path) as src:
        return src.read(band, window=Window(x0, y0, x1 - x0, y1 - y0), out=out)


def file_backed(scene: Scene) -> bool:
    """True when ``scene.array`` is :func:`open_scene`'s own windowed reader (so a task may read
    a chunk itself, with :func:`read_window`, instead of receiving it)."""
    return scene.array.name.startswith(READ_PREFIX)


def chunk_tuple(size: int, chunk: int) -> tuple[int, ...]:
    return (chunk,) * (size // chunk) + ((size % chunk,) if size % chunk else ())


def open_scene(path: str, band: int = 1, nodata: float | str = "file", chunk: int = 2048, tile: int = 1) -> Scene:
    """Open ``band`` of ``path`` as a lazy (y, x) dask DataArray chunked along the file's tiles
    (and along the output's ``tile`` edge when given)."""
    if not is_url(path) and not os.path.exists(path):
        raise InputError(f"{path}: input file not found")
    src_path = gdal_path(path)
    with raster_errors(path):
        try:
            with rasterio.open(src_path) as src:
                count, dtype, declared = src.count, np.dtype(src.dtypes[0]), src.nodata
                crs, transform = src.crs, src.transform
                block = src.block_shapes[0]
                height, width = src.height, src.width
        except rasterio.errors.RasterioIOError as e:
            raise InputError(f"{path}: not a readable raster ({str(e).splitlines()[0]})") from None
    if band > count:
        raise ConfigError(f"band: {path} has {count} band(s), band {band} was asked for")
    if dtype.name not in SUPPORTED_DTYPES:
        raise InputError(f"{path}: data type {dtype} is not supported ({', '.join(SUPPORTED_DTYPES)})")
    cy = aligned_chunks(height, block[0], chunk, tile)
    cx = aligned_chunks(width, block[1], chunk, tile)
    token = dask.base.tokenize(src_path, band, cy, cx, os.stat(path).st_mtime_ns if not is_url(path) else 0)
    array = da.map_blocks(
        read_window, src_path, band, chunks=(chunk_tuple(height, cy), chunk_tuple(width, cx)),
        dtype=dtype, meta=np.empty((0, 0), dtype), name=f"{READ_PREFIX}{token}",
    )
    return Scene(
        path=path, band=band, array=array,
        nodata=resolve_nodata(declared, nodata, dtype),
        crs=crs, transform=transform, block_shape=tuple(block),
    )

