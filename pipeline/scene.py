"""Open a raster band lazily as a chunked dask array, with its georeferencing and what its
pixels mean: the band's own nodata value(s), valid range, scale/offset and units, and the
pixels GDAL's mask for the band or a second (QA) raster flag as invalid.

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

from . import storage
from ._engine import tiffread
from .errors import ConfigError, InputError
from .kernels import ValueRule, clean_block

log = logging.getLogger(__name__.replace("pipeline", "sceneclass", 1))

# sceneclass says once per input that it has no georeferencing (see open_scene)
warnings.filterwarnings("ignore", category=NotGeoreferencedWarning)

#: dtypes sceneclass classifies; 8/16-bit integers get exact full-range histograms.
SUPPORTED_DTYPES = ("uint8", "int8", "uint16", "int16", "uint32", "int32", "float32", "float64")


#: Landsat Collection 2 ``QA_PIXEL`` flag names -> bit (Landsat 8/9 and 4-7 Level-1 and Level-2)
QA_PIXEL_FLAGS = {"fill": 0, "dilated_cloud": 1, "cirrus": 2, "cloud": 3, "cloud_shadow": 4,
                  "snow": 5, "clear": 6, "water": 7}


@dataclass(frozen=True)
class MaskRaster:
    """A second raster on the scene's grid whose pixels flag the scene's pixels as invalid:
    where any of ``bits`` is set, or where the pixel equals one of ``values``."""

    path: str
    band: int = 1
    bits: tuple[int, ...] = ()
    values: tuple[float, ...] = ()

    def flagged(self, qa: np.ndarray) -> np.ndarray:
        """Boolean array, True where a QA pixel flags the scene's pixel."""
        hit = np.zeros(qa.shape, bool)
        if self.bits:
            word = np.uint64(sum(1 << b for b in set(self.bits)))
            hit |= (qa.astype(np.uint64) & word) != 0
        if self.values:
            hit |= np.isin(qa, np.asarray(self.values, dtype=np.float64))
        return hit

    def describe(self) -> str:
        how = f"bits {list(self.bits)}" if self.bits else f"values {list(self.values)}"
        return f"{self.path} band {self.band} ({how})"


@dataclass(frozen=True)
class Scene:
    """One band of a raster, opened lazily, and what its pixel values mean.

    A pixel is valid when its raw value is not nodata (``nodata_values``, NaN, infinities), lies
    in ``valid_range`` (when given) and ``mask`` (when given) is False there. Valid pixels have
    the physical value ``raw * scale + offset`` (in ``units``).
    """

    path: str
    band: int
    array: da.Array  # (y, x), the file's dtype (raw values)
    nodata: float | None  # the (first) raw value treated as nodata (NaN is always nodata for floats)
    crs: CRS | None
    transform: Affine
    nodata_values: tuple[float, ...] | None = None  # all nodata raw values (None: just ``nodata``)
    valid_range: tuple[float, float] | None = None  # inclusive range of valid raw values
    scale: float = 1.0
    offset: float = 0.0
    units: str | None = None
    mask: da.Array | None = None  # (y, x) bool, True = invalid (GDAL mask, QA raster); chunks as ``array``
    mask_sources: tuple[str, ...] = ()  # what ``mask`` comes from, for logs and the legend
    gcps: tuple[GroundControlPoint, ...] = ()  # ground control points (transform is then identity)
    gcps_crs: CRS | None = None  # the CRS of the GCPs' x, y
    rpcs: RPC | None = None  # rational polynomial coefficients (sensor model), carried into COGs
    sources: tuple[str, ...] = ()  # every file whose pixels the scene reads (band files, a mosaic's inputs); empty: just ``path``
    derivation: object | None = None  # a derived band's recipe (pipeline.derived.Derivation), else None

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

    @property
    def rule(self) -> ValueRule:
        """Which raw values are nodata and how raw values become physical values."""
        values = self.nodata_values if self.nodata_values is not None else (
            () if self.nodata is None else (self.nodata,))
        return ValueRule(tuple(values), self.valid_range, self.scale, self.offset)

    @property
    def value_dtype(self) -> np.dtype:
        """dtype of :meth:`values`: the file's for a plain scene; else the file's float dtype, or
        float64 (integers, scaled data)."""
        if self.plain():
            return self.dtype
        rule = self.rule
        return rule.value_dtype(self.dtype) if self.dtype.kind == "f" or rule.scaled else np.dtype(np.float64)

    def plain(self) -> bool:
        """True when the raw array with at most one nodata value says everything (no mask,
        no valid range, no scale/offset): the fast paths need nothing else."""
        rule = self.rule
        return self.mask is None and len(rule.nodata) <= 1 and rule.valid_range is None and not rule.scaled

    def values(self) -> tuple[da.Array, float | None]:
        """(lazy physical values, the nodata value still to honour in them). For a plain scene
        the raw array and its nodata; otherwise float values (the file's float dtype, or float64
        for integers and scaled data) with NaN at every invalid pixel, chunked as ``array``."""
        if self.plain():
            return self.array, self.nodata
        dtype = self.value_dtype
        args = (self.mask,) if self.mask is not None else ()
        return da.map_blocks(clean_block, self.array, *args, rule=self.rule, out_dtype=dtype.str, dtype=dtype,
                             meta=np.empty((0, 0), dtype)), None

    @property
    def files(self) -> tuple[str, ...]:
        """Every file whose pixels the scene reads: ``sources``, or just ``path``."""
        return self.sources or (self.path,)

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
    """Map URLs to GDAL's virtual file systems: http(s) to /vsicurl/ (range requests), s3:// to
    /vsis3/, gs:// to /vsigs/, az:// to /vsiaz/, abfs:// to /vsiadls/; other paths unchanged."""
    return storage.gdal_path(path)


