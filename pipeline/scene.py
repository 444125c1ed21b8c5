"""Open a raster band lazily as a chunked dask array, with its georeferencing and nodata.

Each chunk is one windowed read with rasterio (a file handle per task, so reads run in
parallel on threads, processes or cluster workers); nothing is read before compute.
xarray is not needed to read: it costs about 0.4 s of imports per run, which matters for a
command that classifies a Landsat band in about two seconds. A DataArray becomes a Scene
through :func:`pipeline.api.to_scene`.

Georeferencing is kept as the file has it, in the kinds GDAL knows: a CRS with an affine
geotransform (north-up, south-up, rotated, any pixel shape), ground control points (GCPs) with
their CRS, or none. An input with none gets one warning line from :func:`open_scene`; rasterio's
``NotGeoreferencedWarning`` (several lines per file open, from every chunk read and staging
file) is ignored for that reason.
"""

from __future__ import annotations

import logging
import math
import os
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import dask
import dask.array as da
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.control import GroundControlPoint
from rasterio.errors import NotGeoreferencedWarning, RasterioError
from rasterio.rpc import RPC
from rasterio.enums import Interleaving
from rasterio.windows import Window

from .errors import ConfigError, InputError

log = logging.getLogger(__name__.replace("pipeline", "sceneclass", 1))

# sceneclass says once per input that it has no georeferencing (see open_scene)
warnings.filterwarnings("ignore", category=NotGeoreferencedWarning)

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
    gcps: tuple[GroundControlPoint, ...] = ()  # ground control points (transform is then identity)
    gcps_crs: CRS | None = None  # the CRS of the GCPs' x, y
    rpcs: RPC | None = None  # rational polynomial coefficients (sensor model), carried into COGs

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.array.shape)

    @property
    def dtype(self) -> np.dtype:
        return self.array.dtype

    @property
    def rectilinear(self) -> bool:
        """True when the grid's rows and columns follow the CRS axes (transform terms b and d
        are 0: north-up or south-up, any pixel width and height), so 1-D x/y coordinates exist."""
        return self.transform.b == 0 and self.transform.d == 0

    @property
    def georeferenced(self) -> bool:
        """True when the scene has a CRS, GCPs, RPCs or a geotransform other than the identity."""
        return bool(self.crs or self.gcps or self.rpcs or not self.transform.is_identity)

    def coords(self) -> dict[str, np.ndarray]:
        """1-D pixel-centre coordinates, as ``rioxarray.open_rasterio`` gives them.

        Returns
        -------
        dict
            ``{"y": (height,) float64, "x": (width,) float64}`` in CRS units for a rectilinear
            grid (``x[j], y[i]`` is ``transform * (j + 0.5, i + 0.5)``, any sign of the pixel
            size); empty for a rotated grid or GCPs, which have no 1-D coordinates (their
            position comes from the transform or the GCPs).
        """
        if self.gcps or not self.rectilinear:
            return {}
        t = self.transform
        height, width = self.shape
        return {"y": t.f + t.e * (np.arange(height) + 0.5), "x": t.c + t.a * (np.arange(width) + 0.5)}

    def write_georeferencing(self, obj):
        """Georeference an xarray object on this grid as ``rioxarray.open_rasterio`` does.

        Parameters
        ----------
        obj : xarray.Dataset or xarray.DataArray
            Dims ``(..., y, x)`` with the scene's shape; needs ``rioxarray`` imported.

        Returns
        -------
        xarray.Dataset or xarray.DataArray
            A copy whose ``spatial_ref`` coordinate holds the CRS, the geotransform (identity
            for GCPs) and the GCPs with their CRS (GeoJSON), which ``.rio`` reads back.
        """
        if self.crs:
            obj = obj.rio.write_crs(self.crs)
        obj = obj.rio.write_transform(self.transform)
        if self.gcps:
            obj = obj.rio.write_gcps(list(self.gcps), self.gcps_crs)
        return obj


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


#: the most chunks a scene is cut into: beyond it the processing chunk grows (a task graph of
#: 239,121 chunks took 100 s and 1.4 GB to build before the first read)
MAX_CHUNKS = 50_000
#: bytes a TIFF needs at least per block it declares: a 4-byte offset and a 2-byte byte count
TIFF_BYTES_PER_BLOCK = 6


