"""Global statistics of a scene in one lazy pass (one ``dask.compute``).

* 8/16-bit integers: an exact full-range histogram of the raw values (per-block bincount,
  summed in int64); min, max, count and every order statistic follow from it exactly, in
  physical values (``raw * scale + offset``, float64 when scaled): the physical value of every
  raw value is known. Nodata values and a valid range zero histogram bins; a mask (GDAL's or a
  QA raster's) splits each block's counts into unmasked and masked pixels.
* Other dtypes: count, min and max per block, reduced; when a scheme needs the value
  distribution, a 65,536-bin histogram of the top 16 bits of an order-preserving integer key
  is gathered in the same pass, and exact order statistics are found by refining 16 bits per
  extra pass (float32/int32: 1 extra pass, float64: 3). Scenes that are not plain (a mask, a
  valid range, several nodata values, a scale/offset) are read through :meth:`Scene.values`:
  physical values with NaN at every invalid pixel.

The pixels each validity source removes (nodata values, NaN, valid range, mask) are counted in
the same pass (:attr:`Stats.removed`).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import dask
import dask.array as da
import numpy as np
from dask.base import tokenize
from dask.core import flatten
from dask.highlevelgraph import HighLevelGraph

from .scene import Scene
from . import kernels
from .kernels import LUT_DTYPES, ValueRule, bincount_block

log = logging.getLogger(__name__.replace("pipeline", "sceneclass", 1))

DIGIT = 16
RADIX = 1 << DIGIT

_KEY_DTYPES = {
    "uint8": np.uint8, "int8": np.uint8, "uint16": np.uint16, "int16": np.uint16,
    "uint32": np.uint32, "int32": np.uint32, "float32": np.uint32, "float64": np.uint64,
}


# ---------------------------------------------------------------- keys (pure numpy)
def to_key(values: np.ndarray) -> np.ndarray:
    """Order-preserving unsigned integer key of every value (same width as the dtype)."""
    kdt = np.dtype(_KEY_DTYPES[values.dtype.name])
    bits = kdt.itemsize * 8
    sign = kdt.type(1 << (bits - 1))
    u = values.view(kdt)
    if values.dtype.kind == "u":
        return u
    if values.dtype.kind == "i":
        return u ^ sign
    neg = (u & sign) != 0  # floats: flip all bits of negatives, the sign bit of positives
    return np.where(neg, ~u, u | sign)


def from_key(keys: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Inverse of :func:`to_key`."""
    dtype = np.dtype(dtype)
    kdt = np.dtype(_KEY_DTYPES[dtype.name])
    bits = kdt.itemsize * 8
    sign = kdt.type(1 << (bits - 1))
    k = np.asarray(keys).astype(kdt)
    if dtype.kind == "u":
        return k.view(dtype)
    if dtype.kind == "i":
        return (k ^ sign).view(dtype)
    return np.where((k & sign) != 0, k ^ sign, ~k).view(dtype)


def valid_values(block: np.ndarray, nodata: float | None) -> np.ndarray:
    """The block's valid pixels, flattened: not nodata, not NaN, finite."""
    flat = block.reshape(-1)
    if flat.dtype.kind == "f":
        ok = np.isfinite(flat)
        if nodata is not None:
            ok &= flat != flat.dtype.type(nodata)
        return flat[ok]
    if nodata is not None:
        return flat[flat != flat.dtype.type(nodata)]
    return flat


# ------------------------------------------------------------ per-block summaries
def hist_length(dtype: np.dtype) -> int:
    """Bins of the exact histogram of an 8/16-bit dtype (0 for other dtypes)."""
    kdt = LUT_DTYPES.get(np.dtype(dtype).name)
    return 0 if kdt is None else np.iinfo(kdt).max + 1


def hist_keys(values: np.ndarray) -> np.ndarray:
    """The exact histogram's index of 8/16-bit values: their order-preserving key."""
    return to_key(values) if values.dtype.kind == "i" else values