def aligned_chunks(size: int, block: int, target: int, tile: int = 1) -> int:
    """A chunk edge near ``target`` that is a whole multiple of the file's ``block`` edge and of
    the output's ``tile`` edge (so reads and writes both fall on tile boundaries)."""
    unit = tile if block >= size else math.lcm(block, tile)  # striped files: a strip spans the width
    if unit > 2 * target:
        unit = tile  # input alignment would make chunks too large: keep the output's
    k = max(1, round(target / unit))
    return min(size, k * unit)


def resolve_nodata(declared: float | None, setting, dtype: np.dtype) -> float | None:
    """The nodata value to honour: the config's number, the file's (``file``) or none (``none``);
    for a list, the first of :func:`resolve_nodata_values`."""
    values = resolve_nodata_values(declared, setting, dtype)
    return values[0] if values else None


def resolve_nodata_values(declared: float | None, setting, dtype: np.dtype) -> tuple[float, ...]:
    """The nodata raw values to honour: the config's number or list of numbers, the file's
    (``file``) or none (``none``). Values the dtype cannot hold are dropped with a warning;
    NaN is dropped (it is always nodata for floats)."""
    if setting == "none":
        return ()
    if setting == "file":
        candidates = [] if declared is None else [declared]
    elif isinstance(setting, (list, tuple)):
        candidates = [float(v) for v in setting]
    else:
        candidates = [float(setting)]
    out: list[float] = []
    for value in candidates:
        if isinstance(value, float) and math.isnan(value):
            continue  # NaN is always nodata for floats; ints cannot hold it
        if np.issubdtype(dtype, np.integer):
            info = np.iinfo(dtype)
            if not math.isfinite(value) or value != int(value) or not info.min <= value <= info.max:
                log.warning("nodata %s cannot occur in %s data; no pixel is masked by it", value, dtype)
                continue
        if value not in out:
            out.append(value)
    return tuple(out)


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


def read_window(path: str, band: int, block_info=None, out: np.ndarray | None = None,
                access: "storage.Access | None" = None) -> np.ndarray:
    """Block kernel: one chunk of ``band``, read with its own file handle (into ``out`` if given);
    ``access``: object-storage settings and credentials, carried by the task (workers need none)."""
    (y0, y1), (x0, x1) = block_info[None]["array-location"]
    lay = tiffread.layout(path, band)  # float32 DEFLATE + predictor 3: decoded in 0.6x GDAL's CPU
    if lay is not None and (out is None or out.dtype == np.float32):
        buf = out if out is not None else np.empty((y1 - y0, x1 - x0), np.float32)
        if tiffread.read_window(lay, path, ((y0, y1), (x0, x1)), buf):
            return buf
    with storage.gdal_env(access), rasterio.open(path) as src:
        return src.read(band, window=Window(x0, y0, x1 - x0, y1 - y0), out=out)


