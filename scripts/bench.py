#!/usr/bin/env python
"""Rerunnable benchmark: sceneclass against what users would otherwise run.

    python scripts/bench.py --sizes 1x 4x 16x --rounds 3 --workdir /tmp/scbench --out bench-results

For every size, the synthetic Landsat-like scene is generated with ``pipeline.testing.synth.make_scene``
into the workdir (an existing one is reused), the reference classes are computed once (the numpy
row's code, untimed: they are the ``floor`` row's input and the agreement reference), then every
row of ``scripts/bench_rows.py`` runs as its own process, rounds interleaved (round 1: every row
once, in a shuffled order; round 2: ...). The parent measures each child's wall time and, with
``os.wait4``, its own peak RSS and CPU time (children of children are not included: the rows do
their work in-process, and the sceneclass row is the CLI itself). Ratios between rows are taken
within a round, then the median over rounds. Each row's output is compared pixel for pixel with the
reference, window by window (xarray-spatial's mismatches are expected and reported; any other
mismatch marks the row FAILED). Results: ``OUT/bench.json`` and ``OUT/bench.md``, rewritten after
every size so a long run leaves partial results.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import random
import re
import shlex
import signal
import statistics
import subprocess
import sys
import threading
import tempfile
import shutil
import time
from importlib import metadata
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROWS_SCRIPT = HERE / "bench_rows.py"
sys.path.insert(0, str(HERE))
import bench_rows  # noqa: E402

try:
    import pipeline  # noqa: F401
except ModuleNotFoundError:  # running from a checkout without `pip install -e .`
    sys.path.insert(0, str(HERE.parent))

ROWS = bench_rows.ROWS
DEFAULT_SKIPS = {("recipe", "16x"): "needs ~10 GiB"}
MiB = 1024 * 1024

#: sceneclass log lines (stderr) that end each phase, in order; timed by their arrival.
#: (The plan line comes from the CLI's up-to-date check; after it, the CLI checksums the input
#: for its manifest, then opens the scene.)
SCENECLASS_MARKS = [
    (re.compile(r" INFO \S+: (new|changed|forced) \("), "import+plan"),
    (re.compile(r" INFO input "), "checksum+open"),
    (re.compile(r" edges: "), "statistics"),
    (re.compile(r"assembling the COG"), "classify+stage"),
    (re.compile(r" INFO wrote "), "assemble COG"),
]


# ------------------------------------------------------------------------------ arguments
def parse_skip(text: str) -> tuple[str, str]:
    """``ROW@SIZE`` (or ``ROW`` / ``ROW@*`` for every size) -> (row, size or '*')."""
    row, _, size = text.partition("@")
    if row not in ROWS:
        raise argparse.ArgumentTypeError(f"--skip {text!r}: unknown row {row!r} (rows: {', '.join(ROWS)})")
    return row, (size.strip().lower() or "*")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", nargs="+", default=["1x"], help="scene sizes: 1x 4x 16x, 0.25x, HxW (default: 1x)")
    p.add_argument("--rounds", type=int, default=3, help="rounds per size (default: 3)")
    p.add_argument("--workdir", type=Path, default=Path("/tmp/scbench"),
                   help="scenes, reference classes and outputs (default: /tmp/scbench)")
    p.add_argument("--out", type=Path, default=Path("bench-results"), help="folder for bench.json and bench.md")
    p.add_argument("--rows", nargs="+", choices=ROWS, default=list(ROWS), metavar="ROW",
                   help=f"rows to run (default: all: {' '.join(ROWS)})")
    p.add_argument("--skip", action="append", type=parse_skip, default=[], metavar="ROW@SIZE",
                   help="skip a row at a size (ROW alone: at every size); repeatable; default skips: "
                        + ", ".join(f"{r}@{s} ({n})" for (r, s), n in DEFAULT_SKIPS.items()))
    p.add_argument("--no-default-skips", action="store_true", help="do not apply the default skips")
    p.add_argument("--timeout", type=float, default=1800.0, help="seconds before a row is killed (default: 1800)")
    p.add_argument("--seed", type=int, default=0, help="scene seed (default: 0)")
    p.add_argument("--order", choices=("shuffle", "fixed"), default="shuffle",
                   help="row order within a round: shuffled (seeded, recorded) or as given (default: shuffle)")
    return p


# ------------------------------------------------------------------------------- machine
def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _kernels() -> str:
    """Which uint16 histogram and look-up sceneclass uses here: compiled, or numpy's."""
    from pipeline import kernels

    return "compiled" if kernels.compiled() else "numpy (pipeline._engine._fastkernels not built)"


