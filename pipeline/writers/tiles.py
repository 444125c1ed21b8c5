"""The tiles of a COG: overview sizes, overview pixels and compressed tile bytes.

The overview pixels are computed exactly as GDAL computes them for a COG:

- ``nearest``: each level from the one before it: pixel ``i`` is pixel ``floor(i*r + 0.5)`` of
  the level before, ``r`` the ratio of the two sizes (what GDAL's COG driver does with
  ``OVERVIEW_RESAMPLING=NEAREST``: mostly ``i*f``, shifted by one here and there where a size
  is odd); composed, every overview pixel samples one full-resolution pixel
  (:func:`nearest_sources`);
- ``mode``: each level from the one before it, over the source window
  ``[floor(i*r), ceil((i+1)*r))`` with ``r`` the ratio of the two sizes (GDAL's windows, 3 pixels
  wide where the sizes are odd); the value that first reaches the highest count in row-major
  order wins (GDAL's tie rule), nodata (0 for class ids) is skipped and is the result when the
  window holds nothing else.

Overview sizes are ``max(1, size // factor)``, as GDAL's COG driver makes them.
"""

from __future__ import annotations


import numpy as np

from .._engine.scratch import scratch
from ..kernels import copy_into, one_pixel

#: TIFF Compression tag values
COMPRESSION_CODES = {"none": 1, "lzw": 5, "deflate": 8, "zstd": 50000}