def read_invalid(path: str, band: int, gdal_mask: bool, qa: MaskRaster | None, block_info=None,
                 access: "storage.Access | None" = None) -> np.ndarray:
    """Block kernel: True where a chunk's pixels are invalid by GDAL's mask for ``band`` of
    ``path`` (``gdal_mask``: 0 in ``read_masks``) or flagged by the ``qa`` raster."""
    (y0, y1), (x0, x1) = block_info[None]["array-location"]
    window = Window(x0, y0, x1 - x0, y1 - y0)
    bad = np.zeros((y1 - y0, x1 - x0), bool)
    with storage.gdal_env(access):
        return _invalid(path, band, gdal_mask, qa, window, bad)


def _invalid(path, band, gdal_mask, qa, window, bad) -> np.ndarray:
    if gdal_mask:
        with rasterio.open(path) as src:
            bad |= src.read_masks(band, window=window) == 0
    if qa is not None:
        with raster_errors(qa.path), rasterio.open(gdal_path(qa.path)) as src:
            bad |= qa.flagged(src.read(qa.band, window=window))
    return bad


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


def _scale_setting(name: str, setting, declared: float | None, default: float) -> float:
    value = (default if declared is None else float(declared)) if setting == "file" else float(setting)
    if not math.isfinite(value):
        raise ConfigError(f"{name}: {value} is not a finite number")
    return value


def gdal_mask_kind(flags) -> str | None:
    """The kind of GDAL mask a band has beyond its nodata value (``per_dataset`` internal or
    external ``.msk`` mask, ``alpha`` band, or a per-band mask), or None (all valid, or nodata only)."""
    names = {f.name for f in flags}
    if "all_valid" in names or "nodata" in names:
        return None
    if "alpha" in names:
        return "alpha band"
    return "per-dataset mask" if "per_dataset" in names else "per-band mask"


def _open_mask_raster(path: str, qa: MaskRaster, shape, transform, crs) -> None:
    """Check the mask raster opens, has the band, holds integers when bits are asked for, and
    lies on the scene's grid: a :class:`ConfigError` naming both files otherwise."""
    if not is_url(qa.path) and not os.path.exists(qa.path):
        raise ConfigError(f"mask.path: {qa.path} not found")
    with raster_errors(qa.path):
        try:
            with rasterio.open(gdal_path(qa.path)) as m:
                count, dtype = m.count, np.dtype(m.dtypes[min(qa.band, m.count) - 1])
                grid = ((m.height, m.width), m.transform, m.crs)
        except rasterio.errors.RasterioIOError as e:
            raise ConfigError(f"mask.path: {qa.path} is not a readable raster ({str(e).splitlines()[0]})") from None
    if qa.band > count:
        raise ConfigError(f"mask.band: {qa.path} has {count} band(s), band {qa.band} was asked for")
    if qa.bits and dtype.kind not in "iu":
        raise ConfigError(f"mask.bits: {qa.path} holds {dtype} values; bit flags need integers")
    differ = [name for name, a, b in zip(("shape", "transform", "CRS"), grid, (shape, transform, crs))
              if (not a.almost_equals(b) if name == "transform" else a != b)]
    if differ:
        raise ConfigError(f"mask.path: {qa.path} is not on the grid of {path} (its {', '.join(differ)} differ); "
                          "the mask raster must have the same shape, transform and CRS")