def block_hist(block: np.ndarray) -> np.ndarray:
    """Exact histogram of an 8/16-bit block indexed by order-preserving key, shape (1, 1, K)."""
    return bincount_block(hist_keys(block.reshape(-1)), hist_length(block.dtype))[None, None, :]


def block_hist_split(block: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Exact histograms (by key) of an 8/16-bit block's unmasked and masked pixels (``mask``:
    boolean, True = invalid), concatenated, shape (1, 1, 2K)."""
    k = hist_length(block.dtype)
    if not mask.any():
        return np.concatenate([block_hist(block)[0, 0], np.zeros(k, np.int64)])[None, None, :]
    keys = hist_keys(block[mask])
    masked = np.bincount(keys, minlength=k).astype(np.int64)
    return np.concatenate([block_hist(block)[0, 0] - masked, masked])[None, None, :]


def block_removed(block: np.ndarray, mask: np.ndarray | None = None, *, rule: ValueRule) -> np.ndarray:
    """Pixels of a raw block removed by each validity source, counted once each in this order:
    one count per ``rule.nodata`` value, NaN/infinite, outside ``rule.valid_range``, ``mask``.
    float64, shape (1, 1, len(rule.nodata) + 3)."""
    out = np.zeros(len(rule.nodata) + 3)
    taken = np.zeros(block.shape, bool)
    for i, v in enumerate(rule.nodata):
        hit = block == block.dtype.type(v)
        out[i] = np.count_nonzero(hit)
        taken |= hit
    if block.dtype.kind == "f":
        hit = ~np.isfinite(block) & ~taken
        out[-3] = np.count_nonzero(hit)
        taken |= hit
    if rule.valid_range is not None:
        lo, hi = (np.float64(b) for b in rule.valid_range)
        hit = ((block < lo) | (block > hi)) & ~taken
        out[-2] = np.count_nonzero(hit)
        taken |= hit
    if mask is not None:
        out[-1] = np.count_nonzero(mask & ~taken)
    return out[None, None, :]


def block_summary(block: np.ndarray, nodata: float | None) -> np.ndarray:
    """[count, min, max] of a block's valid pixels as float64, shape (1, 1, 3)."""
    if kernels.float_kernel(block):
        count, lo, hi = kernels.float_scan(block, nodata)
        return np.array([[[count, lo, hi]]], dtype=np.float64)
    v = valid_values(block, nodata)
    if v.size == 0:
        return np.array([[[0.0, np.inf, -np.inf]]])
    return np.array([[[v.size, v.min(), v.max()]]], dtype=np.float64)


def _plus_summary(total: np.ndarray, row: np.ndarray) -> np.ndarray:
    """:func:`sum_blocks` step of :func:`block_summary` and :func:`block_summary_top` rows:
    counts add, [1] is the minimum, [2] the maximum."""
    row = row.reshape(-1)
    with np.errstate(over="ignore", invalid="ignore"):  # [1] and [2] (values near float64's limits) are replaced
        out = total + row
    out[1], out[2] = min(total[1], row[1]), max(total[2], row[2])
    return out


def block_summary_top(block: np.ndarray, nodata: float | None) -> np.ndarray:
    """:func:`block_summary` and the histogram of the top 16 key bits of the valid pixels
    (:func:`block_key_hist` without prefixes) in one row, float64, shape (1, 1, 3 + 65,536)."""
    if kernels.float_kernel(block):  # one scan of the pixels for both
        top = np.zeros(RADIX, np.int64)
        count, lo, hi = kernels.float_scan(block, nodata, top)
        head = np.array([count, lo, hi], dtype=np.float64)
    else:
        head = block_summary(block, nodata)[0, 0]
        kdt = _KEY_DTYPES[block.dtype.name]
        top = block_key_hist(block, nodata, np.empty(0, kdt), np.dtype(kdt).itemsize * 8 - DIGIT)[0, 0]
    return np.concatenate([head, top.astype(np.float64)])[None, None, :]  # counts < 2**53: exact


