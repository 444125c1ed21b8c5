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
from .stats import Passes, Stats, reduce_blocks, from_key, stats_from_results, stats_graph, valid_values

log = logging.getLogger(__name__.replace("pipeline", "sceneclass", 1))


@dataclass(frozen=True)
class Fit:
    """The fitted classification: edges plus the statistics they came from, and the extra
    passes the edges took (their kept results, e.g. a fine histogram, reusable by later products)."""

    scheme: str
    edges: np.ndarray
    stats: Stats
    passes: Passes | None = field(default=None, repr=False, compare=False)
    #: valid pixels outside the edges go to the first/last class (True) or to class 0
    clip: bool = False
    #: int64 [below the first edge, above the last] valid pixels, counted when the edges were
    #: known before the statistics pass (given or manual edges); None otherwise (then none are)
    outside: np.ndarray | None = field(default=None, compare=False)

    @property
    def n_classes(self) -> int:
        return len(self.edges) - 1

    @property
    def outside_pixels(self) -> int:
        """Valid pixels below the first edge or above the last (0 when not counted)."""
        return 0 if self.outside is None else int(self.outside.sum())


def fit(scene: Scene, classes_cfg, keep: DecodedChunks | None = None, *, edges: np.ndarray | None = None,
        scheme: str | None = None, stats: Stats | None = None) -> Fit:
    """Statistics (one pass, one ``dask.compute``) and class edges for ``scene`` under the
    configured scheme. With ``keep``, the same pass stores the decoded chunks, and any later
    pass (extra statistics, the write) reads them instead of decoding the input again.

    Parameters
    ----------
    scene : Scene
        The band to classify.
    classes_cfg : pipeline.jobs.config scheme model
        The ``classes:`` settings (scheme, ``outside``).
    keep : DecodedChunks, optional
        Store the decoded chunks during the statistics pass.
    edges : numpy.ndarray, optional
        (N+1,) edges fitted elsewhere (on a whole batch, or read from a legend): the statistics
        pass still runs (counts, min, max, the exact histogram) but the scheme does not fit.
    scheme : str, optional
        The scheme name recorded with given ``edges`` (default: the config's).
    stats : Stats, optional
        With ``edges``: the scene's statistics, already computed with its exact histogram (a
        batch's shared statistics pass); no pass is run.

    Returns
    -------
    Fit
        With ``outside`` counted whenever the edges were known before the pass (given or manual).
    """
    if keep is not None and scene.mask is not None:
        raise ValueError("fit: the decoded-chunk store does not carry masks; fit a masked scene without keep")
    if stats is not None:
        if edges is None or stats.hist is None or keep is not None:
            raise ValueError("fit: precomputed stats need given edges, an exact histogram and no keep")
        raw, counts = stats.hist_raw_values()
        outside = kernels.outside_counts(stats.rule.physical(raw), edges, counts)
        clip = getattr(classes_cfg, "outside", "nodata") == "clip"
        return Fit(scheme or classes_cfg.scheme, edges, stats, Passes(stats, scene), clip=clip, outside=outside)
    known = edges if edges is not None else (
        np.asarray(classes_cfg.breaks, dtype=np.float64) if classes_cfg.scheme == "manual" else None)
    graph = stats_graph(scene, edges is None and needs_distribution(classes_cfg))
    if known is not None and "hist" not in graph:
        x, nodata = scene.values()
        parts = reduce_blocks(x, _outside_block, 2, np.int64, nodata=nodata, edges=known)
        graph["outside"] = parts.sum(axis=(0, 1), dtype=np.int64)
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
    outside = None
    if known is not None:
        if stats.hist is not None:
            raw, counts = stats.hist_raw_values()
            outside = kernels.outside_counts(stats.rule.physical(raw), known, counts)
        else:
            outside = np.asarray(res["outside"], np.int64)
    if edges is None:
        edges = class_edges(classes_cfg, stats, passes)
    clip = getattr(classes_cfg, "outside", "nodata") == "clip"
    return Fit(scheme or classes_cfg.scheme, edges, stats, passes, clip=clip, outside=outside)


def _outside_block(block: np.ndarray, nodata: float | None, edges: np.ndarray) -> np.ndarray:
    return kernels.outside_counts(valid_values(block, nodata), edges)[None, None, :]


def _lut_arg(table: np.ndarray):
    """A look-up table as one graph node shared by every task (not copied into each)."""
    return dask.delayed(table, pure=True)


def class_lut(scene: Scene, fitted: Fit) -> np.ndarray | None:
    """The class id of every raw value of an 8/16-bit scene, classified by its physical value,
    0 for nodata values and values outside the valid range (None for other dtypes). The scene's
    ``mask`` is not in it: :func:`classify` applies that per chunk."""
    if scene.dtype.name not in kernels.LUT_DTYPES:
        return None
    return kernels.value_lut(scene.dtype, fitted.edges, scene.rule, fitted.clip)


def classify(scene: Scene, fitted: Fit) -> da.Array:
    """Lazy uint8 class ids (0 = nodata, masked, or outside the edges unless ``fitted.clip``) of the scene, block by block."""
    lut = class_lut(scene, fitted)
    meta = np.empty((0, 0), np.uint8)
    if lut is not None:
        if scene.mask is not None:
            return da.map_blocks(kernels.lookup_masked, scene.array, scene.mask, _lut_arg(lut), dtype=np.uint8,
                                 meta=meta)
        return scene.array.map_blocks(kernels.lookup_block, _lut_arg(lut), dtype=np.uint8, meta=meta)
    x, nodata = scene.values()
    return x.map_blocks(kernels.classify_values, fitted.edges, nodata, fitted.clip, dtype=np.uint8, meta=meta)


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
    ids = kernels.classify_raw(values, fitted.edges, scene.rule, fitted.clip)
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