def open_scene(path: str, band: int = 1, nodata="file", chunk: int = 2048, tile: int = 1, *,
               valid_range: tuple[float, float] | None = None, gdal_mask: bool = True,
               mask: MaskRaster | None = None, scale: float | str = "file", offset: float | str = "file",
               units: str = "file") -> Scene:
    """Open ``band`` of ``path`` lazily, chunked along the file's tiles (and along the output's
    ``tile`` edge when given), with that band's own metadata.

    Parameters
    ----------
    path : str
        A local raster, a URL (read through ``/vsicurl/``) or a GDAL ``/vsi`` path.
    band : int
        1-based band index; every property below is this band's own.
    nodata : "file" | "none" | float | list of float
        Raw nodata value(s): the band's declared one, none, or the given value(s).
    chunk, tile : int
        Target chunk edge (pixels) and the output tile edge the chunks align to.
    valid_range : (float, float), optional
        Inclusive range of valid raw values; pixels outside it are nodata.
    gdal_mask : bool
        Honour GDAL's mask for the band (internal or ``.msk`` mask, alpha band) when it has one
        beyond its nodata value; read per chunk only then.
    mask : MaskRaster, optional
        A raster on the same grid whose flagged pixels are invalid.
    scale, offset : "file" | float
        ``value = raw * scale + offset``; ``file``: the band's metadata (1 and 0 when absent).
    units : str
        The physical values' units; ``file``: the band's unit type (None when absent).

    Returns
    -------
    Scene
        Nothing is read before compute.

    Raises
    ------
    InputError
        The file is missing, unreadable or of an unsupported dtype.
    ConfigError
        The band does not exist, the scale is not positive, or the mask raster is unusable or on
        another grid.
    """
    if not is_url(path) and not os.path.exists(path):
        raise InputError(f"{path}: input file not found")
    src_path = gdal_path(path)
    with raster_errors(path):
        try:
            with rasterio.open(src_path) as src:
                count = src.count
                if band > count:
                    raise ConfigError(f"band: {path} has {count} band(s), band {band} was asked for")
                i = band - 1
                dtype, declared = np.dtype(src.dtypes[i]), src.nodatavals[i]
                file_scale, file_offset, file_units = src.scales[i], src.offsets[i], src.units[i]
                mask_kind = gdal_mask_kind(src.mask_flag_enums[i])
                interp = src.colorinterp[i].name
                crs, transform = src.crs, src.transform
                gcps, gcps_crs = src.gcps
                rpcs = src.rpcs
                block = src.block_shapes[i]
                height, width = src.height, src.width
                if band <= count:
                    check_layout(src, path, band)
        except rasterio.errors.RasterioIOError as e:
            raise InputError(f"{path}: not a readable raster ({str(e).splitlines()[0]})") from None
    if dtype.name not in SUPPORTED_DTYPES:
        raise InputError(f"{path}: data type {dtype} is not supported ({', '.join(SUPPORTED_DTYPES)})")
    if interp in ("alpha", "palette"):
        log.warning("%s band %d is %s: its values are %s, not measurements", path, band,
                    "an alpha band" if interp == "alpha" else "paletted",
                    "opacities" if interp == "alpha" else "colour-table indices")
    k_scale = _scale_setting("scale", scale, file_scale, 1.0)
    k_offset = _scale_setting("offset", offset, file_offset, 0.0)
    if k_scale <= 0:
        raise ConfigError(f"scale: {k_scale} for {path} band {band}: the scale must be positive "
                          "(a zero or negative scale would merge or reverse the value order)")
    if valid_range is not None and not valid_range[0] <= valid_range[1]:
        raise ConfigError(f"valid_range: {list(valid_range)} is empty (lo > hi)")
    if mask is not None:
        _open_mask_raster(path, mask, (height, width), transform, crs)
    cy, cx = bounded_chunks(height, width, block, chunk, tile)
    chunks = (chunk_tuple(height, cy), chunk_tuple(width, cx))
    mtime = os.stat(path).st_mtime_ns if not is_url(path) else 0
    token = dask.base.tokenize(src_path, band, cy, cx, mtime)
    access = storage.access_for(path) or (storage.access_for(mask.path) if mask is not None else None)
    array = da.map_blocks(
        read_window, src_path, band, access=access, chunks=chunks,
        dtype=dtype, meta=np.empty((0, 0), dtype), name=f"{READ_PREFIX}{token}",
    )
    use_gdal = gdal_mask and mask_kind is not None
    sources = ((f"GDAL {mask_kind}",) if use_gdal else ()) + ((mask.describe(),) if mask is not None else ())
    invalid = None
    if sources:
        qa_time = os.stat(mask.path).st_mtime_ns if mask is not None and not is_url(mask.path) else 0
        mtoken = dask.base.tokenize(token, use_gdal, mask, qa_time)
        invalid = da.map_blocks(read_invalid, src_path, band, use_gdal, mask, access=access, chunks=chunks, dtype=bool,
                                meta=np.empty((0, 0), bool), name=f"mask-{mtoken}")
    elif mask_kind is not None:
        log.info("%s band %d: its GDAL %s is ignored (gdal_mask: false)", path, band, mask_kind)
    values = resolve_nodata_values(declared, nodata, dtype)
    scene = Scene(
        path=path, band=band, array=array,
        nodata=values[0] if values else None,
        crs=crs, transform=transform,
        gcps=tuple(gcps), gcps_crs=gcps_crs if gcps else None, rpcs=rpcs,
        nodata_values=values,
        valid_range=None if valid_range is None else (float(valid_range[0]), float(valid_range[1])),
        scale=k_scale, offset=k_offset,
        units=(file_units or None) if units == "file" else units,
        mask=invalid, mask_sources=sources,
    )
    if not scene.georeferenced:
        log.warning("%s has no georeferencing (no CRS, transform or GCPs): the output is in pixel coordinates", path)
    return scene
