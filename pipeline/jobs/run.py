"""Run orchestration: config in, classified output and legend out."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import rasterio

from .. import __version__
from .. import kernels
from .. import storage
from .scheduler import LOCAL_SCHEDULERS, environ, gdal_env, runtime
from .atomic import Staging, current_staging, output_errors, partial_path
from .._engine.decoded import DecodedChunks, keep_place
from ..core import Fit, class_counts, class_lut, classify, colorize, counts_from_hist, fit
from .config import RunConfig
from ..errors import ConfigError, InputError, OutputError
from .checksum import identity
from .probe import not_shared, probe
from ..scene import Scene, is_url, raster_errors
from ..stats import Passes
from ..palette import build_palette, check_palette, check_table_alpha
from .progress import phase
from .inputs import open_input
from .shared import SharedEdges, pinned_edges
from ..writers import build_legend, legend_path, write_cog, write_legend, write_zarr

log = logging.getLogger(__name__.replace("pipeline", "sceneclass", 1))

BANDS = {"paletted": 0, "rgb": 3, "rgba": 4}


@dataclass
class RunResult:
    output: Path
    legend_path: Path | None
    legend: dict
    fit: Fit
    passes: Passes | None = None  # extra passes over the input (the fit's kept results), for later products


def check_paths(cfg: RunConfig) -> Path:
    final = Path(cfg.output.path)
    not_an_input(cfg, final)
    remote = storage.remote_of(final)
    if remote is not None:
        if remote in cfg.sources:
            raise ConfigError(f"output.path: {storage.display(final)} is the input; choose another path")
        if not cfg.output.overwrite and storage.exists(remote):
            raise ConfigError(f"output.path: {storage.display(final)} exists (set output.overwrite: true to replace it)")
    elif final.exists() and not cfg.output.overwrite:
        raise ConfigError(f"output.path: {final} exists (set output.overwrite: true to replace it)")
    return final


def not_an_input(cfg: RunConfig, final: Path) -> None:
    """Refuse an output path that is one of the files the job reads (``input`` or a band file)."""
    for path in cfg.sources:
        if not is_url(path) and os.path.abspath(path) == str(final.absolute()):
            what = ("the input file" if cfg.bands is None and not cfg.output.mosaic else
                    f"the input file {path}" if cfg.output.mosaic else "a band file under bands")
            raise ConfigError(f"output.path: {final} is {what}; choose another path")


def identities(cfg: RunConfig, scene: Scene | None = None) -> dict:
    """The identity (:func:`pipeline.jobs.checksum.identity`) of every file the job reads: the
    config's ``input`` or band files, and every file ``scene`` reads (``Scene.files``)."""
    paths = dict.fromkeys((*cfg.sources, *(scene.files if scene is not None else ())))
    return {path: identity(path) for path in paths}


def changed_source(before: dict) -> str | None:
    """The first file of ``before`` (path -> identity) whose identity is no longer the same, or None."""
    return next((path for path, ident in before.items() if identity(path) != ident), None)


def preflight(cfg: RunConfig, *, header: bool = False) -> None:
    """Every check of a one-input job that reads no pixel: the output is not the input, the
    palette parses and can colour the classes, the extra outputs' libraries are installed and,
    with ``header``, the input opens and has the band (``sceneclass validate`` runs them all;
    a run opens the input itself).

    Parameters
    ----------
    cfg : RunConfig
        A job's config (one ``input``, a rendered ``output.path``).
    header : bool
        Also open the input's header (one small read; an HTTP request for a URL).

    Raises
    ------
    ConfigError, InputError
        Naming the key or the file.
    """
    from ..products.extras import check_extras

    final = Path(cfg.output.path)
    not_an_input(cfg, final)
    if cfg.classes.edges_from is None:  # else the colours come from the legend (checked when read)
        check_palette(cfg.palette, cfg.class_count)
        if cfg.output.mode == "paletted" and cfg.output.resolved_format == "cog":
            check_table_alpha(cfg.palette)
    check_extras(cfg)
    if header:
        with storage.gdal_env(input_access(cfg)):
            scene = open_input(cfg)
        if cfg.classes.edges_from is not None:
            pinned_edges(cfg, scene)
        folder_in_the_way(final.parent)
    elif cfg.bands is not None:  # band numbers and grids of the bands: refused before any lock or log line
        open_input(cfg)


def folder_in_the_way(folder: Path) -> None:
    """Refuse an output folder that cannot be made because a file stands at it or above it
    (what ``run`` finds when it creates the folder), without creating anything.

    Raises
    ------
    OutputError
        Naming the file in the way (exit code 4).
    """
    for part in (folder, *folder.parents):
        if part.exists():
            if not part.is_dir():
                raise OutputError(f"{folder}: cannot use the output folder: a file is in the way ({part})")
            return