def machine_info() -> dict:
    import numpy
    import rasterio

    mem = cpu_model = None
    try:
        with open("/proc/meminfo") as f:
            mem = next((int(ln.split()[1]) * 1024 for ln in f if ln.startswith("MemTotal:")), None)
    except OSError:
        pass
    try:
        with open("/proc/cpuinfo") as f:
            cpu_model = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), None)
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    return {
        "cores": os.cpu_count(),
        "usable_cores": usable,
        "cpu_model": cpu_model,
        "ram_gib": round(mem / 2**30, 1) if mem else None,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "numpy": numpy.__version__,
        "gdal": rasterio.__gdal_version__,
        "rasterio": rasterio.__version__,
        "dask": _version("dask"),
        "xarray": _version("xarray"),
        "rioxarray": _version("rioxarray"),
        "xarray-spatial": _version("xarray-spatial"),
        "numba": _version("numba"),
        "sceneclass": _version("sceneclass"),
        "sceneclass_kernels": _kernels(),
        "env": {k: v for k, v in os.environ.items() if k.startswith(("GDAL_", "CPL_", "OMP_", "DASK_"))},
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
    }


# ----------------------------------------------------------------------- running a process
def _gnu_time() -> str | None:
    path = shutil.which("time") or ("/usr/bin/time" if os.path.exists("/usr/bin/time") else None)
    if path is None:
        return None
    try:
        out = subprocess.run([path, "-f", "%M", "true"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return path if out.returncode == 0 and out.stderr.strip().isdigit() else None


GNU_TIME = _gnu_time()


def run_measured(cmd: list[str], timeout: float, cwd: str | None = None) -> dict:
    """Run ``cmd`` as a child: wall time, the child's own peak RSS and CPU time (``os.wait4``),
    exit code, stdout/stderr lines with their arrival time (s since start); killed on timeout."""
    lines: dict[str, list[tuple[float, str]]] = {"stdout": [], "stderr": []}
    # A child's ru_maxrss starts at its parent's peak RSS (Linux folds the forked address
    # space into it at exec), and this bench process grows with the scene size; GNU time, a
    # small process, forks the row and reports the row's own peak instead.
    rss_file = None
    if GNU_TIME:
        fd, rss_file = tempfile.mkstemp(prefix="bench-rss-")
        os.close(fd)
        cmd = [GNU_TIME, "-f", "%M", "-o", rss_file, *cmd]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            errors="replace", cwd=cwd, start_new_session=True)

    def pump(stream, name):
        for line in stream:
            lines[name].append((round(time.perf_counter() - t0, 3), line.rstrip("\n")))

    readers = [threading.Thread(target=pump, args=(proc.stdout, "stdout"), daemon=True),
               threading.Thread(target=pump, args=(proc.stderr, "stderr"), daemon=True)]
    for t in readers:
        t.start()
    state = {"reaped": False, "timed_out": False}
    guard = threading.Lock()

    def kill():
        with guard:
            if not state["reaped"]:
                state["timed_out"] = True
                try:
                    os.killpg(proc.pid, signal.SIGKILL)  # the child's own session, started above
                except ProcessLookupError:
                    pass

    timer = threading.Timer(timeout, kill)
    timer.daemon = True
    timer.start()
    try:
        while True:
            try:
                _, status, usage = os.wait4(proc.pid, 0)
                break
            except InterruptedError:
                continue
    finally:
        with guard:
            state["reaped"] = True
        timer.cancel()
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped by wait4: tell Popen
    for t in readers:
        t.join(timeout=10)
    for stream in (proc.stdout, proc.stderr):
        stream.close()
    rss_kib = usage.ru_maxrss if sys.platform != "darwin" else usage.ru_maxrss / 1024
    if rss_file:
        try:
            rss_kib = int(Path(rss_file).read_text().split()[-1])
        except (OSError, ValueError, IndexError):
            pass  # killed before GNU time could write: keep wait4's figure
        os.unlink(rss_file)
    return {
        "wall_s": round(wall, 3),
        "maxrss_mib": round(rss_kib / 1024, 1),
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 3),
        "exit": proc.returncode,
        "timed_out": state["timed_out"],
        "stdout": lines["stdout"],
        "stderr": lines["stderr"],
    }