def overview_factors(shape: tuple[int, int], blocksize: int) -> list[int]:
    """The overview factors GDAL's COG driver makes (``OVERVIEWS=AUTO``).

    Parameters
    ----------
    shape : (int, int)
        Full-resolution height and width in pixels.
    blocksize : int
        Tile size in pixels.

    Returns
    -------
    list of int
        2, 4, ... while the level before (``size // factor``) is larger than a tile, smallest
        first (empty when the raster fits in one tile).
    """
    factors, f = [], 2
    while max(max(1, n // (f // 2)) for n in shape) > blocksize:
        factors.append(f)
        f *= 2
    return factors


def level_shape(shape: tuple[int, int], factor: int) -> tuple[int, int]:
    """The size GDAL gives the overview of ``factor``: ``max(1, n // factor)`` per axis."""
    return tuple(max(1, n // factor) for n in shape)


# ------------------------------------------------------------------- overview pixels
def nearest_index(n: int, d: int) -> np.ndarray:
    """GDAL's NEAREST from ``n`` pixels to ``d``: destination pixel ``i`` takes source pixel
    ``floor(i * n/d + 0.5)`` (int64, increasing, all below ``n``)."""
    return np.minimum(np.floor(np.arange(d, dtype=np.float64) * (n / d) + 0.5).astype(np.int64), n - 1)


def nearest_sources(size: int, factors: list[int]) -> list[np.ndarray]:
    """Along one axis of ``size`` pixels, the full-resolution pixel every nearest overview pixel
    samples, per overview factor (each level made from the one before, as GDAL makes them).

    Parameters
    ----------
    size : int
        Full-resolution pixels along the axis.
    factors : list of int
        Overview factors, 2, 4, ...

    Returns
    -------
    list of ndarray of int64
        Per factor, ``max(1, size // factor)`` increasing pixel indices.
    """
    out, prev = [], np.arange(size, dtype=np.int64)
    for f in factors:
        prev = prev[nearest_index(prev.size, max(1, size // f))]
        out.append(prev)
    return out


#: GDAL's overview builder reads at most this many bytes of source rows at once (GDAL_OVR_CHUNK_MAX_SIZE)
GDAL_OVR_CHUNK_MAX = 10 * 1024 * 1024


def gdal_row_chunk(src_shape: tuple[int, int], dst_shape: tuple[int, int], blocksize: int, bands: int) -> int:
    """Rows of the source GDAL's overview builder resamples at once (GDALRegenerateOverviewsEx):
    the source's block height, at least twice the factor, doubled while the rows take less than
    half of :data:`GDAL_OVR_CHUNK_MAX`. A window never reaches across two such chunks."""
    factor = max(1, int(src_shape[1] / dst_shape[1] + 0.5), int(src_shape[0] / dst_shape[0] + 0.5))
    rows = max(blocksize, 2 * factor)
    if rows * src_shape[1] * bands <= GDAL_OVR_CHUNK_MAX:
        while rows * src_shape[1] * bands < GDAL_OVR_CHUNK_MAX // 2:
            rows = max(rows * 2, 2 * factor)
    return rows


def spans(n: int, d: int, rows: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """GDAL's source window ``[start, end)`` of each of the ``d`` destination pixels over ``n``
    source pixels (overview.cpp: ratio ``r = n/d``, start ``floor(i*r + 1e-8)``, end
    ``ceil((i+1)*r - 1e-8)``, at least one pixel); with ``rows``, GDAL's row chunks: destination
    row ``i`` belongs to the chunk ``c`` with ``round(c*rows/r) <= i < round((c+1)*rows/r)`` and
    its window is clipped to the chunk's source rows."""
    r = n / d
    i = np.arange(d, dtype=np.float64)
    lo, hi = np.zeros(d, np.int64), np.full(d, n, np.int64)
    if rows is not None and rows < n:
        for y0 in range(0, n, rows):
            y1 = min(n, y0 + rows)
            d0 = int(0.5 + y0 / r)
            d1 = d if y1 == n else int(0.5 + y1 / r)
            lo[d0:d1], hi[d0:d1] = y0, y1
    start = np.maximum(np.floor(i * r + 1e-8).astype(np.int64), lo)
    end = np.ceil((i + 1) * r - 1e-8).astype(np.int64)
    end = np.minimum(np.where(end == start, end + 1, end), hi)
    return start, end


#: destination pixels :func:`mode_block` works on at once
MODE_BAND_PIXELS = 16384


def mode_block(src: np.ndarray, ys: np.ndarray, ye: np.ndarray, xs: np.ndarray, xe: np.ndarray,
               nodata: int | None) -> np.ndarray:
    """GDAL's byte MODE over windows of ``src``.

    Parameters
    ----------
    src : ndarray, uint8, (h, w) or (h, w, band)
        The source pixels the windows index (bands are reduced independently).
    ys, ye, xs, xe : ndarray of int64
        Window starts and ends (exclusive) along y (one per destination row) and x (one per
        destination column), in ``src``'s coordinates.
    nodata : int or None
        The value skipped (and returned for windows holding nothing else); None: every value counts.

    Returns
    -------
    ndarray, uint8, (len(ys), len(xs)) or (len(ys), len(xs), band)
        The most frequent value of each window; among values with the same count, the one that
        reached that count first in row-major order (GDAL keeps a value only when its running
        count passes the best so far).
    """
    if src.ndim == 3:
        return np.stack([mode_block(src[..., b], ys, ye, xs, xe, nodata) for b in range(src.shape[2])], axis=-1)
    band = max(1, MODE_BAND_PIXELS // max(1, len(xs)))
    if len(ys) > band:  # row bands whose working arrays stay in the CPU cache (about 4x faster)
        return np.concatenate([mode_block(src, ys[i:i + band], ye[i:i + band], xs, xe, nodata)
                               for i in range(0, len(ys), band)], axis=0)
    ly, lx = max(1, int((ye - ys).max())), max(1, int((xe - xs).max()))
    h, w = src.shape
    win = []  # the window's positions in row-major order (at most 3 x 3), -1 where no value
    for a in range(ly):
        rows = ys + a
        rsel = np.take(src, np.minimum(rows, h - 1), axis=0)
        for b in range(lx):
            cols = xs + b
            v = np.take(rsel, np.minimum(cols, w - 1), axis=1).astype(np.int16)
            bad = ~((rows < ye)[:, None] & (cols < xe)[None, :])
            if nodata is not None:
                bad |= v == nodata
            win.append(np.where(bad, np.int16(-1), v))  # np.where: no branch per pixel
    best = np.zeros(win[0].shape, np.int8)  # counts: at most 9
    value = np.full(win[0].shape, 0 if nodata is None else nodata, np.int16)
    count = np.empty(win[0].shape, np.int8)
    same = np.empty(win[0].shape, bool)
    for p, v in enumerate(win):
        count[...] = 0
        for q in range(p + 1):
            np.equal(win[q], v, out=same)
            count += same.view(np.int8)
        count *= (v >= 0).view(np.int8)
        np.greater(count, best, out=same)
        value = np.where(same, v, value)
        np.maximum(best, count, out=best)
    return value.astype(np.uint8)


# ------------------------------------------------------------------------- encoding
def encoder(compression: str, level: int | None):
    """A function ``bytes-like -> bytes`` that compresses one tile as TIFF expects for
    ``compression`` (zstd, deflate: a zlib stream, lzw: TIFF's LZW, none)."""
    import imagecodecs

    if compression == "zstd":
        return lambda data: imagecodecs.zstd_encode(data, level=level)
    if compression == "deflate":
        return lambda data: imagecodecs.zlib_encode(data, level=level)
    if compression == "lzw":
        return lambda data: imagecodecs.lzw_encode(data)
    return lambda data: bytes(data)


def encode_chunk(block: np.ndarray, blocksize: int, compression: str, level: int | None) -> list[list[bytes]]:
    """Compress a chunk's tiles (the chunk starts on a tile boundary).

    Parameters
    ----------
    block : ndarray, uint8, (h, w) or (h, w, band)
        The chunk's pixels.
    blocksize : int
        Tile size; tiles at the chunk's right and bottom edges are padded with zeros to it, as
        TIFF stores edge tiles whole.
    compression : str
        ``zstd``, ``deflate``, ``lzw`` or ``none``.
    level : int or None
        Compression level (zstd, deflate).

    Returns
    -------
    list of list of bytes
        The compressed tiles, tile row by tile row, left to right.
    """
    enc = encoder(compression, level)
    b = blocksize
    h, w = block.shape[:2]
    tile = scratch("cog-tile", (b, b) + block.shape[2:], np.uint8)  # this thread's: never returned
    # a uniform chunk (the look-up of fill: a broadcast of one pixel) has one tile per tile
    # shape: each is compressed once and its bytes reused
    same: dict | None = {} if one_pixel(block) else None
    rows = []
    for r0 in range(0, h, b):
        row = []
        for c0 in range(0, w, b):
            part = block[r0:r0 + b, c0:c0 + b]
            if same is not None and part.shape in same:
                row.append(same[part.shape])
                continue
            if part.shape[:2] != (b, b):
                tile[...] = 0
                copy_into(tile[: part.shape[0], : part.shape[1]], part)
            elif part.flags.c_contiguous:
                row.append(enc(part.data))
                continue
            else:
                copy_into(tile, part)
            row.append(enc(tile.data))
            if same is not None:
                same[part.shape] = row[-1]
        rows.append(row)
    return rows