#: pixels per piece when numpy computes a key histogram (its int64 temporaries stay small)
KEY_PIECE = 1 << 20


def block_key_hist(block: np.ndarray, nodata: float | None, prefixes: np.ndarray, shift: int) -> np.ndarray:
    """Histogram of the next 16 key bits of valid pixels whose key prefix is in ``prefixes``.

    ``prefixes`` are sorted keys already shifted right by ``shift + 16``; the result has one
    row of 65,536 counts per prefix (all pixels' top digit when ``prefixes`` is empty), flattened.
    """
    length = max(prefixes.size, 1) * RADIX
    if kernels.float_kernel(block):  # the block as it is (a broadcast of one value is not copied)
        counts = np.zeros(length, np.int64)
        if prefixes.size == 0:
            kernels.float_scan(block, nodata, counts)
        else:
            kernels.float_key_hist(block, nodata, shift, prefixes, counts)
        return counts[None, None, :]
    flat = block.reshape(-1)
    counts = np.zeros(length, np.int64)
    for i in range(0, flat.size, KEY_PIECE):
        counts += _key_hist_numpy(flat[i:i + KEY_PIECE], nodata, prefixes, shift)
    return counts[None, None, :]


def _key_hist_numpy(values: np.ndarray, nodata: float | None, prefixes: np.ndarray, shift: int) -> np.ndarray:
    keys = to_key(valid_values(values, nodata))
    digit = ((keys >> keys.dtype.type(shift)) & keys.dtype.type(RADIX - 1)).astype(np.int64)
    if prefixes.size == 0:
        return np.bincount(digit, minlength=RADIX)
    pre = keys >> keys.dtype.type(shift + DIGIT)
    pos = np.searchsorted(prefixes, pre)
    pos[pos == prefixes.size] = 0
    hit = prefixes[pos] == pre
    idx = pos[hit] * RADIX + digit[hit]
    return np.bincount(idx, minlength=prefixes.size * RADIX)


def reduce_blocks(x: da.Array, func, length: int, dtype, *, mask: da.Array | None = None, **kwargs) -> da.Array:
    """Apply a per-block summary (returning (1, 1, length)) and stack the blocks: (ny, nx, length).
    With ``mask`` (same chunks as ``x``), ``func`` gets the mask block as its second argument."""
    extra = (mask, "ij") if mask is not None else ()
    return da.blockwise(
        func, "ijk", x, "ij", *extra, new_axes={"k": length}, dtype=dtype,
        adjust_chunks={"i": 1, "j": 1}, meta=np.empty((0, 0, 0), dtype=dtype), **kwargs,
    )


def _plus(total: np.ndarray, row: np.ndarray) -> np.ndarray:
    return total + row.reshape(-1)  # a new array: the step may run twice (dask.distributed retries)


def _fold(step, total: np.ndarray | None, *rows: np.ndarray) -> np.ndarray:
    """One step of :func:`sum_blocks`: ``rows`` added to ``total`` (None: the first rows)."""
    for row in rows:
        total = np.array(row.reshape(-1), copy=True) if total is None else step(total, row)
    return total


#: rows added per step of :func:`sum_blocks`
FOLD_ROWS = 2


def sum_blocks(parts: da.Array, step=_plus) -> da.Array:
    """The per-block rows of :func:`reduce_blocks` (ny, nx, length) summed over the blocks:
    (length,), in ``parts.dtype``, folded in block order, :data:`FOLD_ROWS` rows per step
    (``step(total, row)`` returns the new total; it must not change its arguments, so that a
    step dask.distributed runs twice adds its rows once).

    The memory it takes does not grow with the number of blocks: the running total and the
    rows the threads finished but not yet added, a few rows whatever the scene's size. A tree
    reduction holds partial sums on every level of the tree (the levels grow with the scene),
    and a float refine pass's rows are megabytes each."""
    keys = list(flatten(parts.__dask_keys__()))
    name = f"sum-blocks-{tokenize(parts, step)}"
    layer, total = {}, None
    for i in range(0, len(keys), FOLD_ROWS):
        key = (f"{name}-step", i)
        layer[key] = (_fold, step, total, *keys[i:i + FOLD_ROWS])
        total = key
    layer[(name, 0)] = total
    graph = HighLevelGraph.from_collections(name, layer, dependencies=[parts])
    return da.Array(graph, name, chunks=((parts.shape[-1],),), dtype=parts.dtype,
                    meta=np.empty((0,), parts.dtype))