def write(cfg: RunConfig, scene: Scene, fitted: Fit, palette: np.ndarray, final: Path,
          legend_of: Callable[[np.ndarray], dict], staged: Callable[[], None] | None = None) -> np.ndarray:
    """The write pass: classify, colour and write tile by tile; returns pixels per class id
    (from the exact histogram for 8/16-bit data, else counted by the same pass). ``staged``:
    called when the pass has read every pixel, before the output is assembled or committed
    (it may raise to stop the run with nothing written)."""
    bands = BANDS[cfg.output.mode]
    known = counts_from_hist(scene, fitted)
    if cfg.output.resolved_format == "cog":
        # 8/16-bit without a mask: the write tasks look the values up themselves; with a mask the
        # class ids come from classify (look-up, then 0 where masked), fused into the write tasks
        lut = class_lut(scene, fitted) if scene.mask is None else None
        values = scene.array if lut is not None else classify(scene, fitted)
        counts = write_cog(values, scene, palette, cfg.output, final, bands, count=known is None,
                           staged=staged, lut=lut)
    else:
        classes = classify(scene, fitted)
        colours = colorize(classes, palette, bands) if bands else None
        extra = {"counts": class_counts(classes, fitted.n_classes)} if known is None else {}
        attrs = lambda res: {"sceneclass_legend": legend_of(res.get("counts", known))}  # noqa: E731
        counts = write_zarr(classes, colours, scene, final, extra, attrs, staged=staged).get("counts")
    return (known if known is not None else counts)[: fitted.n_classes + 1]


def workers_see(cfg: RunConfig, final: Path) -> bool:
    """On a distributed scheduler, check before any pixel is read that every worker sees the
    run's local files as the client does (:mod:`pipeline.jobs.probe`): the input (and mask
    raster), and the output folder when the workers write there (Zarr). Returns whether they
    see the output folder (where the decoded-chunk store would go); always True without a
    distributed client.

    Raises
    ------
    InputError
        An input the workers do not see (exit 1).
    OutputError
        A Zarr output whose folder the workers do not see (exit 4); nothing is written.
    """
    from ..writers.cogstream import distributed_client

    client = distributed_client()
    if client is None:
        return True
    masks = [cfg.mask] + [b.mask for b in (cfg.bands or {}).values()]
    inputs = [p for p in (*cfg.sources, *(m.path for m in masks if m is not None)) if not is_url(p)]
    if storage.remote_of(final) is not None:  # the client uploads every file; workers write to the bucket
        if inputs:
            for path, workers in probe(client, inputs, []).inputs.items():
                raise InputError(not_shared(path, workers))
        return False
    folder = final.parent
    made = not folder.exists()
    if made:
        with output_errors(final):
            folder.mkdir(parents=True)
    try:
        seen = probe(client, inputs, [folder])
        for path, workers in seen.inputs.items():
            raise InputError(not_shared(path, workers))
        if not seen.sees(folder) and cfg.output.resolved_format == "zarr":
            raise OutputError(not_shared(folder, seen.folders[str(folder)]))
    except BaseException:
        if made:
            try:
                folder.rmdir()
            except OSError:
                pass
        raise
    if not seen.sees(folder):
        log.info("the dask workers do not see %s: the client writes the COG from their compressed tiles", folder)
    return seen.sees(folder)


def input_changed(path: str) -> InputError:
    """The error of a run whose input changed (was replaced or rewritten) while it ran."""
    return InputError(f"{path}: the input changed during the run (replaced or rewritten while it was read); "
                      "nothing was written for it, run again")


#: share of a scene's pixels above which a validity source (nodata, valid range, mask) is suspicious
REMOVES_MOST = 0.9


def validity_warnings(scene: Scene, stats, cfg: RunConfig) -> None:
    """Warn (naming the scene) when a configured nodata value, valid range or mask removes no
    pixel, or when any validity source removes more than :data:`REMOVES_MOST` of them."""
    total = scene.shape[0] * scene.shape[1]
    removed = stats.removed
    if not removed or not total:
        return
    where = f"{scene.path} band {scene.band}"
    configured_nodata = cfg.nodata not in ("file", "none")
    sources = [(f"nodata {v:g}", n, configured_nodata) for v, n in removed["nodata_values"].items()]
    if scene.valid_range is not None:
        sources.append((f"valid_range {list(scene.valid_range)}", removed["valid_range"], True))
    if scene.mask_sources:
        sources.append((f"mask ({'; '.join(scene.mask_sources)})", removed["masked"], cfg.mask is not None))
    for what, n, configured in sources:
        if n == 0 and configured:
            hint = " (fill that is not exactly one value needs valid_range)" if what.startswith("nodata") else ""
            log.warning("%s: %s removes no pixel%s", where, what, hint)
        elif n > REMOVES_MOST * total:
            log.warning("%s: %s removes %.1f%% of the pixels", where, what, 100.0 * n / total)


