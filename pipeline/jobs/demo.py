"""The built-in default job: the original recipe (20 equal-interval classes of a Landsat band,
coloured) on a generated Landsat-sized scene, written as a paletted COG with a legend."""

from __future__ import annotations

import logging
from pathlib import Path

from .config import RunConfig, build_config

log = logging.getLogger(__name__.replace("pipeline", "sceneclass", 1))

DEFAULT_JOB = {
    "band": 1,
    "nodata": 0,  # Landsat Level-1 fill, not declared in the file
    "classes": {"scheme": "equal_interval", "count": 20},
    "palette": {"name": "viridis"},
    "output": {"format": "cog", "mode": "paletted"},
}


def scene_name(size: str = "1x", seed: int = 0) -> str:
    """File name of the generated scene, e.g. ``scene_1x_s0.tif`` (the example configs read that one)."""
    return f"scene_{size}_s{seed}.tif"


def demo_config(out_dir: str, size: str = "1x", seed: int = 0, overrides: list[str] = ()) -> RunConfig:
    """Generate (once) a synthetic Landsat-like scene in ``out_dir`` and return the default job on it."""
    from ..testing.synth import make_scene

    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    scene = out / scene_name(size, seed)
    if not scene.exists():
        log.info("generating a %s synthetic Landsat-like scene at %s", size, scene)
        make_scene(scene, size=size, seed=seed)
    data = dict(DEFAULT_JOB, input=str(scene), output=dict(DEFAULT_JOB["output"], path=str(out / "demo_classes.tif")))
    return build_config(data, base_dir=out, source="demo", overrides=list(overrides))


def _shown(path) -> str:
    """``path`` relative to the current folder when it is under it, else as it is."""
    path = Path(path).resolve()
    here = Path.cwd().resolve()
    return str(path.relative_to(here)) if path.is_relative_to(here) else str(path)


def summary(cfg: RunConfig) -> str:
    """What the demo wrote and how to look at it: a few lines for the end of ``sceneclass demo``.

    Parameters
    ----------
    cfg : RunConfig
        The demo's job, as :func:`demo_config` returned it (after the run).

    Returns
    -------
    str
        Lines naming the input scene, the COG, its legend and manifest, and commands that show them.
    """
    from ..writers.legend import legend_path
    from .manifest import manifest_path

    out = Path(cfg.output.path)
    cog, legend, manifest = _shown(out), _shown(legend_path(out)), _shown(manifest_path(out))
    if cfg.output.resolved_format == "zarr":
        kind = "Zarr store: class ids in 'classes', 0 = nodata"
    elif cfg.output.mode == "paletted":
        kind = "Cloud-Optimized GeoTIFF: class ids, 0 = nodata, colours embedded"
    else:
        kind = f"Cloud-Optimized GeoTIFF: {cfg.output.mode.upper()} colours"
    lines = [
        "",
        f"The demo classified a generated Landsat-like band into {cfg.class_count} "
        f"{cfg.classes.scheme.replace('_', '-')} classes:",
        f"  input     {_shown(cfg.input)}  (uint16, 0 = fill around the footprint)",
        f"  classes   {cog}  ({kind})",
        f"  legend    {legend}  (edges, colour and pixel count of every class)",
        f"  manifest  {manifest}  (what was run on what: a rerun with nothing changed does no work)",
        "Look at it:",
        f"  open {cog} in QGIS (the colours come with the file)",
        f"  gdalinfo {cog}   or   rio info {cog}",
        f"  python -m json.tool {legend}",
    ]
    scene = Path(cfg.input)
    if scene.name == scene_name() and scene.parent.name == "sceneclass-demo":
        lines.append("Next: sceneclass run configs/recipe_b10.yaml   (the example configs in configs/ read this scene)")
    return "\n".join(lines)