# ------------------------------------------------------------------- the result
@dataclass(frozen=True)
class Stats:
    """Global statistics of a scene's valid pixels, in physical values (a plain result).

    ``dtype`` is the physical values' dtype (the file's, or float64 when scaled); ``hist`` is
    indexed by the order-preserving key of the raw values (``raw_dtype``), valid pixels only.
    ``removed`` holds the pixels each validity source removed: ``nodata_values`` ({raw value:
    pixels}), ``nonfinite`` (NaN, infinities), ``valid_range`` and ``masked`` (each pixel counted
    once, in that order). Anything that needs another pass over the pixels is in :class:`Passes`.
    """

    dtype: np.dtype
    count: int
    vmin: np.generic | None
    vmax: np.generic | None
    hist: np.ndarray | None = None  # exact counts by raw key (8/16-bit integers only)
    top_hist: np.ndarray | None = None  # counts of the top 16 key bits (other dtypes)
    raw_dtype: np.dtype | None = None  # the file's dtype (the histogram's keys); None: ``dtype``
    rule: ValueRule = field(default_factory=ValueRule)
    removed: dict = field(default_factory=dict)

    @property
    def scaled(self) -> bool:
        """True when physical values differ from raw values."""
        return self.rule.scaled

    def hist_raw_values(self) -> tuple[np.ndarray, np.ndarray]:
        """(distinct raw values, counts) of the valid pixels (8/16-bit integers), sorted."""
        keys = np.flatnonzero(self.hist)
        return from_key(keys, self.raw_dtype or self.dtype), self.hist[keys]

    def hist_values(self) -> tuple[np.ndarray, np.ndarray]:
        """(distinct physical values, counts) of the valid pixels (8/16-bit integers), sorted."""
        raw, counts = self.hist_raw_values()
        if not self.scaled:
            return raw, counts
        phys = self.rule.physical(raw)
        uniq, inv = np.unique(phys, return_inverse=True)
        if uniq.size == phys.size:
            return phys, counts
        return uniq, np.bincount(inv, counts, uniq.size).astype(np.int64)  # raw values rounding together


# ------------------------------------------------- extra passes (they read the scene again)
def refine_passes(stats: Stats) -> int:
    """Extra passes :func:`order_stats` makes: 0 from an exact histogram, else one per 16 key
    bits below the top 16 (float32/int32: 1, float64: 3)."""
    if stats.hist is not None:
        return 0
    return np.dtype(_KEY_DTYPES[stats.dtype.name]).itemsize * 8 // DIGIT - 1


def order_stats(stats: Stats, scene: Scene, ranks: np.ndarray) -> np.ndarray:
    """The physical values at 0-based ``ranks`` of the sorted valid pixels, exactly.

    Parameters
    ----------
    stats : Stats
        The statistics of ``scene`` (with ``top_hist`` unless they hold an exact histogram).
    scene : Scene
        The scene the statistics came from; read again (:func:`refine_passes` times) for dtypes
        without an exact histogram.
    ranks : numpy.ndarray
        int64 ranks, each in [0, stats.count).

    Returns
    -------
    numpy.ndarray
        The values, same shape as ``ranks``, in ``stats.dtype`` (float64 when scaled).
    """
    ranks = np.asarray(ranks, dtype=np.int64)
    if stats.hist is not None:
        keys = np.searchsorted(np.cumsum(stats.hist), ranks, side="right")
        return stats.rule.physical(from_key(keys, stats.raw_dtype or stats.dtype))
    return _refine(stats, scene, ranks)


