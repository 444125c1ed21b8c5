"""Compare two source trees of sceneclass on the same runs, alternating, in one process tree.

Each run is ``python -m pipeline run CONFIG --no-progress`` with ``PYTHONPATH`` set to one
tree; wall time, CPU time (user + system) and the run's peak RSS (``wait4``'s ``ru_maxrss``)
are recorded. Rounds
alternate the trees (A B, then B A, ...), so both see the same machine load; the table gives
medians and the B/A ratios per case.

Usage::

    python scripts/bench_trees.py --trees OLD NEW --scenes /tmp/scbench/scene_1x_s0.tif ... \\
        --kinds cog rgb --rounds 2 --workdir /tmp/bench-trees
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path


def config(scene: Path, out: Path, kind: str) -> dict:
    cfg = {"input": str(scene), "classes": {"scheme": "equal_interval", "count": 20},
           "output": {"path": str(out)}}
    if "float32" not in scene.name:
        cfg["nodata"] = 0
    if kind == "rgb":
        cfg["output"]["mode"] = "rgb"
    return cfg


def run_once(tree: Path, cfg_path: Path) -> tuple[float, float, float]:
    env = dict(os.environ, PYTHONPATH=str(tree))
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "pipeline", "run", str(cfg_path), "--no-progress", "--force", "-q"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    err = proc.stderr.read().decode()
    proc.stderr.close()
    if status != 0:
        raise SystemExit(f"{tree} {cfg_path}: exit status {status}: {err}")
    return wall, usage.ru_maxrss / 1024.0, usage.ru_utime + usage.ru_stime  # s, MiB, CPU s


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trees", nargs=2, type=Path, required=True, metavar=("A", "B"))
    ap.add_argument("--scenes", nargs="+", type=Path, required=True)
    ap.add_argument("--kinds", nargs="+", default=["cog", "rgb"], choices=["cog", "rgb"])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/bench-trees"))
    args = ap.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    results: dict = {}
    for scene in args.scenes:
        for kind in args.kinds:
            case = f"{scene.stem} {kind}"
            for t, tree in enumerate(args.trees):
                cfg = config(scene, args.workdir / f"t{t}" / f"{scene.stem}_{kind}.tif", kind)
                (args.workdir / f"t{t}").mkdir(exist_ok=True)
                path = args.workdir / f"t{t}" / f"{scene.stem}_{kind}.json"
                path.write_text(json.dumps(cfg))
            for r in range(args.rounds):
                order = [0, 1] if r % 2 == 0 else [1, 0]
                for t in order:
                    path = args.workdir / f"t{t}" / f"{scene.stem}_{kind}.json"
                    wall, rss, cpu = run_once(args.trees[t], path)
                    results.setdefault(case, {}).setdefault(t, []).append((wall, rss, cpu))
                    print(f"{case} tree {'AB'[t]} round {r}: {wall:.2f} s, {rss:.0f} MiB, CPU {cpu:.2f} s",
                          file=sys.stderr, flush=True)
    print("| case | A wall s | A CPU s | A peak MiB | B wall s | B CPU s | B peak MiB | B/A wall | B/A CPU |")
    print("|---|---|---|---|---|---|---|---|---|")
    for case, by in results.items():
        a = [statistics.median(x) for x in zip(*by[0])]
        b = [statistics.median(x) for x in zip(*by[1])]
        print(f"| {case} | {a[0]:.2f} | {a[2]:.2f} | {a[1]:.0f} | {b[0]:.2f} | {b[2]:.2f} | {b[1]:.0f} | "
              f"{b[0] / a[0]:.2f} | {b[2] / a[2]:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
