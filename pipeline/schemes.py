"""Class-edge schemes: a registry from the config's scheme name to a function of the statistics.

Every scheme returns the N+1 class edges as a numpy array; class k holds
``edges[k-1] <= x < edges[k]`` and the last class is closed.
"""

from __future__ import annotations

import logging
import math
from typing import Callable

import numpy as np

from .jobs.config import BoxPlot, EqualInterval, HeadTailBreaks, Manual, NaturalBreaks, Percentiles, Quantile, StdMean
from .errors import ClassificationError
from .jenks import fisher_jenks
from .stats import Passes, Stats

log = logging.getLogger(__name__.replace("pipeline", "sceneclass", 1))

#: a scheme: (its config, the statistics, the extra passes over the same scene) -> N+1 edges
SchemeFn = Callable[[object, Stats, Passes], np.ndarray]
SCHEMES: dict[str, SchemeFn] = {}
#: schemes that need the value distribution (not just min/max) from the statistics pass
NEEDS_DISTRIBUTION: set[str] = set()


def register(name: str, *, distribution: bool = False) -> Callable[[SchemeFn], SchemeFn]:
    def deco(fn: SchemeFn) -> SchemeFn:
        SCHEMES[name] = fn
        if distribution:
            NEEDS_DISTRIBUTION.add(name)
        return fn

    return deco


@register("equal_interval")
def equal_interval(cfg: EqualInterval, stats: Stats, passes: Passes) -> np.ndarray:
    """numpy.histogram's edges: linspace(min, max, N+1) in numpy's bin dtype (bit for bit)."""
    if stats.count == 0:
        return np.histogram_bin_edges(np.empty(0, stats.dtype), bins=cfg.count)
    lo, hi = float(stats.vmin), float(stats.vmax)
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ClassificationError(
            f"classes: equal_interval needs a finite range, but the data's minimum is {lo} and maximum {hi}; "
            "declare the infinite values nodata or use manual breaks")
    if not math.isfinite(hi - lo):  # a span beyond float64 (data near +-1.8e308): numpy's linspace overflows
        t = np.linspace(0.0, 1.0, cfg.count + 1)
        return lo * (1.0 - t) + hi * t  # each term finite; exact at both ends
    ends = np.array([stats.vmin, stats.vmax], dtype=stats.dtype)
    try:
        return np.histogram_bin_edges(ends, bins=cfg.count)
    except ValueError as e:  # numpy: "Too many bins for data range"
        if "Too many bins" not in str(e):
            raise
        raise ClassificationError(
            f"classes.count: {cfg.count} equal-interval classes cannot be made between the data's minimum "
            f"{lo!r} and maximum {hi!r}: {stats.dtype} has too few representable values in that range for "
            f"{cfg.count + 1} different edges; use fewer classes (or another scheme)") from None


@register("manual")
def manual(cfg: Manual, stats: Stats, passes: Passes) -> np.ndarray:
    return np.asarray(cfg.breaks, dtype=np.float64)


def _lerp(a: np.ndarray, b: np.ndarray, t: np.ndarray) -> np.ndarray:
    """numpy's quantile interpolation, operation for operation (numpy 2 ``_lerp``)."""
    diff = b - a
    out = np.add(a, diff * t)
    np.subtract(b, diff * (1 - t), out=out, where=t >= 0.5, casting="unsafe")
    over = ~np.isfinite(diff) & np.isfinite(a) & np.isfinite(b)
    if over.any():  # a and b near float64's opposite limits: weigh each end instead (no overflow)
        out = np.where(over, a * (1 - t) + b * t, out)
    return out


def quantiles_exact(stats: Stats, passes: Passes, q: np.ndarray) -> np.ndarray:
    """``numpy.quantile(valid_pixels, q)`` (linear method) from exact order statistics."""
    n = stats.count
    virtual = (n - 1) * np.asarray(q, dtype=np.float64)
    prev = np.floor(virtual)
    nxt = prev + 1
    above = virtual >= n - 1
    prev[above] = n - 1
    nxt[above] = n - 1
    gamma = virtual - np.where(above, -1, prev)
    nxt = np.minimum(nxt, n - 1)
    ranks = np.concatenate([prev, nxt]).astype(np.int64)
    values = passes.order_stats(ranks)
    a, b = values[: len(q)], values[len(q):]
    return _lerp(a, b, gamma)


