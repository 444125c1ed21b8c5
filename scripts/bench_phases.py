#!/usr/bin/env python
"""Where one run's memory goes, phase by phase: resident memory of a ``sceneclass run`` process
sampled every 10 ms (``/proc/PID/status``: all, anonymous, file-backed, shared memory) and cut at
the run's log lines (statistics pass, edges, write pass, file written), plus the tasks of every
``dask.compute`` (counted in a second, in-process run) -- to compare the same case at two sizes.

    python scripts/bench_phases.py SIZE [SIZE ...] [--dtype uint16|float32] [--scheme S] [--count N]
                                   [--output cog|zarr|rgb] [--workdir /tmp/scbench] [--tasks]

Uses the bench's scenes (``scripts/bench.py`` generates them into WORKDIR) and its config for the
case. Linux only. Example (the 16x growth of issue 18)::

    python scripts/bench_phases.py 1x 16x --dtype float32 --scheme natural_breaks --count 7 --tasks
"""

from __future__ import annotations

import argparse
import collections
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402
import bench_rows  # noqa: E402

FIELDS = ("VmRSS", "RssAnon", "RssFile", "RssShmem")


def _status(pid: int) -> dict[str, int] | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            out = {}
            for line in f:
                key = line.split(":", 1)[0]
                if key in FIELDS:
                    out[key] = int(line.split()[1]) >> 10  # MiB
            return out
    except (FileNotFoundError, ProcessLookupError):
        return None


def phases(cmd: list[str]) -> tuple[list[tuple[str, dict]], float]:
    """Run ``cmd`` (``-v``), return [(log line that opened the phase, max of each field in it)]."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd + ["-v"], stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    lines: list[tuple[float, str]] = []

    def pump():
        for line in proc.stderr:
            lines.append((time.perf_counter() - t0, line.rstrip()))

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    samples = []
    while proc.poll() is None:
        s = _status(proc.pid)
        if s:
            samples.append((time.perf_counter() - t0, s))
        time.sleep(0.01)
    reader.join()
    wall = time.perf_counter() - t0
    out, start, label = [], 0.0, "start-up, imports, config"
    for t, line in lines + [(float("inf"), "")]:
        seg = [s for ts, s in samples if start <= ts < t]
        if seg:
            out.append((label, {k: max(s.get(k, 0) for s in seg) for k in FIELDS}))
        start, label = t, line.split(" INFO ", 1)[-1][:70]
    return out, wall


CHILD = r"""
import collections, sys
from dask.callbacks import Callback
from dask.utils import key_split
from pipeline import cli

class Count(Callback):
    def _start_state(self, dsk, state):
        c = collections.Counter(key_split(k) for k in dsk)
        print(f"TASKS {len(dsk)} " + ", ".join(f"{k} {n}" for k, n in c.most_common(6)), file=sys.stderr)

with Count():
    try:
        cli.main(sys.argv[1:])
    except SystemExit:
        pass
"""


def task_counts(cmd: list[str]) -> list[str]:
    # --force: the phases run just wrote this output, which would be skipped as up to date
    proc = subprocess.run([sys.executable, "-c", CHILD, *cmd[1:], "--force"], capture_output=True, text=True)
    return [ln[6:] for ln in proc.stderr.splitlines() if ln.startswith("TASKS ")]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("sizes", nargs="+")
    ap.add_argument("--dtype", default="uint16", choices=["uint16", "float32"])
    ap.add_argument("--scheme", default="equal_interval")
    ap.add_argument("--count", type=int, default=bench_rows.N_CLASSES)
    ap.add_argument("--output", default="cog", choices=["cog", "zarr", "rgb"])
    ap.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "scbench")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tasks", action="store_true", help="also count the tasks of every dask.compute")
    args = ap.parse_args(argv)
    peaks = {}
    with tempfile.TemporaryDirectory(prefix="sceneclass-phases-") as tmp:
        for size in args.sizes:
            scene, _ = bench.ensure_scene(args.workdir, size, args.seed, args.dtype)
            out = Path(tmp) / f"{size}.{'zarr' if args.output == 'zarr' else 'tif'}"
            cmd = bench_rows.sceneclass_command(str(scene), str(out), args.scheme, args.count, args.output)
            rows, wall = phases(cmd)
            peaks[size] = max(r["VmRSS"] for _, r in rows)
            print(f"\n{size} {args.dtype}/{args.scheme}/{args.output}: peak RSS {peaks[size]} MiB, {wall:.1f} s")
            print(f"  {'RSS':>5} {'anon':>5} {'file':>5} {'shmem':>5}  MiB, max in the phase opened by")
            for label, r in rows:
                print(f"  {r['VmRSS']:5d} {r['RssAnon']:5d} {r['RssFile']:5d} {r['RssShmem']:5d}  {label}")
            if args.tasks:
                for line in task_counts(cmd):
                    print(f"  compute: {line}")
    if len(peaks) > 1:
        first = next(iter(peaks.values()))
        print("\npeak RSS ratio to " + args.sizes[0] + ": "
              + ", ".join(f"{s} {p / first:.2f}" for s, p in peaks.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
