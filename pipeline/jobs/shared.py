"""Class edges shared by several scenes: fitted together on every input of a batch
(``classes.fit: together``), or pinned from the legend of an earlier run (``classes.edges_from``).

Either way each scene keeps its own statistics pass (its counts, min, max and the pixels outside
the shared edges); only the edges, and with ``edges_from`` the colours and labels, are shared.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import dask
import dask.array as da
import numpy as np
import rasterio
from affine import Affine

from ..core import fit
from ..errors import ConfigError
from ..kernels import LUT_DTYPES, ValueRule, clean_block
from ..scene import Scene, raster_errors
from ..schemes import class_edges
from ..stats import Passes, Stats, from_key, stats_from_results, stats_graph
from ..urls import redact
from .progress import phase
from .checksum import identity
from .inputs import open_input
from .scheduler import environ, gdal_env, runtime

log = logging.getLogger(__name__.replace("pipeline", "sceneclass", 1))


@dataclass(frozen=True)
class SharedEdges:
    """Edges (and possibly colours and labels) every scene of a run is written with.

    ``how`` is ``"together"`` (fitted on ``fitted_on``, every input of the batch) or
    ``"edges_from"`` (read from the legend ``source``, whose content hash is ``sha256``).
    ``palette`` is the (N+1, 4) uint8 RGBA table (row 0: nodata) and ``labels`` one per class,
    or None to take them from the config.
    """

    how: str
    scheme: str
    edges: np.ndarray
    palette: np.ndarray | None = None
    labels: list[str] | None = None
    fitted_on: tuple[str, ...] = ()
    source: str | None = None
    sha256: str | None = None
    units: str | None = field(default=None, compare=False)
    legend: dict | None = field(default=None, repr=False, compare=False)  # edges_from: the legend read
    #: together, 8/16-bit: each input's statistics from the shared pass and the identity of its
    #: file then (input -> (Stats, identity)); the run reuses them instead of a second pass
    stats: dict = field(default_factory=dict, repr=False, compare=False)

    def scene_stats(self, path: str):
        """The statistics of input ``path`` from the shared pass, or None (not kept, or the file
        changed since: the run then makes its own pass; the run's own check fails a file that
        changes while it runs)."""
        got = self.stats.get(path)
        if got is None:
            return None
        stats, ident = got
        return stats if ident is not None and identity(path) == ident else None

    @property
    def n_classes(self) -> int:
        return len(self.edges) - 1

    def legend_fields(self) -> dict:
        """What the legend records about where its edges come from."""
        if self.how == "together":
            return {"fit": "together", "fitted_on": [redact(p) for p in self.fitted_on]}
        return {"fit": "edges_from", "edges_from": {"path": self.source, "sha256": self.sha256}}


# ------------------------------------------------------------------- edges_from (a legend)
def legend_sha256(path: str) -> str | None:
    """SHA-256 of the legend file's bytes (None when it cannot be read)."""
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError:
        return None


def _bad(path: str, why: str) -> ConfigError:
    return ConfigError(f"classes.edges_from: {path}: {why}")


def _rgba(text, path: str) -> list[int]:
    if not (isinstance(text, str) and text.startswith("#") and len(text) in (7, 9)):
        raise _bad(path, f"not a sceneclass legend (colour {text!r})")
    try:
        parts = [int(text[i:i + 2], 16) for i in range(1, len(text), 2)]
    except ValueError:
        raise _bad(path, f"not a sceneclass legend (colour {text!r})") from None
    return parts + [255] * (4 - len(parts))