def row_command(row: str, inp: Path, out: Path) -> list[str]:
    if row == "sceneclass":  # the CLI is the measured child itself
        return bench_rows.sceneclass_command(str(inp), str(out))
    return [sys.executable, str(ROWS_SCRIPT), row, str(inp), str(out)]


def row_payload(res: dict) -> dict:
    """The ``BENCH_ROW {json}`` line a row prints (empty dict if none)."""
    for _, line in reversed(res["stdout"]):
        if line.startswith("BENCH_ROW "):
            try:
                return json.loads(line[len("BENCH_ROW "):])
            except ValueError:
                return {}
    return {}


def sceneclass_phases(res: dict) -> dict:
    """Phase durations of a sceneclass run from the arrival times of its log lines."""
    marks: list[tuple[float, str]] = []
    for t, line in res["stderr"]:
        for pattern, name in SCENECLASS_MARKS:
            if pattern.search(line) and all(name != m[1] for m in marks):
                marks.append((t, name))
    phases, prev = {}, 0.0
    for t, name in marks:
        phases[name] = round(t - prev, 3)
        prev = t
    if marks:
        phases["legend+exit"] = round(res["wall_s"] - prev, 3)
    return phases


# --------------------------------------------------------------------------- agreement check
def _has_colormap(ds) -> bool:
    try:
        ds.colormap(1)
        return True
    except ValueError:
        return False