@register("quantile", distribution=True)
def quantile(cfg: Quantile, stats: Stats, passes: Passes) -> np.ndarray:
    """Equal-count classes: edges are numpy.quantile(valid, linspace(0, 1, N+1))."""
    if stats.count == 0:
        return np.histogram_bin_edges(np.empty(0, stats.dtype), bins=cfg.count)
    return quantiles_exact(stats, passes, np.linspace(0, 1, cfg.count + 1))


# --------------------------------------------------------------------------------------------
# mapclassify-like schemes. mapclassify gives K *upper bounds* b_0 < ... < b_{K-1} with classes
# closed on the right (class 0 is y <= b_0, from min(y)); sceneclass edges are closed on the
# left. Each scheme below states how mapclassify's bounds map onto its edges; pixels exactly on
# an edge are then the only ones whose class can differ (except natural_breaks, where the
# mapping keeps the partition itself).
def _no_pixels(stats: Stats, n: int) -> np.ndarray:
    return np.histogram_bin_edges(np.empty(0, stats.dtype), bins=n)


def _pad(edges: list[float], n: int) -> np.ndarray:
    """N+1 edges from fewer: repeat the last edge (the classes in between stay empty)."""
    return np.asarray(edges[:-1] + [edges[-1]] * (n + 2 - len(edges)), dtype=np.float64)


@register("natural_breaks")
def natural_breaks(cfg: NaturalBreaks, stats: Stats, passes: Passes) -> np.ndarray:
    """Fisher-Jenks optimal breaks (least weighted within-class sum of squares).

    8/16-bit data: exact, on the histogram's distinct values weighted by their counts (no read
    beyond the statistics pass). Each inner edge is the *first value of the next class*: the
    class holds exactly the values mapclassify.FisherJenks puts in it (mapclassify's upper bound
    b is the largest value of its class; the edge is the smallest valid value above b).
    Other dtypes: optimal among partitions at the bin edges of a ``float_bins``-bin histogram
    over [min, max] (one extra pass); each bin is represented by its mean, which makes the
    within-class sums of squares exact for such partitions; every edge is a bin edge, so a
    boundary can be off the value-level optimum by (about) one bin width, (max-min)/float_bins.
    """
    if stats.count == 0:
        return _no_pixels(stats, cfg.count)
    if stats.hist is not None:
        values, counts = stats.hist_values()
        x = lower = values.astype(np.float64)
    else:
        bin_edges, counts, sums = passes.binned(cfg.float_bins)
        keep = counts > 0
        counts = counts[keep]
        x = sums[keep] / counts
        lower = bin_edges[:-1][keep]
    starts, _ = fisher_jenks(x, counts, cfg.count)
    edges = [float(stats.vmin), *(float(v) for v in lower[starts[1:]]), float(stats.vmax)]
    if len(starts) < cfg.count:
        log.warning("natural_breaks: %d distinct values for %d classes: %d classes, one per value; "
                    "the other %d stay empty", len(starts), cfg.count, len(starts), cfg.count - len(starts))
    return _pad(edges, cfg.count)


@register("std_mean")
def std_mean(cfg: StdMean, stats: Stats, passes: Passes) -> np.ndarray:
    """Edges ``mean + w * std`` (std with ddof=1, as mapclassify.StdMean) for each multiple w.

    Edges: [min(vmin, c_0), c_0, ..., c_{q-1}, max(vmax, c_{q-1})] -- mapclassify's bounds are the
    inner edges, one class below the first cut and one above the last (mapclassify adds the
    maximum as a last bound when the last cut is below it; otherwise our last class is empty).
    Cuts outside [min, max] leave their classes empty. 8/16-bit data: mean and std from exact
    integer sums of the histogram; other dtypes: one extra pass.
    """
    if stats.count == 0:
        return _no_pixels(stats, cfg.n_classes)
    n, mean, m2 = passes.moments()
    std = math.sqrt(m2 / (n - 1)) if n > 1 else 0.0
    cuts = [mean + std * w for w in cfg.multiples]
    return np.array([min(float(stats.vmin), cuts[0]), *cuts, max(float(stats.vmax), cuts[-1])])


