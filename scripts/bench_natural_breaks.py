#!/usr/bin/env python
"""Natural breaks on a full Landsat-sized uint16 scene: sceneclass vs mapclassify vs xarray-spatial.

Each method runs in its own process (the parent reads the child's peak RSS with ``os.wait4``;
it includes the interpreter and the imports). The scene is ``pipeline.testing.synth.make_scene(path,
"1x")`` (7931 x 7811 uint16, 0 = fill, not declared; the fill is excluded everywhere).

* ``sceneclass``: the one statistics pass (exact histogram, dask) + the exact Fisher-Jenks
  breaks on the (value, count) pairs. Its histogram is saved and used to score every method.
* ``mapclassify.FisherJenks``: on the full valid array (O(n²) time, O(n·k) memory), killed after
  ``--timeout`` seconds.
* ``mapclassify.FisherJenksSampled``: its defaults (a random 10% sample capped at 1000 values,
  plus the min and max), numpy seed 0.
* ``xrspatial.classify.natural_breaks``: its defaults (a 20,000-value sample), on the scene as a
  float32 DataArray with NaN for the fill; its breaks are captured from its internal ``_bin``.

Scores, exact on the full histogram: the goodness of variance fit (GVF) of each method's classes
and the largest difference between its class upper bounds and the exact ones (mapclassify
semantics: a class holds x <= its bound).

    python scripts/bench_natural_breaks.py --k 5 --out bench_natural_breaks.json
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

try:
    from pipeline.testing.synth import make_scene
except ModuleNotFoundError:  # a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from pipeline.testing.synth import make_scene

METHODS = ("sceneclass", "mapclassify.FisherJenks", "mapclassify.FisherJenksSampled", "xrspatial.natural_breaks")


# ------------------------------------------------------------------------ the workers (children)
def _valid_pixels(scene: str) -> np.ndarray:
    import rasterio

    with rasterio.open(scene) as src:
        a = src.read(1)
    return a[a != 0]


def worker(method: str, scene: str, k: int, out: Path) -> None:
    res: dict = {}
    t0 = time.perf_counter()
    if method == "sceneclass":
        from pipeline.jobs.config import NaturalBreaks
        from pipeline.scene import open_scene
        from pipeline.schemes import natural_breaks
        from pipeline.stats import Passes, compute_stats

        import dask

        dask.config.set(scheduler="threads")
        t_import = time.perf_counter()
        opened = open_scene(scene, 1, 0, 2048)
        stats = compute_stats(opened)
        t_stats = time.perf_counter()
        edges = natural_breaks(NaturalBreaks(scheme="natural_breaks", count=k), stats, Passes(stats, opened))
        t_breaks = time.perf_counter()
        x, w = stats.hist_values()
        np.savez(out.with_suffix(".npz"), x=x, w=w)
        res.update(edges=edges.tolist(), distinct_values=int(len(x)), valid_pixels=int(stats.count),
                   time_imports=t_import - t0, time_stats=t_stats - t_import, time_breaks=t_breaks - t_stats)
        res["time"] = t_breaks - t_import
    elif method.startswith("mapclassify"):
        import warnings

        import mapclassify

        v = _valid_pixels(scene)
        t1 = time.perf_counter()
        np.random.seed(0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            cls = mapclassify.FisherJenks if method.endswith("FisherJenks") else mapclassify.FisherJenksSampled
            m = cls(v, k=k)
        res.update(upper_bounds=[float(b) for b in m.bins], time=time.perf_counter() - t1, time_read=t1 - t0)
    elif method == "xrspatial.natural_breaks":
        import warnings

        import xarray as xr
        import xrspatial.classify as xc

        captured = {}
        original = xc._bin

        def spy(agg, bins, new_values):
            captured["bins"] = np.asarray(bins, dtype=np.float64).tolist()
            return original(agg, bins, new_values)

        xc._bin = spy
        import rasterio

        with rasterio.open(scene) as src:
            a = src.read(1).astype(np.float32)
        a[a == 0] = np.nan
        agg = xr.DataArray(a, dims=("y", "x"))
        t1 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            xc.natural_breaks(agg, k=k)
        res.update(upper_bounds=captured["bins"], time=time.perf_counter() - t1, time_read=t1 - t0)
    out.write_text(json.dumps(res))


# --------------------------------------------------------------------------------- the parent
def run_child(method: str, scene: str, k: int, tmp: Path, timeout: float) -> dict:
    out = tmp / f"{method}.json"
    cmd = [sys.executable, __file__, "--worker", method, "--scene", scene, "--k", str(k), "--result", str(out)]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd)
    timed_out = False
    while True:
        pid, status, rusage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if time.perf_counter() - t0 > timeout:
            os.kill(proc.pid, signal.SIGKILL)
            pid, status, rusage = os.wait4(proc.pid, 0)
            timed_out = True
            break
        time.sleep(0.1)
    proc.returncode = os.waitstatus_to_exitcode(status)
    res = {"method": method, "wall": time.perf_counter() - t0, "peak_rss_mib": rusage.ru_maxrss / 1024}
    if timed_out:
        res["status"] = f"killed after {timeout:.0f} s"
    elif proc.returncode != 0 or not out.exists():
        res["status"] = f"failed (exit {proc.returncode})"
    else:
        res["status"] = "ok"
        res.update(json.loads(out.read_text()))
    return res


def score(res: dict, x: np.ndarray, w: np.ndarray, exact_starts: np.ndarray) -> None:
    """GVF of the method's classes and max |upper bound - exact upper bound|, on the histogram."""
    from pipeline.jenks import gvf

    if "edges" in res:  # sceneclass: inner edges are the first values of the classes
        starts = np.searchsorted(x, np.asarray(res["edges"][1:-1]))
    elif "upper_bounds" in res:  # class holds x <= bound
        starts = np.searchsorted(x, np.asarray(res["upper_bounds"][:-1]), side="right")
    else:
        return
    starts = np.unique(np.concatenate([[0], starts[starts < len(x)]]))
    exact_upper = x[np.append(exact_starts[1:] - 1, len(x) - 1)].astype(np.float64)
    upper = x[np.append(starts[1:] - 1, len(x) - 1)].astype(np.float64)
    res["classes"] = int(len(starts))
    res["gvf"] = gvf(x, w, starts)
    if "upper_bounds" in res and len(res["upper_bounds"]) == len(exact_upper):
        res["max_abs_diff"] = float(np.abs(np.asarray(res["upper_bounds"]) - exact_upper).max())
    elif len(upper) == len(exact_upper):
        res["max_abs_diff"] = float(np.abs(upper - exact_upper).max())


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scene", help="uint16 scene (default: generate a 1x synthetic scene in --workdir)")
    p.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "sceneclass-bench"))
    p.add_argument("--k", type=int, default=5)
    p.add_argument("--timeout", type=float, default=300.0, help="seconds before a method is killed")
    p.add_argument("--methods", nargs="*", default=list(METHODS), choices=METHODS)
    p.add_argument("--out", default="bench_natural_breaks.json")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        worker(args.worker, args.scene, args.k, Path(args.result))
        return 0

    scene = args.scene
    if scene is None:
        scene = str(Path(args.workdir) / "scene_1x_s0.tif")
        if not Path(scene).exists():
            print(f"generating {scene} ...", flush=True)
            make_scene(scene, "1x", seed=0)
    methods = ["sceneclass"] + [m for m in args.methods if m != "sceneclass"]
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for m in methods:
            print(f"running {m} ...", flush=True)
            results.append(run_child(m, scene, args.k, tmp, args.timeout))
        hist = np.load(tmp / "sceneclass.npz")
        x, w = hist["x"], hist["w"]
    from pipeline.jenks import fisher_jenks

    exact_starts, _ = fisher_jenks(x.astype(np.float64), w, args.k)
    for r in results:
        score(r, x, w, exact_starts)

    print(f"\nscene {scene}: {int(w.sum()):,} valid pixels, {len(x):,} distinct values, k = {args.k}\n")
    head = f"{'method':32s} {'status':>20s} {'time s':>9s} {'peak MiB':>9s} {'GVF':>10s} {'max |Δ|':>9s}"
    print(head + "\n" + "-" * len(head))
    for r in results:
        t = r.get("time")
        print(f"{r['method']:32s} {r['status']:>20s} {t if t is None else round(t, 2)!s:>9s} "
              f"{r['peak_rss_mib']:9.0f} {r.get('gvf', float('nan')):10.6f} {r.get('max_abs_diff', float('nan')):9.1f}")
    sc = results[0]
    if sc["status"] == "ok":
        print(f"\nsceneclass: statistics pass {sc['time_stats']:.2f} s, breaks {sc['time_breaks']:.3f} s "
              f"(imports {sc['time_imports']:.2f} s); edges {sc['edges']}")
    Path(args.out).write_text(json.dumps({"scene": scene, "k": args.k, "results": results}, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