def _refine(stats: Stats, scene: Scene, ranks: np.ndarray) -> np.ndarray:
    """Radix-select on the key, 16 bits per pass over the scene."""
    if stats.top_hist is None:
        raise RuntimeError("order statistics need stats computed with distribution=True")
    bits = np.dtype(_KEY_DTYPES[stats.dtype.name]).itemsize * 8
    cum = np.cumsum(stats.top_hist)
    digit = np.searchsorted(cum, ranks, side="right")
    rank_in = ranks - (cum[digit] - stats.top_hist[digit])
    prefix = digit.astype(np.uint64)
    done = DIGIT
    while done < bits:
        shift = bits - done - DIGIT
        uniq, inv = np.unique(prefix, return_inverse=True)
        kdt = _KEY_DTYPES[stats.dtype.name]
        hist = _compute_key_hist(scene, uniq.astype(kdt), shift)
        rows = hist.reshape(uniq.size, RADIX)[inv]
        cum = np.cumsum(rows, axis=1)
        digit = (cum <= rank_in[:, None]).sum(axis=1)
        before = np.where(digit > 0, cum[np.arange(len(digit)), np.maximum(digit - 1, 0)], 0)
        rank_in = rank_in - before
        prefix = (prefix << np.uint64(DIGIT)) | digit.astype(np.uint64)
        done += DIGIT
    return from_key(prefix, stats.dtype)


def moments(stats: Stats, scene: Scene) -> tuple[int, float, float]:
    """(count, mean, sum of squared deviations from the mean) of the valid pixels.

    8/16-bit data: from the exact histogram with exact integer sums (mean and the sum of
    squares are correctly rounded), no read. Other dtypes: one extra pass over ``scene``
    (per-block count, float64 sum and centred sum of squares, merged with Chan et al.'s
    pairwise formula).
    """
    if stats.hist is not None:
        values, counts = stats.hist_raw_values()
        xs = [int(v) for v in values]
        cs = [int(c) for c in counts]
        n = sum(cs)
        s1 = sum(c * x for c, x in zip(cs, xs))
        s2 = sum(c * x * x for c, x in zip(cs, xs))
        res = (n, s1 / n, (n * s2 - s1 * s1) / n) if n else (0, math.nan, math.nan)
        if stats.scaled and n:  # of raw * scale + offset, from the exact raw sums
            res = (n, res[1] * stats.rule.scale + stats.rule.offset, res[2] * stats.rule.scale ** 2)
        return res
    x, nodata = scene.values()
    parts = reduce_blocks(x, block_moments, 3, np.float64, nodata=nodata)
    log.info("moments: one more pass over %s", scene.path)
    (rows,) = dask.compute(parts.reshape(-1, 3))
    return merge_moments(rows)


