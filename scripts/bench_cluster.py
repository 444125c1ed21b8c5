#!/usr/bin/env python
"""Figures for running on a cluster: a 2-worker LocalCluster against the threads scheduler.

    python scripts/bench_cluster.py [--size 16x] [--bytes-size 4x] [--rounds 1]
                                    [--memory-check 4x] [--task-memory 4x [--trace-tasks]]
                                    [--out bench-results/cluster.json]

Every run is a separate, unmodified ``sceneclass classify SCENE OUT.tif`` process (COG output,
``--nodata 0``, equal-interval classes), cluster runs with ``--set dask.scheduler=local --set
dask.workers=2``. What is measured, and how:

- **wall time**: of the whole ``sceneclass`` process; threads and cluster runs alternate
  (``--rounds`` rounds, the order flipped every round); the ratio is cluster / threads of the
  medians, all from this one invocation.
- **peak RSS**: the process tree is sampled with psutil every 0.2 s; the peak of the client
  (the ``sceneclass`` process, which also hosts the LocalCluster's scheduler and nannies) and of
  every child process. Workers are told apart from other children (multiprocessing's resource
  tracker) by the pids the workers themselves report.
- **longest task**: distributed loads ``scripts/_cluster_probe.py`` into the run's scheduler and
  workers (``distributed.scheduler.preload`` / ``distributed.worker.preload``, set through
  ``DASK_DISTRIBUTED__...`` environment variables). Its scheduler plugin records every finished
  task's compute time (the workers' ``startstops``); the longest one's share is its compute time
  over the run's wall time.
- **bytes moved** (``--bytes-size`` run): worker -> client is the sum, over the workers'
  ``transfer_outgoing_log``, of every ``get_data`` answered to the scheduler gathering for the
  client (``who`` is None; results the client fetched: histograms, class counts, tile sizes,
  compressed tile rows), as dask's ``sizeof`` of the results and as bytes written to the
  socket; worker -> worker is the same for answers to other workers; client -> workers is the
  serialized size of every graph the client submitted (the tasks, with whatever they embed).
  The output COG's size is given beside it: when only compressed tiles and counts travel, the
  bytes to the client are about the file's size.
- **memory check** (``--memory-check SIZE``): one cluster run with ``dask.memory_limit=300MiB``
  (``--memory-limit``) and default settings (plus ``--memory-set``): exit code, its error line,
  wall time, peak RSS per worker and the largest GDAL block-cache use seen on a worker.
- **memory by part** (``--task-memory SIZE``): one cluster run without a memory limit; per worker
  its resident memory at start, its peak resident, managed and unmanaged memory and GDAL cache
  (sampled every 0.2 s); with ``--trace-tasks``, per task name the largest memory a task
  allocated while it ran (``tracemalloc``; see ``scripts/_cluster_probe.py``).

Scenes are looked up in ``--scenes`` (default /tmp/scbench, never written) and otherwise made
with ``pipeline.testing.synth.make_scene`` into ``WORK/scenes``. Outputs go to ``WORK`` and are
removed after each run. Results: a markdown table on stdout and in ``OUT.md``, everything in
``OUT.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
PROBE = Path(__file__).resolve().with_name("_cluster_probe.py")
MiB = 1 << 20
LOCAL = ("--set", "dask.scheduler=local", "--set", "dask.workers=2",
         "--set", "dask.dashboard_address=127.0.0.1:0")
MODES = {"threads": ("--set", "dask.scheduler=threads"), "local": LOCAL}


# --------------------------------------------------------------------------- scenes
def scene_path(size: str, scenes: Path, work: Path) -> Path:
    """The uint16 synthetic scene of ``size`` (seed 0): from ``scenes``, or made in ``work/scenes``."""
    name = f"scene_{size}_s0.tif"
    if (scenes / name).exists():
        return scenes / name
    made = work / "scenes" / name
    if not made.exists():
        sys.path.insert(0, str(ROOT))
        from pipeline.testing.synth import make_scene

        made.parent.mkdir(parents=True, exist_ok=True)
        print(f"making {made} ...", file=sys.stderr, flush=True)
        make_scene(made, size, 0)
    return made


# ----------------------------------------------------------------------------- runs
def run_one(mode: str, scene: Path, work: Path, extra: tuple[str, ...] = (), keep: bool = False,
            probe_env: dict | None = None) -> dict:
    """One ``sceneclass classify`` process in ``mode``, sampled every 0.2 s; its measures."""
    folder = Path(tempfile.mkdtemp(prefix=f"{mode}-", dir=work))
    probe = folder / "probe"
    probe.mkdir()
    out = folder / "out" / "classes.tif"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    env.update({"DASK_DISTRIBUTED__SCHEDULER__PRELOAD": json.dumps([str(PROBE)]),
                "DASK_DISTRIBUTED__WORKER__PRELOAD": json.dumps([str(PROBE)]),
                "DASK_DISTRIBUTED__ADMIN__LOW_LEVEL_LOG_LENGTH": "10000000",
                "SCENECLASS_PROBE_DIR": str(probe), **(probe_env or {})})
    argv = [sys.executable, "-m", "pipeline", "classify", str(scene), str(out), "--nodata", "0",
            "--no-progress", *MODES[mode], *extra]
    os.sync()
    peaks: dict[int, int] = {}
    cmdlines: dict[int, str] = {}
    t0 = time.perf_counter()
    proc = psutil.Popen(argv, cwd=folder, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    errors: list[str] = []
    import threading

    reader = threading.Thread(target=lambda: errors.extend(proc.stderr), daemon=True)
    reader.start()
    while proc.poll() is None:
        try:
            tree = [proc, *proc.children(recursive=True)]
        except psutil.NoSuchProcess:
            tree = []
        for p in tree:
            try:
                rss = p.memory_info().rss
                if p.pid not in cmdlines:
                    cmdlines[p.pid] = " ".join(p.cmdline())[:200]
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
            peaks[p.pid] = max(peaks.get(p.pid, 0), rss)
        time.sleep(0.2)
    wall = time.perf_counter() - t0
    reader.join(timeout=10)
    res = {"mode": mode, "scene": str(scene), "extra": list(extra), "exit": proc.returncode,
           "wall_s": round(wall, 2), "client_peak_mib": round(peaks.get(proc.pid, 0) / MiB, 1),
           "error": next((e.strip() for e in errors if e.startswith("sceneclass: error")), None),
           "output_bytes": out.stat().st_size if out.exists() else None}
    workers = {int(json.loads(p.read_text())["pid"]): json.loads(p.read_text()) for p in probe.glob("worker-*.json")}
    res["workers"] = [{"pid": pid, "peak_mib": round(peaks.get(pid, 0) / MiB, 1),
                       "gdal_cache_peak_mib": round(w.get("gdal_cache_peak", 0) / MiB, 1),
                       "idle_mib": round(w.get("idle_rss", 0) / MiB, 1),
                       "managed_peak_mib": round(w.get("managed_peak", 0) / MiB, 1),
                       "unmanaged_peak_mib": round(w.get("unmanaged_peak", 0) / MiB, 1),
                       "task_peaks_mib": {n: round(b / MiB, 2) for n, b in (w.get("task_peaks") or {}).items()},
                       **{k: w.get(k) for k in ("to_client", "to_workers", "to_client_by_name", "to_workers_by_name",
                                                "incoming_total", "log_entries")}}
                      for pid, w in sorted(workers.items())]
    res["other_children"] = [{"pid": pid, "peak_mib": round(peak / MiB, 1), "cmd": cmdlines.get(pid, "")}
                             for pid, peak in peaks.items() if pid != proc.pid and pid not in workers]
    if mode == "local" and proc.returncode == 0 and len(workers) != 2:
        res["probe_warning"] = f"{len(workers)} worker reports (expected 2): figures from workers are incomplete"
    sched = next(iter(probe.glob("scheduler-*.json")), None)
    if sched is not None:
        s = json.loads(sched.read_text())
        tasks = s["tasks"]
        res["tasks"] = len(tasks)
        res["graph_bytes"] = s["graph_bytes"]
        if tasks:
            longest = max(tasks, key=lambda t: t["compute"])
            res["longest_task"] = {"name": longest["name"], "compute_s": round(longest["compute"], 3),
                                   "share_of_wall": round(longest["compute"] / wall, 4)}
            by: dict[str, list[float]] = {}
            for t in tasks:
                by.setdefault(t["name"], []).append(t["compute"])
            res["task_kinds"] = {n: {"count": len(v), "max_s": round(max(v), 3), "sum_s": round(sum(v), 2)}
                                 for n, v in sorted(by.items(), key=lambda kv: -max(kv[1]))}
            res["task_compute_total_s"] = round(sum(t["compute"] for t in tasks), 2)
    if not keep:
        shutil.rmtree(folder, ignore_errors=True)
    return res


def bytes_summary(run: dict) -> dict:
    """Worker <-> client and worker <-> worker traffic of a cluster run (see the module docstring)."""
    to_client = {k: sum(w["to_client"][k] for w in run["workers"]) for k in ("transfers", "nbytes", "wire")}
    to_workers = {k: sum(w["to_workers"][k] for w in run["workers"]) for k in ("transfers", "nbytes", "wire")}
    by_name: dict[str, dict[str, int]] = {"to_client_by_name": {}, "to_workers_by_name": {}}
    for w in run["workers"]:
        for side, names in by_name.items():
            for n, b in w.get(side, {}).items():
                names[n] = names.get(n, 0) + b
    out = {"to_client": to_client, "to_workers": to_workers, "client_to_workers_graph_bytes": run.get("graph_bytes"),
           **{side: dict(sorted(names.items(), key=lambda kv: -kv[1])) for side, names in by_name.items()},
           "output_bytes": run["output_bytes"]}
    if run["output_bytes"]:
        out["to_client_over_output"] = round(to_client["wire"] / run["output_bytes"], 3)
    return out


# --------------------------------------------------------------------------- report
def worker_peaks(runs: list[dict]) -> list[float]:
    """Per worker, largest first, the highest peak RSS over ``runs`` (MiB)."""
    per_run = [sorted((w["peak_mib"] for w in x["workers"]), reverse=True) for x in runs]
    n = min(len(p) for p in per_run)
    return [max(p[i] for p in per_run) for i in range(n)]


def fmt_mib(n: float | None) -> str:
    return "-" if n is None else f"{n:.0f} MiB"


def fmt_bytes(n: int | None) -> str:
    if n is None:
        return "-"
    return f"{n / MiB:.1f} MiB" if n >= MiB else f"{n / 1024:.1f} KiB"


def markdown(res: dict) -> str:
    lines = [f"## Cluster figures ({res['when']}, {res['machine']})", ""]
    f = res.get("figures")
    if f:
        lines += [f"Scene {res['size']} (`{f['scene']}`), COG, {res['rounds']} round(s); threads: dask's threaded "
                  f"scheduler in the client; local: 2-worker LocalCluster (1 thread each).", "",
                  "| measure | threads | LocalCluster (2 workers) | ratio local/threads |", "|---|---|---|---|",
                  f"| wall time (median) | {f['threads_wall_s']:.1f} s | {f['local_wall_s']:.1f} s | "
                  f"{f['wall_ratio']:.2f} |",
                  f"| peak RSS, client process | {fmt_mib(f['threads_client_peak_mib'])} | "
                  f"{fmt_mib(f['local_client_peak_mib'])} | |",
                  f"| peak RSS per worker | - | {' / '.join(fmt_mib(m) for m in f['local_worker_peaks_mib'])} | |",
                  f"| longest task (share of wall) | - | {f['longest_task']} | |",
                  f"| exit codes | {f['threads_exits']} | {f['local_exits']} | |", ""]
    b = res.get("bytes")
    if b:
        lines += [f"Bytes moved, scene {res['bytes_size']}, LocalCluster run "
                  f"(worker -> client: results the client fetched; wire = bytes written to the socket):", "",
                  "| direction | transfers | sizeof | wire |", "|---|---|---|---|",
                  f"| workers -> client | {b['to_client']['transfers']} | {fmt_bytes(b['to_client']['nbytes'])} | "
                  f"{fmt_bytes(b['to_client']['wire'])} |",
                  f"| worker -> worker | {b['to_workers']['transfers']} | {fmt_bytes(b['to_workers']['nbytes'])} | "
                  f"{fmt_bytes(b['to_workers']['wire'])} |",
                  f"| client -> scheduler/workers (graphs) | - | - | {fmt_bytes(b['client_to_workers_graph_bytes'])} |",
                  "", f"Output COG: {fmt_bytes(b['output_bytes'])}; workers -> client / COG size: "
                  f"{b.get('to_client_over_output', '-')}. Fetched by the client, by task name: "
                  + ", ".join(f"`{n}` {fmt_bytes(v)}" for n, v in list(b["to_client_by_name"].items())[:6])
                  + ". Between workers: "
                  + (", ".join(f"`{n}` {fmt_bytes(v)}" for n, v in list(b["to_workers_by_name"].items())[:6]) or "none"),
                  ""]
    m = res.get("memory_check")
    if m:
        settings = " ".join(kv for kv in m["extra"][len(LOCAL):] if kv != "--set")
        lines += [f"Memory check: scene {res['memory_size']}, COG, 2-worker LocalCluster with `{settings}` "
                  "(other settings: defaults):",
                  "", "| exit | wall | peak RSS per worker | GDAL cache peak per worker | error |", "|---|---|---|---|---|",
                  f"| {m['exit']} | {m['wall_s']:.1f} s | {' / '.join(fmt_mib(w['peak_mib']) for w in m['workers']) or '-'} | "
                  f"{' / '.join(fmt_mib(w['gdal_cache_peak_mib']) for w in m['workers']) or '-'} | "
                  f"{m['error'] or ''} |", ""]
    t = res.get("task_memory")
    if t:
        names: dict[str, float] = {}
        for w in t["workers"]:
            for n, v in w["task_peaks_mib"].items():
                names[n] = max(names.get(n, 0), v)
        settings = " ".join(kv for kv in t["extra"] if kv != "--set")
        lines += [f"Worker memory by part: scene {res['task_memory_size']}, COG, 2-worker LocalCluster "
                  f"(1 thread each){', `' + settings + '`' if settings else ''}; exit {t['exit']}, {t['wall_s']:.1f} s:", "",
                  "| worker | idle RSS | peak RSS | peak managed (results held) | peak unmanaged (RSS - managed) "
                  "| GDAL cache peak |", "|---|---|---|---|---|---|"]
        lines += [f"| {i} | {fmt_mib(w['idle_mib'])} | {fmt_mib(w['peak_mib'])} | {fmt_mib(w['managed_peak_mib'])} | "
                  f"{fmt_mib(w['unmanaged_peak_mib'])} | "
                  f"{fmt_mib(w['gdal_cache_peak_mib'])} |" for i, w in enumerate(t["workers"])]
        lines += ["", "Largest memory a task allocated while it ran (tracemalloc; includes its result), by task name: "
                  + ", ".join(f"`{n}` {v:.1f} MiB" for n, v in sorted(names.items(), key=lambda kv: -kv[1])[:12]), ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 2)[2])
    ap.add_argument("--size", default="16x", help="scene for the wall/RSS/longest-task figures (default 16x); 'none' skips")
    ap.add_argument("--bytes-size", default="4x", help="scene for the bytes-moved run (default 4x); 'none' skips")
    ap.add_argument("--rounds", type=int, default=1, help="interleaved threads/cluster rounds (default 1)")
    ap.add_argument("--memory-check", metavar="SIZE", help="also run SIZE on 300 MiB workers (e.g. 4x)")
    ap.add_argument("--memory-limit", default="300MiB", help="worker memory limit of the memory check")
    ap.add_argument("--memory-set", action="append", default=[], metavar="KEY=VALUE",
                    help="extra config for the memory check (e.g. processing.gdal_cache_mb=32)")
    ap.add_argument("--task-memory", metavar="SIZE",
                    help="also run SIZE on the cluster measuring worker memory by part (idle, managed, "
                         "unmanaged, GDAL cache; per task name with --trace-tasks)")
    ap.add_argument("--trace-tasks", action="store_true",
                    help="with --task-memory: trace every task's allocations (tracemalloc; slower, and the "
                         "RSS figures of that run include tracemalloc's own memory)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="extra config for every run")
    ap.add_argument("--scenes", type=Path, default=Path("/tmp/scbench"), help="where scenes are looked up (read only)")
    ap.add_argument("--work", type=Path, default=ROOT / "bench-results" / "cluster-work",
                    help="scenes made here, outputs (removed after each run)")
    ap.add_argument("--out", type=Path, default=ROOT / "bench-results" / "cluster.json")
    args = ap.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    extra = tuple(x for kv in args.set for x in ("--set", kv))
    res: dict = {"when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                 "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, "
                            f"{psutil.virtual_memory().total / (1 << 30):.0f} GiB, Python {platform.python_version()}",
                 "size": args.size, "bytes_size": args.bytes_size, "rounds": args.rounds, "runs": []}
    if args.size != "none":
        scene = scene_path(args.size, args.scenes, args.work)
        for r in range(args.rounds):
            for mode in (("threads", "local") if r % 2 == 0 else ("local", "threads")):
                run = run_one(mode, scene, args.work, extra)
                print(f"round {r + 1} {mode}: exit {run['exit']}, {run['wall_s']:.1f} s", file=sys.stderr, flush=True)
                res["runs"].append(run)
        th = [x for x in res["runs"] if x["mode"] == "threads"]
        lo = [x for x in res["runs"] if x["mode"] == "local"]
        tw, lw = statistics.median(x["wall_s"] for x in th), statistics.median(x["wall_s"] for x in lo)
        worst = max(lo, key=lambda x: x.get("longest_task", {}).get("share_of_wall", 0))
        lt = worst.get("longest_task")
        res["figures"] = {
            "scene": str(scene), "threads_wall_s": tw, "local_wall_s": lw, "wall_ratio": round(lw / tw, 3),
            "threads_client_peak_mib": max(x["client_peak_mib"] for x in th),
            "local_client_peak_mib": max(x["client_peak_mib"] for x in lo),
            "local_worker_peaks_mib": worker_peaks(lo),
            "longest_task": (f"`{lt['name']}` {lt['compute_s']:.2f} s ({100 * lt['share_of_wall']:.1f}%)"
                             if lt else "-"),
            "threads_exits": [x["exit"] for x in th], "local_exits": [x["exit"] for x in lo]}
    if args.bytes_size != "none":
        reuse = next((x for x in res["runs"] if x["mode"] == "local" and x["exit"] == 0), None) \
            if args.bytes_size == args.size else None
        run = reuse or run_one("local", scene_path(args.bytes_size, args.scenes, args.work), args.work, extra)
        if run is not reuse:
            print(f"bytes run: exit {run['exit']}, {run['wall_s']:.1f} s", file=sys.stderr, flush=True)
            res["bytes_run"] = run
        res["bytes"] = bytes_summary(run) if run["exit"] == 0 else None
    if args.memory_check:
        res["memory_size"], res["memory_limit"] = args.memory_check, args.memory_limit
        mset = tuple(x for kv in [f"dask.memory_limit={args.memory_limit}", *args.memory_set] for x in ("--set", kv))
        run = run_one("local", scene_path(args.memory_check, args.scenes, args.work), args.work, extra + mset)
        run["extra"] = list(LOCAL + extra + mset)
        print(f"memory check: exit {run['exit']}, {run['wall_s']:.1f} s", file=sys.stderr, flush=True)
        res["memory_check"] = run
    if args.task_memory:
        res["task_memory_size"] = args.task_memory
        run = run_one("local", scene_path(args.task_memory, args.scenes, args.work), args.work, extra,
                      probe_env={"SCENECLASS_PROBE_TASK_MEMORY": "1"} if args.trace_tasks else None)
        print(f"task memory run: exit {run['exit']}, {run['wall_s']:.1f} s", file=sys.stderr, flush=True)
        res["task_memory"] = run
    text = markdown(res)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=1))
    args.out.with_suffix(".md").write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