def prepare(cfg: RunConfig) -> tuple[Path, Scene]:
    """Every check that needs no pixel: paths, palette, the input's header and band. Writes
    nothing; a run refused here changes nothing on disk.

    Returns
    -------
    (final, scene) : tuple of Path and Scene
        The output path and the lazily opened input band.

    Raises
    ------
    ConfigError, InputError
        The config or the input cannot make this output.
    """
    final = check_paths(cfg)
    preflight(cfg)
    env = gdal_env(cfg)
    with rasterio.Env(**env), environ(env), storage.gdal_env(input_access(cfg)):  # no scheduler is needed yet
        scene = open_input(cfg)
    if cfg.classes.edges_from is not None:  # a missing, broken or foreign legend: refused here
        pinned_edges(cfg, scene)
    remote = storage.remote_of(final)
    if remote is not None:
        storage.check_reachable(remote)
    return final, scene


def input_access(cfg: RunConfig):
    """The object-storage access the input (or its mask raster) needs on this thread, or None."""
    paths = (*cfg.sources, *((cfg.mask.path,) if cfg.mask is not None else ()))
    return next((a for a in map(storage.access_for, paths) if a is not None), None)


def run(cfg: RunConfig, prepared: tuple[Path, Scene] | None = None, *, shared: SharedEdges | None = None) -> RunResult:
    """Classify ``cfg.input`` (or a mosaic of ``cfg.inputs``) into ``cfg.output`` (+ legend and
    side files). Two passes: statistics, then write.

    Every file is written under a temporary name; without an active
    :class:`~pipeline.jobs.atomic.Staging` they are put in place when all are written, inside
    one the caller commits them (a batch adds the manifest first).

    The inputs' identities (size, modification time, inode, device) are taken at the start and
    checked once the passes have read every pixel, before the output replaces anything: an
    input that changed meanwhile fails the run (:class:`InputError`) and nothing is written.

    Parameters
    ----------
    cfg : RunConfig
        One job (a single input and a concrete output path).
    prepared : tuple, optional
        What :func:`prepare` returned for ``cfg`` (else it is called here).
    shared : SharedEdges, optional
        Edges fitted elsewhere (``classes.fit: together`` over a batch): the scene is written
        with them instead of fitting its own. With ``classes.edges_from`` the legend's edges,
        colours and labels are used (read here when not given).

    Raises
    ------
    ConfigError, InputError
        Refused before anything was written (see :func:`prepare`) or the input failed to read.
    OutputError
        An output file could not be written (e.g. no space left); nothing was replaced.
    """
    before = identities(cfg)
    final, scene = prepared if prepared is not None else prepare(cfg)
    before = identities(cfg, scene) | before  # files only the opened scene names (taken now)
    staging = None if current_staging() is not None else Staging()
    if staging is None:
        return _run(cfg, final, scene, before, shared)
    with staging.active():
        try:
            result = _run(cfg, final, scene, before, shared)
        except BaseException:
            staging.discard()
            raise
    staging.commit()
    return result


def _run(cfg: RunConfig, final: Path, scene: Scene, before, shared: SharedEdges | None = None) -> RunResult:
    with output_errors(final):
        return _passes_and_files(cfg, final, scene, before, shared)


#: share of a scene's valid pixels outside the class edges above which a warning names the scene
OUTSIDE_WARN = 0.05


def outside_warning(scene: Scene, fitted: Fit, outside: str) -> bool:
    """Warn (naming the scene) when more than :data:`OUTSIDE_WARN` of its valid pixels lie
    outside the class edges; True when it warned."""
    below, above = (0, 0) if fitted.outside is None else (int(v) for v in fitted.outside)
    valid = fitted.stats.count
    if not valid or below + above <= OUTSIDE_WARN * valid:
        return False
    fate = ("are put in the first/last class (classes.outside: clip)" if outside == "clip" else
            "are nodata (classes.outside: clip puts them in the first/last class)")
    log.warning("%s band %d: %.1f%% of the valid pixels (%d below %s, %d above %s) are outside the class edges "
                "and %s", scene.path, scene.band, 100.0 * (below + above) / valid, below,
                f"{float(fitted.edges[0]):g}", above, f"{float(fitted.edges[-1]):g}", fate)
    return True


