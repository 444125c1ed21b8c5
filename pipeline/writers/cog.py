"""Cloud-Optimized GeoTIFF writer: the output at a local path, two ways.

**Streamed** (:func:`write_cog_streamed`, on a distributed scheduler): the dask tasks classify, colour and compress their tiles and overview tiles; this
process gathers the tile sizes, then writes the file front to back from the compressed bytes
(:mod:`pipeline.writers.cogstream`). The workers need no disk shared with the client.

**GDAL-assembled** (:func:`write_cog_gdal`, on a local scheduler: its memory stays flat at any
scene size, the streamed writer's does not yet; same pixels at every level, not the same bytes):

1. **Staging, in parallel, lock-free.** An uncompressed tiled GeoTIFF with the output's tile
   size is created beside the output; GDAL pre-allocates every tile, so each tile has a fixed
   byte offset (read back from GDAL). Every dask task classifies its chunk, colours it if
   asked, and writes its tiles straight to their offsets (``os.pwrite``). Tasks touch disjoint
   bytes, so no lock is needed, and a task that is re-run writes the same bytes again.
   Each task returns its class counts, so the legend comes out of the same pass.
2. **Assembly, once.** GDAL copies the staging file into the COG: tiles compressed on all
   cores (``NUM_THREADS``), internal overviews, colour table, nodata and georeferencing carried
   over (CRS and geotransform, or GCPs and their CRS; RPCs).

Either way the COG is written under a temporary name and checked before it is renamed; any
failure GDAL raises, signals or libtiff only prints, or a failed write, fails the run
(:class:`~pipeline.errors.OutputError`) and replaces nothing.
"""

from __future__ import annotations

import errno
import logging
import math
import os
import sys
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator
from xml.sax.saxutils import escape, quoteattr

import dask
import dask.array as da
import numpy as np
import rasterio
import rasterio.shutil
from affine import Affine
from rasterio._err import CPLE_BaseError  # what rasterio raises for a GDAL failure (CPLE_*Error)
from rasterio.control import GroundControlPoint
from rasterio.enums import ColorInterp
from rasterio.errors import RasterioError

from .. import kernels
from rasterio.windows import Window

from ..errors import OutputError
from ..jobs.atomic import atomic_output, cause, output_errors, partial_path, remove
from ..jobs.config import Output
from .._engine.scratch import scratch
from .cogstream import distributed_client, write_cog_stream
from .tiles import gdal_overview_factors, overview_factors

log = logging.getLogger(__name__.replace("pipeline", "sceneclass", 1))


#: compression levels when the config gives none. ZSTD 3 (zstd's own default) encodes class
#: maps about 30% faster than GDAL's default 9, for files about 20% larger (measured at 1x).
DEFAULT_LEVELS = {"zstd": 3, "deflate": 6}


def cog_options(out: Output) -> dict:
    """GDAL COG driver creation options for the configured output."""
    opts = {
        "BLOCKSIZE": out.blocksize,
        "COMPRESS": out.compression.upper(),
        "NUM_THREADS": "ALL_CPUS",
        "BIGTIFF": "IF_SAFER",
        "OVERVIEWS": "AUTO" if out.overviews else "NONE",
        "OVERVIEW_RESAMPLING": out.overview_resampling.upper(),
    }
    level = out.level if out.level is not None else DEFAULT_LEVELS.get(out.compression)
    if level is not None and out.compression in DEFAULT_LEVELS:
        opts["LEVEL"] = level
    return opts


# ------------------------------------------------------------------ staging files
@dataclass(frozen=True)
class Level:
    """One pre-allocated, uncompressed tiled staging GeoTIFF: full resolution (factor 1) or an
    overview (factor 2, 4, ...), with every tile's byte offset."""

    path: str
    factor: int
    shape: tuple[int, int]
    offsets: np.ndarray  # (tiles_y, tiles_x) int64


