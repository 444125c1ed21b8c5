"""Class-edge schemes: a registry from the config's scheme name to a function of the statistics.

Every scheme returns the N+1 class edges as a numpy array; class k holds
``edges[k-1] <= x < edges[k]`` and the last class is closed.
"""

from __future__ import annotations

import logging
from typing import Callable

import numpy as np

from .config import EqualInterval, Manual, Quantile
from .stats import Stats

log = logging.getLogger(__name__)

SchemeFn = Callable[[object, Stats], np.ndarray]
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
def equal_interval(cfg: EqualInterval, stats: Stats) -> np.ndarray:
    """numpy.histogram's edges: linspace(min, max, N+1) in numpy's bin dtype (bit for bit)."""
    if stats.count == 0:
        return np.histogram_bin_edges(np.empty(0, stats.dtype), bins=cfg.count)
    ends = np.array([stats.vmin, stats.vmax], dtype=stats.dtype)
    return np.histogram_bin_edges(ends, bins=cfg.count)


@register("manual")
def manual(cfg: Manual, stats: Stats) -> np.ndarray:
    return np.asarray(cfg.breaks, dtype=np.float64)


def _lerp(a: np.ndarray, b: np.ndarray, t: np.ndarray) -> np.ndarray:
    """numpy's quantile interpolation, operation for operation (numpy 2 ``_lerp``)."""
    diff = b - a
    out = np.add(a, diff * t)
    np.subtract(b, diff * (1 - t), out=out, where=t >= 0.5, casting="unsafe")
    return out


def quantiles_exact(stats: Stats, q: np.ndarray) -> np.ndarray:
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
    values = stats.order_stats(ranks)
    a, b = values[: len(q)], values[len(q):]
    return _lerp(a, b, gamma)


@register("quantile", distribution=True)
def quantile(cfg: Quantile, stats: Stats) -> np.ndarray:
    """Equal-count classes: edges are numpy.quantile(valid, linspace(0, 1, N+1))."""
    if stats.count == 0:
        return np.histogram_bin_edges(np.empty(0, stats.dtype), bins=cfg.count)
    return quantiles_exact(stats, np.linspace(0, 1, cfg.count + 1))


def needs_distribution(cfg) -> bool:
    return cfg.scheme in NEEDS_DISTRIBUTION


def class_edges(cfg, stats: Stats) -> np.ndarray:
    """The N+1 edges for the config's scheme; warns when classes collapse (repeated edges)."""
    edges = SCHEMES[cfg.scheme](cfg, stats)
    repeated = int(np.count_nonzero(np.diff(edges) == 0))
    if repeated:
        log.warning(
            "%s: %d of %d classes collapse to an empty range (repeated edges); they are kept, empty",
            cfg.scheme, repeated, len(edges) - 1,
        )
    return edges
