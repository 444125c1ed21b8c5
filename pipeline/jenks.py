"""Fisher-Jenks optimal breaks (1-D weighted k-means) on distinct values and their counts.

The classic dynamic program (Fisher 1958; Jenks; mapclassify's ``FisherJenks``) is O(k·n²) on
the n sorted *pixels*. Here it runs on the m distinct values weighted by their counts (at most
65,536 for 16-bit data, whatever the scene size), and each of the k rows of the program is
solved by divide and conquer over the split position: the within-class sum of squares is a
Monge cost, so the best start of the last class is non-decreasing in the end position
(Grønlund et al. 2017; the Ckmeans.1d.dp algorithm of Wang & Song 2011). Each recursion level
is evaluated for all its sub-problems at once with numpy, so one row costs O(m log m)
vectorised operations and the whole fit O(k·m log m) time and O(k·m) memory (the back-pointers,
uint16 when m <= 65,536).

Costs come from prefix sums of w, w·x and w·x². For integer data they are exact int64 sums
(values shifted by the median to keep them small); the sum of squares of a class is then
``s2 - s1²/w`` in float64, whose rounding (~1e-16 of s2) only matters between partitions whose
costs are equal to that precision.
"""

from __future__ import annotations

import numpy as np


def _prefix(x: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Prefix sums (with a leading 0) of w, w·x, w·x² of the values shifted by their median.

    Integer values: the sums are exact integers, kept in float64 when every partial sum is below
    2**52 (exact there, and fastest), else in int64. Other values (or sums beyond 2**62): float64.
    """
    ref = x[len(x) // 2]
    xs = x - ref
    wf = w.astype(np.float64)
    total = float(np.dot(wf, xs * xs))  # the largest partial sum of w·x² (to within rounding)
    if np.all(xs == np.round(xs)) and total < 2.0**62:
        wi, xi = w.astype(np.int64), xs.astype(np.int64)
        cols = (wi, wi * xi, wi * xi * xi)
        if total < 2.0**52:  # every partial sum is an integer float64 holds exactly
            cols = tuple(c.astype(np.float64) for c in cols)
    else:
        cols = (wf, wf * xs, wf * xs * xs)
    return tuple(np.concatenate([np.zeros(1, c.dtype), np.cumsum(c)]) for c in cols)


class _Cost:
    """Weighted within-class sum of squares of x[s..j] (inclusive), vectorised over (s, j)."""

    def __init__(self, x: np.ndarray, w: np.ndarray):
        self.W, self.S1, self.S2 = _prefix(x, w)
        self.exact_float = self.W.dtype == np.float64

    def parts(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self.W[idx], self.S1[idx], self.S2[idx]

    def between(self, lo: tuple, hi: tuple) -> np.ndarray:
        """SSE of the classes whose prefix sums are ``lo`` (at s) and ``hi`` (at j + 1)."""
        w, s1, s2 = (b - a for a, b in zip(lo, hi))
        if not self.exact_float:
            w, s1, s2 = (v.astype(np.float64) for v in (w, s1, s2))
        return np.maximum(s2 - s1 * (s1 / w), 0.0)

    def __call__(self, s: np.ndarray, j: np.ndarray) -> np.ndarray:
        return self.between(self.parts(s), self.parts(j + 1))


def _row(prev: np.ndarray, c: int, m: int, stop: int, cost: _Cost, arg_dtype) -> tuple[np.ndarray, np.ndarray]:
    """One row of the program: for every end j in [c-1, stop], the best cost of x[0..j] in c
    classes (``cur[j]``) and the start of its last class (``arg[j]``), by divide and conquer
    over j (all sub-problems of one recursion level at once)."""
    cur = np.full(m, np.inf)
    arg = np.zeros(m, dtype=arg_dtype)
    prev_at = np.concatenate([[np.inf], prev])  # prev_at[s] = prev[s - 1]
    lo = c - 1  # the last class cannot start before there is room for c-1 classes
    jlo = np.array([lo]); jhi = np.array([stop]); slo = np.array([lo]); shi = np.array([stop])
    while jlo.size:
        mid = (jlo + jhi) // 2
        n = np.minimum(shi, mid) - slo + 1  # candidates per sub-problem (>= 1: slo <= jlo <= mid)
        ends = np.cumsum(n)
        starts = ends - n
        total = int(ends[-1])
        s = np.arange(total) + np.repeat(slo - starts, n)
        hi = tuple(np.repeat(p, n) for p in cost.parts(mid + 1))
        val = prev_at[s] + cost.between(cost.parts(s), hi)
        best = np.minimum.reduceat(val, starts)
        hits = np.flatnonzero(val == np.repeat(best, n))
        bs = s[hits[np.searchsorted(hits, starts)]]  # the smallest best start (ties: as mapclassify)
        cur[mid] = best
        arg[mid] = bs
        left = jlo < mid
        right = mid < jhi
        jlo, jhi, slo, shi = (
            np.concatenate([jlo[left], mid[right] + 1]),
            np.concatenate([mid[left] - 1, jhi[right]]),
            np.concatenate([slo[left], bs[right]]),
            np.concatenate([bs[left], shi[right]]),
        )
    return cur, arg


def fisher_jenks(x: np.ndarray, w: np.ndarray, k: int) -> tuple[np.ndarray, float]:
    """Optimal k-class partition of sorted distinct values ``x`` with counts ``w``.

    Returns (starts, sse): the index in ``x`` where each class begins (``starts[0] == 0``,
    strictly increasing, length min(k, m)) and the minimal weighted within-class sum of
    squares. With fewer distinct values than classes every value is its own class.
    """
    x = np.asarray(x, dtype=np.float64)
    w = np.asarray(w)
    m = len(x)
    if m == 0:
        return np.zeros(0, np.int64), 0.0
    if k >= m:
        return np.arange(m), 0.0
    cost = _Cost(x, w)
    arg_dtype = np.uint16 if m <= 65536 else np.int32
    args = np.zeros((k, m), dtype=arg_dtype)
    idx = np.arange(m)
    prev = cost(np.zeros(m, np.int64), idx)
    for c in range(2, k + 1):
        # row c only needs ends that leave room for the k - c classes after it; the last row
        # only needs the end of the data
        stop = m - 1 - (k - c)
        if c == k:
            s = np.arange(k - 1, m)
            val = prev[s - 1] + cost(s, np.full(s.size, m - 1))
            best = int(np.argmin(val))
            args[c - 1, m - 1] = s[best]
            prev = np.full(m, np.inf)
            prev[m - 1] = val[best]
            break
        prev, args[c - 1] = _row(prev, c, m, stop, cost, arg_dtype)
    starts = np.zeros(k, np.int64)
    j = m - 1
    for c in range(k, 1, -1):
        s = int(args[c - 1, j])
        starts[c - 1] = s
        j = s - 1
    return starts, float(prev[m - 1])


def sse(x: np.ndarray, w: np.ndarray, starts: np.ndarray) -> float:
    """Weighted within-class sum of squares of the partition of ``x`` given by class ``starts``."""
    x = np.asarray(x, dtype=np.float64)
    bounds = np.append(starts, len(x))
    total = 0.0
    for a, b in zip(bounds[:-1], bounds[1:]):
        if b > a:
            xx, ww = x[a:b], np.asarray(w[a:b], dtype=np.float64)
            mu = np.dot(ww, xx) / ww.sum()
            total += float(np.dot(ww, (xx - mu) ** 2))
    return total


def gvf(x: np.ndarray, w: np.ndarray, starts: np.ndarray) -> float:
    """Goodness of variance fit: 1 - SSE(classes) / SSE(all in one class)."""
    total = sse(x, w, np.array([0]))
    return 1.0 - sse(x, w, starts) / total if total > 0 else 1.0
