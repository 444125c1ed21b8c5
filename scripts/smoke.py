#!/usr/bin/env python
"""Smoke test of an installation: a COG run and a Zarr run of the command on a small real
GeoTIFF, each checked against numpy on the same pixels.

    python scripts/smoke.py [--keep FOLDER]

CI runs it in a second environment that holds the lowest versions ``pyproject.toml``
declares (``uv pip install --resolution lowest-direct -e .``), so the declared floors are
versions the code really runs with. Exit 0 when both outputs are right, else 1 with the
reason. Needs only the package's own dependencies (no pytest).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import rasterio
import yaml

COUNT = 7


def expected(path: Path, count: int, nodata: float) -> np.ndarray:
    """numpy.histogram's bin of every valid pixel (1-based), 0 for nodata."""
    with rasterio.open(path) as src:
        a = src.read(1).astype(np.float64)
    valid = a != nodata
    edges = np.histogram_bin_edges(a[valid], count)
    ids = np.searchsorted(edges, a, side="right")
    ids[a == edges[-1]] = count  # the last bin is closed
    ids[~valid] = 0
    return ids.astype(np.uint8)


def classes_of(path: Path) -> np.ndarray:
    if path.is_dir():
        import zarr

        return np.asarray(zarr.open_group(str(path), mode="r")["classes"][:])
    with rasterio.open(path) as src:
        return src.read(1)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--keep", type=Path, help="work in this folder (kept) instead of a temporary one")
    args = ap.parse_args()
    from pipeline.testing.synth import make_scene

    with tempfile.TemporaryDirectory() as tmp:
        work = args.keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        scene = make_scene(work / "scene.tif", size="300x420", seed=3, blocksize=128)
        want = expected(scene, COUNT, 0)
        failures = []
        for name in ("classes.tif", "classes.zarr"):
            cfg = work / f"{name}.yaml"
            cfg.write_text(yaml.safe_dump({
                "input": str(scene), "nodata": 0, "classes": {"scheme": "equal_interval", "count": COUNT},
                "processing": {"chunk": 200}, "output": {"path": str(work / name), "blocksize": 128},
            }), encoding="utf-8")
            proc = subprocess.run([sys.executable, "-m", "pipeline", "run", str(cfg), "-q"],
                                  capture_output=True, text=True)
            if proc.returncode != 0:
                failures.append(f"{name}: exit {proc.returncode}: {proc.stderr.strip()[-2000:]}")
                continue
            got = classes_of(work / name)
            if got.shape != want.shape or not np.array_equal(got, want):
                failures.append(f"{name}: classes differ from numpy's ({int((got != want).sum())} pixels)")
        for f in failures:
            print(f"smoke: FAILED {f}", file=sys.stderr)
        if not failures:
            print("smoke: COG and Zarr runs match numpy")
        return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