def binned(stats: Stats, scene: Scene, bins: int = RADIX) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(edges, counts, sums): a ``bins``-bin histogram of the valid pixels over [min, max]
    (``numpy.histogram`` bins: edges ``linspace(min, max, bins + 1)`` in float64, left-closed,
    the last closed) with the sum of the values in each bin. 8/16-bit data: from the exact
    histogram; other dtypes: one extra pass over ``scene`` (none without valid pixels)."""
    if stats.count == 0:
        edges = np.histogram_bin_edges(np.empty(0), bins=bins)
        return edges, np.zeros(bins, np.int64), np.zeros(bins)
    edges = np.linspace(float(stats.vmin), float(stats.vmax), bins + 1)
    if stats.hist is not None:  # 8/16-bit: from the exact histogram, no read
        values, counts = stats.hist_values()
        idx = bin_index(values.astype(np.float64), edges)
        res = np.concatenate([np.bincount(idx, counts, bins),
                              np.bincount(idx, counts * values.astype(np.float64), bins)])
    else:
        x, nodata = scene.values()
        parts = reduce_blocks(x, block_binned, 2 * bins, np.float64, nodata=nodata, edges=edges)
        log.info("%d-bin histogram: one more pass over %s", bins, scene.path)
        (res,) = dask.compute(sum_blocks(parts))
    return edges, res[:bins].astype(np.int64), res[bins:]


def tail(stats: Stats, scene: Scene, threshold: float) -> tuple[int, float, float, float]:
    """(count, float64 sum, min, max) of the valid pixels ``> threshold``: one extra pass over ``scene``."""
    x, nodata = scene.values()
    parts = reduce_blocks(x, block_tail, 4, np.float64, nodata=nodata, threshold=threshold)
    (rows,) = dask.compute(parts.reshape(-1, 4))
    n = int(rows[:, 0].sum())
    return n, float(rows[:, 1].sum()), float(rows[:, 2].min()), float(rows[:, 3].max())


def tail_values(stats: Stats, scene: Scene, threshold: float | None) -> np.ndarray:
    """The valid pixels ``> threshold`` (all of them for None), as float64: one extra pass over ``scene``."""
    x, nodata = scene.values()
    blocks = x.to_delayed().ravel()
    parts = dask.compute(*[dask.delayed(_tail_values)(b, nodata, threshold) for b in blocks])
    return np.concatenate(parts) if parts else np.empty(0)


class Passes:
    """The extra passes of one fit over one scene, with the results reused within it.

    ``moments`` and ``binned`` results are kept (a scheme and a later histogram plot share
    them); ``extra_passes`` counts the passes made over the pixels. :meth:`reading` gives
    the same kept results with another scene to read (the input, once a decoded-chunk store
    the fit read is gone).

    Parameters
    ----------
    stats : Stats
        The statistics pass's result.
    scene : Scene
        The scene those statistics came from (the pixels every extra pass reads).
    """

    def __init__(self, stats: Stats, scene: Scene, *, _kept: dict | None = None):
        self.stats = stats
        self.scene = scene
        self.extra_passes = 0
        self._kept = {} if _kept is None else _kept

    def reading(self, scene: Scene) -> "Passes":
        """Passes over ``scene`` (the same pixels) that share this object's kept results."""
        return Passes(self.stats, scene, _kept=self._kept)

    def kept(self) -> tuple:
        """The keys of the results kept so far: ``"moments"``, ``("binned", bins)``."""
        return tuple(self._kept)

    def order_stats(self, ranks: np.ndarray) -> np.ndarray:
        """:func:`order_stats` (not kept: each call its own passes)."""
        values = order_stats(self.stats, self.scene, ranks)
        self.extra_passes += refine_passes(self.stats)
        return values

    def moments(self) -> tuple[int, float, float]:
        """:func:`moments`, kept."""
        if "moments" not in self._kept:
            self._kept["moments"] = moments(self.stats, self.scene)
            self.extra_passes += int(self.stats.hist is None)
        return self._kept["moments"]

    def binned(self, bins: int | None = RADIX) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """:func:`binned`, kept. ``bins=None``: a histogram already kept (any bin count), else
        one of 65,536 bins."""
        if bins is None:
            done = [k[1] for k in self._kept if isinstance(k, tuple) and k[0] == "binned"]
            bins = done[0] if done else RADIX
        key = ("binned", bins)
        if key not in self._kept:
            self._kept[key] = binned(self.stats, self.scene, bins)
            self.extra_passes += int(self.stats.hist is None and self.stats.count > 0)
        return self._kept[key]

    def tail(self, threshold: float) -> tuple[int, float, float, float]:
        """:func:`tail` (one extra pass, not kept)."""
        res = tail(self.stats, self.scene, threshold)
        self.extra_passes += 1
        return res

    def tail_values(self, threshold: float | None) -> np.ndarray:
        """:func:`tail_values` (one extra pass, not kept)."""
        res = tail_values(self.stats, self.scene, threshold)
        self.extra_passes += 1
        return res


