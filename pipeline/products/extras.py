"""Extra outputs of a run (``outputs:`` in the config): pictures, style files and the report.

Everything comes from the finished run -- the legend (edges, labels, colours, counts), the
fitted statistics and the written raster -- so pictures and styles match the raster exactly.
Files are named from the output path (``out/b10_classes.tif`` -> ``out/b10_classes.qml``,
``out/b10_classes.quicklook.png``, ...) and written atomically.
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

from ..jobs.atomic import atomic_output, sibling, staged_path
from ..errors import ConfigError

log = logging.getLogger(__name__.replace("pipeline", "sceneclass", 1))

#: outputs key -> file name suffix (after the output's base name)
SUFFIXES = {
    "quicklook_png": ".quicklook.png",
    "quicklook_jpeg": ".quicklook.jpg",
    "histogram_plot": ".histogram.png",
    "legend_image": ".legend.png",
    "qml": ".qml",
    "sld": ".sld",
    "gdal_color_file": ".colors.txt",
    "report": ".report.html",
}


def extra_paths(output: Path) -> dict[str, Path]:
    """Where every extra output of ``output`` goes."""
    return {key: sibling(output, suffix) for key, suffix in SUFFIXES.items()}


def requested_paths(output: Path, o) -> dict[str, Path]:
    """The extra files a run writes for ``output``.

    Parameters
    ----------
    output : Path
        The run's output (COG file or Zarr store).
    o : pipeline.jobs.config.Outputs
        The ``outputs:`` section of the run's config.

    Returns
    -------
    dict of str to Path
        ``outputs`` key (``quicklook_png``, ``qml``, ...) -> the file it writes, for the
        requested ones only.
    """
    paths = extra_paths(output)
    return {key: paths[key] for key in _requested(o)}


def _requested(o) -> list[str]:
    keys = [f"quicklook_{f}" for f in dict.fromkeys(o.quicklook_format)] if o.quicklook else []
    return keys + [k for k in ("histogram_plot", "legend_image", "qml", "sld", "gdal_color_file", "report")
                   if getattr(o, k)]


def _need(module: str, what: str) -> None:
    if importlib.util.find_spec(module) is None:
        raise ConfigError(f"outputs.{what}: needs {module} (pip install 'sceneclass[plots]')")


def _put(path: Path, data: bytes | str) -> Path:
    with atomic_output(path, path.suffix) as tmp:
        if isinstance(data, str):
            tmp.write_text(data, encoding="utf-8")
        else:
            tmp.write_bytes(data)
    log.info("wrote %s", path)
    return path


def check_extras(cfg) -> None:
    """Refuse (before any work) extra outputs whose libraries are not installed.

    Raises
    ------
    ConfigError
        Naming the ``outputs.`` key and the missing library.
    """
    o = cfg.outputs
    if o.quicklook or o.legend_image or o.report:
        _need("PIL", "quicklook" if o.quicklook else "legend_image" if o.legend_image else "report")
    if o.histogram_plot:
        _need("matplotlib", "histogram_plot")


def write_extras(result, cfg) -> dict[str, Path]:
    """Write the extra outputs ``cfg.outputs`` asks for; returns {key: path} of what was written.

    """
    from . import pictures
    from . import report
    from . import styles

    legend = result.legend
    o = cfg.outputs
    keys = _requested(o)
    if not keys:
        return {}
    check_extras(cfg)
    paths = extra_paths(result.output)
    written: dict[str, Path] = {}
    name = Path(result.output).stem

    if o.qml:
        written["qml"] = _put(paths["qml"], styles.qml(legend))
    if o.sld:
        written["sld"] = _put(paths["sld"], styles.sld(legend, name))
    if o.gdal_color_file:
        written["gdal_color_file"] = _put(paths["gdal_color_file"], styles.gdal_color_file(legend))

    quicklook = None
    if o.quicklook or o.report:
        palette = styles.palette_from_legend(legend)
        rgba = pictures.quicklook_rgba(staged_path(result.output), cfg.output.resolved_format, cfg.output.mode,
                                       palette, o.quicklook_size)
        quicklook = pictures.encode(rgba, "png")
        if o.quicklook:
            for fmt in dict.fromkeys(o.quicklook_format):
                data = quicklook if fmt == "png" else pictures.encode(rgba, fmt)
                written[f"quicklook_{fmt}"] = _put(paths[f"quicklook_{fmt}"], data)

    histogram = source = None
    if o.histogram_plot or (o.report and importlib.util.find_spec("matplotlib") is not None):
        from ..scene import raster_errors
        from ..jobs.scheduler import runtime  # the run's GDAL settings and scheduler, for a float histogram pass

        with runtime(cfg), raster_errors(legend["input"]):
            histogram, source = pictures.histogram_png(legend, result.fit.stats, result.passes, result.fit.edges)
        if o.histogram_plot:
            written["histogram_plot"] = _put(paths["histogram_plot"], histogram)
    elif o.report:
        log.warning("outputs.report: matplotlib is not installed; the report has no histogram plot")

    if o.legend_image:
        written["legend_image"] = _put(paths["legend_image"], pictures.legend_png(legend))

    if o.report:
        files = {"output": result.output}
        if result.legend_path:
            files["legend"] = result.legend_path
        files.update(written)
        page = report.report_html(legend, cfg.model_dump(mode="json"), quicklook=quicklook, histogram=histogram,
                                  histogram_source=source, files=files)
        written["report"] = _put(paths["report"], page)
    return written
