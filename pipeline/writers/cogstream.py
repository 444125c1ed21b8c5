"""The COG writer: workers compress tiles, the client streams the file.

1. **Tiles, in parallel.** One dask task per chunk (chunks on the tile grid) looks its pixels up
   (class ids, or colours) and compresses its tiles; the overview levels are small follow-up
   tasks over the level before (:mod:`pipeline.writers.tiles`), each no larger than a chunk.
   Only compressed bytes and counts leave a task. On a distributed scheduler the bytes stay in
   the workers' memory until the client asks for them; on a local scheduler each task writes
   them to a spool file of its own in a temporary folder.
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

from .. import kernels
from ..errors import OutputError
from ..jobs.atomic import cause, final_name
from ..jobs.config import Output
from ..jobs.progress import follow_futures
from . import tiff
from .tiles import (COMPRESSION_CODES, encoded_levels, gdal_overview_factors, lookup, overview_factors,
                    pyramid)

log = logging.getLogger(__name__.replace("pipeline", "sceneclass", 1))

#: compression levels when the config gives none (as the GDAL COG options used before)
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


def _counts_block(block: np.ndarray) -> np.ndarray:
    return kernels.bincount_block(block, 256)[None, None, :256]


# ------------------------------------------------------------------ where tiles wait
def _spool(rows: list[list[bytes]], path: str) -> list[list[int]]:
    """Write a chunk's tiles to ``path`` (one after the other); returns their sizes.

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
    return [[len(t) for t in row] for row in rows]


def _sizes(rows: list[list[bytes]]) -> list[list[int]]:
    return [[len(t) for t in row] for row in rows]


def _row(rows: list[list[bytes]], r: int) -> list[bytes]:
    return rows[r]


class _Grid:
    """The chunk grid of one level: tile sizes per chunk and where each chunk's tiles wait."""

    def __init__(self, chunk_sizes: np.ndarray, handles: np.ndarray):
        self.chunk_sizes = chunk_sizes  # (cy, cx) object: list of list of int
        self.handles = handles  # (cy, cx) object: spool path or future

    def sizes(self) -> np.ndarray:
        """All tile sizes of the level, (tiles_y, tiles_x) int64."""
        return np.block([[np.array(s, dtype=np.int64) for s in row] for row in self.chunk_sizes])

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
        parts = client.gather([client.submit(_row, grid.handles[ci, cj], r, pure=False)
                               for cj in range(grid.handles.shape[1])])
        yield [t for part in parts for t in part]


# --------------------------------------------------------------------------- writer
def cog_table(palette: np.ndarray, bands: int, lut: np.ndarray | None) -> np.ndarray | None:
    """What each task looks its values up in: class id -> colour, value -> class id or colour, or None."""
    table = np.ascontiguousarray(palette[:, :bands]) if bands else None
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
    """
    if lut is not None and count:
        raise ValueError("write_cog_stream: with a value look-up table the caller counts the classes")
    b = out.blocksize
    table = cog_table(palette, bands, lut)
    values = _aligned(classes, b)
    extra = () if table is None or table.ndim == 1 else (table.shape[1],)
    level0 = values.map_blocks(lookup, table if table is None else dask.delayed(table, pure=True),
                               dtype=np.uint8, chunks=values.chunks + tuple((n,) for n in extra),
                               new_axis=[2] if extra else None, meta=np.empty((0,) * (2 + len(extra)), np.uint8))
    rule = overview_factors if out.overview_resampling == "nearest" else gdal_overview_factors
    factors = rule(scene.shape, b) if out.overviews else []
    chunk = max(b, max(values.chunksize[:2]) // b * b)
    levels = pyramid(level0, factors, out.overview_resampling, chunk, 0 if not bands else None, b)
    level = out.level if out.level is not None else DEFAULT_LEVELS.get(out.compression)
    grids = encoded_levels(levels, b, out.compression, level)
    counts_lazy = (values.map_blocks(_counts_block, new_axis=2, chunks=(1, 1, 256), dtype=np.int64)
                   .sum(axis=(0, 1), dtype=np.int64)) if count else None
    if counts_lazy is not None:  # a Delayed in the tiles' graph: an Array would be optimised apart, reading twice
        counts_lazy = counts_lazy.to_delayed(optimize_graph=False).item()
    client = distributed_client()
    tmp = None
    try:
        if client is None:
            tmp = Path(tempfile.mkdtemp(prefix="sceneclass-tiles-")) if spool is None else spool
            spooled = [np.empty(g.shape, object) for g in grids]
            handles = [np.empty(g.shape, object) for g in grids]
            for i, g in enumerate(grids):
                for idx in np.ndindex(g.shape):
                    handles[i][idx] = str(tmp / f"{i}_{idx[0]}_{idx[1]}")
                    spooled[i][idx] = dask.delayed(_spool, pure=True)(g[idx], handles[i][idx])
            flat = [d for s in spooled for d in s.reshape(-1)]
            got = dask.compute(counts_lazy, flat)
            counts, sizes_flat = got[0], got[1]
        else:
            flat = [d for g in grids for d in g.reshape(-1)]
            futs = client.compute(flat + ([counts_lazy] if count else []))
            follow_futures(futs)  # progress bar and worker watch, as for any compute
            counts = futs.pop().result() if count else None
            sizes_flat = client.gather(client.map(_sizes, futs, pure=False))
            handles, k = [], 0
            for g in grids:
                h = np.empty(g.shape, object)
                for idx in np.ndindex(g.shape):
                    h[idx] = futs[k]
                    k += 1
                handles.append(h)
        layouts, level_grids, k = [], [], 0
        for i, g in enumerate(grids):
            cs = np.empty(g.shape, object)
            for idx in np.ndindex(g.shape):
                cs[idx] = sizes_flat[k]
                k += 1
            grid = _Grid(cs, handles[i])
            level_grids.append(grid)
            h, w = levels[i].shape[:2]
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