def _head_tail_levels(x: np.ndarray, mean_above: Callable[[int], float], cap: int) -> tuple[list[float], bool]:
    """mapclassify's head_tail_breaks on sorted distinct values ``x``: the mean of all, then of the
    values above it, ... until one distinct value is left (or the mean repeats). ``mean_above(i)``
    is the mean of the values from x[i] up. Returns (means, stopped at ``cap``)."""
    cuts: list[float] = []
    lo = 0
    while True:
        mean = mean_above(lo)
        if not math.isfinite(mean):
            raise ClassificationError(
                "classes.scheme: head_tail_breaks cannot classify this data: the sum of its values overflows "
                "float64; use equal_interval, quantile, percentiles or manual breaks")
        if cuts and cuts[-1] == mean:  # mapclassify's guard against float round-off (GH#117)
            return cuts, False
        cuts.append(mean)
        if lo >= len(x) - 1:
            return cuts, False
        if len(cuts) == cap:
            return cuts, True
        lo = int(np.searchsorted(x, mean, side="right"))


#: head_tail_breaks on other dtypes: below this many pixels in the tail, gather them (float64)
#: and finish in memory; above it, one pass per level.
TAIL_GATHER = 1 << 22


@register("head_tail_breaks")
def head_tail_breaks(cfg: HeadTailBreaks, stats: Stats, passes: Passes) -> np.ndarray:
    """Head/tail breaks: the means m_1 < m_2 < ... of ever smaller heads, as mapclassify.HeadTailBreaks.

    mapclassify's bounds are [m_1, ..., m_K] with m_K the maximum (the mean of the last, single
    value); the edges are [vmin, m_1, ..., m_{K-1}, vmax]: K classes, a count known only now.
    8/16-bit data: exact from the histogram (means of integer sums, correctly rounded, as numpy's
    float64 mean of integers). Other dtypes: one pass per level (count and float64 sum above the
    last mean) until the tail has fewer than TAIL_GATHER pixels, which one more pass gathers.
    """
    cap = cfg.max_classes or 254
    if stats.count == 0:
        return _no_pixels(stats, 1)
    if stats.hist is not None:
        values, counts = stats.hist_raw_values()  # raw integers: exact sums
        x = stats.rule.physical(values).astype(np.float64)
        ints = values.astype(np.int64)
        w_above = np.cumsum(counts[::-1])[::-1]
        s_above = np.cumsum((counts * ints)[::-1])[::-1]
        scale, offset = stats.rule.scale, stats.rule.offset
        if stats.scaled:  # the mean of raw * scale + offset, from the exact raw mean
            cuts, capped = _head_tail_levels(x, lambda i: s_above[i] / w_above[i] * scale + offset, cap)
        else:
            cuts, capped = _head_tail_levels(x, lambda i: s_above[i] / w_above[i], cap)
    else:
        cuts, capped, threshold = [], False, -np.inf
        n, total, lo_v, hi_v = stats.count, None, float(stats.vmin), float(stats.vmax)
        while n > TAIL_GATHER:
            if total is None:
                n, total, lo_v, hi_v = passes.tail(threshold)
            mean = total / n
            if not math.isfinite(mean):
                raise ClassificationError(
                    "classes.scheme: head_tail_breaks cannot classify this data: the sum of its values overflows "
                    "float64; use equal_interval, quantile, percentiles or manual breaks")
            if cuts and cuts[-1] == mean:
                break
            cuts.append(mean)
            if lo_v == hi_v or len(cuts) == cap:
                capped = lo_v != hi_v
                break
            threshold = mean
            n, total, lo_v, hi_v = passes.tail(threshold)
        else:
            v = np.sort(passes.tail_values(None if threshold == -np.inf else threshold))
            x, first = np.unique(v, return_index=True)
            more, capped = _head_tail_levels(x, lambda i: float(v[first[i]:].sum()) / (len(v) - first[i]),
                                             cap - len(cuts))
            cuts += more
    if capped:
        log.warning("head_tail_breaks: stopped at max_classes=%d; the data has more levels", cap)
    return np.array([float(stats.vmin), *cuts[:-1], float(stats.vmax)], dtype=np.float64)


@register("percentiles", distribution=True)
def percentiles(cfg: Percentiles, stats: Stats, passes: Passes) -> np.ndarray:
    """Classes ending at the percentiles ``pct`` (the last 100), as mapclassify.Percentiles.

    mapclassify's bounds [P(p_1), ..., P(p_K) = max] become the edges [vmin, P(p_1), ...,
    P(p_{K-1}), vmax]. P is ``numpy.percentile`` (linear) from exact order statistics (bit for
    bit; mapclassify's scipy.stats.scoreatpercentile differs by float round-off only).
    """
    if stats.count == 0:
        return _no_pixels(stats, cfg.n_classes)
    inner = quantiles_exact(stats, passes, np.asarray(cfg.pct[:-1], dtype=np.float64) / 100)
    return np.array([float(stats.vmin), *(float(v) for v in inner), float(stats.vmax)])