def load_legend(path: str) -> SharedEdges:
    """The edges, colours, labels and scheme of a legend JSON written by an earlier run.

    The edges are the legend's ``edges`` (JSON numbers: the exact float64 values, ``null`` for an
    open end) in the legend's ``edges_dtype``: the same edges, bit for bit.

    Raises
    ------
    ConfigError
        The file is missing, unreadable or not a sceneclass legend (naming ``classes.edges_from``
        and the file).
    """
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        raise _bad(path, "legend file not found") from None
    except OSError as e:
        raise _bad(path, f"cannot read the legend ({e.strerror or e})") from None
    try:
        legend = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise _bad(path, f"not a legend JSON file ({str(e).splitlines()[0]})") from None
    try:
        edges_in, classes = legend["edges"], legend["classes"]
        n = len(edges_in) - 1
        if not 1 <= n <= 254 or len(classes) != n:
            raise ValueError
        edges = []
        for i, e in enumerate(edges_in):
            if e is None and i in (0, n):
                e = -math.inf if i == 0 else math.inf
            if isinstance(e, bool) or not isinstance(e, (int, float)):
                raise ValueError
            edges.append(float(e))
        edges = np.array(edges, dtype=np.float64)
        dtype = np.dtype(legend.get("edges_dtype", "float64"))
        if dtype.kind != "f" or np.any(edges.astype(dtype).astype(np.float64) != edges) or np.any(np.diff(edges) < 0):
            raise ValueError
        edges = edges.astype(dtype)
        colours = [_rgba(c["color"], path) for c in classes]
        nodata_colour = _rgba(legend["nodata_class"]["color"], path)
        labels = [str(c["label"]) for c in classes]
        scheme = str(legend["scheme"])
    except (KeyError, TypeError, ValueError):
        raise _bad(path, "not a sceneclass legend (it needs increasing 'edges', one entry of 'classes' per "
                         "class with 'color' and 'label', 'nodata_class' and 'scheme')") from None
    palette = np.array([nodata_colour, *colours], dtype=np.uint8)
    pinned = SharedEdges("edges_from", scheme, edges, palette, labels, source=str(path),
                         sha256=hashlib.sha256(raw).hexdigest(), units=legend.get("units") or None, legend=legend)
    return pinned


def _kind(dtype: str, scale: float, offset: float) -> str:
    scaled = scale != 1.0 or offset != 0.0
    return "float" if np.dtype(dtype).kind == "f" or scaled else "integer"


def check_pinned(pinned: SharedEdges, scene: Scene) -> None:
    """Refuse a legend that describes another quantity than ``scene``: other units, another
    band number, or integer values where the scene's are floating point (or the reverse).

    Raises
    ------
    ConfigError
        Naming ``classes.edges_from``, the legend file and what differs.
    """
    legend = pinned.legend or {}
    mine = scene.units or None
    if pinned.units != mine:
        raise _bad(pinned.source, f"the legend's values are in {pinned.units or 'no units'}, {scene.path} band "
                                  f"{scene.band} in {mine or 'no units'}; a legend is reused only for the same "
                                  "quantity")
    band = legend.get("band")
    if band is not None and band != scene.band:
        raise _bad(pinned.source, f"the legend is of band {band}, this run classifies band {scene.band} of "
                                  f"{scene.path}")
    try:
        theirs = _kind(legend.get("dtype", "float64"), float(legend.get("scale", 1.0)),
                       float(legend.get("offset", 0.0)))
    except (TypeError, ValueError):
        raise _bad(pinned.source, "not a sceneclass legend (dtype, scale, offset)") from None
    ours = _kind(scene.dtype.str, scene.scale, scene.offset)
    if theirs != ours:
        raise _bad(pinned.source, f"the legend classifies {theirs} values ({legend.get('dtype')}, scale "
                                  f"{legend.get('scale')}, offset {legend.get('offset')}), {scene.path} band "
                                  f"{scene.band} has {ours} values ({scene.dtype}, scale {scene.scale}, offset "
                                  f"{scene.offset})")


def pinned_edges(cfg, scene: Scene) -> SharedEdges:
    """The legend ``cfg.classes.edges_from``, checked against ``scene`` (see :func:`check_pinned`)."""
    pinned = load_legend(cfg.classes.edges_from)
    check_pinned(pinned, scene)
    return pinned


# ------------------------------------------------------------------- fit: together
def _physical(scene: Scene, dtype: np.dtype) -> da.Array:
    """The scene's physical values in ``dtype`` (a float dtype), NaN at every invalid pixel."""
    args = (scene.mask,) if scene.mask is not None else ()
    return da.map_blocks(clean_block, scene.array, *args, rule=scene.rule, out_dtype=dtype.str, dtype=dtype,
                         meta=np.empty((0, 0), dtype))


