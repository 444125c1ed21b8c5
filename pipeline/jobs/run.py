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
from .scheduler import LOCAL_SCHEDULERS, environ, gdal_env, runtime
from .atomic import Staging, current_staging, output_errors, partial_path
from .._engine.decoded import DecodedChunks, keep_place
from ..classify import Fit, class_counts, class_lut, classify, colorize, counts_from_hist, fit
from .config import RunConfig
from ..errors import ConfigError
from ..scene import Scene, is_url, open_scene, raster_errors
from ..palette import build_palette, check_palette, check_table_alpha
from .progress import phase
from ..writers import build_legend, legend_path, write_cog, write_legend, write_zarr

log = logging.getLogger(__name__.replace("pipeline", "sceneclass", 1))

BANDS = {"paletted": 0, "rgb": 3, "rgba": 4}


@dataclass
class RunResult:
    output: Path
    legend_path: Path | None
    legend: dict
    fit: Fit


def check_paths(cfg: RunConfig) -> Path:
    final = Path(cfg.output.path)
    if not is_url(cfg.input) and os.path.abspath(cfg.input) == str(final.absolute()):
        raise ConfigError(f"output.path: {final} is the input file; choose another path")
    if final.exists() and not cfg.output.overwrite:
        raise ConfigError(f"output.path: {final} exists (set output.overwrite: true to replace it)")
    return final


def write(cfg: RunConfig, scene: Scene, fitted: Fit, palette: np.ndarray, final: Path,
          legend_of: Callable[[np.ndarray], dict], staged: Callable[[], None] | None = None) -> np.ndarray:
    """The write pass: classify, colour and write tile by tile; returns pixels per class id
    (from the exact histogram for 8/16-bit data, else counted by the same pass). ``staged``:
    called when the pass has read every pixel but the COG is still to be assembled."""
    bands = BANDS[cfg.output.mode]
    known = counts_from_hist(scene, fitted)
    if cfg.output.resolved_format == "cog":
        lut = class_lut(scene, fitted)  # 8/16-bit: the write tasks look the values up themselves
        values = scene.array if lut is not None else classify(scene, fitted)
        counts = write_cog(values, scene, palette, cfg.output, final, bands, count=known is None,
                           staged=staged, lut=lut)
    else:
        classes = classify(scene, fitted)
        colours = colorize(classes, palette, bands) if bands else None
        extra = {"counts": class_counts(classes, fitted.n_classes)} if known is None else {}
        attrs = lambda res: {"sceneclass_legend": legend_of(res.get("counts", known))}  # noqa: E731
        counts = write_zarr(classes, colours, scene, final, extra, attrs).get("counts")
    return (known if known is not None else counts)[: fitted.n_classes + 1]


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
    check_palette(cfg.palette, cfg.class_count)
    if cfg.output.mode == "paletted" and cfg.output.resolved_format == "cog":
        check_table_alpha(cfg.palette)
    env = gdal_env(cfg)
    with rasterio.Env(**env), environ(env):  # the run's GDAL settings; no scheduler is needed yet
        scene = open_scene(cfg.input, cfg.band, cfg.nodata, cfg.processing.chunk, cfg.output.blocksize)
    return final, scene


def run(cfg: RunConfig, prepared: tuple[Path, Scene] | None = None) -> RunResult:
    """Classify ``cfg.input`` into ``cfg.output`` (+ legend and side files). Two passes:
    statistics, then write.

    Every file is written under a temporary name; without an active
    :class:`~pipeline.jobs.atomic.Staging` they are put in place when all are written, inside
    one the caller commits them (a batch adds the manifest first).

    Parameters
    ----------
    cfg : RunConfig
        One job (a single input and a concrete output path).
    prepared : tuple, optional
        What :func:`prepare` returned for ``cfg`` (else it is called here).

    Raises
    ------
    ConfigError, InputError
        Refused before anything was written (see :func:`prepare`) or the input failed to read.
    OutputError
        An output file could not be written (e.g. no space left); nothing was replaced.
    """
    final, scene = prepared if prepared is not None else prepare(cfg)
    staging = None if current_staging() is not None else Staging()
    if staging is None:
        return _run(cfg, final, scene)
    with staging.active():
        try:
            result = _run(cfg, final, scene)
        except BaseException:
            staging.discard()
            raise
    staging.commit()
    return result


def _run(cfg: RunConfig, final: Path, scene: Scene) -> RunResult:
    with output_errors(final):
        return _passes_and_files(cfg, final, scene)


def _passes_and_files(cfg: RunConfig, final: Path, scene: Scene) -> RunResult:
    with runtime(cfg):
        log.info("input %s band %d: %dx%d %s, nodata %s, %d chunks", scene.path, scene.band,
                 *scene.shape, scene.dtype, scene.nodata, scene.array.npartitions)
        log.debug("uint16 histogram and look-up: %s", "compiled" if kernels.compiled() else "numpy")
        keep = None
        local = cfg.dask.scheduler in (*LOCAL_SCHEDULERS, "local")
        place = keep_place(scene, final.parent, cfg.processing.reuse_decoded, cfg.processing.keep_decoded_in, local)
        if place is not None:
            keep = DecodedChunks(scene, partial_path(final, ".decoded"), memory=place == "memory")
            log.info("keeping decoded chunks for the write pass (%d MiB in %s)", keep.nbytes >> 20,
                     "memory" if keep.memory else final.parent)
        try:
            with raster_errors(scene.path):
                with phase("statistics"):
                    fitted = fit(scene, cfg.classes, keep)
                log.info("%s edges: %s", fitted.scheme, np.array2string(fitted.edges, precision=6))
                palette = build_palette(cfg.palette, fitted.n_classes)

                def legend_of(counts: np.ndarray) -> dict:
                    return build_legend(scene=scene, fitted=fitted, palette=palette, counts=counts,
                                        version=__version__, output=str(final))

                with phase("classify+write"):
                    counts = write(cfg, keep.reader() if keep else scene, fitted, palette, final, legend_of,
                                   staged=keep.start_removal if keep else None)
        finally:
            if keep is not None:
                keep.remove()
    fitted.stats._scene = scene  # later passes (e.g. a histogram plot) read the input, not the removed store
    legend = legend_of(counts)
    if legend["classes_effective"] < len(legend["classes"]):
        log.warning("%s: %d of %d classes hold pixels (empty: %s)", legend["scheme"],
                    legend["classes_effective"], len(legend["classes"]), legend["empty_classes"])
    lpath = None
    if cfg.output.legend:
        lpath = legend_path(final)
        write_legend(legend, lpath)
    result = RunResult(final, lpath, legend, fitted)
    from ..products.extras import write_extras  # pictures, style files, report (cfg.outputs)

    write_extras(result, cfg)
    return result
