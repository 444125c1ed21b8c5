"""Fit, then apply: the class edges come from one statistics pass; applying them is lazy.

``fit`` runs the one ``dask.compute`` of the statistics; ``classify`` and ``colorize`` only
build graphs (map_blocks over the pure numpy kernels in :mod:`pipeline.kernels`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import dask
import dask.array as da
import numpy as np

from . import kernels
from .scene import Scene
from .schemes import class_edges, needs_distribution
from ._engine.decoded import DecodedChunks
from .stats import Passes, Stats, reduce_blocks, from_key, stats_from_results, stats_graph

log = logging.getLogger(__name__.replace("pipeline", "sceneclass", 1))


@dataclass(frozen=True)
class Fit:
    """The fitted classification: edges plus the statistics they came from, and the extra
    passes the edges took (their kept results, e.g. a fine histogram, reusable by later products)."""

    scheme: str
    edges: np.ndarray
    stats: Stats
    passes: Passes | None = field(default=None, repr=False, compare=False)

    @property
    def n_classes(self) -> int:
        return len(self.edges) - 1


def fit(scene: Scene, classes_cfg, keep: DecodedChunks | None = None) -> Fit:
    """Statistics (one pass, one ``dask.compute``) and class edges for ``scene`` under the
    configured scheme. With ``keep``, the same pass stores the decoded chunks, and any later
    pass (extra statistics, the write) reads them instead of decoding the input again."""
    if keep is not None and scene.mask is not None:
        raise ValueError("fit: the decoded-chunk store does not carry masks; fit a masked scene without keep")
    graph = stats_graph(scene, needs_distribution(classes_cfg))
    if keep is not None:  # 8/16-bit: the store tasks count the histogram too (one task per chunk)
        graph["_layout"] = keep.store(hist="hist" in graph)
        if "hist" in graph:
            graph["hist"] = keep.histogram(graph["_layout"])
    (res,) = dask.compute(graph)
    if keep is not None:
        keep.layout = res.pop("_layout")
        log.info("kept %d MiB of decoded chunks in %s (%d of %d chunks hold one value and were not stored)",
                 keep.kept_bytes() >> 20, "memory" if keep.memory else keep.path,
                 int((keep.layout[..., 0] == 0).sum()), keep.layout[..., 0].size)
    source = keep.reader() if keep is not None else scene
    stats = stats_from_results(source, res)
    if stats.count == 0:
        log.warning("%s band %d has no valid pixels: the output is all nodata", scene.path, scene.band)
    passes = Passes(stats, source)
    return Fit(classes_cfg.scheme, class_edges(classes_cfg, stats, passes), stats, passes)


def _lut_arg(table: np.ndarray):
    """A look-up table as one graph node shared by every task (not copied into each)."""
    return dask.delayed(table, pure=True)


def class_lut(scene: Scene, fitted: Fit) -> np.ndarray | None:
    """The class id of every raw value of an 8/16-bit scene, classified by its physical value,
    0 for nodata values and values outside the valid range (None for other dtypes). The scene's
    ``mask`` is not in it: :func:`classify` applies that per chunk."""
    if scene.dtype.name not in kernels.LUT_DTYPES:
        return None
    return kernels.value_lut(scene.dtype, fitted.edges, scene.rule)


def classify(scene: Scene, fitted: Fit) -> da.Array:
    """Lazy uint8 class ids (0 = nodata, masked or outside the edges) of the scene, block by block."""
    lut = class_lut(scene, fitted)
    meta = np.empty((0, 0), np.uint8)
    if lut is not None:
        if scene.mask is not None:
            return da.map_blocks(kernels.lookup_masked, scene.array, scene.mask, _lut_arg(lut), dtype=np.uint8,
                                 meta=meta)
        return scene.array.map_blocks(kernels.lookup_block, _lut_arg(lut), dtype=np.uint8, meta=meta)
    x, nodata = scene.values()
    return x.map_blocks(kernels.classify_values, fitted.edges, nodata, dtype=np.uint8, meta=meta)


def colorize(classes: da.Array, palette: np.ndarray, bands: int) -> da.Array:
    """Lazy (band, y, x) uint8 colours of class ids through the palette (3 = RGB, 4 = RGBA)."""
    table = np.ascontiguousarray(palette[:, :bands])
    return classes.map_blocks(
        kernels.colorize_block, _lut_arg(table), dtype=np.uint8,
        new_axis=0, chunks=((bands,), *classes.chunks), meta=np.empty((0, 0, 0), np.uint8),
    )


def counts_from_hist(scene: Scene, fitted: Fit) -> np.ndarray | None:
    """Pixels per class id 0..255 from the exact histogram of 8/16-bit data (no pass over the
    pixels: every value's class is known); None for other dtypes, whose counts come from the write.
    Class 0 holds the invalid pixels (not in the histogram) and the valid ones outside the edges."""
    hist = fitted.stats.hist
    if hist is None:
        return None
    values = from_key(np.arange(hist.size), scene.dtype)
    ids = kernels.classify_raw(values, fitted.edges, scene.rule)
    counts = np.zeros(256, np.int64)
    np.add.at(counts, ids, hist)
    counts[0] += scene.shape[0] * scene.shape[1] - int(hist.sum())  # invalid pixels (not in hist)
    return counts


def _class_count_block(block: np.ndarray) -> np.ndarray:
    return kernels.bincount_block(block, 256)[None, None, :]


def class_counts(classes: da.Array, n_classes: int) -> da.Array:
    """Lazy pixel count per class id 0..N (computed alongside the write)."""
    parts = reduce_blocks(classes, _class_count_block, 256, np.int64)
    return parts.sum(axis=(0, 1), dtype=np.int64)[: n_classes + 1]