def combined_scene(scenes: list[Scene]) -> Scene:
    """One virtual scene holding every valid pixel of ``scenes`` (physical values, NaN elsewhere):
    their value arrays side by side, each padded with NaN rows to the tallest. Every scheme's
    extra pass over it reads each scene once. Its dtype is the scenes' common float dtype
    (float64 when any is an integer or scaled)."""
    dtypes = [s.rule.value_dtype(s.dtype) for s in scenes]
    dtype = np.result_type(*dtypes)
    if dtype.kind != "f":
        dtype = np.dtype(np.float64)
    height = max(s.shape[0] for s in scenes)
    parts = []
    for s in scenes:
        x = _physical(s, dtype)
        if s.shape[0] < height:
            x = da.pad(x, ((0, height - s.shape[0]), (0, 0)), mode="constant", constant_values=np.nan)
        parts.append(x)
    array = da.concatenate(parts, axis=1)
    return Scene(f"{len(scenes)} inputs", 1, array, None, None, Affine.identity())


def _hist_together(scenes: list[Scene]) -> bool:
    """True when the exact histograms of the scenes add up: one 8/16-bit dtype, one scale/offset."""
    first = scenes[0]
    return all(s.dtype.name in LUT_DTYPES and s.dtype == first.dtype and s.scale == first.scale
               and s.offset == first.offset for s in scenes)


def summed_stats(scenes: list[Scene], results: list[dict]) -> Stats:
    """The statistics of the valid pixels of every scene: their exact histograms (by raw key, each
    scene's own nodata values, valid range and mask already applied) added up."""
    per = [stats_from_results(s, r) for s, r in zip(scenes, results)]
    first = scenes[0]
    rule = ValueRule((), None, first.scale, first.offset)
    hist = np.sum([p.hist for p in per], axis=0, dtype=np.int64)
    count = int(hist.sum())
    nz = np.flatnonzero(hist)
    vmin = rule.physical(from_key(nz[:1], first.dtype))[0] if count else None
    vmax = rule.physical(from_key(nz[-1:], first.dtype))[0] if count else None
    return Stats(rule.value_dtype(first.dtype), count, vmin, vmax, hist=hist, raw_dtype=first.dtype, rule=rule)


def open_all(cfgs: list) -> list[Scene]:
    """Open every job's input (headers only), with its own pixel settings."""
    scenes = []
    for cfg in cfgs:
        env = gdal_env(cfg)
        with rasterio.Env(**env), environ(env):
            scenes.append(open_input(cfg))
    return scenes


def fit_together(cfgs: list) -> SharedEdges:
    """One set of class edges from the valid pixels of every job's input.

    8/16-bit scenes of one dtype and one scale/offset: one ``dask.compute`` of every scene's
    exact histogram (each scene read once), added up; the scheme then works on the sum exactly
    as on one scene. Other scenes: the scheme fits :func:`combined_scene` (one ``dask.compute``
    for the statistics, each scene read once in it; a scheme's extra passes read each scene
    once more per pass). The edges equal the scheme's edges on all valid pixels concatenated.

    Parameters
    ----------
    cfgs : list of RunConfig
        One config per input (the batch's jobs); their ``classes`` settings are the same.

    Returns
    -------
    SharedEdges
        ``how="together"``, ``fitted_on`` every input.

    Raises
    ------
    ConfigError, InputError
        An input cannot be opened or read (naming it); without it there are no shared edges.
    """
    classes = cfgs[0].classes
    scenes = open_all(cfgs)
    with runtime(cfgs[0]), phase("statistics of all inputs"):
        if _hist_together(scenes):
            graphs = [stats_graph(s, False) for s in scenes]
            idents = [identity(c.input) for c in cfgs]
            with raster_errors(", ".join(s.path for s in scenes)):
                (results,) = dask.compute(graphs)
            per_scene = {c.input: (stats_from_results(s, r), i) for c, s, r, i in zip(cfgs, scenes, results, idents)}
            stats = summed_stats(scenes, results)
            edges = class_edges(classes, stats, Passes(stats, combined_scene(scenes)))
            scheme = classes.scheme
        else:
            per_scene = {}
            with raster_errors(", ".join(s.path for s in scenes)):
                fitted = fit(combined_scene(scenes), classes)
            edges, scheme, stats = fitted.edges, fitted.scheme, fitted.stats
    if stats.count == 0:
        log.warning("fit: together: no input has a valid pixel: every output is all nodata")
    paths = tuple(c.input for c in cfgs)
    log.info("fit: together: %s edges from the %d valid pixels of all %d inputs: %s", scheme, stats.count,
                len(paths), np.array2string(edges, precision=6, max_line_width=1 << 20))
    return SharedEdges("together", scheme, edges, fitted_on=paths, stats=per_scene)