def check_layout(src, path: str, band: int) -> None:
    """Refuse a GeoTIFF whose header cannot be right, without reading pixels: more blocks than
    the file could index (a header declaring 1,000,000 x 1,000,000 pixels in a 300 KB file),
    or a last block that ends past the end of the file (a truncated file). Sparse files
    (blocks with no offset, read as nodata: GDAL's ``SPARSE_OK``) are legitimate and pass.

    Parameters
    ----------
    src : rasterio.DatasetReader
        The open raster.
    path : str
        Its path (URLs and other formats than GeoTIFF are not checked).
    band : int
        The band to check (1-based; a band-interleaved file has blocks per band).

    Raises
    ------
    InputError
        Naming ``path`` and what is wrong.
    """
    if src.driver != "GTiff" or is_url(path):
        return
    try:
        size = os.path.getsize(path)
    except OSError:
        return
    bh, bw = src.block_shapes[band - 1]
    ny, nx = -(-src.height // bh), -(-src.width // bw)
    blocks = ny * nx * (src.count if src.interleaving == Interleaving.band else 1)
    if blocks * TIFF_BYTES_PER_BLOCK > size:
        raise InputError(f"{path}: the header declares {src.width} x {src.height} pixels in {blocks} blocks, more "
                         f"than a {size}-byte file can index; the file is damaged")
    offset = src.get_tag_item(f"BLOCK_OFFSET_{nx - 1}_{ny - 1}", "TIFF", bidx=band)
    nbytes = src.get_tag_item(f"BLOCK_SIZE_{nx - 1}_{ny - 1}", "TIFF", bidx=band)
    if offset and nbytes and int(offset) + int(nbytes) > size:
        raise InputError(f"{path}: its last block ends at byte {int(offset) + int(nbytes)}, past the end of the "
                         f"file ({size} bytes); the file is truncated or damaged")


def bounded_chunks(height: int, width: int, block: tuple[int, int], chunk: int, tile: int) -> tuple[int, int]:
    """Chunk edges (y, x) near ``chunk`` (see :func:`aligned_chunks`), grown when the scene
    would be cut into more than :data:`MAX_CHUNKS` chunks, so that building the task graph
    takes bounded time and memory per pixel; the growth is logged."""
    target = chunk
    cy, cx = aligned_chunks(height, block[0], target, tile), aligned_chunks(width, block[1], target, tile)
    count = -(-height // cy) * -(-width // cx)
    if count <= MAX_CHUNKS:
        return cy, cx
    first = count
    while count > MAX_CHUNKS:
        target = max(target + 1, int(target * max(1.05, math.sqrt(count / MAX_CHUNKS))))
        cy, cx = aligned_chunks(height, block[0], target, tile), aligned_chunks(width, block[1], target, tile)
        count = -(-height // cy) * -(-width // cx)
    log.info("processing.chunk %d would cut the %d x %d scene into %d chunks; using %d x %d chunks (%d) to keep "
             "the task graph small", chunk, width, height, first, cy, cx, count)
    return cy, cx


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
                gcps, gcps_crs = src.gcps
                rpcs = src.rpcs
                block = src.block_shapes[0]
                height, width = src.height, src.width
                if band <= count:
                    check_layout(src, path, band)
        except rasterio.errors.RasterioIOError as e:
            raise InputError(f"{path}: not a readable raster ({str(e).splitlines()[0]})") from None
    if band > count:
        raise ConfigError(f"band: {path} has {count} band(s), band {band} was asked for")
    if dtype.name not in SUPPORTED_DTYPES:
        raise InputError(f"{path}: data type {dtype} is not supported ({', '.join(SUPPORTED_DTYPES)})")
    cy, cx = bounded_chunks(height, width, block, chunk, tile)
    token = dask.base.tokenize(src_path, band, cy, cx, os.stat(path).st_mtime_ns if not is_url(path) else 0)
    array = da.map_blocks(
        read_window, src_path, band, chunks=(chunk_tuple(height, cy), chunk_tuple(width, cx)),
        dtype=dtype, meta=np.empty((0, 0), dtype), name=f"{READ_PREFIX}{token}",
    )
    scene = Scene(
        path=path, band=band, array=array,
        nodata=resolve_nodata(declared, nodata, dtype),
        crs=crs, transform=transform,
        gcps=tuple(gcps), gcps_crs=gcps_crs if gcps else None, rpcs=rpcs,
    )
    if not scene.georeferenced:
        log.warning("%s has no georeferencing (no CRS, transform or GCPs): the output is in pixel coordinates", path)
    return scene

