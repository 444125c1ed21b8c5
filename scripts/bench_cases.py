"""Measure sceneclass on chosen cases of the dtype x scheme x output matrix, interleaved.

Each case is one ``sceneclass classify`` process (GNU time gives its peak RSS; ``os.wait4``
its CPU time); rounds go through every case in turn, so a case's ratios to another are
taken within a round on a shared machine. Optionally an in-memory numpy row per scene and
scheme (``--numpy``: read the whole band, NaN/nodata out, numpy edges, searchsorted) for the
"x the numpy time" ratios. Prints one line per run and a median table at the end.

Example::

    python scripts/bench_cases.py --scene u16=/tmp/scbench/scene_4x_s0.tif \\
        --scene f32=/tmp/perf/f32_4x.tif --scheme equal_interval:20 --scheme quantile:10 \\
        --output cog --output zarr --rounds 2 --out /tmp/perf/out
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

GNU_TIME = "/usr/bin/time"

NUMPY_ROW = r"""
import sys, numpy as np, rasterio
path, scheme, k = sys.argv[1], sys.argv[2], int(sys.argv[3])
with rasterio.open(path) as src:
    a = src.read(1); nd = src.nodata
ok = np.isfinite(a) if a.dtype.kind == "f" else np.ones(a.shape, bool)
if nd is not None and not np.isnan(nd):
    ok &= a != a.dtype.type(nd)
v = a[ok]
if scheme == "equal_interval":
    edges = np.histogram_bin_edges(np.array([v.min(), v.max()]), bins=k)
elif scheme == "quantile":
    edges = np.quantile(v, np.linspace(0, 1, k + 1), method="inverted_cdf")
else:
    raise SystemExit("numpy row: equal_interval or quantile only")
del v
cls = np.searchsorted(edges, a, side="right").astype(np.uint8)
cls[~ok] = 0
print(int(cls.sum() % 7))
"""


def measured(cmd: list[str], env: dict | None = None) -> dict:
    fd, rss_file = tempfile.mkstemp(prefix="bench-cases-rss-")
    os.close(fd)
    t0 = time.perf_counter()
    proc = subprocess.Popen([GNU_TIME, "-f", "%M", "-o", rss_file, *cmd],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    out, err = proc.stdout.read(), proc.stderr.read()
    proc.returncode = os.waitstatus_to_exitcode(status)
    try:
        rss = int(Path(rss_file).read_text().split()[-1]) / 1024
    except (ValueError, IndexError):
        rss = float("nan")
    os.unlink(rss_file)
    return {"rc": proc.returncode, "wall": wall, "cpu": usage.ru_utime + usage.ru_stime, "rss": rss,
            "err": err[-2000:] if proc.returncode else ""}


def case_cmd(scene: str, scheme: str, k: int, output: str, out_dir: Path, extra: list[str]) -> tuple[list[str], Path]:
    suffix = ".zarr" if output == "zarr" else ".tif"
    path, _, nodata = scene.partition("@")
    out = out_dir / f"{Path(path).stem}_{scheme}{k}_{output}{suffix}"
    cmd = [sys.executable, "-m", "pipeline", "classify", path, str(out), "--scheme", scheme, "-k", str(k),
           "--no-progress", "--force"] + (["--nodata", nodata] if nodata else [])
    if output == "rgb":
        cmd += ["--set", "output.mode=rgb"]
    return cmd + extra, out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--scene", action="append", required=True, help="NAME=PATH[@NODATA] (repeatable)")
    p.add_argument("--scheme", action="append", default=None, help="NAME:K (repeatable)")
    p.add_argument("--output", action="append", default=None, choices=["cog", "zarr", "rgb"])
    p.add_argument("--tree", action="append", default=None,
                   help="NAME=PATH: also run sceneclass from this source tree (PYTHONPATH), e.g. a "
                        "`git archive` of the commit before a change, for before/after in one run")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--numpy", action="store_true", help="also time the in-memory numpy row")
    p.add_argument("--set", action="append", default=[], help="passed to sceneclass as --set")
    p.add_argument("--out", default="/tmp/bench_cases_out")
    p.add_argument("--json", default=None, help="write every run here")
    a = p.parse_args(argv)
    scenes = dict(s.split("=", 1) for s in a.scene)
    schemes = [(s.split(":")[0], int(s.split(":")[1])) for s in (a.scheme or ["equal_interval:20"])]
    outputs = a.output or ["cog"]
    extra = [x for s in a.set for x in ("--set", s)]
    out_dir = Path(a.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    trees = dict(t.split("=", 1) for t in a.tree) if a.tree else {"": os.environ.get("PYTHONPATH", "")}
    cases = [(t, n, s, k, o) for n in scenes for (s, k) in schemes for o in outputs for t in trees]
    if a.numpy:
        cases += [("", n, s, k, "numpy") for n in scenes for (s, k) in schemes
                  if s in ("equal_interval", "quantile")]
    runs = []
    for rnd in range(a.rounds):
        for tree, name, scheme, k, output in cases:
            env = dict(os.environ)
            if output == "numpy":
                cmd, out = [sys.executable, "-c", NUMPY_ROW, scenes[name].partition("@")[0], scheme, str(k)], None
            else:
                cmd, out = case_cmd(scenes[name], scheme, k, output, out_dir / (tree or "out"), extra)
                out.parent.mkdir(parents=True, exist_ok=True)
                shutil.rmtree(out, ignore_errors=True) if out.is_dir() else out.unlink(missing_ok=True)
                env["PYTHONPATH"] = trees[tree]
            r = measured(cmd, env)
            r.update(round=rnd, scene=name + (f"/{tree}" if tree else ""), scheme=f"{scheme}{k}", output=output)
            runs.append(r)
            print(f"r{rnd} {r['scene']:10s} {scheme}{k:<3d} {output:6s} rc={r['rc']} wall {r['wall']:6.2f} s "
                  f"cpu {r['cpu']:6.2f} s rss {r['rss']:6.0f} MiB", flush=True)
            if r["rc"]:
                print(r["err"], file=sys.stderr)
    print("\nmedians:")
    key = lambda r: (r["scene"], r["scheme"], r["output"])
    for k_, group in itertools.groupby(sorted(runs, key=key), key=key):
        g = list(group)
        print(f"{k_[0]:10s} {k_[1]:18s} {k_[2]:6s} wall {statistics.median(r['wall'] for r in g):6.2f} s "
              f"cpu {statistics.median(r['cpu'] for r in g):6.2f} s rss max {max(r['rss'] for r in g):6.0f} MiB")
    if a.json:
        Path(a.json).write_text(json.dumps(runs, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
