#!/usr/bin/env python
"""What fresh memory costs on this machine: kernel time to write 1 GiB into the page cache of a
file in FOLDER, into an anonymous memory file (Linux ``memfd_create``), and into plain process
memory (numpy), each in its own process, after an idle pause and straight after one another.

    python scripts/bench_memory.py [FOLDER] [--pause 25] [--rounds 2]

On virtual machines whose host takes back memory the guest has left free for a while, the
first touch of that memory is slow; how slow depends on what ran just before. sceneclass's
scratch files are written this way (decoded chunks kept between the passes, the COG's staging
tiles), so their cost, and the bench's timings, move with it. "after pause" sleeps PAUSE seconds
first (memory freed earlier has gone cold), "right after" runs straight after the previous
write of the same kind (memory just freed is reused).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

KINDS = ("page cache", "memory file", "process memory")

CHILD = r"""
import os, resource, sys, time
import numpy as np
kind, folder = sys.argv[1], sys.argv[2]
block = np.random.default_rng(0).integers(0, 255, 8 << 20, dtype=np.uint8)
r0 = resource.getrusage(resource.RUSAGE_SELF).ru_stime
t0 = time.perf_counter()
if kind == "process memory":
    x = np.ones(1 << 30, np.uint8)
else:
    if kind == "memory file":
        fd = os.memfd_create("bench")
    else:
        path = os.path.join(folder, "bench_memory.bin")
        fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_TRUNC)
        os.unlink(path)
    for i in range(128):
        os.pwrite(fd, block, i * block.nbytes)
    os.close(fd)
print(time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_SELF).ru_stime - r0)
"""


def one(kind: str, folder: Path) -> tuple[float, float]:
    out = subprocess.run([sys.executable, "-c", CHILD, kind, str(folder)], capture_output=True, text=True, check=True)
    wall, sys_s = (float(v) for v in out.stdout.split())
    return wall, sys_s


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("folder", type=Path, nargs="?", default=Path(tempfile.gettempdir()))
    ap.add_argument("--pause", type=float, default=25.0, help="idle seconds before an 'after pause' write")
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args(argv)
    if not hasattr(os, "memfd_create"):
        print("memory files need Linux (memfd_create)")
        return 1
    res: dict[tuple[str, str], list[float]] = {}
    for _ in range(args.rounds):
        for kind in KINDS:
            time.sleep(args.pause)
            res.setdefault((kind, "after pause"), []).append(one(kind, args.folder)[1])
            res.setdefault((kind, "right after"), []).append(one(kind, args.folder)[1])
    print(f"kernel (system) seconds to write 1 GiB, median of {args.rounds}; page cache in {args.folder}")
    print(f"{'into':16s} {'after pause':>12s} {'right after':>12s}")
    for kind in KINDS:
        print(f"{kind:16s} {statistics.median(res[kind, 'after pause']):12.2f} "
              f"{statistics.median(res[kind, 'right after']):12.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