def bin_index(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """``numpy.histogram``'s bin of every float64 value inside [edges[0], edges[-1]] (uniform
    edges; the comparisons are the classifier's: ``edges[i] <= x < edges[i+1]``, last closed)."""
    bins = len(edges) - 1
    lo, hi = edges[0], edges[-1]
    if bins == 1 or hi == lo:
        return np.zeros(values.shape, np.int64)
    idx = np.clip(((values - lo) * (bins / (hi - lo))).astype(np.int64), 0, bins - 1)
    idx -= values < edges[idx]
    idx += (values >= edges[idx + 1]) & (idx < bins - 1)
    return idx


def block_moments(block: np.ndarray, nodata: float | None) -> np.ndarray:
    """[count, sum, centred sum of squares] of a block's valid pixels in float64, shape (1, 1, 3)."""
    v = valid_values(block, nodata).astype(np.float64)
    if v.size == 0:
        return np.zeros((1, 1, 3))
    with np.errstate(over="ignore", invalid="ignore"):  # data near float64's limits: inf/nan, refused by the scheme
        s = v.sum()
        return np.array([[[v.size, s, np.square(v - s / v.size).sum()]]])


def merge_moments(rows: np.ndarray) -> tuple[int, float, float]:
    """Merge per-block [count, sum, centred sum of squares] rows: (count, mean, M2)."""
    rows = rows[rows[:, 0] > 0]
    n = int(rows[:, 0].sum())
    if n == 0:
        return 0, math.nan, math.nan
    with np.errstate(over="ignore", invalid="ignore"):
        mean = float(rows[:, 1].sum()) / n
        block_mean = rows[:, 1] / rows[:, 0]
        return n, mean, float((rows[:, 2] + rows[:, 0] * np.square(block_mean - mean)).sum())


def block_binned(block: np.ndarray, nodata: float | None, edges: np.ndarray) -> np.ndarray:
    """Counts and value sums of a block's valid pixels in the bins ``edges``, shape (1, 1, 2·bins)."""
    bins = len(edges) - 1
    if kernels.float_kernel(block):
        out = np.zeros(2 * bins)
        kernels.float_binned(block, nodata, edges, out[:bins], out[bins:])
        return out[None, None, :]
    v = valid_values(block, nodata).astype(np.float64)
    v = v[(v >= edges[0]) & (v <= edges[-1])]
    idx = bin_index(v, edges)
    return np.concatenate([np.bincount(idx, minlength=bins).astype(np.float64),
                           np.bincount(idx, weights=v, minlength=bins)])[None, None, :]


def block_tail(block: np.ndarray, nodata: float | None, threshold: float) -> np.ndarray:
    """[count, sum, min, max] (float64) of a block's valid pixels ``> threshold``, shape (1, 1, 4)."""
    v = valid_values(block, nodata).astype(np.float64)
    v = v[v > threshold]
    if v.size == 0:
        return np.array([[[0.0, 0.0, np.inf, -np.inf]]])
    return np.array([[[v.size, v.sum(), v.min(), v.max()]]])


def _tail_values(block: np.ndarray, nodata: float | None, threshold: float | None) -> np.ndarray:
    v = valid_values(block, nodata).astype(np.float64)
    return v if threshold is None else v[v > threshold]


def _compute_key_hist(scene: Scene, prefixes: np.ndarray, shift: int) -> np.ndarray:
    length = max(prefixes.size, 1) * RADIX
    x, nodata = scene.values()
    parts = reduce_blocks(x, block_key_hist, length, np.int64, nodata=nodata, prefixes=prefixes, shift=shift)
    log.info("refining order statistics: one more pass over %s (%d bits left)", scene.path, shift + DIGIT)
    (hist,) = dask.compute(sum_blocks(parts))
    return hist


def stats_graph(scene: Scene, distribution: bool) -> dict[str, da.Array]:
    """The lazy reductions whose results make :class:`Stats` (nothing is computed here)."""
    if scene.dtype.name in LUT_DTYPES:
        k = hist_length(scene.dtype)
        if scene.mask is None:
            parts = reduce_blocks(scene.array, block_hist, k, np.int64)
            return {"hist": sum_blocks(parts)}
        parts = reduce_blocks(scene.array, block_hist_split, 2 * k, np.int64, mask=scene.mask)
        total = sum_blocks(parts)
        return {"hist": total[:k], "masked_hist": total[k:]}
    x, nodata = scene.values()
    # one row per block (with ``distribution`` also the top key histogram, from the same scan),
    # folded in block order: one task a block, not a tree reduction per statistic
    summary, length = (block_summary_top, 3 + RADIX) if distribution else (block_summary, 3)
    total = sum_blocks(reduce_blocks(x, summary, length, np.float64, nodata=nodata), _plus_summary)
    graph = {"count": total[0], "min": total[1], "max": total[2]}
    if distribution:
        graph["top_hist"] = total[3:].astype(np.int64)
    rule = scene.rule
    if not scene.plain() or (scene.dtype.kind == "f" and rule.nodata):  # who removed which pixels
        removed = reduce_blocks(scene.array, block_removed, len(rule.nodata) + 3, np.float64,
                                 mask=scene.mask, rule=rule)
        graph["removed"] = sum_blocks(removed)
    return graph


def _removed(rule: ValueRule, per_value, nonfinite: int, out_of_range: int, masked: int) -> dict:
    return {"nodata_values": {float(v): int(n) for v, n in zip(rule.nodata, per_value)},
            "nonfinite": int(nonfinite), "valid_range": int(out_of_range), "masked": int(masked)}


def stats_from_results(scene: Scene, res: dict) -> Stats:
    """Assemble :class:`Stats` from the computed results of :func:`stats_graph`."""
    dtype, rule, total = scene.dtype, scene.rule, scene.shape[0] * scene.shape[1]
    vdt = rule.value_dtype(dtype)
    if "hist" in res:
        hist = res["hist"]
        masked_hist = res.get("masked_hist")
        everything = hist if masked_hist is None else hist + masked_hist
        raw = from_key(np.arange(hist.size), dtype)  # the raw value of every key
        bad = rule.invalid(raw)
        if bad is None:
            bad = np.zeros(hist.size, bool)
        per_value = [int(everything[to_key(np.array([v], dtype=dtype))[0]]) for v in rule.nodata]
        out_of_range = int(everything[bad].sum()) - sum(per_value)
        masked = 0 if masked_hist is None else int(masked_hist[~bad].sum())
        hist = hist.copy() if masked_hist is not None else hist
        hist[bad] = 0
        nz = np.flatnonzero(hist)
        count = int(hist.sum())
        vmin = rule.physical(from_key(nz[:1], dtype))[0] if count else None
        vmax = rule.physical(from_key(nz[-1:], dtype))[0] if count else None
        return Stats(vdt, count, vmin, vmax, hist=hist, raw_dtype=dtype, rule=rule,
                     removed=_removed(rule, per_value, 0, out_of_range, masked))
    count = int(res["count"])
    x, _ = scene.values()
    vmin = x.dtype.type(res["min"]) if count else None
    vmax = x.dtype.type(res["max"]) if count else None
    if "removed" in res:
        r = res["removed"]
        removed = _removed(rule, r[:-3], r[-3], r[-2], r[-1])
    else:  # a plain scene without NaN to tell apart: the one nodata value removed every other pixel
        gone = total - count
        removed = _removed(rule, [gone] if rule.nodata else [], 0 if rule.nodata else gone, 0, 0)
    return Stats(x.dtype, count, vmin, vmax, top_hist=res.get("top_hist"), rule=rule,
                 removed=removed)


def compute_stats(scene: Scene, distribution: bool = False) -> Stats:
    """One pass over the scene: everything the class edges need (one ``dask.compute``)."""
    graph = stats_graph(scene, distribution)
    (res,) = dask.compute(graph)
    return stats_from_results(scene, res)