def compare_rasters(path: str | os.PathLike, ref: str | os.PathLike, rows_per_window: int | None = None) -> dict:
    """Pixel-for-pixel comparison of band 1 of ``path`` with ``ref``, strip by strip (memory is
    bounded by one strip of each). ``mismatches`` is None when the shapes differ."""
    import numpy as np
    import rasterio
    from rasterio.windows import Window

    res: dict = {"mismatches": None}
    with rasterio.open(path) as a, rasterio.open(ref) as b:
        res.update(dtype=a.dtypes[0], shape=[a.height, a.width],
                   georef_ok=bool(a.crs == b.crs and a.transform.almost_equals(b.transform)),
                   colormap=_has_colormap(a), overviews=len(a.overviews(1)),
                   compression=a.compression.name if a.compression else None,
                   blocksize=list(a.block_shapes[0]))
        if (a.height, a.width) != (b.height, b.width):
            res["problem"] = f"shape {a.height}x{a.width} != reference {b.height}x{b.width}"
            return res
        step = rows_per_window or max(1, (1 << 24) // max(a.width, 1))  # ~16 Mpixel strips
        mism = nodata_mism = max_diff = 0
        diff_hist: dict[int, int] = {}
        for r0 in range(0, a.height, step):
            w = Window(0, r0, a.width, min(step, a.height - r0))
            x, y = a.read(1, window=w), b.read(1, window=w)
            ne = x != y
            n = int(np.count_nonzero(ne))
            if n:
                mism += n
                xv, yv = x[ne].astype(np.int64), y[ne].astype(np.int64)
                nodata_mism += int(np.count_nonzero((xv == 0) != (yv == 0)))
                d = np.abs(xv - yv)
                max_diff = max(max_diff, int(d.max()))
                vals, cnts = np.unique(np.minimum(d, 3), return_counts=True)
                for v, c in zip(vals.tolist(), cnts.tolist()):
                    diff_hist[v] = diff_hist.get(v, 0) + c
        total = a.height * a.width
    res.update(mismatches=mism, mismatch_fraction=mism / total if total else 0.0,
               nodata_mismatches=nodata_mism, max_abs_diff=max_diff, pixels=total,
               diff_histogram={("3+" if k == 3 else str(k)): v for k, v in sorted(diff_hist.items())})
    return res


def check_output(row: str, out: Path, ref: Path, scene: Path) -> dict | None:
    """Agreement of a row's output: class rows against the reference classes, ``copy`` against
    the input; ``read`` has no output (None). ``fatal`` marks a difference that fails the row:
    any pixel mismatch (except xarray-spatial's, which is reported), shape, georeferencing,
    dtype or a missing colour table."""
    if row == "read":
        return None
    if not out.exists():
        return {"ok": False, "fatal": True, "mismatches": None, "problem": "no output file"}
    target = scene if row == "copy" else ref
    try:
        res = compare_rasters(out, target)
    except Exception as e:  # noqa: BLE001 - an unreadable output is a failed row
        return {"ok": False, "fatal": True, "mismatches": None, "problem": f"cannot compare: {e}"}
    res["against"] = "input" if row == "copy" else "reference (numpy classes)"
    problems, fatal = [], False
    if res["mismatches"] is None:
        problems.append(res.pop("problem", "not comparable"))
        fatal = True
    elif res["mismatches"]:
        problems.append(f"{res['mismatches']} pixels differ")
        fatal = row not in bench_rows.TOLERATED_MISMATCH
    if not res["georef_ok"]:
        problems.append("CRS/transform differ")
        fatal = True
    if row in bench_rows.CLASS_ROWS:
        if res["dtype"] != "uint8":
            problems.append(f"dtype {res['dtype']}, expected uint8")
            fatal = True
        if not res["colormap"]:
            problems.append("no colour table")
            fatal = True
    res["ok"] = not problems
    res["fatal"] = fatal
    if problems:
        res["problem"] = "; ".join(problems)
    return res


# --------------------------------------------------------------------------------- statistics
def _median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def row_status(r: dict) -> str:
    if r.get("skipped"):
        return "skipped"
    runs = r["runs"]
    if any(run["status"] == "not installed" for run in runs):
        return "not installed"
    if any(run["status"] == "TIMEOUT" for run in runs):
        return "TIMEOUT"
    if any(run["status"] == "FAILED" for run in runs) or (r.get("check") or {}).get("fatal"):
        return "FAILED"
    return "ok" if runs else "not run"


def summarize_size(sz: dict) -> None:
    """Per-row medians and within-round wall-time ratios, in place."""
    rows = sz["rows"]
    for r in rows.values():
        ok_runs = [run for run in r["runs"] if run["status"] == "ok"]
        walls = [run["wall_s"] for run in ok_runs]
        r["wall_median_s"] = round(statistics.median(walls), 3) if walls else None
        r["wall_min_s"] = min(walls) if walls else None
        r["wall_max_s"] = max(walls) if walls else None
        r["rss_mib_max"] = max((run["maxrss_mib"] for run in ok_runs), default=None)
        r["rss_mib_median"] = _median([run["maxrss_mib"] for run in ok_runs])
        r["cpu_median_s"] = _median([run["cpu_s"] for run in ok_runs])
        names: list[str] = []
        for run in ok_runs:
            names += [n for n in run.get("phases", {}) if n not in names]
        r["phases_median_s"] = {n: round(_median([run.get("phases", {}).get(n) for run in ok_runs]), 3)
                                for n in names}
        r["status"] = row_status(r)
    ratios: dict[str, dict[str, float]] = {}
    for a in rows:
        for b in rows:
            if a == b:
                continue
            per_round = []
            for ra in rows[a]["runs"]:
                rb = next((x for x in rows[b]["runs"] if x["round"] == ra["round"]), None)
                if ra["status"] == "ok" and rb and rb["status"] == "ok" and rb["wall_s"] > 0:
                    per_round.append(ra["wall_s"] / rb["wall_s"])
            if per_round:
                ratios.setdefault(a, {})[b] = round(statistics.median(per_round), 3)
    sz["ratios_wall"] = ratios  # [a][b]: median over rounds of wall(a) / wall(b) in the same round


def cross_size(sizes: dict) -> dict:
    """Per row: median wall time and peak RSS of every size relative to the first size."""
    names = list(sizes)
    if len(names) < 2:
        return {}
    base = names[0]
    out: dict = {"base": base, "area": {}, "rows": {}}
    for s in names[1:]:
        out["area"][f"{s}/{base}"] = round(sizes[s]["pixels"] / sizes[base]["pixels"], 3)
    for row, b in sizes[base]["rows"].items():
        entry = {}
        for s in names[1:]:
            r = sizes[s]["rows"].get(row) or {}
            if r.get("wall_median_s") and b.get("wall_median_s"):
                entry[f"wall {s}/{base}"] = round(r["wall_median_s"] / b["wall_median_s"], 2)
            if r.get("rss_mib_max") and b.get("rss_mib_max"):
                entry[f"rss {s}/{base}"] = round(r["rss_mib_max"] / b["rss_mib_max"], 2)
        if entry:
            out["rows"][row] = entry
    return out


# ------------------------------------------------------------------------------------ report
def _fmt(x, nd=2):
    return "–" if x is None else f"{x:.{nd}f}"


def check_text(row: str, r: dict) -> str:
    c = r.get("check")
    if c is None:
        return "n/a (no output)" if row == "read" else "–"
    if c.get("mismatches") is None:
        return "FAILED: " + c.get("problem", "?")
    if c.get("ok"):
        return "identical to input" if row == "copy" else "identical"
    text = ""
    if c["mismatches"]:
        text = (f"{c['mismatches']:,} px differ ({c['mismatch_fraction'] * 100:.4f}%, "
                f"max |Δclass| {c['max_abs_diff']}, {c['nodata_mismatches']} nodata)")
    others = [p for p in c.get("problem", "").split("; ") if p and not p.endswith("pixels differ")]
    text = "; ".join([t for t in [text, *others] if t])
    return ("FAILED: " if c.get("fatal") else "reported: ") + text


def size_table(size: str, sz: dict) -> list[str]:
    rows = sz["rows"]
    ref_row = "sceneclass" if "sceneclass" in rows else None
    head = ["row", "status", "median s", "min–max s", "peak RSS MiB", "CPU s"]
    if ref_row:
        head.append("sceneclass ÷ row")
    head += ["phases, median s", "agreement"]
    lines = [f"### {size}: {sz['shape'][0]} x {sz['shape'][1]} px "
             f"({sz['pixels'] / 1e6:.1f} Mpx, input {sz['input_mib']:.0f} MiB)", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row, r in rows.items():
        status = r["status"] + (f" ({r['skip_note']})" if r.get("skip_note") else "")
        cells = [f"`{row}`", status, _fmt(r.get("wall_median_s")),
                 f"{_fmt(r['wall_min_s'])}–{_fmt(r['wall_max_s'])}" if r.get("wall_min_s") is not None else "–",
                 _fmt(r.get("rss_mib_max"), 0), _fmt(r.get("cpu_median_s"), 1)]
        if ref_row:
            ratio = sz["ratios_wall"].get(ref_row, {}).get(row)
            cells.append("1" if row == ref_row and r.get("wall_median_s") else _fmt(ratio))
        ph = r.get("phases_median_s") or {}
        cells.append(", ".join(f"{k} {v:.2f}" for k, v in ph.items()) or "–")
        cells.append(check_text(row, r))
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def render_markdown(results: dict) -> str:
    m = results["machine"]
    s = results["settings"]
    out = [
        "# sceneclass benchmark", "",
        f"Command: `{results['command']}`  ",
        f"Started {results['started']}, finished {results.get('finished', '(running)')}.", "",
        f"Machine: {m['cores']} cores ({m['usable_cores']} usable; {m.get('cpu_model') or '?'}), "
        f"{m['ram_gib']} GiB RAM, {m['platform']}; load average at start {m['loadavg_at_start']}"
        + (f", at end {m['loadavg_at_end']}" if m.get("loadavg_at_end") else "") + ".  ",
        f"Python {m['python']}, numpy {m['numpy']}, GDAL {m['gdal']}, rasterio {m['rasterio']}, "
        f"dask {m['dask']}, xarray {m['xarray']}, rioxarray {m['rioxarray']}, "
        f"xarray-spatial {m['xarray-spatial'] or 'not installed'}, numba {m['numba'] or '–'}, "
        f"sceneclass {m['sceneclass']} (uint16 histogram and look-up: {m.get('sceneclass_kernels', '?')}).", "",
        f"{s['rounds']} round(s) per size, rows interleaved ({s['order']} order in each round, recorded "
        "in bench.json). Wall time, peak RSS and CPU time are those of each row's own process "
        "(`os.wait4`), interpreter start-up and imports included; the page cache is warm. Every "
        "classifying row writes a paletted uint8 COG with sceneclass's default options (ZSTD, 512 "
        "tiles, NEAREST overviews, NUM_THREADS=ALL_CPUS); `copy` copies the uint16 input into a COG "
        "with the same options, `read` only decodes it; `floor` decodes the input once and writes "
        "precomputed classes with sceneclass's writer (computing them is not timed): one read, "
        "one write, no statistics. Agreement is pixel for pixel against "
        "the numpy row's classes (`copy`: against the input). `sceneclass ÷ row` is the median over "
        "rounds of the within-round wall-time ratio.", "",
    ]
    for size, sz in results["sizes"].items():
        out += size_table(size, sz)
        out.append("")
        out += [f"- {n}" for n in sz.get("notes", [])]
        out.append("")
    cs = results.get("cross_size") or {}
    if cs.get("rows"):
        cols = sorted({k for e in cs["rows"].values() for k in e}, key=lambda k: (k.split()[0] != "wall", k))
        out += ["### Scaling with scene size", "",
                "Area ratios: " + ", ".join(f"{k} = {v}" for k, v in cs["area"].items()) + ".", "",
                "| row | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
        for row, e in cs["rows"].items():
            out.append(f"| `{row}` | " + " | ".join(_fmt(e.get(c)) for c in cols) + " |")
        out.append("")
    return "\n".join(out)


def write_results(results: dict, out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "bench.json").write_text(json.dumps(results, indent=2) + "\n")
    (out_dir / "bench.md").write_text(render_markdown(results))


def print_tables(results: dict) -> None:
    for size, sz in results["sizes"].items():
        print()
        print("\n".join(size_table(size, sz)))
        for n in sz.get("notes", []):
            print(f"- {n}")
    cs = results.get("cross_size") or {}
    if cs.get("rows"):
        print(f"\nscaling vs {cs['base']} (area " + ", ".join(f"{k} = {v}" for k, v in cs["area"].items()) + "):")
        for row, e in cs["rows"].items():
            print(f"  {row:<15} " + "  ".join(f"{k} {v}" for k, v in e.items()))


# --------------------------------------------------------------------------------- the bench
def ensure_scene(workdir: Path, size: str, seed: int) -> tuple[Path, float | None]:
    """The scene of ``size`` in ``workdir`` (named like scripts/make_scene.py), generated if missing."""
    from pipeline.testing.synth import make_scene

    path = workdir / f"scene_{size}_s{seed}.tif"
    if path.exists():
        return path, None
    t0 = time.perf_counter()
    make_scene(path, size=size, seed=seed)
    return path, round(time.perf_counter() - t0, 2)


def ensure_reference(scene: Path, ref: Path, timeout: float) -> dict:
    """The numpy row's classes of ``scene`` as an uncompressed tiled GeoTIFF (untimed)."""
    if ref.exists() and ref.stat().st_mtime >= scene.stat().st_mtime:
        return {"reused": True}
    ref.parent.mkdir(parents=True, exist_ok=True)
    res = run_measured([sys.executable, str(ROWS_SCRIPT), "reference", str(scene), str(ref)], timeout)
    if res["exit"] != 0:
        tail = "\n".join(line for _, line in res["stderr"][-20:])
        raise RuntimeError(f"computing the reference classes of {scene} failed:\n{tail}")
    return {"reused": False, "wall_s": res["wall_s"], "maxrss_mib": res["maxrss_mib"],
            "edges": row_payload(res).get("edges")}


def skip_note(row: str, size: str, skips: dict) -> str | None:
    for key in ((row, size.lower()), (row, "*")):
        if key in skips:
            return skips[key]
    return None


def clean_outputs(out: Path) -> None:
    """Remove a row's previous output and its side files (sceneclass: legend, manifest), so
    every round does the same work."""
    for p in [out, *out.parent.glob(f"{out.stem}.*.json")]:
        p.unlink(missing_ok=True)


def run_row_once(row: str, rnd: int, inp: Path, out: Path, timeout: float) -> dict:
    clean_outputs(out)
    # every row starts with no dirty page cache of its own: the previous row's output (1 GB
    # and more at 16x) is otherwise written back to disk by the kernel during this row
    os.sync()
    load = os.getloadavg()[0]
    res = run_measured(row_command(row, inp, out), timeout)
    payload = row_payload(res)
    run = {"round": rnd, "wall_s": res["wall_s"], "maxrss_mib": res["maxrss_mib"], "cpu_s": res["cpu_s"],
           "exit": res["exit"], "loadavg_1m_before": round(load, 2)}
    if res["timed_out"]:
        run["status"] = "TIMEOUT"
    elif res["exit"] == bench_rows.EXIT_NOT_INSTALLED and payload.get("status") == "not installed":
        run["status"] = "not installed"
    elif res["exit"] != 0:
        run["status"] = "FAILED"
    else:
        run["status"] = "ok"
    if run["status"] != "ok":
        run["stderr_tail"] = [line for _, line in res["stderr"][-15:]]
    if row == "sceneclass":
        run["phases"] = sceneclass_phases(res)
    else:
        run["phases"] = payload.get("phases", {})
        if "in_process_s" in payload:  # interpreter start-up before the script's first line
            run["phases"] = {"startup": round(res["wall_s"] - payload["in_process_s"], 3), **run["phases"]}
    return run


def bench_size(size: str, args, skips: dict, results: dict, log) -> None:
    import rasterio

    workdir = args.workdir.resolve()
    scene, gen_s = ensure_scene(workdir, size, args.seed)
    with rasterio.open(scene) as src:
        shape = [src.height, src.width]
    sz = {"input": str(scene), "shape": shape, "pixels": shape[0] * shape[1],
          "input_mib": round(scene.stat().st_size / MiB, 1), "generated_s": gen_s,
          "rows": {}, "order": [], "notes": []}
    results["sizes"][size] = sz
    out_dir = workdir / "out" / size
    out_dir.mkdir(parents=True, exist_ok=True)
    ref = workdir / "ref" / f"classes_{size}_s{args.seed}.tif"
    log(f"[{size}] scene {scene} ({shape[0]}x{shape[1]})" + (f", generated in {gen_s:.1f} s" if gen_s else ""))
    sz["reference"] = {"path": str(ref), **ensure_reference(scene, ref, args.timeout)}
    with rasterio.open(ref) as src:
        edges = json.loads(src.tags().get("BENCH_EDGES", "null"))
    if edges:
        sz["reference"]["edges"] = edges
        on_int = [e for e in edges[1:-1] if float(e).is_integer()]
        sz["reference"]["interior_integer_edges"] = on_int
        if "xarray-spatial" in args.rows:
            sz["notes"].append(
                f"{len(on_int)} of the {len(edges) - 2} interior class edges fall on an integer "
                "value; only pixels equal to such an edge can land one class apart under "
                "xarray-spatial's right-closed bins (integer input)")

    active = []
    for row in args.rows:
        note = skip_note(row, size, skips)
        if note is not None:
            sz["rows"][row] = {"runs": [], "skipped": True, "skip_note": note}
            sz["notes"].append(f"`{row}` skipped at {size}: {note}")
        else:
            sz["rows"][row] = {"runs": []}
            active.append(row)
    rng = random.Random(f"{args.seed}:{size}")
    dropped: set[str] = set()
    for rnd in range(1, args.rounds + 1):
        order = [r for r in active if r not in dropped]
        if args.order == "shuffle":
            rng.shuffle(order)
        sz["order"].append(order)
        for row in order:
            run = run_row_once(row, rnd, ref if row == "floor" else scene, out_dir / f"{row}.tif", args.timeout)
            if run["status"] == "not installed":
                dropped.add(row)
            sz["rows"][row]["runs"].append(run)
            log(f"[{size}] round {rnd} {row:<15} {run['status']:<13} {run['wall_s']:8.2f} s "
                f"{run['maxrss_mib']:7.0f} MiB  cpu {run['cpu_s']:6.1f} s")
    for row in active:
        r = sz["rows"][row]
        bad = next((run for run in r["runs"] if run["status"] != "ok"), None)
        if bad:
            sz["notes"].append(f"`{row}` round {bad['round']}: {bad['status']} (exit {bad['exit']})"
                               + (f": {bad['stderr_tail'][-1]}" if bad.get("stderr_tail") else ""))
        if any(run["status"] == "ok" for run in r["runs"]):  # the last round's output is checked
            out = out_dir / f"{row}.tif"
            r["output_mib"] = round(out.stat().st_size / MiB, 2) if out.exists() else None
            r["check"] = check_output(row, out, ref, scene)
            if r["check"] is not None and not r["check"]["ok"]:
                sz["notes"].append(f"`{row}`: {check_text(row, r)}")
    summarize_size(sz)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.rounds < 1:
        raise SystemExit("--rounds must be >= 1")
    skips = {} if args.no_default_skips else dict(DEFAULT_SKIPS)
    for row, size in args.skip:
        skips[(row, size)] = "--skip"
    command = [sys.executable, *sys.argv] if argv is None else [sys.executable, str(Path(__file__)), *argv]
    results = {
        "command": shlex.join(command),
        "cwd": os.getcwd(),
        "started": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "machine": machine_info(),
        "settings": {"sizes": args.sizes, "rounds": args.rounds, "rows": args.rows,
                     "skips": {f"{r}@{s}": n for (r, s), n in skips.items()},
                     "timeout_s": args.timeout, "seed": args.seed, "order": args.order,
                     "workdir": str(args.workdir.resolve()), "cog_options": bench_rows.COG_OPTIONS,
                     "classes": {"scheme": "equal_interval", "count": bench_rows.N_CLASSES,
                                 "nodata": bench_rows.NODATA}},
        "sizes": {},
    }

    def log(msg: str) -> None:
        print(msg, flush=True)

    for size in args.sizes:
        bench_size(size, args, skips, results, log)
        results["cross_size"] = cross_size(results["sizes"])
        write_results(results, args.out)
    results["finished"] = _dt.datetime.now().astimezone().isoformat(timespec="seconds")
    results["machine"]["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    write_results(results, args.out)
    print_tables(results)
    print(f"\nwrote {args.out / 'bench.json'} and {args.out / 'bench.md'}")
    failed = [f"{row}@{size}" for size, sz in results["sizes"].items()
              for row, r in sz["rows"].items() if r["status"] in ("FAILED", "TIMEOUT")]
    if failed:
        print("FAILED rows: " + ", ".join(failed))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
