#!/usr/bin/env python
"""What a ``sceneclass run`` costs before its first scene starts: CPU and wall time to its
first plan line (``OUTPUT: new (no manifest)``), the start-up a batch shares among its scenes.

    python scripts/bench_startup.py CONFIG.yaml [--rounds 8] [--tree A=/path/a --tree B=/path/b]

Each run is the real command in its own process (``pipeline.cli.main``, as the ``sceneclass``
entry point calls it), stopped at its first plan line: interpreter start, imports, config,
plan, checks, lock. Its outputs are removed before each run so that the plan line says
``new``. With ``--tree NAME=PATH`` (repeatable) each round runs every tree once, in shuffled
order, with ``PYTHONPATH=PATH`` (e.g. a checkout of an older commit from ``git archive``);
CPU time (user + system of every thread, the checksum thread included) is the steadier
figure on a shared machine. The table gives medians and minima.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

#: run in the child: the CLI up to its first plan line, then print CPU and wall seconds
CHILD = r"""
import logging, os, re, sys, time
w0 = time.perf_counter()
from pipeline._engine.deferred import hide
hide()
import pipeline.cli as cli
PLAN = re.compile(r": (new|changed|forced) \(")
class Stop(logging.Handler):
    def emit(self, record):
        if PLAN.search(record.getMessage()):
            print(f"{time.process_time():.4f} {time.perf_counter() - w0:.4f}", flush=True)
            os._exit(0)
setup = cli._setup_logging
def with_stop(args):
    setup(args)
    logging.getLogger("sceneclass").addHandler(Stop())
cli._setup_logging = with_stop
sys.exit(cli.main(sys.argv[1:]))
"""


def outputs_of(config: Path) -> list[Path]:
    """The output folder (batch) or output path of a config, to remove before each run."""
    import yaml

    data = yaml.safe_load(config.read_text())
    out = data.get("output") or {}
    base = config.resolve().parent
    if out.get("folder"):
        return [base / out["folder"]]
    return [base / out["path"]] if out.get("path") else []


def one_run(config: Path, pythonpath: str | None) -> tuple[float, float]:
    for p in outputs_of(config):
        shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
    env = dict(os.environ)
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    res = subprocess.run([sys.executable, "-P", "-c", CHILD, "run", str(config), "--no-progress"], env=env,
                         capture_output=True, text=True, timeout=600)
    words = res.stdout.split()  # (-P: the current folder does not shadow PYTHONPATH)
    if len(words) != 2:
        raise SystemExit(f"the run stopped before its plan line (exit {res.returncode}):\n{res.stderr[-2000:]}")
    return float(words[0]), float(words[1])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("config", type=Path)
    p.add_argument("--rounds", type=int, default=8)
    p.add_argument("--tree", action="append", default=[], metavar="NAME=PATH",
                   help="a source tree to put first on PYTHONPATH (repeatable; default: this environment's)")
    args = p.parse_args(argv)
    trees = dict(t.split("=", 1) for t in args.tree) or {"current": None}
    got: dict[str, list[tuple[float, float]]] = {name: [] for name in trees}
    for _ in range(args.rounds):
        order = list(trees)
        random.shuffle(order)
        for name in order:
            got[name].append(one_run(args.config, trees[name]))
    print("| tree | CPU s to the plan line: median (min) | wall s: median (min) |")
    print("|---|---|---|")
    for name, runs in got.items():
        cpu, wall = [r[0] for r in runs], [r[1] for r in runs]
        print(f"| {name} | {statistics.median(cpu):.3f} ({min(cpu):.3f}) | {statistics.median(wall):.3f} ({min(wall):.3f}) |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
