#!/usr/bin/env python
"""What the manifest's input checksum costs a whole run, and what starting it early saves.

    python scripts/bench_checksum.py SCENE.tif [--rounds 5]

Times ``sceneclass run`` end to end (its own process, default settings, 20 equal-interval
classes, a paletted COG) in three ways, rounds interleaved:

``early``  as shipped: the command starts the checksum as soon as it has read the config,
           while the libraries import (``pipeline.jobs.checksum.start_for_config``);
``late``   the checksum starts with the run, as before (that call replaced by a no-op);
``none``   no checksum at all (``pipeline.jobs.checksum.checksum`` replaced by a constant): the
           floor for the other two.

The table gives each way's median wall time and CPU time (user + system) and its median
ratio to ``none`` within a round. Generate a scene with
``python scripts/make_scene.py /tmp/scbench --size 16x``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

from _timing import timed_process

#: the command's entry point, after replacing one function for ``late`` and ``none``
PATCH = {
    "early": "",
    "late": "import pipeline.jobs.checksum as c; c.start_for_config = lambda *a, **k: None",
    "none": "import pipeline.jobs.checksum as c; c.checksum = lambda path: '0' * 64",
}
MODES = tuple(PATCH)


def whole_run(mode: str, scene: Path, folder: Path) -> tuple[float, float]:
    """One ``sceneclass run`` into a fresh folder: wall time and the child's CPU time."""
    out = Path(tempfile.mkdtemp(dir=folder))
    try:
        cfg = out / "run.yaml"
        cfg.write_text(json.dumps({"input": str(scene.absolute()), "nodata": 0,
                                   "classes": {"scheme": "equal_interval", "count": 20},
                                   "output": {"path": str(out / "out.tif")}}))
        code = f"{PATCH[mode]}\nfrom pipeline.cli import entry; entry()"
        argv = [sys.executable, "-c", code, "run", str(cfg), "--no-progress", "--quiet"]
        wall, cpu, status = timed_process(argv)
        if mode != "none" and not status:
            manifest = json.loads((out / "out.manifest.json").read_text())
            assert len(manifest["input_fingerprint"]["sha256"]) == 64
    finally:
        shutil.rmtree(out)
    if status:
        raise SystemExit(f"sceneclass run ({mode}) failed with status {status}")
    return wall, cpu


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("scene", type=Path)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--folder", type=Path, help="where the outputs go (default: beside the scene)")
    args = ap.parse_args(argv)
    res: dict[str, list[tuple[float, float]]] = {m: [] for m in MODES}
    ratios: dict[str, list[float]] = {m: [] for m in MODES}
    with tempfile.TemporaryDirectory(dir=args.folder or args.scene.parent) as tmp:
        whole_run("none", args.scene, Path(tmp))  # warm the page cache
        for r in range(args.rounds):
            order = MODES[r % len(MODES):] + MODES[:r % len(MODES)]
            got = {m: whole_run(m, args.scene, Path(tmp)) for m in order}
            for m in MODES:
                res[m].append(got[m])
                ratios[m].append(got[m][0] / got["none"][0])
    print(f"{args.scene.name} ({args.scene.stat().st_size / 2**20:.0f} MiB), {args.rounds} rounds of whole runs")
    print(f"{'mode':6s} {'wall s':>8s} {'cpu s':>8s} {'÷ none':>8s}")
    for m in MODES:
        print(f"{m:6s} {statistics.median(w for w, _ in res[m]):8.2f} "
              f"{statistics.median(c for _, c in res[m]):8.2f} {statistics.median(ratios[m]):8.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