@register("box_plot", distribution=True)
def box_plot(cfg: BoxPlot, stats: Stats, passes: Passes) -> np.ndarray:
    """Six classes: low outliers, q1..q4 ranges inside the fences, high outliers (mapclassify.BoxPlot).

    With quartiles q1, q2, q3 (numpy.quantile, linear, exact order statistics), IQR = q3 - q1 and
    fences lf = q1 - hinge*IQR, rf = q3 + hinge*IQR, the edges are
    [min(vmin, lf), lf, q1, q2, q3, rf, max(vmax, rf)]. mapclassify's bounds [lf, q1, q2, q3, rf,
    max] are the inner edges; when rf >= max, mapclassify has 5 classes and our 6th is empty.
    """
    if stats.count == 0:
        return _no_pixels(stats, 6)
    q1, q2, q3 = (float(v) for v in quantiles_exact(stats, passes, np.array([0.25, 0.5, 0.75])))
    pivot = cfg.hinge * (q3 - q1)
    lf, rf = q1 - pivot, q3 + pivot
    return np.array([min(float(stats.vmin), lf), lf, q1, q2, q3, rf, max(float(stats.vmax), rf)])


def needs_distribution(cfg) -> bool:
    return cfg.scheme in NEEDS_DISTRIBUTION


#: schemes whose arithmetic on the values (means, sums of squares, bin widths) overflows when
#: the data's range is wider than float64 can represent as a difference
ARITHMETIC = frozenset({"natural_breaks", "std_mean", "head_tail_breaks", "box_plot"})


def check_edges(cfg, edges: np.ndarray) -> None:
    """Refuse edges that cannot be written or applied: NaN, or an infinite edge anywhere but
    an open end (-inf first, +inf last). Such edges come from arithmetic that overflows on data
    near the limits of its type (mean and standard deviation of float64 values near 1e308,
    values of +-inf in the data).

    Raises
    ------
    ClassificationError
        Naming the scheme and the first bad edge.
    """
    bad = np.isnan(edges)
    inner = np.isinf(edges)
    inner[0] &= edges[0] > 0  # -inf may open the first class
    inner[-1] &= edges[-1] < 0  # +inf may close the last
    bad |= inner
    if bad.any():
        k = int(np.flatnonzero(bad)[0])
        raise ClassificationError(
            f"classes: {cfg.scheme} edge {k} of {len(edges) - 1} classes is {edges[k]} for this data "
            "(its values or their spread overflow float64 arithmetic, or the data holds infinities); "
            "classify it with equal_interval, quantile or manual breaks, or mask the extreme values")


def class_edges(cfg, stats: Stats, passes: Passes) -> np.ndarray:
    """The N+1 edges for the config's scheme; warns when classes collapse (repeated edges).

    Parameters
    ----------
    cfg : pipeline.jobs.config scheme model
        The ``classes:`` settings (``scheme`` names the function in :data:`SCHEMES`).
    stats : Stats
        The statistics pass's result.
    passes : Passes
        Extra passes over the scene ``stats`` came from (schemes that need more than the
        statistics pass: float quantiles, moments, fine histograms, head/tail levels).

    Returns
    -------
    numpy.ndarray
        Shape (N+1,), the class edges.

    Raises
    ------
    ClassificationError
        When the data's range or the scheme's arithmetic overflows float64.
    """
    if stats.count and cfg.scheme in ARITHMETIC and not math.isfinite(float(stats.vmax) - float(stats.vmin)):
        raise ClassificationError(
            f"classes.scheme: {cfg.scheme} cannot classify this data: its values span {float(stats.vmin)!r} to "
            f"{float(stats.vmax)!r}, a range float64 arithmetic overflows on; use equal_interval, quantile, "
            "percentiles or manual breaks (or declare the extreme values nodata)")
    with np.errstate(over="ignore", invalid="ignore"):  # overflowing edges are refused just below
        edges = SCHEMES[cfg.scheme](cfg, stats, passes)
    check_edges(cfg, edges)
    repeated = int(np.count_nonzero(edges[1:] == edges[:-1]))
    if repeated:
        log.warning(
            "%s: %d of %d classes collapse to an empty range (repeated edges); they are kept, empty",
            cfg.scheme, repeated, len(edges) - 1,
        )
    return edges