def _passes_and_files(cfg: RunConfig, final: Path, scene: Scene, before,
                      shared: SharedEdges | None = None) -> RunResult:
    if shared is None and cfg.classes.edges_from is not None:
        shared = pinned_edges(cfg, scene)
    with runtime(cfg):
        rule = scene.rule
        log.info("input %s band %d: %dx%d %s, nodata %s, %d chunks", scene.path, scene.band,
                 *scene.shape, scene.dtype, list(rule.nodata) or None, scene.array.npartitions)
        if rule.valid_range is not None or rule.scaled or scene.units or scene.mask_sources:
            log.info("valid range %s, value = raw * %r + %r %s, mask: %s", rule.valid_range, rule.scale, rule.offset,
                     scene.units or "", "; ".join(scene.mask_sources) or "none")
        log.debug("uint16 histogram and look-up: %s", "compiled" if kernels.compiled() else "numpy")
        keep = None
        local = cfg.dask.scheduler in (*LOCAL_SCHEDULERS, "local")
        visible = workers_see(cfg, final)
        if scene.mask is None:
            place = keep_place(scene, final.parent, cfg.processing.reuse_decoded, cfg.processing.keep_decoded_in,
                               local)
            if (place == "disk" and not local and cfg.processing.reuse_decoded == "auto"
                    and storage.remote_of(final) is not None):  # its folder is the client's temporary one
                log.info("not keeping decoded chunks: the output goes to object storage and the cluster's workers "
                         "need not see this machine's temporary folder (the write pass decodes the input again)")
                place = None
            elif place == "disk" and not visible:
                log.info("not keeping decoded chunks: the dask workers cannot see %s (the write pass reads "
                         "the input again)", final.parent)
                place = None
        else:
            place = None
            if cfg.processing.reuse_decoded != "never":
                log.info("not keeping decoded chunks: the decoded-chunk store does not carry masks "
                         "(the write pass decodes the input again)")
        known = shared.scene_stats(cfg.input) if shared is not None else None
        if known is not None:  # the batch's statistics pass read this scene already: no second pass
            place = None
        if place is not None:
            keep = DecodedChunks(scene, partial_path(final, ".decoded", make=None), memory=place == "memory")
            log.info("keeping decoded chunks for the write pass (%d MiB in %s)", keep.nbytes >> 20,
                     "memory" if keep.memory else final.parent)
        try:
            with raster_errors(" or ".join(scene.files)):
                with phase("statistics"):
                    if shared is None:
                        fitted = fit(scene, cfg.classes, keep)
                    else:
                        fitted = fit(scene, cfg.classes, keep, edges=shared.edges, scheme=shared.scheme, stats=known)
                log.info("%s edges%s: %s", fitted.scheme, "" if shared is None else f" ({shared.how})",
                         np.array2string(fitted.edges, precision=6, max_line_width=1 << 20))
                validity_warnings(scene, fitted.stats, cfg)
                warned_outside = outside_warning(scene, fitted, cfg.classes.outside)
                labels = cfg.classes.labels if shared is None or shared.labels is None else shared.labels
                if labels is not None and len(labels) != fitted.n_classes:
                    raise ConfigError(f"classes.labels: {len(labels)} labels for the {fitted.n_classes} classes "
                                      f"{fitted.scheme} found in {scene.path}; give one per class")
                if shared is not None and shared.palette is not None:
                    palette = shared.palette
                else:
                    palette = build_palette(cfg.palette, fitted.n_classes)
                made = None if shared is None else shared.legend_fields()

                def legend_of(counts: np.ndarray) -> dict:
                    return build_legend(scene=scene, fitted=fitted, palette=palette, counts=counts,
                                        version=__version__, output=storage.display(final), labels=labels, made=made)

                def staged() -> None:  # every pixel read; nothing committed yet
                    changed = changed_source(before)
                    if changed is not None:
                        raise input_changed(changed)
                    if keep is not None:
                        keep.start_removal()

                with phase("classify+write"):
                    counts = write(cfg, keep.reader() if keep else scene, fitted, palette, final, legend_of,
                                   staged=staged)
        finally:
            if keep is not None:
                keep.remove()
    legend = legend_of(counts)
    if legend["classes_effective"] < len(legend["classes"]) and not warned_outside:
        log.warning("%s band %d: %s: %d of %d classes hold pixels (empty: %s)", scene.path, scene.band,
                    legend["scheme"], legend["classes_effective"], len(legend["classes"]), legend["empty_classes"])
    lpath = None
    if cfg.output.legend:
        lpath = legend_path(final)
        write_legend(legend, lpath)
    # later passes (e.g. a histogram plot) read the input, not the removed decoded-chunk store
    result = RunResult(final, lpath, legend, fitted, fitted.passes.reading(scene))
    from ..products.extras import write_extras  # pictures, style files, report (cfg.outputs)

    write_extras(result, cfg)
    return result