def scaled_gcps(gcps, factor: int) -> list[GroundControlPoint]:
    """GCPs on a grid ``factor`` times coarser.

    Parameters
    ----------
    gcps : sequence of rasterio.control.GroundControlPoint
        Row and column in pixels of the full-resolution grid.
    factor : int
        Overview factor (1: unchanged).

    Returns
    -------
    list of GroundControlPoint
        The same ground positions with row and column divided by ``factor``.
    """
    return [GroundControlPoint(row=g.row / factor, col=g.col / factor, x=g.x, y=g.y, z=g.z, id=g.id, info=g.info)
            for g in gcps]


def create_level(path: Path, scene, factor: int, palette: np.ndarray, bands: int, blocksize: int) -> Level:
    """Create one staging level (GDAL pre-allocates every tile) and read back the tile offsets."""
    height, width = (max(1, n // factor) for n in scene.shape)  # GDAL's overview sizes
    if scene.gcps:  # GCPs carry their own CRS; the geotransform stays unset
        georef = {"gcps": scaled_gcps(scene.gcps, factor), "crs": scene.gcps_crs}
    else:
        georef = {"crs": scene.crs, "transform": scene.transform * Affine.scale(factor)}
    if scene.rpcs is not None and factor == 1:  # overviews are pixels only (see vrt_with_overviews)
        georef["rpcs"] = scene.rpcs
    profile = {
        "driver": "GTiff", "width": width, "height": height, "count": bands, "dtype": "uint8",
        **georef, "tiled": True,
        "blockxsize": blocksize, "blockysize": blocksize, "compress": "none",
        "interleave": "pixel", "bigtiff": "IF_SAFER", "sparse_ok": False,
        "nodata": 0 if bands == 1 else None,
    }
    with rasterio.open(path, "w", **profile) as dst:
        if bands == 1:
            dst.write_colormap(1, {i: tuple(int(c) for c in rgba) for i, rgba in enumerate(palette)})
        elif bands == 4:
            dst.colorinterp = [ColorInterp.red, ColorInterp.green, ColorInterp.blue, ColorInterp.alpha]
    ty, tx = math.ceil(height / blocksize), math.ceil(width / blocksize)
    with rasterio.open(path) as src:
        offsets = [src.get_tag_item(f"BLOCK_OFFSET_{i}_{j}", "TIFF", bidx=1)
                   for j in range(ty) for i in range(tx)]
    if None in offsets:
        raise OSError(f"{path}: GDAL did not write the tile index")
    offsets = [int(o) for o in offsets]
    offsets = np.array(offsets, dtype=np.int64).reshape(ty, tx)
    if (offsets <= 0).any():
        raise RuntimeError(f"{path}: GDAL did not pre-allocate every tile")
    return Level(str(path), factor, (height, width), offsets)


def write_region(fd: int, level: Level, pixels: np.ndarray, y0: int, x0: int, blocksize: int) -> None:
    """Write ``pixels`` ((y, x) or (y, x, band)) at (y0, x0) of a staging level: whole tiles
    with one ``pwrite`` each, tiles the region only partly covers row segment by row segment."""
    b = blocksize
    h, w = pixels.shape[:2]
    px = pixels.shape[2] if pixels.ndim == 3 else 1
    H, W = level.shape
    for ty in range(y0 // b, (y0 + h - 1) // b + 1):
        for tx in range(x0 // b, (x0 + w - 1) // b + 1):
            r0, r1 = max(y0, ty * b), min(y0 + h, (ty + 1) * b)
            c0, c1 = max(x0, tx * b), min(x0 + w, (tx + 1) * b)
            base = int(level.offsets[ty, tx])
            part = pixels[r0 - y0:r1 - y0, c0 - x0:c1 - x0]
            whole = r0 == ty * b and c0 == tx * b and r1 == min(H, (ty + 1) * b) and c1 == min(W, (tx + 1) * b)
            if whole:  # the tile's full extent: one write (edge tiles are stored padded)
                tile = np.zeros((b, b) + pixels.shape[2:], np.uint8)
                tile[: r1 - r0, : c1 - c0] = part
                os.pwrite(fd, tile.data, base)
            else:
                for r in range(r0, r1):
                    row = np.ascontiguousarray(part[r - r0])
                    os.pwrite(fd, row.data, base + ((r - ty * b) * b + (c0 - tx * b)) * px)


def decimate(block: np.ndarray, y0: int, x0: int, shape: tuple[int, int], factor: int):
    """Nearest-neighbour overview pixels a chunk owns: overview pixel i (of size // factor)
    samples source pixel i*factor + factor//2, as GDAL's NEAREST does (clamped to the last
    pixel, which only a band narrower than ``factor`` needs). Returns the overview-space origin
    and the pixels as a strided view, or None when the chunk owns none."""
    off = factor // 2
    origin, index = [], []
    for start, n, size in ((y0, block.shape[0], shape[0]), (x0, block.shape[1], shape[1])):
        total = max(1, size // factor)
        i0 = max(0, -(-(start - off) // factor))
        i1 = total if start + n == size else min(total, -(-(start + n - off) // factor))
        if i1 <= i0:
            return None
        first = min(i0 * factor + off, size - 1) - start
        origin.append(i0)
        index.append(slice(first, first + (i1 - i0 - 1) * factor + 1, factor))
    return origin[0], origin[1], block[index[0], index[1]]


def write_chunk(block: np.ndarray, table: np.ndarray | None, levels: list[Level], blocksize: int,
                count: bool = True, block_info=None) -> np.ndarray:
    """Block kernel: look a chunk up in ``table`` (optional: class id -> colour, or 8/16-bit
    value -> class id or colour) and write the result into every staging level (full resolution
    and each overview's decimation); returns the counts of the chunk's values (class ids),
    shape (1, 1, 256) (zeros when ``count`` is false)."""
    (y0, _), (x0, _) = block_info[0]["array-location"]
    shape = levels[0].shape
    if table is None:
        pixels = block
    else:  # (y, x) or (y, x, band), into this thread's buffer: the pixels do not leave this task
        pixels = kernels.lookup_block(block, table, out=scratch("lookup", block.shape + table.shape[1:], table.dtype))
    for level in levels:
        if level.factor == 1:
            part = (y0, x0, pixels)
        else:
            part = decimate(pixels, y0, x0, shape, level.factor)
            if part is None:
                continue
        fd = os.open(level.path, os.O_WRONLY)
        try:
            write_region(fd, level, part[2], part[0], part[1], blocksize)
        finally:
            os.close(fd)
    if not count:
        return np.zeros((1, 1, 256), np.int64)
    return kernels.bincount_block(block, 256)[None, None, :]


def tile_aligned(chunks: tuple[tuple[int, ...], ...], blocksize: int) -> bool:
    """True when every chunk boundary falls on a tile boundary."""
    return all(c % blocksize == 0 for dim in chunks for c in dim[:-1])


def stage(classes: da.Array, table: np.ndarray | None, levels: list[Level], blocksize: int,
          count: bool = True) -> da.Array:
    """Lazy: write every chunk (looked up in ``table``, if any) into the staging levels; the
    result is the class counts (zeros when ``count`` is false)."""
    if not tile_aligned(classes.chunks, blocksize):
        target = tuple(max(blocksize, round(dim[0] / blocksize) * blocksize) for dim in classes.chunks)
        log.debug("rechunking %s to %s to align with %d-pixel tiles", classes.chunksize, target, blocksize)
        classes = classes.rechunk(target)
    table = None if table is None else dask.delayed(table, pure=True)
    parts = classes.map_blocks(
        write_chunk, table, dask.delayed(levels, pure=True), blocksize, count,
        new_axis=2, chunks=(1, 1, 256), dtype=np.int64, meta=np.empty((0, 0, 0), np.int64),
    )
    return parts.sum(axis=(0, 1), dtype=np.int64)


def vrt_georeferencing(src) -> str:
    """VRT elements that georeference a VRT like a dataset.

    Parameters
    ----------
    src : rasterio.io.DatasetReader
        The open dataset the VRT wraps.

    Returns
    -------
    str
        ``<GCPList>`` with the GCPs' CRS, or ``<SRS>`` and ``<GeoTransform>`` (nothing for a
        dataset without georeferencing); then its RPC metadata, if any.
    """
    rpc = src.tags(ns="RPC")
    if rpc:
        items = "".join(f"<MDI key={quoteattr(k)}>{escape(v)}</MDI>" for k, v in rpc.items())
        rpc = f'<Metadata domain="RPC">{items}</Metadata>'
    return _vrt_grid(src) + (rpc or "")


def _vrt_grid(src) -> str:
    gcps, gcps_crs = src.gcps
    if gcps:
        points = "".join(
            f"<GCP Id={quoteattr(g.id or '')} Info={quoteattr(g.info or '')} Pixel=\"{float(g.col)!r}\" "
            f"Line=\"{float(g.row)!r}\" X=\"{float(g.x)!r}\" Y=\"{float(g.y)!r}\" Z=\"{float(g.z or 0.0)!r}\"/>"
            for g in gcps)
        return f"<GCPList Projection={quoteattr(gcps_crs.to_wkt() if gcps_crs else '')}>{points}</GCPList>"
    if src.crs is None and src.transform.is_identity:
        return ""  # no georeferencing (as GDAL's own VRT of such a file has none)
    return (f"<SRS>{escape(src.crs.to_wkt()) if src.crs else ''}</SRS>"
            f"<GeoTransform>{', '.join(repr(v) for v in src.transform.to_gdal())}</GeoTransform>")


def vrt_with_overviews(levels: list[Level], path: Path) -> Path:
    """A VRT over the full-resolution staging file that declares the other levels as its
    overviews, so GDAL's COG driver copies them instead of computing its own."""
    with rasterio.open(levels[0].path) as src:
        bands = src.count
        cmap = src.colormap(1) if bands == 1 else None
        interp = [c.name.capitalize() for c in src.colorinterp]
        parts = [f'<VRTDataset rasterXSize="{src.width}" rasterYSize="{src.height}">', vrt_georeferencing(src)]
    for b in range(1, bands + 1):
        parts.append(f'<VRTRasterBand dataType="Byte" band="{b}">')
        if cmap is not None:
            parts.append("<NoDataValue>0</NoDataValue><ColorInterp>Palette</ColorInterp><ColorTable>")
            parts += [f'<Entry c1="{c[0]}" c2="{c[1]}" c3="{c[2]}" c4="{c[3]}"/>' for _, c in sorted(cmap.items())]
            parts.append("</ColorTable>")
        else:
            parts.append(f"<ColorInterp>{interp[b - 1]}</ColorInterp>")
        source = '<SourceFilename relativeToVRT="0">{}</SourceFilename><SourceBand>{}</SourceBand>'
        parts.append(f"<SimpleSource>{source.format(escape(levels[0].path), b)}</SimpleSource>")
        parts += [f"<Overview>{source.format(escape(lv.path), b)}</Overview>" for lv in levels[1:]]
        parts.append("</VRTRasterBand>")
    parts.append("</VRTDataset>")
    path.write_text("".join(parts), encoding="utf-8")
    return path


# --------------------------------------------------------------------- the writer
class GdalFailures(logging.Handler):
    """Collects the failures GDAL signals in this thread while it runs (rasterio logs each
    CE_Failure as "GDAL signalled an error" at INFO and lets the call return)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if isinstance(record.msg, str) and record.msg.startswith("GDAL signalled an error") and record.args:
            self.messages.append(str(record.args[-1]))

    def __enter__(self) -> "GdalFailures":
        logger = logging.getLogger("rasterio._env")
        self._level = logger.level
        logger.addHandler(self)
        if logger.getEffectiveLevel() > logging.INFO:
            logger.setLevel(logging.INFO)
        return self

    def __exit__(self, *exc) -> None:
        logger = logging.getLogger("rasterio._env")
        logger.removeHandler(self)
        logger.setLevel(self._level)


def _disk_full(folder: Path, need: int) -> OSError | None:
    """The error reserving ``need`` bytes in ``folder`` gives (``No space left on device``), if any."""
    probe = partial_path(folder / "space", ".probe", make=None)
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as e:
        return e
    try:
        os.posix_fallocate(fd, 0, max(need, 1 << 20))
    except OSError as e:
        return None if e.errno in (errno.EOPNOTSUPP, errno.EINVAL) else e
    finally:
        os.close(fd)
        remove(probe)
    return None


@contextmanager
def _stderr_lines() -> Iterator[list[str]]:
    """Capture what C libraries print on file descriptor 2 inside (libtiff reports some write
    failures there and nowhere else); yields the list the lines are collected in."""
    lines: list[str] = []
    sys.stderr.flush()
    read_fd, write_fd = os.pipe()
    saved = os.dup(2)
    chunks: list[bytes] = []
    drain = threading.Thread(target=lambda: chunks.extend(iter(lambda: os.read(read_fd, 65536), b"")),
                             name="sceneclass-stderr", daemon=True)
    drain.start()
    os.dup2(write_fd, 2)
    os.close(write_fd)
    try:
        yield lines
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        drain.join()
        os.close(read_fd)
        lines.extend(b"".join(chunks).decode(errors="replace").splitlines())


def _is_failure(line: str) -> bool:
    low = line.lower()
    return "warning" not in low and (line.startswith("ERROR") or "error" in low or "no space" in low)


@contextmanager
def gdal_writing(final: Path, what: str, need: int = 0) -> Iterator[None]:
    """GDAL writes inside: a failure GDAL raises, signals and returns from, or libtiff only
    prints, becomes one :class:`OutputError` naming ``final`` and the cause (``No space left
    on device`` when the folder cannot hold ``need`` more bytes).

    Raises
    ------
    OutputError
        When anything inside failed (GDAL's and rasterio's errors, ``OSError`` and
        ``ValueError``; other exceptions pass).
    """
    problems: list[str] = []
    with GdalFailures() as failures, _stderr_lines() as printed:
        try:
            yield
        except (OSError, ValueError, RasterioError, CPLE_BaseError) as e:
            problems.append(cause(e))
    failed = [ln for ln in printed if _is_failure(ln)]
    for line in printed:
        (log.debug if line in failed else log.warning)("GDAL: %s", line)
    problems += failures.messages + failed
    if problems:
        full = _disk_full(final.parent, need)
        reason = full.strerror if full is not None and full.strerror else problems[0]
        raise OutputError(f"{final}: {what} failed ({reason}); nothing was replaced")


def verify_cog(path: Path, source: Path) -> None:
    """Check an assembled COG before it replaces anything: it opens, has the source's size,
    bands and overview count, its last full-resolution tile holds the source's pixels, and the
    last tile of every overview decodes.

    Raises
    ------
    OSError
        (rasterio's ``RasterioIOError``) when the file cannot be opened or a tile not read.
    ValueError
        When the file is readable but not what the source holds.
    """
    with rasterio.open(source) as src, rasterio.open(path) as cog:
        if (cog.width, cog.height, cog.count) != (src.width, src.height, src.count):
            raise ValueError(f"the assembled file is {cog.width}x{cog.height}x{cog.count}, "
                             f"not {src.width}x{src.height}x{src.count}")
        by, bx = cog.block_shapes[0]
        last = Window((cog.width - 1) // bx * bx, (cog.height - 1) // by * by, 0, 0)
        last = Window(last.col_off, last.row_off, cog.width - last.col_off, cog.height - last.row_off)
        if not np.array_equal(cog.read(window=last), src.read(window=last)):
            raise ValueError("its last tile differs from the staged pixels")
        factors = cog.overviews(1)
        if len(factors) != len(src.overviews(1)) and src.overviews(1):
            raise ValueError(f"it has {len(factors)} overview levels, not {len(src.overviews(1))}")
    for level in range(len(factors)):
        with rasterio.open(path, overview_level=level) as ov:
            by, bx = ov.block_shapes[0]
            c0, r0 = (ov.width - 1) // bx * bx, (ov.height - 1) // by * by
            ov.read(window=Window(c0, r0, ov.width - c0, ov.height - r0))


def assemble(staging: Path, target: Path, out: Output, final: Path | None = None) -> None:
    """GDAL: staging GeoTIFF (or VRT with overviews) -> COG at ``target`` (compressed on all
    cores, overviews), verified with :func:`verify_cog`. ``final``: the output's name in
    messages (``target`` is usually its temporary name).

    Raises
    ------
    OutputError
        When GDAL fails (even a failure it only reports) or the written file does not verify;
        names the output and the cause.
    """
    final = target if final is None else final
    need = os.path.getsize(staging) if os.path.exists(staging) else 0
    with gdal_writing(final, "assembling the COG", need):
        rasterio.shutil.copy(staging, target, driver="COG", **cog_options(out))
    with gdal_writing(final, "checking the assembled COG", need):
        verify_cog(target, staging)


def write_cog(classes: da.Array, scene, palette: np.ndarray, out: Output, final: Path, bands: int = 0,
              count: bool = True, staged: Callable[[], None] | None = None,
              lut: np.ndarray | None = None) -> np.ndarray:
    """Write class ids (``bands=0``: paletted) or their colours (3: RGB, 4: RGBA) as a COG at
    ``final``: on a distributed scheduler with :func:`write_cog_streamed` (the workers need no
    disk shared with this process), on a local one (threads, processes) with
    :func:`write_cog_gdal`, whose memory stays flat whatever the scene's size (each task writes
    its tiles and overview tiles to the staging file; the streamed writer's overview tasks hold
    full-resolution chunks until their group is complete, so its memory grows with the scene).
    Both give the same pixels at every level (the tests compare them), not the same bytes.

    Parameters and returns as for :func:`write_cog_streamed`.
    """
    if distributed_client() is None:
        return write_cog_gdal(classes, scene, palette, out, final, bands, count, staged, lut)
    return write_cog_streamed(classes, scene, palette, out, final, bands, count, staged, lut)


def write_cog_streamed(classes: da.Array, scene, palette: np.ndarray, out: Output, final: Path, bands: int = 0,
                       count: bool = True, staged: Callable[[], None] | None = None,
                       lut: np.ndarray | None = None) -> np.ndarray:
    """Write class ids (``bands=0``: paletted) or their colours (3: RGB, 4: RGBA) as a COG at
    ``final``: the tasks compress the tiles, this process writes the file under a temporary
    name (:func:`pipeline.writers.cogstream.write_cog_stream`), checks it
    (:func:`verify_written`) and puts it in place.

    Parameters
    ----------
    classes, scene, palette, out, bands, count, staged, lut
        As for :func:`pipeline.writers.cogstream.write_cog_stream`.
    final : Path
        The output path (a local path of this process; the workers need not see it).

    Returns
    -------
    ndarray, int64, (256,)
        Pixels per class id (zeros when ``count`` is false).

    Raises
    ------
    OutputError
        The file could not be written or does not read back; nothing was replaced.
    """
    final.parent.mkdir(parents=True, exist_ok=True)

    @contextmanager
    def destination() -> Iterator[_Destination]:
        with atomic_output(final, ".tif") as tmp:
            with output_errors(final), open(tmp, "wb") as f:
                yield _Destination(f, final)
            with gdal_writing(final, "checking the written COG"):
                verify_written(tmp, scene.shape, bands or 1, out)

    spool = None
    try:
        if distributed_client() is None:
            with output_errors(final):
                spool = partial_path(final, ".tiles", make="dir")
        counts = write_cog_stream(classes, scene, palette, out, destination, bands, count, staged, lut, spool=spool)
    finally:
        if spool is not None:
            remove(spool)
    log.info("wrote %s", final)
    return counts


class _Destination:
    """A file being written; a failed write becomes an :class:`OutputError` naming the output."""

    def __init__(self, f, final: Path) -> None:
        self._f, self._final = f, final

    def write(self, data) -> int:
        try:
            return self._f.write(data)
        except OSError as e:
            raise OutputError(f"{self._final}: cannot write the output ({cause(e)}); nothing was replaced") from None


def verify_written(path: Path, shape: tuple[int, int], bands: int, out: Output) -> None:
    """Check a written COG before it replaces anything: GDAL opens it with the expected size,
    bands, tile size and overview count, and the last tile of every level decodes.

    Raises
    ------
    OSError
        (rasterio's ``RasterioIOError``) when the file cannot be opened or a tile not read.
    ValueError
        When the file is readable but not what was written.
    """
    rule = overview_factors if out.overview_resampling == "nearest" else gdal_overview_factors
    want_overviews = len(rule(shape, out.blocksize)) if out.overviews else 0
    with rasterio.open(path) as cog:
        if (cog.height, cog.width, cog.count) != (*shape, bands):
            raise ValueError(f"the written file is {cog.width}x{cog.height}x{cog.count}, "
                             f"not {shape[1]}x{shape[0]}x{bands}")
        if cog.block_shapes[0] != (out.blocksize, out.blocksize) or len(cog.overviews(1)) != want_overviews:
            raise ValueError("its tiles or overviews are not the ones written")
    for level in [None, *range(want_overviews)]:
        with rasterio.open(path, overview_level=level) as ov:
            by, bx = ov.block_shapes[0]
            c0, r0 = (ov.width - 1) // bx * bx, (ov.height - 1) // by * by
            ov.read(window=Window(c0, r0, ov.width - c0, ov.height - r0))


def write_cog_gdal(classes: da.Array, scene, palette: np.ndarray, out: Output, final: Path, bands: int = 0,
                   count: bool = True, staged: Callable[[], None] | None = None,
                   lut: np.ndarray | None = None) -> np.ndarray:
    """The GDAL-assembled writer: staging files beside the output (a disk the tasks share), then
    GDAL's COG driver in one process (see the module's description). Used for ``mode`` overviews
    on local schedulers (see :func:`write_cog`). Write class ids (``bands=0``: paletted) or their colours (3: RGB, 4: RGBA) as a COG.

    Returns the pixel count of every class id (0..255) from the same pass (zeros when
    ``count`` is false: the caller knows them already). ``staged`` is called once every pixel
    is staged, before the assembly (the pass's input is no longer needed then). With ``lut``
    (the class id of every 8/16-bit value), ``classes`` holds the values and the write tasks
    look them up themselves, colours included, in one gather (``count`` must then be false).
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    table = np.ascontiguousarray(palette[:, :bands]) if bands else None  # class id -> colour
    if lut is not None:  # value -> class id, or value -> colour
        if count:
            raise ValueError("write_cog: with a value look-up table the caller counts the classes")
        table = lut if table is None else np.ascontiguousarray(table[lut])
    # nearest overviews are decimated by the write tasks; GDAL computes mode overviews itself
    own = out.overviews and out.overview_resampling == "nearest"
    factors = [1] + (overview_factors(scene.shape, out.blocksize) if own else [])
    paths: list[Path] = []
    try:
        for suffix in [f".staging{f}.tif" for f in factors] + [".staging.vrt"]:
            paths.append(partial_path(final, suffix))
        with output_errors(final), gdal_writing(final, "creating the staging files"):
            levels = [create_level(p, scene, f, palette, bands or 1, out.blocksize) for p, f in zip(paths, factors)]
        (counts,) = dask.compute(stage(classes, table, levels, out.blocksize, count))
        if staged is not None:
            staged()
        source = vrt_with_overviews(levels, paths[-1]) if len(levels) > 1 else paths[0]
        log.info("assembling the COG (compression on all cores, %d overview levels)", len(levels) - 1)
        client = distributed_client()
        with atomic_output(final, ".tif") as tmp:
            if client is None:
                assemble(source, tmp, out, final)
            else:  # a worker assembles it, so no pixel travels to the client
                client.submit(assemble, source, tmp, out, final, pure=False).result()
    finally:
        for p in paths:
            remove(p)
    log.info("wrote %s", final)
    return counts
