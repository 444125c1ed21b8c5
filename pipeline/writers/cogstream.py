"""The COG writer: tasks compress tiles, the client streams the file.

1. **Tiles, in parallel.** One fused dask task per full-resolution chunk (chunks on the tile
   grid) looks its pixels up (class ids, or colours), counts them, compresses its tiles and
   hands on only small contiguous pieces for the overview levels; small tasks assemble and
   compress each overview chunk (:mod:`pipeline.writers.cogtasks`). No full-resolution pixel
   leaves its task, so a task never waits with a full-resolution chunk in memory, and memory
   stays flat whatever the scene's size. Overview pixels are exactly GDAL's (NEAREST, MODE:
   :mod:`pipeline.writers.tiles`). On a distributed scheduler the compressed tiles stay in the
   workers' memory until the client asks for them; on a local scheduler each task writes them to
   a spool file of its own in a temporary folder.
2. **Sizes first.** The client gathers every tile's size (a few bytes per tile), so the whole
   file's layout, every offset included, is known before its first byte.
3. **The file, front to back.** Header and IFDs, then the tiles from the smallest overview to
   full resolution, fetched one tile row at a time (:func:`pipeline.writers.tiff.write_tiff`):
   the client never holds more than one row of compressed tiles, and the destination needs no
   seek (a local file, or a multipart upload).

No worker writes a file the client reads, so the workers need no filesystem shared with the
client for the output.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable

import dask
import dask.array as da
import numpy as np
from dask.base import tokenize
from dask.delayed import Delayed
from dask.highlevelgraph import HighLevelGraph

from ..jobs.config import Output
from ..jobs.progress import follow_futures
from . import tiff
from .cogtasks import (ChunkSpec, Encode, ModeSpec, ModeWindows, Region, chunk_task, mode1_task, mode_task,
                       nearest_task, owned, pick, total_counts)
from .tiles import (COMPRESSION_CODES, gdal_row_chunk, level_shape, nearest_sources,
                    overview_factors, spans)

log = logging.getLogger(__name__.replace("pipeline", "sceneclass", 1))

#: compression levels when the config gives none. ZSTD 3 (zstd's own default) encodes class
#: maps about 30% faster than level 9, for files about 20% larger (measured at 1x).
DEFAULT_LEVELS = {"zstd": 3, "deflate": 6}


def distributed_client():
    """The active dask.distributed Client, or None (without importing distributed)."""
    import sys

    if "distributed" not in sys.modules:
        return None
    from distributed import get_client

    try:
        return get_client()
    except ValueError:
        return None


def _aligned(x: da.Array, blocksize: int) -> da.Array:
    """``x`` rechunked so that every chunk boundary falls on a tile boundary (unchanged when it does)."""
    if all(c % blocksize == 0 for dim in x.chunks[:2] for c in dim[:-1]):
        return x
    target = tuple(max(blocksize, round(dim[0] / blocksize) * blocksize) for dim in x.chunks[:2])
    log.debug("rechunking %s to %s to align with %d-pixel tiles", x.chunksize, target, blocksize)
    return x.rechunk(target + x.chunks[2:])


def _regions(shape: tuple[int, int], size: int) -> np.ndarray:
    """The (rows, columns) grid of ``size``-pixel chunks over a level of ``shape``."""
    ys, xs = range(0, shape[0], size), range(0, shape[1], size)
    grid = np.empty((len(ys), len(xs)), object)
    for i, r0 in enumerate(ys):
        for j, c0 in enumerate(xs):
            grid[i, j] = Region(r0, min(shape[0], r0 + size), c0, min(shape[1], c0 + size))
    return grid


def _touching(bounds: np.ndarray, lo: int, hi: int) -> list[int]:
    """Indices of the consecutive ranges ``[bounds[k], bounds[k+1])`` that overlap ``[lo, hi)``."""
    return [k for k in range(len(bounds) - 1) if bounds[k] < hi and bounds[k + 1] > lo]


def _inside(starts: np.ndarray, ends: np.ndarray, lo: int, hi: int) -> tuple[int, int]:
    """``[i0, i1)``: the windows that lie inside ``[lo, hi)`` (windows sorted, as GDAL's are)."""
    i0 = int(np.searchsorted(starts, lo, "left"))
    return i0, max(i0, int(np.searchsorted(ends, hi, "right")))


class _Tasks:
    """The tasks of one COG: per level, a grid of task keys giving ``(tile sizes, tiles or None)``
    (tile rows per output chunk), and the key of the class counts (:meth:`delayed` makes them
    computable)."""

    def __init__(self, values: da.Array, table: np.ndarray | None, shape: tuple[int, int], factors: list[int],
                 resampling: str, encode: Encode, count: bool, spool: Path | None):
        self.shape, self.factors, self.encode, self.spool = shape, factors, encode, spool
        # local schedulers keep every result in this process: a part of a result is picked inside
        # the task that uses it (or by the caller), not by a task of its own (1877 fewer tasks at 16x)
        self.inline = spool is not None
        self.bands = () if table is None or table.ndim == 1 else (table.shape[1],)
        self.nodata = None if self.bands else 0
        self.ybounds = np.cumsum((0,) + values.chunks[0])
        self.xbounds = np.cumsum((0,) + values.chunks[1])
        self.chunk = min(values.chunks[0][0], values.chunks[1][0])
        nearest = resampling == "nearest"
        self.sources = ([nearest_sources(shape[0], factors), nearest_sources(shape[1], factors)]
                        if nearest else None)
        direct = [0] + [li for li in range(1, len(factors) + 1) if nearest and self._lines_up(li)]
        windows = self._mode1_windows() if factors and not nearest else None
        # the index arrays every chunk task slices: one shared key each, not a copy per task
        # one graph built as a plain mapping (dask.delayed per task costs seconds on a 16x scene)
        self._values, self._layer = values, {}
        self._name = f"sceneclass-cog-{tokenize(values.name, table, shape, factors, resampling, encode, count, spool)}"
        sources_d = (self._data([None] + [list(p) for p in zip(*self.sources)]) if nearest and factors else None)
        windows_d = None if windows is None else self._data(list(windows[0]))

        blocks = np.empty((len(self.ybounds) - 1, len(self.xbounds) - 1), object)
        for key in (k for row in values.__dask_keys__() for k in row):
            blocks[key[1], key[2]] = key
        table_d = None if table is None else self._data(table)
        chunks = np.empty(blocks.shape, object)
        for i, j in np.ndindex(blocks.shape):
            y0, y1, x0, x1 = (int(v) for v in (*self.ybounds[i:i + 2], *self.xbounds[j:j + 2]))
            mode = None
            if windows is not None:
                (ys, ye, xs, xe), strip = windows
                (i0, i1), (j0, j1) = _inside(ys, ye, y0, y1), _inside(xs, xe, x0, x1)
                mode = ModeWindows(i0, i1, j0, j1, strip, self.nodata)
            own, pieces = [(0, None, self.spool_path(0, i, j))], []
            for li in range(1, len(factors) + 1) if nearest else ():
                sy, sx = self.sources[0][li - 1], self.sources[1][li - 1]
                box = (*owned(sy, y0, y1 - y0), *owned(sx, x0, x1 - x0))
                if li in direct:
                    own.append((li, box, self.spool_path(li, i, j)))
                else:
                    pieces.append((li, box, self.stash_path(f"near{li}", i, j)))
            spec = ChunkSpec(y0, x0, count, encode, tuple(own), tuple(pieces), mode, self.stash_path("mode", i, j))
            chunks[i, j] = self._task(chunk_task, blocks[i, j], table_d, spec, sources_d, windows_d)
        self.counts = None
        if count:
            self.counts = self._task(total_counts, *self._each(chunks, "counts").reshape(-1))

        self.levels: list[np.ndarray] = []
        for li in range(len(factors) + 1):
            if li in direct:
                self.levels.append(self._each(chunks, "tiles", li))
            elif nearest:
                self.levels.append(self._nearest(chunks, li))
            elif li == 1:
                self.levels.append(self._mode1(chunks, windows))
            else:
                self.levels.append(self._mode(li))

    def _task(self, func, *args) -> tuple:
        """Add ``func(*args)`` to the graph (keys in ``args``, also inside lists, stand for their
        results); returns its key."""
        key = (self._name, len(self._layer))
        self._layer[key] = (func, *args)
        return key

    def _data(self, obj) -> tuple:
        """Add a value shared by many tasks to the graph (one key, not a copy per task)."""
        key = (self._name, len(self._layer))
        self._layer[key] = obj
        return key

    def _each(self, keys: np.ndarray, *path) -> np.ndarray:
        """``pick(result, *path)`` of every task in ``keys``: a task of its own on a distributed
        scheduler (so only that part travels on), else the same call inlined in whatever uses it
        (:meth:`outputs` undoes it for results the caller picks)."""
        out = np.empty(keys.shape, object)
        for idx, k in np.ndenumerate(keys):
            out[idx] = (pick, k, *path) if self.inline else self._task(pick, k, *path)
        return out

    def delayed(self, key) -> Delayed:
        """The result of ``key`` as a dask Delayed (every key shares one graph)."""
        if not hasattr(self, "_graph"):
            self._graph = HighLevelGraph.from_collections(self._name, self._layer, dependencies=[self._values])
        return Delayed(key, self._graph, layer=self._name)

    def outputs(self, entries) -> tuple[list[Delayed], Callable[[list], list]]:
        """The Delayed objects that compute ``entries`` (keys, or inlined picks of keys) and a
        function turning their results into the entries' results, in order: every task is
        computed once, its part picked afterwards."""
        keys, where = {}, []
        for e in entries:
            key, path = (e[1], e[2:]) if isinstance(e, tuple) and e and e[0] is pick else (e, ())
            where.append((keys.setdefault(key, len(keys)), path))
        delayed = [self.delayed(k) for k in keys]
        return delayed, lambda results: [pick(results[i], *path) for i, path in where]

    def spool_path(self, li: int, i: int, j: int) -> str | None:
        """The spool file of level ``li``'s chunk (i, j) (None on a distributed scheduler)."""
        return None if self.spool is None else str(self.spool / f"{li}_{i}_{j}")

    def stash_path(self, what: str, i: int, j: int) -> str | None:
        """The file that hands pixels ``what`` of chunk (i, j) on (None on a distributed scheduler)."""
        return None if self.spool is None else str(self.spool / f"{what}_{i}_{j}.npz")

    def _lines_up(self, li: int) -> bool:
        """Whether every chunk's nearest pixels of level ``li`` start on that level's tile grid."""
        b = self.encode.blocksize
        return all(owned(src[li - 1], int(s), 1)[0] % b == 0
                   for src, bounds in zip(self.sources, (self.ybounds, self.xbounds)) for s in bounds[1:-1])

    def _size(self, factor: int) -> int:
        """Chunk edge of an assembled overview level: about a full-resolution chunk's share, whole tiles."""
        b = self.encode.blocksize
        return max(b, self.chunk // factor // b * b)

    def _grid(self, tasks: np.ndarray) -> np.ndarray:
        return self._each(tasks, "tiles")

    def _nearest(self, chunks: np.ndarray, li: int) -> np.ndarray:
        f = self.factors[li - 1]
        oy = [owned(self.sources[0][li - 1], int(y0), int(y1 - y0)) for y0, y1 in zip(self.ybounds, self.ybounds[1:])]
        ox = [owned(self.sources[1][li - 1], int(x0), int(x1 - x0)) for x0, x1 in zip(self.xbounds, self.xbounds[1:])]
        near = self._each(chunks, "near", li)
        regions = _regions(level_shape(self.shape, f), self._size(f))
        tasks = np.empty(regions.shape, object)
        for idx, reg in np.ndenumerate(regions):
            pieces = [[oy[i][0], ox[j][0], near[i, j]]
                      for i in range(len(oy)) if oy[i][0] < reg.r1 and oy[i][1] > reg.r0
                      for j in range(len(ox)) if ox[j][0] < reg.c1 and ox[j][1] > reg.c0]
            tasks[idx] = self._task(nearest_task, pieces, reg, self.bands, self.encode, self.spool_path(li, *idx))
        return self._grid(tasks)

    def _mode1_windows(self):
        shape1 = level_shape(self.shape, self.factors[0])
        rows = gdal_row_chunk(self.shape, shape1, self.encode.blocksize, 1) if not self.bands else None
        (ys, ye), (xs, xe) = spans(self.shape[0], shape1[0], rows), spans(self.shape[1], shape1[1])
        return (ys, ye, xs, xe), int(max((ye - ys).max(), (xe - xs).max()))

    def _mode_specs(self, li, shape, windows, size, ybounds, xbounds, keep) -> np.ndarray:
        ys, ye, xs, xe = windows
        regions = _regions(shape, size)
        specs = np.empty(regions.shape, object)
        for idx, reg in np.ndenumerate(regions):
            rows = _touching(ybounds, int(ys[reg.r0:reg.r1].min()), int(ye[reg.r0:reg.r1].max()))
            cols = _touching(xbounds, int(xs[reg.c0:reg.c1].min()), int(xe[reg.c0:reg.c1].max()))
            specs[idx] = (ModeSpec(reg, tuple((int(ybounds[a]), int(ybounds[a + 1])) for a in rows),
                                   tuple((int(xbounds[c]), int(xbounds[c + 1])) for c in cols), self.nodata, keep,
                                   self.stash_path(f"level{li}", *idx) if keep else None),
                          rows, cols)
        return specs

    def _mode1(self, chunks: np.ndarray, windows) -> np.ndarray:
        size = self._size(2)
        shape1 = level_shape(self.shape, self.factors[0])
        parts = self._each(chunks, "mode")
        specs = self._mode_specs(1, shape1, windows[0], size, self.ybounds, self.xbounds, len(self.factors) > 1)
        windows_d = self._data(list(windows[0]))
        tasks = np.empty(specs.shape, object)
        for idx in np.ndindex(specs.shape):
            spec, rows, cols = specs[idx]
            tasks[idx] = self._task(mode1_task, [[parts[a, c] for c in cols] for a in rows], spec, windows_d,
                                    self.encode, self.spool_path(1, *idx))
        self._prev = (tasks, size)
        return self._grid(tasks)

    def _mode(self, li: int) -> np.ndarray:
        prev_tasks, prev_size = self._prev
        src_shape = level_shape(self.shape, self.factors[li - 2])
        shape = level_shape(self.shape, self.factors[li - 1])
        rows_at_once = gdal_row_chunk(src_shape, shape, self.encode.blocksize, 1) if not self.bands else None
        windows = (*spans(src_shape[0], shape[0], rows_at_once), *spans(src_shape[1], shape[1]))
        windows_d = self._data(list(windows))
        ybounds = np.array([*range(0, src_shape[0], prev_size), src_shape[0]])
        xbounds = np.array([*range(0, src_shape[1], prev_size), src_shape[1]])
        size = max(self.encode.blocksize, prev_size // 2 // self.encode.blocksize * self.encode.blocksize)
        specs = self._mode_specs(li, shape, windows, size, ybounds, xbounds, li < len(self.factors))
        pixels = self._each(prev_tasks, "pixels")
        tasks = np.empty(specs.shape, object)
        for idx in np.ndindex(specs.shape):
            spec, rows, cols = specs[idx]
            tasks[idx] = self._task(mode_task, [[pixels[a, c] for c in cols] for a in rows], spec, windows_d,
                                    self.encode, self.spool_path(li, *idx))
        self._prev = (tasks, size)
        return self._grid(tasks)




# ------------------------------------------------------------------ where tiles wait
class _Grid:
    """The chunk grid of one level: tile sizes per chunk and where each chunk's tiles wait."""

    def __init__(self, chunk_sizes: np.ndarray, handles: np.ndarray):
        self.chunk_sizes = chunk_sizes  # (cy, cx) object: list of list of int
        self.handles = handles  # (cy, cx) object: spool path or future

    def sizes(self) -> np.ndarray:
        """All tile sizes of the level, (tiles_y, tiles_x) int64."""
        rows = [[n for cj in range(self.chunk_sizes.shape[1]) for n in self.chunk_sizes[ci, cj][r]]
                for ci, r in self.row_spans()]
        return np.array(rows, dtype=np.int64).reshape(len(rows), -1)

    def row_spans(self):
        """(chunk row, tile row within the chunk) for each tile row of the level."""
        for ci in range(self.chunk_sizes.shape[0]):
            for r in range(len(self.chunk_sizes[ci, 0])):
                yield ci, r


def _local_rows(grid: _Grid):
    for ci, r in grid.row_spans():
        row = []
        for cj in range(grid.handles.shape[1]):
            sizes = grid.chunk_sizes[ci, cj]
            start = sum(sum(s) for s in sizes[:r])
            with open(grid.handles[ci, cj], "rb") as f:
                f.seek(start)
                for n in sizes[r]:
                    row.append(f.read(n))
        yield row


def _cluster_rows(client, grid: _Grid):
    for ci, r in grid.row_spans():
        parts = client.gather([client.submit(pick, grid.handles[ci, cj], 1, r, pure=False)
                               for cj in range(grid.handles.shape[1])])
        yield [t for part in parts for t in part]


# --------------------------------------------------------------------------- writer
def cog_table(palette: np.ndarray, bands: int, lut: np.ndarray | None) -> np.ndarray | None:
    """What each task looks its values up in: class id -> colour, value -> class id or colour, or None.

    A class id -> colour table has a row for every uint8 value (ids above the palette's get
    zeros), so the look-up takes the compiled kernel over all 256 bit patterns instead of
    numpy's ``take`` of three-byte items (about 4x slower)."""
    table = None
    if bands:
        table = np.zeros((256, bands), np.uint8)
        table[: min(256, len(palette))] = palette[:256, :bands]
    if lut is not None:
        table = lut if table is None else np.ascontiguousarray(table[lut])
    return table


def write_cog_stream(classes: da.Array, scene, palette: np.ndarray, out: Output, fileobj: BinaryIO,
                     bands: int = 0, count: bool = True, staged: Callable[[], None] | None = None,
                     lut: np.ndarray | None = None, spool: Path | None = None) -> np.ndarray:
    """Write class ids (``bands=0``: paletted) or their colours (3: RGB, 4: RGBA) as a COG to
    a writable binary object, front to back.

    Parameters
    ----------
    classes : dask.array.Array, (y, x)
        Class ids (uint8), or with ``lut`` the 8/16-bit values the tasks look up themselves.
    scene : Scene
        Georeferencing (CRS and transform, or GCPs; RPCs) and shape of the output.
    palette : ndarray, uint8, (n, 4)
        RGBA colour of every class id (0: nodata).
    out : Output
        Blocksize, compression and level, overviews and their resampling.
    fileobj : binary file object, or callable
        Receives the file with ``write`` calls only (no seek, no read); or a function returning
        a context manager that yields one, entered only once every tile is compressed.
    bands : {0, 3, 4}
        0: paletted class ids with the colour table; 3: RGB; 4: RGBA.
    count : bool
        Count the pixels of every class id in the same pass (else zeros are returned; with
        ``lut`` the caller must count).
    staged : callable, optional
        Called once every tile is compressed, before the first byte is written.
    lut : ndarray, optional
        Class id of every 8/16-bit value.
    spool : Path, optional
        An empty folder for the tiles' spool files on a local scheduler, removed when done
        (default: a new one in the system's temporary folder).

    Returns
    -------
    ndarray, int64, (256,)
        Pixels per class id (zeros when ``count`` is false).

    Raises
    ------
    ValueError
        ``count`` with ``lut``.
    OutputError
        A spool file cannot be written.
    """
    if lut is not None and count:
        raise ValueError("write_cog_stream: with a value look-up table the caller counts the classes")
    b = out.blocksize
    table = cog_table(palette, bands, lut)
    # the array's own optimisation first (its blockwise layers fused: read and classify one task
    # a chunk): the COG's tasks are computed as Delayed objects, which would not optimise them
    (values,) = dask.optimize(_aligned(classes, b))
    shape = tuple(int(n) for n in scene.shape)
    factors = overview_factors(shape, b) if out.overviews else []
    level = out.level if out.level is not None else DEFAULT_LEVELS.get(out.compression)
    encode = Encode(b, out.compression, level)
    client = distributed_client()
    tmp = None
    try:
        if client is None:
            tmp = Path(tempfile.mkdtemp(prefix="sceneclass-tiles-")) if spool is None else spool
        tasks = _Tasks(values, table, shape, factors, out.overview_resampling, encode, count, tmp)
        flat, picked = tasks.outputs(k for g in tasks.levels for k in g.reshape(-1))
        counts_d = None if tasks.counts is None else tasks.delayed(tasks.counts)
        if client is None:
            counts, results = dask.compute(counts_d, flat)
            results = picked(results)
            sizes_flat = [r[0] for r in results]
            handles = []
            for li, g in enumerate(tasks.levels):
                handles.append(np.empty(g.shape, object))
                for idx in np.ndindex(g.shape):
                    handles[-1][idx] = tasks.spool_path(li, *idx)
        else:
            futs = client.compute(flat + ([counts_d] if count else []))
            follow_futures(futs)  # progress bar and worker watch, as for any compute
            counts = futs.pop().result() if count else None
            sizes_flat = client.gather(client.map(pick, futs, [0] * len(futs), pure=False))
            handles, k = [], 0
            for g in tasks.levels:
                handles.append(np.empty(g.shape, object))
                for idx in np.ndindex(g.shape):
                    handles[-1][idx] = futs[k]
                    k += 1
        layouts, level_grids, k = [], [], 0
        for li, g in enumerate(tasks.levels):
            cs = np.empty(g.shape, object)
            for idx in np.ndindex(g.shape):
                cs[idx] = sizes_flat[k]
                k += 1
            grid = _Grid(cs, handles[li])
            level_grids.append(grid)
            h, w = level_shape(shape, ([1] + factors)[li])
            layouts.append(tiff.LevelLayout(w, h, grid.sizes()))
        if staged is not None:
            staged()
        template = tiff.template_tags(**_georef(scene), bands=bands or 1, palette=palette if not bands else None,
                                      nodata=0 if not bands else None)

        def rows(i: int):
            if client is None:
                return _local_rows(level_grids[i])
            return _cluster_rows(client, level_grids[i])

        log.info("writing the COG (%d overview levels, %d tiles)", len(factors),
                 sum(lv.sizes.size for lv in layouts))

        def write(dest) -> None:
            tiff.write_tiff(dest, layouts, template, b, COMPRESSION_CODES[out.compression], rows, bands=bands or 1)

        if hasattr(fileobj, "write"):
            write(fileobj)
        else:  # opened only now that every tile is ready (nothing half-written while the pass runs)
            with fileobj() as dest:
                write(dest)
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    if counts is None:
        counts = np.zeros(256, np.int64)
    return counts

def _georef(scene) -> dict:
    if scene.gcps:
        return {"gcps": list(scene.gcps), "gcps_crs": scene.gcps_crs, "rpcs": scene.rpcs}
    return {"crs": scene.crs, "transform": scene.transform, "rpcs": scene.rpcs}
