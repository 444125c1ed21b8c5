#!/usr/bin/env python
"""Per-chunk kernel costs, as ratios measured in one run: whole-chunk numpy calls against the
piecewise forms sceneclass uses (``pipeline.kernels.COUNT_PIECE`` and ``TAKE_PIECE`` pixels
per call) and against the compiled uint16 histogram and look-up (``pipeline/_engine/_fastkernels.c``,
where it was built), overview decimation by fancy indexing against strided slicing, and the test for a
uniform chunk (one value: footprint fill) by whole-chunk min and max against a strided sample
first (``pipeline.kernels.uniform``; sceneclass asks it three times per chunk).

    python scripts/bench_kernels.py [SCENE.tif] [--chunk 2048] [--repeat 15]

Without SCENE a 1x synthetic scene is generated into a temporary folder. Prints the best of
``--repeat`` runs of each kernel on one decoded chunk and the speed-up of the piecewise form.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio
from rasterio.windows import Window

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline import kernels  # noqa: E402
from pipeline.writers.cogtasks import decimated  # noqa: E402


def best(fn, repeat: int) -> float:
    fn()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def numpy_only(fn):
    """``fn`` run with the compiled kernels switched off (numpy's piecewise forms)."""
    def run():
        saved, kernels._fastkernels = kernels._fastkernels, None
        try:
            return fn()
        finally:
            kernels._fastkernels = saved
    return run


def chunk_of(path: Path, size: int) -> np.ndarray:
    with rasterio.open(path) as src:
        y0, x0 = max(0, src.height // 2 - size // 2), max(0, src.width // 2 - size // 2)
        return src.read(1, window=Window(x0, y0, min(size, src.width), min(size, src.height)))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("scene", nargs="?", type=Path, help="a uint16 GeoTIFF (default: generate 1x)")
    ap.add_argument("--chunk", type=int, default=2048, help="chunk side in pixels (default: 2048)")
    ap.add_argument("--repeat", type=int, default=15, help="runs per kernel; the best is kept")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        scene = args.scene
        if scene is None:
            from pipeline.testing.synth import make_scene

            scene = make_scene(Path(tmp) / "scene_1x.tif", "1x")
        block = chunk_of(scene, args.chunk)
    lut = (np.arange(65536) // 3277 + 1).astype(np.uint8)
    classes = lut[block]
    hist, look = (lambda: kernels.bincount_block(block, 65536)), (lambda: kernels.lookup_block(block, lut))
    rows = [
        ("histogram, numpy", lambda: np.bincount(block.ravel(), minlength=65536), numpy_only(hist)),
        ("look-up, numpy", lambda: lut[block], numpy_only(look)),
    ]
    if kernels.compiled():
        rows += [("histogram, C", lambda: np.bincount(block.ravel(), minlength=65536), hist),
                 ("look-up, C", lambda: lut[block], look)]
    rows += [
        ("class counts", lambda: np.bincount(classes.ravel(), minlength=256),
         lambda: kernels.bincount_block(classes, 256)),
        ("1/2 overview", lambda: classes[::2, ::2].copy(),
         lambda: decimated(classes, np.arange(0, block.shape[0], 2), np.arange(0, block.shape[1], 2))),
        ("uniform chunk?", lambda: block.min() == block.max(), lambda: kernels.uniform(block)),
    ]
    print(f"chunk {block.shape[0]}x{block.shape[1]} {block.dtype}, best of {args.repeat}; compiled kernels: "
          f"{'yes' if kernels.compiled() else 'no (not built)'}")
    print(f"{'kernel':18s} {'whole-array ms':>15s} {'sceneclass ms':>14s} {'speed-up':>9s}")
    for name, plain, ours in rows:
        np.testing.assert_array_equal(plain(), ours())
        a, b = best(plain, args.repeat), best(ours, args.repeat)
        print(f"{name:18s} {a * 1e3:15.2f} {b * 1e3:14.2f} {a / b:8.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
