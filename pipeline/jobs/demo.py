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


def demo_config(out_dir: str, size: str = "1x", seed: int = 0, overrides: list[str] = ()) -> RunConfig:
    """Generate (once) a synthetic Landsat-like scene in ``out_dir`` and return the default job on it."""
    from ..testing.synth import make_scene

    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    scene = out / f"scene_{size}_s{seed}.tif"
    if not scene.exists():
        log.info("generating a %s synthetic Landsat-like scene at %s", size, scene)
        make_scene(scene, size=size, seed=seed)
    data = dict(DEFAULT_JOB, input=str(scene), output=dict(DEFAULT_JOB["output"], path=str(out / "demo_classes.tif")))
    return build_config(data, base_dir=out, source="demo", overrides=list(overrides))
