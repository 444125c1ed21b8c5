"""The example configs in configs/ run as shipped from a fresh clone, after ``sceneclass demo``.

A fresh clone is imitated in tmp_path: configs/ copied, then ``sceneclass demo`` run in its root
(at a small size; the scene is renamed to the 1x name the configs read). Every config must pass
``sceneclass validate`` with its inputs and outputs inside the clone (nothing beside it), then
``sceneclass run`` must classify every input; each output is checked against numpy.histogram
on the input's pixels.
"""

from __future__ import annotations

import glob
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import rasterio

from pipeline.jobs.demo import scene_name
from tests._procs import partials, read_classes, read_legend, sceneclass

REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted(p.name for p in (REPO / "configs").glob("*.yaml"))
SMALL = "0.05x"
#: configs that read real products the repository cannot make: their header says how to get the
#: files, and how to try them on the demo scene (these overrides)
DEMO_OVERRIDES = {
    "landsat_c2_st_celsius.yaml": ["--set", f"input=sceneclass-demo/{scene_name()}", "--set", "mask=null"],
}


def _demo_args(name: str) -> list[str]:
    extra = DEMO_OVERRIDES.get(name, [])
    if extra:
        header = (REPO / "configs" / name).read_text(encoding="utf-8")
        assert "Get a real scene" in header and "--set mask=null" in header, f"{name} must say how to get its data"
    return extra


@pytest.fixture(scope="module")
def clone(tmp_path_factory) -> Path:
    """A folder laid out like a fresh clone, with the demo run in its root."""
    root = tmp_path_factory.mktemp("clone")
    shutil.copytree(REPO / "configs", root / "configs")
    proc = sceneclass("demo", "--size", SMALL, cwd=root)
    assert proc.returncode == 0, proc.stderr
    demo = root / "sceneclass-demo"
    (demo / scene_name(SMALL)).rename(demo / scene_name())  # the small scene stands in for the 1x one
    return root


def test_there_are_configs():
    assert len(CONFIGS) >= 4, CONFIGS


def test_demo_says_where_its_outputs_are(clone):
    proc = sceneclass("demo", "--size", SMALL, "--out", "again", cwd=clone)
    assert proc.returncode == 0, proc.stderr
    named = [ln.split()[1] for ln in proc.stdout.splitlines()
             if ln.strip().split(" ", 1)[0] in ("input", "classes", "legend", "manifest")]
    assert len(named) == 4, proc.stdout
    for rel in named:
        assert (clone / rel).exists(), f"the demo's summary names {rel}, which does not exist"
    assert "QGIS" in proc.stdout and "gdalinfo" in proc.stdout
    assert read_legend(clone / "again" / "demo_classes.tif")["scheme"] == "equal_interval"


def _inputs(cfg: dict) -> list[str]:
    if cfg["input"] is not None:
        return [cfg["input"]]
    return [i if isinstance(i, str) else i["path"] for i in cfg["inputs"]]


@pytest.mark.parametrize("name", CONFIGS)
def test_config_validates_with_its_data_inside_the_clone(clone, name):
    proc = sceneclass("validate", f"configs/{name}", *_demo_args(name), cwd=clone)
    assert proc.returncode == 0, proc.stderr
    cfg = json.loads(proc.stdout)
    root = clone.resolve()
    for pattern in _inputs(cfg):
        assert Path(pattern).is_relative_to(root), f"{name}: input {pattern} is outside the repository"
        assert glob.glob(pattern), f"{name}: input {pattern} does not exist after `sceneclass demo`"
    out = Path(cfg["output"]["folder"] or cfg["output"]["path"]).resolve()
    assert out.is_relative_to(root), f"{name}: output {out} is outside the repository"


def _valid_pixels(path: str, nodata, scale: float = 1.0, offset: float = 0.0) -> np.ndarray:
    """The valid pixels' physical values (raw * scale + offset, float64 when scaled)."""
    with rasterio.open(path) as src:
        a = src.read(1)
    a = a[a != nodata] if nodata is not None else a.ravel()
    return a if (scale, offset) == (1.0, 0.0) else a.astype(np.float64) * scale + offset


@pytest.mark.parametrize("name", CONFIGS)
def test_config_runs_as_shipped(clone, name):
    proc = sceneclass("run", f"configs/{name}", "--set", "processing.chunk=320", *_demo_args(name), cwd=clone)
    assert proc.returncode == 0, proc.stderr
    done = [ln.split()[1] for ln in proc.stdout.splitlines() if ln.startswith("done")]
    assert done, proc.stdout
    for out in map(Path, done):
        legend = read_legend(out)
        # independent reference: numpy.histogram of the input's valid pixels over the legend's edges
        want, _ = np.histogram(_valid_pixels(legend["input"], legend["nodata"], legend.get("scale", 1.0), legend.get("offset", 0.0)), bins=np.array(legend["edges"]))
        assert [c["count"] for c in legend["classes"]] == want.tolist(), name
        got = np.bincount(read_classes(out).ravel(), minlength=len(want) + 1)
        assert got[1:].tolist() == want.tolist(), name
    assert not partials(clone / "out")
