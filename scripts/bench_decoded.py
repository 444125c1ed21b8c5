#!/usr/bin/env python
"""What keeping the decoded chunks between the passes costs and saves, as ratios in one run.

    python scripts/bench_decoded.py SCENE.tif [--rounds 3] [--chunk 2048] [--runs]

For each way of getting the pixels to the write pass it times, on the threaded scheduler,
sceneclass's own statistics pass (``pipeline.core.fit``: exact histogram, 20 equal-interval
classes) plus a second pass that only touches every chunk:

``decode twice``  no store: the second pass decodes the input again;
``pwrite``        the statistics pass also writes each decoded chunk to a raw file on disk;
``mapped``        the statistics pass copies each decoded chunk into a memory map of the raw
                  file on disk (its blocks reserved first), as sceneclass does on disk where it can;
``memory``        the statistics pass writes each decoded chunk to a memory file (Linux), as
                  sceneclass does by default when the chunks fit its memory budget.

With ``--runs``, each mode is instead a whole ``sceneclass run`` (its own process, default
settings, 20 equal-interval classes, a paletted COG) with ``processing.keep_decoded_in`` set
to ``memory`` or ``disk`` (``reuse_decoded: never`` for ``decode twice``; ``pwrite`` is not a
setting and is left out).

Rounds are interleaved; the table gives the median wall time and CPU time (user + system) of
each, and its ratio to ``decode twice`` within the same round. Generate a scene with
``python scripts/make_scene.py /tmp/scbench --size 16x``.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import dask
import numpy as np
import rasterio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pipeline._engine.decoded as decoded  # noqa: E402
from pipeline.core import fit  # noqa: E402
from pipeline.jobs.config import EqualInterval  # noqa: E402
from pipeline.scene import open_scene  # noqa: E402
from _timing import timed_process  # noqa: E402

MODES = ("decode twice", "pwrite", "mapped", "memory")
#: ``--runs``: the settings that make a whole run use each mode
RUN_SETTINGS = {"decode twice": ["processing.reuse_decoded=never"], "mapped": ["processing.keep_decoded_in=disk"],
                "memory": ["processing.keep_decoded_in=memory"]}


def _touch(block: np.ndarray) -> np.ndarray:
    return np.array([[int(block[0, 0]) + int(block[-1, -1])]])


def one(mode: str, path: Path, chunk: int, folder: Path) -> tuple[float, float]:
    scene = open_scene(str(path), 1, 0, chunk, 512)
    keep = None if mode == "decode twice" else decoded.DecodedChunks(scene, folder / "scene.decoded",
                                                                      memory=mode == "memory")
    orig = decoded.reserve
    if mode == "pwrite":
        decoded.reserve = lambda fd, nbytes: False
    r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    try:
        fit(scene, EqualInterval(count=20), keep)
        second = keep.reader() if keep else scene
        dask.compute(second.array.map_blocks(_touch, chunks=(1, 1), dtype=np.int64).sum())
    finally:
        decoded.reserve = orig
        if keep:
            keep.remove()
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    return time.perf_counter() - t0, (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)


def whole_run(mode: str, path: Path, chunk: int, folder: Path) -> tuple[float, float]:
    """``sceneclass run`` end to end in its own process, into a fresh folder: wall time and the
    child's CPU time."""
    out = Path(tempfile.mkdtemp(dir=folder))
    try:
        cfg = out / "run.yaml"
        cfg.write_text(json.dumps({"input": str(path.absolute()), "nodata": 0,
                                   "classes": {"scheme": "equal_interval", "count": 20},
                                   "output": {"path": str(out / "out.tif")}, "processing": {"chunk": chunk}}))
        argv = [shutil.which("sceneclass") or "sceneclass", "run", str(cfg), "--no-progress", "--quiet"]
        argv += [a for setting in RUN_SETTINGS[mode] for a in ("--set", setting)]
        wall, cpu, status = timed_process(argv, quiet=False)
    finally:
        shutil.rmtree(out)
    if status:
        raise SystemExit(f"sceneclass run ({mode}) failed with status {status}")
    return wall, cpu


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("scene", type=Path)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--chunk", type=int, default=2048)
    ap.add_argument("--folder", type=Path, help="where the raw file goes (default: beside the scene)")
    ap.add_argument("--runs", action="store_true", help="time whole `sceneclass run` processes")
    args = ap.parse_args(argv)
    folder = args.folder or args.scene.parent
    modes = tuple(RUN_SETTINGS) if args.runs else MODES
    timed = whole_run if args.runs else one
    res: dict[str, list[tuple[float, float]]] = {m: [] for m in modes}
    ratios: dict[str, list[float]] = {m: [] for m in modes}
    with rasterio.Env(GDAL_CACHEMAX=128), dask.config.set(scheduler="threads"), \
            tempfile.TemporaryDirectory(dir=folder) as tmp:
        timed("decode twice", args.scene, args.chunk, Path(tmp))  # warm the page cache
        for r in range(args.rounds):
            order = modes if r % 2 == 0 else modes[::-1]
            got = {m: timed(m, args.scene, args.chunk, Path(tmp)) for m in order}
            for m in modes:
                res[m].append(got[m])
                ratios[m].append(got[m][0] / got["decode twice"][0])
    what = "whole runs" if args.runs else "statistics pass + a pass over the kept chunks"
    print(f"{args.scene.name}, chunk {args.chunk}, {args.rounds} rounds, {what}, disk files in {folder}")
    print(f"{'mode':14s} {'wall s':>8s} {'cpu s':>8s} {'÷ decode twice':>15s}")
    for m in modes:
        print(f"{m:14s} {statistics.median(w for w, _ in res[m]):8.2f} "
              f"{statistics.median(c for _, c in res[m]):8.2f} {statistics.median(ratios[m]):15.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
