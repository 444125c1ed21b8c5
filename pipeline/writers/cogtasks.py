"""The COG writer's dask tasks: one fused task per full-resolution chunk, small tasks per overview chunk.

**Chunk task** (:func:`chunk_task`, one per full-resolution chunk, chunks on the tile grid): looks
the chunk up (class id -> colour, or 8/16-bit value -> class id or colour), counts its values,
compresses its tiles, and compresses the tiles of every nearest overview level whose tile grid
the chunk grid lines up with (the chunk's decimation is then whole tiles). For the other levels
it returns small contiguous copies instead: its decimated pixels (``nearest``), or (``mode``)
the level-1 pixels whose source windows lie inside the chunk plus thin strips of its border
pixels (as wide as a window) for the windows that straddle two chunks. Full-resolution pixels
never leave the task, so no full-resolution chunk waits in memory for another task.

**Overview chunk tasks** assemble one overview chunk from those pieces and compress its tiles:
:func:`nearest_task` pastes decimated pieces; :func:`mode1_task` pastes the chunks' level-1
pixels and completes the straddling windows from the strips; :func:`mode_task` computes a level
2, 4, ... chunk from the part of the level before that its windows cover (a contiguous copy).

Every task returns a plain dict; the compressed tiles of a chunk go to a spool file of their
own (local schedulers) or stay in the task's result (distributed: the client fetches them when
it writes the file), with their sizes either way.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import kernels
from .._engine.scratch import scratch
from ..errors import OutputError
from ..jobs.atomic import cause, final_name
from .tiles import encode_chunk, mode_block


@dataclass(frozen=True)
class Encode:
    """How a task compresses the tiles of one output chunk.

    Attributes
    ----------
    blocksize : int
        Tile size in pixels.
    compression : str
        ``zstd``, ``deflate``, ``lzw`` or ``none``.
    level : int or None
        Compression level (zstd, deflate).
    """

    blocksize: int
    compression: str
    level: int | None

    def __call__(self, pixels: np.ndarray, spool: str | None) -> tuple[list[list[int]], list[list[bytes]] | None]:
        """Compress ``pixels`` (the chunk starts on a tile boundary); returns the tiles' sizes
        (tile row by tile row) and the tiles, or None when they went to the file ``spool``."""
        rows = encode_chunk(pixels, self.blocksize, self.compression, self.level)
        sizes = [[len(t) for t in row] for row in rows]
        if spool is None:
            return sizes, rows
        write_spool(rows, spool)
        return sizes, None


def write_spool(rows: list[list[bytes]], path: str) -> None:
    """Write a chunk's compressed tiles to ``path``, one after the other.

    Raises
    ------
    OutputError
        The spool file cannot be written (e.g. no space left), naming the output it is for.
    """
    try:
        with open(path, "wb") as f:
            for row in rows:
                for t in row:
                    f.write(t)
    except OSError as e:
        raise OutputError(f"{final_name(path)}: cannot write the compressed tiles ({cause(e)}); "
                          "nothing was replaced") from None


@dataclass(frozen=True)
class Stashed:
    """Pixels handed from one task to another through a file (``numpy.savez``) in the spool folder."""

    path: str


def stash(arrays: dict[str, np.ndarray], path: str | None):
    """Hand ``arrays`` on: as they are (``path`` None: distributed, they wait in the worker's
    memory), or written to ``path`` (local schedulers: whatever order the tasks run in, pixels
    waiting for their overview task take disk, not memory).

    Raises
    ------
    OutputError
        The file cannot be written (e.g. no space left), naming the output it is for.
    """
    if path is None:
        return arrays
    try:
        with open(path, "wb") as f:
            np.savez(f, **arrays)
    except OSError as e:
        raise OutputError(f"{final_name(path)}: cannot write the overview pixels ({cause(e)}); "
                          "nothing was replaced") from None
    return Stashed(path)


def unstash(handed) -> dict[str, np.ndarray]:
    """The arrays :func:`stash` handed on."""
    if not isinstance(handed, Stashed):
        return handed
    with np.load(handed.path) as f:
        return {k: f[k] for k in f.files}


# ------------------------------------------------------------------ nearest decimation
def owned(sources: np.ndarray, start: int, n: int) -> tuple[int, int]:
    """The overview pixels ``[i0, i1)`` along one axis whose source pixel lies in ``[start, start + n)``.

    Parameters
    ----------
    sources : ndarray of int64
        The full-resolution pixel each overview pixel samples (increasing;
        :func:`~pipeline.writers.tiles.nearest_sources`).
    start, n : int
        The chunk's first pixel and length along the axis.
    """
    return int(np.searchsorted(sources, start, "left")), int(np.searchsorted(sources, start + n, "left"))


def decimated(block: np.ndarray, rows: np.ndarray, cols: np.ndarray, buffer: str | None = None) -> np.ndarray:
    """``block[rows][:, cols]`` as a contiguous array (rows and columns relative to the block):
    a new one, or with ``buffer`` one over this thread's scratch buffers of that name (for
    pixels that do not leave the task). A broadcast of one pixel (a uniform chunk) gives a
    broadcast of it (numpy's indexing would first copy the whole chunk)."""
    if kernels.one_pixel(block):
        return np.broadcast_to(block[:1, :1], (len(rows), len(cols)) + block.shape[2:])
    if buffer is None:
        return block[np.ix_(rows, cols)]
    out = scratch(buffer, (len(rows), len(cols)) + block.shape[2:], block.dtype)
    band = 64  # rows at a time: the row-picked intermediate stays small
    for r in range(0, len(rows), band):
        n = min(band, len(rows) - r)
        # mode="clip": the indices are in range by construction, and "raise" copies through a buffer
        picked = np.take(block, rows[r:r + n], axis=0, out=scratch(buffer + "-rows", (n,) + block.shape[1:], block.dtype),
                         mode="clip")
        np.take(picked, cols, axis=1, out=out[r:r + n], mode="clip")
    return out


def looked_up(block: np.ndarray, pixels: np.ndarray, table: np.ndarray | None, rows: np.ndarray, cols: np.ndarray,
              buffer: str | None = None) -> np.ndarray:
    """The nearest decimation of the looked-up ``pixels`` (``table[block]``): the values are
    decimated first and only the picked ones looked up (the look-up is per pixel, so the result
    is the same), which moves one 8/16-bit value per pixel instead of three or four colour bytes.
    ``buffer`` as for :func:`decimated`."""
    if table is None:
        return decimated(pixels, rows, cols, buffer)
    values = decimated(block, rows, cols, None if buffer is None else buffer + "-values")
    out = None if buffer is None else scratch(buffer, values.shape + table.shape[1:], table.dtype)
    return kernels.lookup_block(values, table, out=out)


# ------------------------------------------------------------------------ chunk task
@dataclass(frozen=True)
class ModeWindows:
    """The level-1 ``mode`` pixels one chunk computes whole, and its border strips' width.

    Attributes
    ----------
    i0, i1, j0, j1 : int
        Level-1 rows ``[i0, i1)`` and columns ``[j0, j1)`` of the pixels whose windows lie
        inside the chunk.
    strip : int
        Width of the border strips returned (the widest window, at most 4 pixels).
    nodata : int or None
        Skipped by the mode (0 for class ids, None for colours).
    """

    i0: int
    i1: int
    j0: int
    j1: int
    strip: int
    nodata: int | None


@dataclass(frozen=True)
class ChunkSpec:
    """What :func:`chunk_task` makes of one full-resolution chunk.

    Attributes
    ----------
    y0, x0 : int
        The chunk's position (a tile boundary).
    count : bool
        Count the chunk's values (class ids).
    encode : Encode
        Tile size and compression.
    direct : tuple of (int, (int, int, int, int) or None, str or None)
        (level, owned pixels, spool file or None) of every level whose tiles this task
        compresses: full resolution (owned None) and the nearest overviews whose tile grid the
        chunk grid lines up with; owned: the level's rows ``[i0, i1)`` and columns ``[j0, j1)``
        whose source pixels the chunk holds.
    pieces : tuple of (int, (int, int, int, int), str or None)
        (level, owned pixels, stash file or None) of the nearest overviews whose decimated
        pixels are handed on (:func:`stash`).
    mode : ModeWindows or None
        The level-1 ``mode`` pixels to compute (None: no mode overview).
    mode_stash : str or None
        Where they are handed on (:func:`stash`).
    """

    y0: int
    x0: int
    count: bool
    encode: Encode
    direct: tuple[tuple[int, tuple[int, int, int, int] | None, str | None], ...]
    pieces: tuple[tuple[int, tuple[int, int, int, int], str | None], ...] = ()
    mode: ModeWindows | None = None
    mode_stash: str | None = None


def chunk_task(block: np.ndarray, table: np.ndarray | None, spec: ChunkSpec, sources: list | None,
               windows: tuple | None) -> dict:
    """Everything the COG needs from one full-resolution chunk.

    Parameters
    ----------
    block : ndarray, (h, w)
        Class ids (uint8), or with ``table`` the 8/16-bit values to look up.
    table : ndarray, uint8, (n,) or (n, band), optional
        Class id -> colour, or value -> class id or colour.
    spec : ChunkSpec
        The chunk's position and what to make.
    sources : list of (ndarray, ndarray), optional
        Per level (index 0: full resolution, unused), the full-resolution row and column every
        nearest overview pixel samples (:func:`~pipeline.writers.tiles.nearest_sources`); shared
        by every chunk.
    windows : tuple of ndarray, optional
        ``(ys, ye, xs, xe)``: the level-1 ``mode`` windows (full-resolution rows and columns, end
        exclusive); shared by every chunk.

    Returns
    -------
    dict
        ``tiles``: {level: (tile sizes, tiles or None)}; ``counts``: int64 (256,) or None;
        ``near``: {level: stashed {"px": contiguous decimated pixels}}; ``mode``: (i0, j0,
        stashed {"inner": level-1 pixels, "top", "bottom", "left", "right": border strips}) or None.
    """
    if table is None:
        pixels = block.astype(np.uint8, copy=False)
    else:  # into this thread's buffer: these pixels never leave the task
        pixels = kernels.lookup_block(block, table, out=scratch("cog-lookup", block.shape + table.shape[1:], table.dtype))
    y0, x0 = spec.y0, spec.x0
    result: dict = {"tiles": {}, "near": {}, "mode": None, "counts": None}
    if spec.count:
        result["counts"] = kernels.bincount_block(block, 256)[:256]
    for level, box, spool in spec.direct:
        part = pixels if box is None else looked_up(block, pixels, table, *_relative(sources[level], box, y0, x0),
                                                    "cog-level")
        result["tiles"][level] = spec.encode(part, spool)
    for level, box, path in spec.pieces:
        px = looked_up(block, pixels, table, *_relative(sources[level], box, y0, x0))
        result["near"][level] = stash({"px": kernels.contiguous(px)}, path)
    m = spec.mode
    if m is not None:
        ys, ye, xs, xe = (w[a:b] for w, (a, b) in zip(windows, [(m.i0, m.i1)] * 2 + [(m.j0, m.j1)] * 2))
        inner = windowed_mode(pixels, ys - y0, ye - y0, xs - x0, xe - x0, m.nodata)
        k = m.strip
        strips = {"top": pixels[:k].copy(), "bottom": pixels[-k:].copy(),
                  "left": pixels[:, :k].copy(), "right": pixels[:, -k:].copy()}
        result["mode"] = (m.i0, m.j0, stash({"inner": inner, **strips}, spec.mode_stash))
    return result


def _relative(sources: tuple[np.ndarray, np.ndarray], box: tuple[int, int, int, int], y0: int, x0: int):
    i0, i1, j0, j1 = box
    return sources[0][i0:i1] - y0, sources[1][j0:j1] - x0


def windowed_mode(src: np.ndarray, ys, ye, xs, xe, nodata: int | None) -> np.ndarray:
    """:func:`~pipeline.writers.tiles.mode_block`, also for no window at all (an empty result)."""
    if len(ys) == 0 or len(xs) == 0:
        return np.zeros((len(ys), len(xs)) + src.shape[2:], np.uint8)
    if kernels.one_pixel(src):  # a uniform chunk: every window's mode is its one value (nodata too)
        return kernels.contiguous(np.broadcast_to(src[:1, :1], (len(ys), len(xs)) + src.shape[2:]))
    return mode_block(src, ys, ye, xs, xe, nodata)


def pick(result: dict, *keys):
    """``result[k0][k1]...``: one part of a task's result (so only that part travels on)."""
    for k in keys:
        result = result[k]
    return result


def total_counts(*parts: np.ndarray) -> np.ndarray:
    """The sum of the chunks' counts, int64 (256,)."""
    out = np.zeros(256, np.int64)
    for p in parts:
        out[: p.size] += p
    return out


# --------------------------------------------------------------- overview chunk tasks
@dataclass(frozen=True)
class Region:
    """One chunk of an overview level: rows ``[r0, r1)``, columns ``[c0, c1)``."""

    r0: int
    r1: int
    c0: int
    c1: int

    @property
    def shape(self) -> tuple[int, int]:
        return self.r1 - self.r0, self.c1 - self.c0


def _paste(out: np.ndarray, region: Region, i0: int, j0: int, px: np.ndarray) -> None:
    """Copy the part of ``px`` (at level position (i0, j0)) that falls inside ``region``."""
    r0, r1 = max(region.r0, i0), min(region.r1, i0 + px.shape[0])
    c0, c1 = max(region.c0, j0), min(region.c1, j0 + px.shape[1])
    if r1 > r0 and c1 > c0:
        out[r0 - region.r0:r1 - region.r0, c0 - region.c0:c1 - region.c0] = px[r0 - i0:r1 - i0, c0 - j0:c1 - j0]


def nearest_task(pieces: list[tuple[int, int, np.ndarray]], region: Region, bands: tuple[int, ...],
                 encode: Encode, spool: str | None) -> dict:
    """One chunk of a nearest overview level, pasted from the chunks' decimated pieces.

    Parameters
    ----------
    pieces : list of (int, int, stashed pixels)
        Level position and pixels of every chunk piece overlapping ``region``.
    region : Region
        The overview chunk.
    bands : tuple
        ``()`` for class ids, ``(n,)`` for n colour bands.
    encode : Encode
    spool : str or None
        Where the tiles go (None: kept in the result).

    Returns
    -------
    dict
        ``tiles``: (tile sizes, tiles or None).
    """
    out = np.zeros(region.shape + bands, np.uint8)
    for i0, j0, px in pieces:
        _paste(out, region, i0, j0, unstash(px)["px"])
    return {"tiles": encode(out, spool)}


@dataclass(frozen=True)
class ModeSpec:
    """The windows of one overview chunk's ``mode`` pixels.

    Attributes
    ----------
    region : Region
        The chunk, in this level's pixels (its source windows: the level's shared windows
        ``(ys, ye, xs, xe)`` at ``[r0:r1]`` and ``[c0:c1]``).
    rows, cols : tuple of (int, int)
        ``[start, end)`` of each source chunk row and column the windows touch (level before).
    nodata : int or None
        Skipped by the mode.
    keep : bool
        Hand the chunk's pixels on too (a further level is made from them).
    stash : str or None
        Where they are handed on (:func:`stash`).
    """

    region: Region
    rows: tuple[tuple[int, int], ...]
    cols: tuple[tuple[int, int], ...]
    nodata: int | None
    keep: bool
    stash: str | None = None


def _windows(windows: tuple, region: Region) -> tuple[np.ndarray, ...]:
    ys, ye, xs, xe = windows
    return ys[region.r0:region.r1], ye[region.r0:region.r1], xs[region.c0:region.c1], xe[region.c0:region.c1]


def mode1_task(parts: list[list[tuple]], spec: ModeSpec, windows: tuple, encode: Encode, spool: str | None) -> dict:
    """One chunk of the first ``mode`` overview, from the full-resolution chunks' results.

    Pixels whose window lies inside one chunk come computed from that chunk; a window that
    straddles a chunk row (column) boundary is computed from the strips of the chunks on both
    sides, joined into a band of contiguous full-resolution rows (columns).

    Parameters
    ----------
    parts : list of list of tuple
        ``chunk_task(...)["mode"]`` of the source chunks ``spec.rows`` x ``spec.cols``.
    spec : ModeSpec
    windows : tuple of ndarray
        The level's ``(ys, ye, xs, xe)``, shared by every chunk of the level.
    encode : Encode
    spool : str or None

    Returns
    -------
    dict
        ``tiles``: (tile sizes, tiles or None); ``pixels``: the chunk, stashed (when ``spec.keep``).
    """
    region = spec.region
    ys, ye, xs, xe = _windows(windows, region)
    parts = [[(i0, j0, unstash(px)) for i0, j0, px in row] for row in parts]
    bands = parts[0][0][2]["inner"].shape[2:]
    out = np.zeros(region.shape + bands, np.uint8)
    for row in parts:
        for i0, j0, px in row:
            _paste(out, region, i0, j0, px["inner"])
    x_start, y_start = spec.cols[0][0], spec.rows[0][0]
    for a in range(1, len(spec.rows)):  # windows across a chunk row boundary
        y = spec.rows[a][0]
        sel = np.nonzero((ys < y) & (ye > y))[0]
        if sel.size:
            band = np.concatenate([np.concatenate([parts[a - 1][c][2]["bottom"], parts[a][c][2]["top"]], axis=0)
                                   for c in range(len(spec.cols))], axis=1)
            top = y - parts[a - 1][0][2]["bottom"].shape[0]
            out[sel] = windowed_mode(band, ys[sel] - top, ye[sel] - top, xs - x_start,
                                     xe - x_start, spec.nodata)
    for c in range(1, len(spec.cols)):  # windows across a chunk column boundary
        x = spec.cols[c][0]
        sel = np.nonzero((xs < x) & (xe > x))[0]
        if sel.size:
            band = np.concatenate([np.concatenate([parts[a][c - 1][2]["right"], parts[a][c][2]["left"]], axis=1)
                                   for a in range(len(spec.rows))], axis=0)
            left = x - parts[0][c - 1][2]["right"].shape[1]
            out[:, sel] = windowed_mode(band, ys - y_start, ye - y_start, xs[sel] - left,
                                        xe[sel] - left, spec.nodata)
    return _finish(out, spec, encode, spool)


def mode_task(parts: list[list[np.ndarray]], spec: ModeSpec, windows: tuple, encode: Encode,
              spool: str | None) -> dict:
    """One chunk of a ``mode`` overview after the first, from the level before.

    Parameters
    ----------
    parts : list of list of stashed pixels
        The pixels of the source chunks ``spec.rows`` x ``spec.cols`` (the level before).
    spec : ModeSpec
    windows : tuple of ndarray
        The level's ``(ys, ye, xs, xe)``, shared by every chunk of the level.
    encode : Encode
    spool : str or None

    Returns
    -------
    dict
        ``tiles``: (tile sizes, tiles or None); ``pixels``: the chunk, stashed (when ``spec.keep``).
    """
    ys, ye, xs, xe = _windows(windows, spec.region)
    sy0, sy1 = int(ys.min()), int(ye.max())
    sx0, sx1 = int(xs.min()), int(xe.max())
    src = np.concatenate([  # only the part the windows cover, as one contiguous copy
        np.concatenate([unstash(px)["px"][max(sy0, y0) - y0:min(sy1, y1) - y0, max(sx0, x0) - x0:min(sx1, x1) - x0]
                        for px, (x0, x1) in zip(row, spec.cols)], axis=1)
        for row, (y0, y1) in zip(parts, spec.rows)], axis=0)
    out = windowed_mode(src, ys - sy0, ye - sy0, xs - sx0, xe - sx0, spec.nodata)
    return _finish(out, spec, encode, spool)


def _finish(out: np.ndarray, spec: ModeSpec, encode: Encode, spool: str | None) -> dict:
    return {"tiles": encode(out, spool), "pixels": stash({"px": out}, spec.stash) if spec.keep else None}
