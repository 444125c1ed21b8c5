#!/usr/bin/env python
"""Rerunnable benchmark: sceneclass against what users would otherwise run, over a matrix of cases.

    python scripts/bench.py --sizes 1x 4x 16x --workdir /tmp/scbench --out bench-results

The matrix: {uint16, float32} x {equal_interval 20, quantile 10, natural_breaks 7} x {paletted
COG, Zarr, RGB COG} (select with ``--dtypes``, ``--schemes``, ``--outputs``). For every size, the
synthetic Landsat-like scene (``pipeline.testing.synth.make_scene``: uint16 DNs, and its float32
form ``DN * 0.00341802 + 149.0`` with NaN fill) is generated into the workdir (an existing one is
reused), the reference classes of every (dtype, scheme) are computed once, untimed, strip by
strip (``bench_rows.py reference``: the agreement reference and the ``floor`` row's input),
then every row runs as its own process, rounds interleaved (round 1: every row once, in a
shuffled order; round 2: ...):

* ``sceneclass/DTYPE/SCHEME/OUTPUT``: the CLI, one per case;
* ``numpy/DTYPE/SCHEME`` (careful in-memory numpy, paletted COG; skipped where it would need
  more than half the RAM) and ``xarray-spatial/DTYPE/SCHEME`` (its classify functions; its
  quantile and natural_breaks fit on approximations/samples, so its differences are reported);
* ``read``, ``copy``, ``recipe``, ``floor``: the uint16, equal_interval 20 references of the
  first benchmark.

The parent measures each child's wall time and, with GNU time / ``os.wait4``, its own peak RSS
and CPU time. Ratios between rows are taken within a round, then the median over rounds. Each
row's output is compared pixel for pixel with the reference (Zarr: its ``classes`` array; RGB:
its colours mapped back to class ids through the legend), window by window (xarray-spatial's
mismatches are expected and reported; any other mismatch marks the row FAILED). A batch row
(``--batch-scenes`` scenes of ``--batch-size``) times one ``sceneclass run`` of a batch config
against as many single runs. The targets (``scripts/bench_targets.py``) are computed from the
results. Results: ``OUT/bench.json`` and ``OUT/bench.md``, rewritten after every size so a long
run leaves partial results. The expected run time is printed before the run starts.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import fnmatch
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
import bench_targets  # noqa: E402

try:
    import pipeline  # noqa: F401
except ModuleNotFoundError:  # running from a checkout without `pip install -e .`
    sys.path.insert(0, str(HERE.parent))

#: row kinds (``--rows``)
ROWS = bench_rows.ROWS
#: rows of the first benchmark: uint16, equal_interval 20, paletted COG only
LEGACY_ROWS = ("read", "copy", "recipe", "floor")
DTYPES = bench_rows.DTYPES
SCHEMES = tuple(bench_rows.SCHEMES)
OUTPUTS = bench_rows.OUTPUT_KINDS
#: (row pattern, size) -> why it is skipped by default (patterns: fnmatch on the row id)
#: (the defaults keep every row a target needs: every sceneclass case at every size, `numpy` for
#: uint16 equal_interval at every size and for float32 equal_interval/quantile at 4x, `floor` at
#: 4x and 16x, `recipe` and `xarray-spatial` at 1x; the rest is context, shown at 1x)
_BUDGET = "time budget (no target needs it here; --no-default-skips runs it)"
DEFAULT_SKIPS = {
    ("recipe", "4x"): _BUDGET,
    ("recipe", "16x"): "needs ~10 GiB",
    ("copy", "4x"): _BUDGET,
    ("copy", "16x"): _BUDGET,
    ("xarray-spatial", "4x"): _BUDGET,
    ("xarray-spatial", "16x"): _BUDGET,
    ("numpy/uint16/quantile", "4x"): _BUDGET,
    ("numpy/uint16/natural_breaks", "4x"): _BUDGET,
    ("numpy/float32/natural_breaks", "4x"): _BUDGET,
    ("numpy/uint16/quantile", "16x"): _BUDGET,
    ("numpy/uint16/natural_breaks", "16x"): _BUDGET,
    ("numpy/float32/*", "16x"): _BUDGET,
}
#: sizes at which, by default, only the paletted-COG rows' outputs are compared with the
#: reference (Zarr and RGB rows are compared at the other sizes; --full-check compares all)
LIGHT_CHECK_SIZES = ("16x",)
#: rounds per size unless --rounds-at says otherwise (16x: two, so that its ratios are medians of
#: two rounds: one 16x run of the same case varied by up to 30% on the 2-core machine)
DEFAULT_ROUNDS_AT = {"16x": 2}
MiB = 1024 * 1024

#: sceneclass log lines (stderr) that end each phase, in order; timed by their arrival.
#: (The plan line comes from the CLI's up-to-date check; after it, the CLI checksums the input
#: for its manifest, then opens the scene.)
SCENECLASS_MARKS = [
    (re.compile(r" INFO \S+: (new|changed|forced) \("), "import+plan"),
    (re.compile(r" INFO input "), "checksum+open"),
    (re.compile(r" edges: "), "statistics"),
    (re.compile(r"writing the COG"), "classify+stage"),  # every tile compressed (COG)
    (re.compile(r" INFO wrote "), "assemble"),  # the file written from the compressed tiles
]


# ------------------------------------------------------------------------------ the rows
def row_specs(dtypes, schemes, outputs, kinds) -> list[dict]:
    """The rows of a run, in a stable order: ``{"id", "kind", "dtype", "scheme", "count", "output"}``."""
    specs = []
    for d in dtypes:
        for sch in schemes:
            n = bench_rows.SCHEMES[sch]
            if "sceneclass" in kinds:
                specs += [{"id": f"sceneclass/{d}/{sch}/{o}", "kind": "sceneclass", "dtype": d, "scheme": sch,
                           "count": n, "output": o} for o in outputs]
            specs += [{"id": f"{k}/{d}/{sch}", "kind": k, "dtype": d, "scheme": sch, "count": n, "output": "cog"}
                      for k in ("numpy", "xarray-spatial") if k in kinds]
    if "uint16" in dtypes and "equal_interval" in schemes:
        specs += [{"id": k, "kind": k, "dtype": "uint16", "scheme": "equal_interval",
                   "count": bench_rows.N_CLASSES, "output": "cog"} for k in LEGACY_ROWS if k in kinds]
    return specs


def output_path(out_dir: Path, spec: dict) -> Path:
    suffix = ".zarr" if spec["output"] == "zarr" else ".tif"
    return out_dir / (spec["id"].replace("/", "_") + suffix)


# ------------------------------------------------------------------------------ arguments
def parse_skip(text: str) -> tuple[str, str]:
    """``ROW@SIZE`` (or ``ROW`` / ``ROW@*`` for every size) -> (row, size or '*'); ROW is a row
    kind, a row id or an fnmatch pattern of row ids (``numpy/float32/*``)."""
    row, _, size = text.partition("@")
    if row.split("/", 1)[0] not in ROWS:
        raise argparse.ArgumentTypeError(f"--skip {text!r}: unknown row {row!r} (rows: {', '.join(ROWS)})")
    return row, (size.strip().lower() or "*")


def parse_rounds_at(text: str) -> tuple[str, int]:
    size, _, n = text.partition("=")
    try:
        if int(n) < 1:
            raise ValueError
        return size.strip().lower(), int(n)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--rounds-at {text!r}: expected SIZE=N with N >= 1") from None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", nargs="+", default=["1x"], help="scene sizes: 1x 4x 16x, 0.25x, HxW (default: 1x)")
    p.add_argument("--rounds", type=int, default=3, help="rounds per size (default: 3)")
    p.add_argument("--rounds-at", action="append", type=parse_rounds_at, default=[], metavar="SIZE=N",
                   help="rounds at one size, repeatable (default: "
                        + ", ".join(f"{k}={v}" for k, v in DEFAULT_ROUNDS_AT.items()) + ")")
    p.add_argument("--workdir", type=Path, default=Path("/tmp/scbench"),
                   help="scenes, reference classes and outputs (default: /tmp/scbench)")
    p.add_argument("--out", type=Path, default=Path("bench-results"), help="folder for bench.json and bench.md")
    p.add_argument("--rows", nargs="+", choices=ROWS, default=list(ROWS), metavar="ROW",
                   help=f"row kinds to run (default: all: {' '.join(ROWS)})")
    p.add_argument("--dtypes", nargs="+", choices=DTYPES, default=list(DTYPES), help="default: all")
    p.add_argument("--schemes", nargs="+", choices=SCHEMES, default=list(SCHEMES), help="default: all")
    p.add_argument("--outputs", nargs="+", choices=OUTPUTS, default=list(OUTPUTS),
                   help="sceneclass outputs: cog (paletted), zarr, rgb (RGB COG) (default: all)")
    p.add_argument("--skip", action="append", type=parse_skip, default=[], metavar="ROW@SIZE",
                   help="skip a row (kind, id or pattern) at a size (ROW alone: at every size); repeatable; "
                        "default skips: " + ", ".join(f"{r}@{s} ({n})" for (r, s), n in DEFAULT_SKIPS.items()))
    p.add_argument("--no-default-skips", action="store_true", help="do not apply the default skips")
    p.add_argument("--batch-scenes", type=int, default=12, help="scenes of the batch row; 0: no batch row "
                   "(default: 12)")
    p.add_argument("--batch-size", default="0.25x", help="size of the batch row's scenes (default: 0.25x)")
    p.add_argument("--batch-rounds", type=int, default=3, help="rounds of the batch row (default: 3)")
    p.add_argument("--timeout", type=float, default=1800.0, help="seconds before a row is killed (default: 1800)")
    p.add_argument("--seed", type=int, default=0, help="scene seed (default: 0)")
    p.add_argument("--order", choices=("shuffle", "fixed"), default="shuffle",
                   help="row order within a round: shuffled (seeded, recorded) or as given (default: shuffle)")
    p.add_argument("--full-check", action="store_true",
                   help="compare every row's output with the reference at every size (default: at "
                        + ", ".join(LIGHT_CHECK_SIZES) + " only the paletted-COG rows')")
    p.add_argument("--estimate-only", action="store_true", help="print the expected run time and stop")
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
    if "assemble" in phases and "classify+stage" not in phases:  # Zarr: written as it is classified
        phases = {("classify+write" if k == "assemble" else k): v for k, v in phases.items()}
    return phases


# --------------------------------------------------------------------------- agreement check
def _has_colormap(ds) -> bool:
    try:
        ds.colormap(1)
        return True
    except ValueError:
        return False


def compare_arrays(x, y) -> dict:
    """Pixel-for-pixel comparison of two class-id arrays of one shape: the number of differing
    pixels, how many of them differ on nodata (0 in one, not in the other), the largest class
    difference and a histogram of the differences (1, 2, 3+)."""
    import numpy as np

    ne = x != y
    n = int(np.count_nonzero(ne))
    res = {"mismatches": n, "nodata_mismatches": 0, "max_abs_diff": 0, "diff_histogram": {}}
    if n:
        xv, yv = x[ne].astype(np.int64), y[ne].astype(np.int64)
        res["nodata_mismatches"] = int(np.count_nonzero((xv == 0) != (yv == 0)))
        d = np.abs(xv - yv)
        res["max_abs_diff"] = int(d.max())
        vals, cnts = np.unique(np.minimum(d, 3), return_counts=True)
        res["diff_histogram"] = {int(v): int(c) for v, c in zip(vals.tolist(), cnts.tolist())}
    return res


def _merge(total: dict, part: dict) -> None:
    total["mismatches"] += part["mismatches"]
    total["nodata_mismatches"] += part["nodata_mismatches"]
    total["max_abs_diff"] = max(total["max_abs_diff"], part["max_abs_diff"])
    for k, v in part["diff_histogram"].items():
        total["diff_histogram"][k] = total["diff_histogram"].get(k, 0) + v


class _Output:
    """Class ids of an output, read strip by strip: a GeoTIFF band 1 (``colours``: an RGB(A)
    GeoTIFF whose colours are mapped back to class ids through its legend; a colour that is no
    class's reads as 255) or a sceneclass Zarr store's ``classes`` array."""

    def __init__(self, path: Path, colours: bool = False):
        import numpy as np
        import rasterio

        self.path, self.colours, self.zarr = Path(path), colours, Path(path).suffix == ".zarr"
        self.meta: dict = {}
        if self.zarr:
            import zarr

            self.arr = zarr.open(str(self.path), mode="r")["classes"]
            self.height, self.width = self.arr.shape
            self.meta.update(dtype=str(self.arr.dtype), colormap=None, overviews=None, compression=None,
                             blocksize=list(self.arr.chunks), crs=None, transform=None)
            return
        self.ds = rasterio.open(self.path)
        self.height, self.width = self.ds.height, self.ds.width
        self.meta.update(dtype=self.ds.dtypes[0], colormap=_has_colormap(self.ds), bands=self.ds.count,
                         overviews=len(self.ds.overviews(1)),
                         compression=self.ds.compression.name if self.ds.compression else None,
                         blocksize=list(self.ds.block_shapes[0]), crs=self.ds.crs, transform=self.ds.transform)
        if colours:
            legend = json.loads(self.path.with_name(self.path.stem + ".legend.json").read_text())
            table = {tuple(c["rgba"][:3]): c["id"] for c in legend["classes"]}
            table.setdefault((0, 0, 0), 0)  # nodata: black (no alpha band in RGB mode)
            codes = np.array([(r << 16) | (g << 8) | b for r, g, b in table], np.int64)
            order = np.argsort(codes)
            self.codes, self.ids = codes[order], np.array(list(table.values()), np.uint8)[order]

    def read(self, r0: int, r1: int):
        import numpy as np
        from rasterio.windows import Window

        if self.zarr:
            return np.asarray(self.arr[r0:r1, :])
        w = Window(0, r0, self.width, r1 - r0)
        if not self.colours:
            return self.ds.read(1, window=w)
        rgb = self.ds.read((1, 2, 3), window=w).astype(np.int64)
        code = (rgb[0] << 16) | (rgb[1] << 8) | rgb[2]
        pos = np.clip(np.searchsorted(self.codes, code), 0, len(self.codes) - 1)
        return np.where(self.codes[pos] == code, self.ids[pos], 255).astype(np.uint8)

    def close(self) -> None:
        if not self.zarr:
            self.ds.close()


def compare_rasters(path: str | os.PathLike, ref: str | os.PathLike, rows_per_window: int | None = None,
                    colours: bool = False) -> dict:
    """Pixel-for-pixel comparison of the class ids of ``path`` (GeoTIFF band 1; ``colours``:
    an RGB GeoTIFF mapped back to ids; ``.zarr``: its ``classes``) with band 1 of ``ref``,
    strip by strip (memory: one strip of each). ``mismatches`` is None when the shapes differ."""
    import rasterio

    res: dict = {"mismatches": None}
    a = _Output(Path(path), colours)
    try:
        with rasterio.open(ref) as b:
            meta = dict(a.meta)
            crs, transform = meta.pop("crs"), meta.pop("transform")
            res.update(meta, shape=[a.height, a.width],
                       georef_ok=None if crs is None else bool(crs == b.crs and transform.almost_equals(b.transform)))
            if (a.height, a.width) != (b.height, b.width):
                res["problem"] = f"shape {a.height}x{a.width} != reference {b.height}x{b.width}"
                return res
            step = rows_per_window or max(1, (1 << 24) // max(a.width, 1))  # ~16 Mpixel strips
            total = {"mismatches": 0, "nodata_mismatches": 0, "max_abs_diff": 0, "diff_histogram": {}}
            from rasterio.windows import Window

            for r0 in range(0, a.height, step):
                r1 = min(r0 + step, a.height)
                _merge(total, compare_arrays(a.read(r0, r1), b.read(1, window=Window(0, r0, b.width, r1 - r0))))
    finally:
        a.close()
    pixels = a.height * a.width
    res.update(total, pixels=pixels, mismatch_fraction=total["mismatches"] / pixels if pixels else 0.0,
               diff_histogram={("3+" if k == 3 else str(k)): v for k, v in sorted(total["diff_histogram"].items())})
    return res


def check_output(row: str | dict, out: Path, ref: Path, scene: Path) -> dict | None:
    """Agreement of a row's output: class rows against the reference classes of their (dtype,
    scheme), ``copy`` against the input; ``read`` has no output (None). ``fatal`` marks a
    difference that fails the row: any pixel mismatch (except xarray-spatial's, which is
    reported), shape, georeferencing, dtype or a missing colour table (paletted COG)."""
    spec = row if isinstance(row, dict) else {"kind": row, "output": "cog"}
    kind, output = spec["kind"], spec.get("output", "cog")
    if kind == "read":
        return None
    if not out.exists():
        return {"ok": False, "fatal": True, "mismatches": None, "problem": "no output file"}
    target = scene if kind == "copy" else ref
    try:
        res = compare_rasters(out, target, colours=output == "rgb")
    except Exception as e:  # noqa: BLE001 - an unreadable output is a failed row
        return {"ok": False, "fatal": True, "mismatches": None, "problem": f"cannot compare: {e}"}
    res["against"] = "input" if kind == "copy" else "reference (numpy classes)"
    problems, fatal = [], False
    if res["mismatches"] is None:
        problems.append(res.pop("problem", "not comparable"))
        fatal = True
    elif res["mismatches"]:
        problems.append(f"{res['mismatches']} pixels differ")
        fatal = kind not in bench_rows.TOLERATED_MISMATCH
    if res["georef_ok"] is False:
        problems.append("CRS/transform differ")
        fatal = True
    if kind in bench_rows.CLASS_ROWS:
        if res["dtype"] != "uint8":
            problems.append(f"dtype {res['dtype']}, expected uint8")
            fatal = True
        if output == "cog" and not res["colormap"]:
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
    kind = row.split("/", 1)[0]
    if c is None:
        return "n/a (no output)" if kind == "read" else "–"
    if c.get("skipped"):
        return "not compared at this size (--full-check)"
    if c.get("mismatches") is None:
        return "FAILED: " + c.get("problem", "?")
    if c.get("ok"):
        return "identical to input" if kind == "copy" else "identical"
    text = ""
    if c["mismatches"]:
        text = (f"{c['mismatches']:,} px differ ({c['mismatch_fraction'] * 100:.4f}%, "
                f"max |Δclass| {c['max_abs_diff']}, {c['nodata_mismatches']} nodata)")
    others = [p for p in c.get("problem", "").split("; ") if p and not p.endswith("pixels differ")]
    text = "; ".join([t for t in [text, *others] if t])
    return ("FAILED: " if c.get("fatal") else "reported: ") + text


def case_cog(row: str, r: dict) -> str | None:
    """The sceneclass paletted-COG row of a row's case."""
    spec = r.get("spec") or {}
    if not spec:
        return "sceneclass/uint16/equal_interval/cog"
    return f"sceneclass/{spec['dtype']}/{spec['scheme']}/cog"


def size_table(size: str, sz: dict) -> list[str]:
    rows = sz["rows"]
    head = ["row", "status", "median s", "min–max s", "peak RSS MiB", "CPU s",
            "sceneclass ÷ row", "÷ paletted COG", "phases, median s", "agreement"]
    lines = [f"### {size}: {sz['shape'][0]} x {sz['shape'][1]} px "
             f"({sz['pixels'] / 1e6:.1f} Mpx, uint16 input {sz['input_mib']:.0f} MiB"
             + (f", float32 input {sz['input_float32_mib']:.0f} MiB" if sz.get("input_float32_mib") else "") + ")",
             "", "`sceneclass ÷ row`: the case's sceneclass paletted COG against the row; `÷ paletted COG`: a "
             "sceneclass row against the paletted COG of its case (both medians of within-round ratios).", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    ratios = sz.get("ratios_wall", {})
    for row, r in rows.items():
        status = r["status"] + (f" ({r['skip_note']})" if r.get("skip_note") else "")
        cog = case_cog(row, r)
        cells = [f"`{row}`", status, _fmt(r.get("wall_median_s")),
                 f"{_fmt(r['wall_min_s'])}–{_fmt(r['wall_max_s'])}" if r.get("wall_min_s") is not None else "–",
                 _fmt(r.get("rss_mib_max"), 0), _fmt(r.get("cpu_median_s"), 1)]
        if row.startswith("sceneclass/"):
            cells += ["–", "1" if row == cog and r.get("wall_median_s") else _fmt(ratios.get(row, {}).get(cog))]
        else:
            cells += [_fmt(ratios.get(cog, {}).get(row)), "–"]
        ph = r.get("phases_median_s") or {}
        cells.append(", ".join(f"{k} {v:.2f}" for k, v in ph.items()) or "–")
        cells.append(check_text(row, r))
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def rss_table(results: dict) -> list[str]:
    """Peak RSS (MiB) of every sceneclass case at every size, and its ratio to 1x."""
    sizes = list(results["sizes"])
    ids = [r for sz in results["sizes"].values() for r in sz["rows"] if r.startswith("sceneclass/")]
    ids = list(dict.fromkeys(ids))
    if not ids:
        return []
    base = "1x" if "1x" in sizes else sizes[0]
    head = ["case"] + [f"{s} MiB" for s in sizes] + [f"{s}/{base}" for s in sizes if s != base]
    lines = ["### Peak RSS of every case (MiB)", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in ids:
        vals = [results["sizes"][s]["rows"].get(row, {}).get("rss_mib_max") for s in sizes]
        b = results["sizes"][base]["rows"].get(row, {}).get("rss_mib_max")
        ratios = [(v / b if v and b else None) for s, v in zip(sizes, vals) if s != base]
        lines.append(f"| `{row.removeprefix('sceneclass/')}` | " + " | ".join(_fmt(v, 0) for v in vals)
                     + ("" if not ratios else " | " + " | ".join(_fmt(x) for x in ratios)) + " |")
    return lines


def batch_table(b: dict) -> list[str]:
    if not b:
        return []
    lines = [f"### Batch: {b['scenes']} scenes of {b['size']} ({b['shape'][0]} x {b['shape'][1]} px)", "",
             "| run | median s | min–max s | peak RSS MiB |", "|---|---|---|---|"]
    for name in ("batch", "singles"):
        r = b.get(name) or {}
        lines.append(f"| {r.get('label', name)} | {_fmt(r.get('wall_median_s'))} | {_fmt(r.get('wall_min_s'))}–"
                     f"{_fmt(r.get('wall_max_s'))} | {_fmt(r.get('rss_mib_max'), 0)} |")
    lines += ["", f"Per-scene overhead of the batch: {_fmt(b.get('overhead_per_scene_s'), 3)} s "
              f"(rounds: {', '.join(_fmt(x, 3) for x in b.get('overhead_rounds_s', []))}) = batch wall / "
              f"{b['scenes']} ({_fmt(b.get('batch_per_scene_s'), 3)} s) minus the single-scene classify time "
              f"({_fmt(b.get('single_classify_s'), 3)} s: the median over the single runs of wall time minus "
              "start-up, i.e. minus the arrival of the run's plan line, which follows interpreter start, imports, "
              "config and plan). Batch start-up (to its first plan line): "
              f"{_fmt(b.get('batch_startup_s'))} s; single-run start-up {_fmt(b.get('single_startup_s'))} s; "
              f"{b['scenes']} single runs ÷ one batch: {_fmt(b.get('singles_over_batch'))}.",
              *(f"- {n}" for n in b.get("notes", []))]
    return lines


def render_markdown(results: dict) -> str:
    m = results["machine"]
    s = results["settings"]
    est = results.get("estimate") or {}
    out = [
        "# sceneclass benchmark", "",
        f"Command: `{results['command']}`  ",
        f"Started {results['started']}, finished {results.get('finished', '(running)')}"
        + (f"; expected {est.get('total_min', '?')} min on a quiet machine" if est else "") + ".", "",
        f"Machine: {m['cores']} cores ({m['usable_cores']} usable; {m.get('cpu_model') or '?'}), "
        f"{m['ram_gib']} GiB RAM, {m['platform']}; load average at start {m['loadavg_at_start']}"
        + (f", at end {m['loadavg_at_end']}" if m.get("loadavg_at_end") else "") + ".  ",
        f"Python {m['python']}, numpy {m['numpy']}, GDAL {m['gdal']}, rasterio {m['rasterio']}, "
        f"dask {m['dask']}, xarray {m['xarray']}, rioxarray {m['rioxarray']}, "
        f"xarray-spatial {m['xarray-spatial'] or 'not installed'}, numba {m['numba'] or '–'}, "
        f"sceneclass {m['sceneclass']} (uint16 histogram and look-up: {m.get('sceneclass_kernels', '?')}).", "",
        f"Matrix: dtypes {', '.join(s['dtypes'])}; schemes "
        + ", ".join(f"{k} {bench_rows.SCHEMES[k]}" for k in s["schemes"]) + f"; outputs {', '.join(s['outputs'])}. "
        f"Rounds per size: {', '.join(f'{k} {v}' for k, v in s['rounds_per_size'].items())}; rows interleaved "
        f"({s['order']} order in each round, recorded in bench.json). Wall time, peak RSS and CPU time are those of "
        "each row's own process, interpreter start-up and imports included; the page cache is warm. The "
        "uint16 scene is the synthetic Landsat-like DN band; the float32 scene is the same scene as "
        "`DN * 0.00341802 + 149.0`, NaN where DN is 0 (DEFLATE, floating-point predictor, 512 tiles). "
        "Paletted and RGB COGs use sceneclass's default options (ZSTD, 512 tiles, NEAREST overviews); "
        "`numpy` and `xarray-spatial` write paletted COGs with the same options; `copy` copies the uint16 "
        "input into a COG, `read` only decodes it; `floor` decodes the input once and writes precomputed "
        "classes with sceneclass's writer. Agreement is pixel for pixel against the reference classes of "
        "the row's dtype and scheme (`copy`: against the input).", "",
    ]
    if results.get("targets"):
        out += ["## Targets", ""] + bench_targets.targets_table(results["targets"]) + [""]
    for size, sz in results["sizes"].items():
        out += size_table(size, sz)
        out.append("")
        out += [f"- {n}" for n in sz.get("notes", [])]
        out.append("")
    out += rss_table(results) + [""]
    out += batch_table(results.get("batch") or {}) + [""]
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
    results["targets"] = bench_targets.compute_targets(results)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "bench.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    (out_dir / "bench.md").write_text(render_markdown(results))


def print_tables(results: dict) -> None:
    for size, sz in results["sizes"].items():
        print()
        print("\n".join(size_table(size, sz)))
        for n in sz.get("notes", []):
            print(f"- {n}")
    print("\n".join(["", *rss_table(results), "", *batch_table(results.get("batch") or {})]))
    print("\n" + "\n".join(bench_targets.targets_table(results.get("targets") or [])))


# --------------------------------------------------------------------------------- the bench
def scene_path(workdir: Path, size: str, seed: int, dtype: str = "uint16") -> Path:
    """Named like scripts/make_scene.py names scenes."""
    return workdir / (f"scene_{size}_s{seed}" + ("" if dtype == "uint16" else f"_{dtype}") + ".tif")


def ensure_scene(workdir: Path, size: str, seed: int, dtype: str = "uint16") -> tuple[Path, float | None]:
    """The scene of ``size`` and ``dtype`` in ``workdir``, generated if missing."""
    from pipeline.testing.synth import make_scene

    path = scene_path(workdir, size, seed, dtype)
    if path.exists():
        return path, None
    t0 = time.perf_counter()
    make_scene(path, size=size, seed=seed, dtype=dtype)
    return path, round(time.perf_counter() - t0, 2)


def ensure_reference(scene: Path, ref: Path, timeout: float, scheme: str = "equal_interval",
                     count: int = bench_rows.N_CLASSES) -> dict:
    """The reference classes of ``scene`` under ``scheme`` as an uncompressed tiled GeoTIFF (untimed)."""
    if ref.exists() and ref.stat().st_mtime >= scene.stat().st_mtime:
        return {"reused": True}
    ref.parent.mkdir(parents=True, exist_ok=True)
    res = run_measured([sys.executable, str(ROWS_SCRIPT), "reference", str(scene), str(ref), scheme, str(count)],
                       timeout)
    if res["exit"] != 0:
        tail = "\n".join(line for _, line in res["stderr"][-20:])
        raise RuntimeError(f"computing the reference classes of {scene} ({scheme}) failed:\n{tail}")
    return {"reused": False, "wall_s": res["wall_s"], "maxrss_mib": res["maxrss_mib"],
            "edges": row_payload(res).get("edges")}


def skip_note(row: str, size: str, skips: dict) -> str | None:
    """Why ``row`` (an id) is skipped at ``size``: a skip names its kind, its id or a pattern."""
    kind = row.split("/", 1)[0]
    for (pattern, at), note in skips.items():
        if at not in (size.lower(), "*"):
            continue
        if pattern == kind or fnmatch.fnmatchcase(row, pattern):
            return note
    return None


#: bytes per pixel the in-memory numpy row needs (the array, its classes, GDAL's in-memory copy,
#: and for quantile the gathered valid pixels, partitioned in place)
NUMPY_BYTES_PER_PX = {("uint16", "quantile"): 6.5, ("uint16", None): 5.0,
                      ("float32", "quantile"): 10.0, ("float32", None): 7.0}


def memory_skip(spec: dict, pixels: int, ram_bytes: int | None) -> str | None:
    if spec["kind"] not in ("numpy", "recipe") or not ram_bytes:
        return None
    if spec["kind"] == "recipe":
        need = pixels * 11.0
    else:
        key = (spec["dtype"], "quantile" if spec["scheme"] == "quantile" else None)
        need = pixels * NUMPY_BYTES_PER_PX[key]
    if need > ram_bytes / 2:
        return f"needs ~{need / 2**30:.0f} GiB, more than half the RAM"
    return None


def _ram_bytes() -> int | None:
    try:
        with open("/proc/meminfo") as f:
            return next((int(ln.split()[1]) * 1024 for ln in f if ln.startswith("MemTotal:")), None)
    except OSError:
        return None


# -------------------------------------------------------------------------------- estimate
#: seconds per row on this machine (start-up, per Mpx), fitted to the uint16 rows of the run of
#: 2026-11-30 in docs/performance.md (a slow day: an estimate on the safe side)
COST = {"read": (0.5, 0.0086), "copy": (0.5, 0.030), "recipe": (0.5, 0.20), "floor": (1.2, 0.008),
        "numpy": (0.5, 0.041), "xarray-spatial": (2.7, 0.030), "sceneclass": (1.3, 0.0105),
        "reference": (0.5, 0.025), "generate": (0.5, 0.08)}
#: comparing one output with its reference, per Mpx
CHECK_S_PER_MPX = 0.01
#: multipliers of the per-Mpx cost by dtype and scheme (from issue 18's float32 figures) and
#: output; Zarr also pays for importing xarray (start-up + 1 s)
COST_DTYPE = {"uint16": 1.0, "float32": 2.0}
COST_SCHEME = {("uint16", "equal_interval"): 1.0, ("uint16", "quantile"): 1.05, ("uint16", "natural_breaks"): 1.05,
               ("float32", "equal_interval"): 1.0, ("float32", "quantile"): 1.8, ("float32", "natural_breaks"): 1.8}
COST_OUTPUT = {"cog": 1.0, "zarr": 1.2, "rgb": 1.3}


def row_seconds(spec: dict, mpx: float) -> float:
    t0, per = COST[spec["kind"]]
    if spec["kind"] in ("numpy", "xarray-spatial"):  # in-memory/dask float32 costs less extra than sceneclass
        per *= (1.0 if spec["dtype"] == "uint16" else 1.2) * (1.5 if spec["scheme"] != "equal_interval" else 1.0)
    else:
        per *= COST_DTYPE[spec["dtype"]] * COST_SCHEME[(spec["dtype"], spec["scheme"])]
    if spec["kind"] == "sceneclass":
        per *= COST_OUTPUT[spec["output"]]
        t0 += 1.0 if spec["output"] == "zarr" else 0.0
    return t0 + per * mpx


def estimate(plan: dict, workdir: Path, seed: int, batch: dict | None) -> dict:
    """Expected seconds of a run (quiet machine): rows x rounds, references and missing scenes."""
    from pipeline.testing.synth import parse_size

    per_size = {}
    for size, p in plan.items():
        h, w = parse_size(size)
        mpx = h * w / 1e6
        rows = sum(row_seconds(s, mpx) for s in p["active"]) * p["rounds"]
        refs = sum(COST["reference"][0] + COST["reference"][1] * mpx * (1.5 if d == "float32" else 1.0)
                   * (1.5 if sch == "natural_breaks" else 1.0) for d, sch in p["references"])
        gen = sum(COST["generate"][1] * mpx for d in p["dtypes"] if not scene_path(workdir, size, seed, d).exists())
        checks = CHECK_S_PER_MPX * mpx * len([s for s in p["active"] if s["kind"] != "read"
                                               and checked(s, size, p["full_check"])])
        per_size[size] = round(rows + refs + gen + checks)
    total = sum(per_size.values())
    if batch:
        h, w = parse_size(batch["size"])
        one = row_seconds({"kind": "sceneclass", "dtype": "uint16", "scheme": "equal_interval", "output": "cog"},
                          h * w / 1e6)
        per_size["batch"] = round(batch["rounds"] * (2 * batch["scenes"] * one)
                                  + COST["generate"][1] * h * w / 1e6 * batch["scenes"])
        total += per_size["batch"]
    return {"per_part_s": per_size, "total_s": round(total), "total_min": round(total / 60, 1)}


# ------------------------------------------------------------------------------- one row
def row_command(spec: dict | str, inp: Path, out: Path) -> list[str]:
    if isinstance(spec, str):
        spec = {"kind": spec, "scheme": "equal_interval", "count": bench_rows.N_CLASSES, "output": "cog"}
    kind = spec["kind"]
    if kind == "sceneclass":  # the CLI is the measured child itself
        return bench_rows.sceneclass_command(str(inp), str(out), spec["scheme"], spec["count"], spec["output"])
    cmd = [sys.executable, str(ROWS_SCRIPT), kind, str(inp), str(out)]
    if kind in bench_rows.SCHEME_ROWS:
        cmd += [spec["scheme"], str(spec["count"])]
    return cmd


def clean_outputs(out: Path) -> None:
    """Remove a row's previous output and its side files (sceneclass: legend, manifest), so
    every round does the same work."""
    for p in [out, *out.parent.glob(f"{out.stem}.*.json")]:
        if p.is_dir():
            shutil.rmtree(p)
        else:
            p.unlink(missing_ok=True)


def run_row_once(spec: dict | str, rnd: int, inp: Path, out: Path, timeout: float) -> dict:
    kind = spec if isinstance(spec, str) else spec["kind"]
    clean_outputs(out)
    # every row starts with no dirty page cache of its own: the previous row's output (1 GB
    # and more at 16x) is otherwise written back to disk by the kernel during this row
    os.sync()
    load = os.getloadavg()[0]
    res = run_measured(row_command(spec, inp, out), timeout)
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
    if kind == "sceneclass":
        run["phases"] = sceneclass_phases(res)
    else:
        run["phases"] = payload.get("phases", {})
        if "in_process_s" in payload:  # interpreter start-up before the script's first line
            run["phases"] = {"startup": round(res["wall_s"] - payload["in_process_s"], 3), **run["phases"]}
    return run


# ------------------------------------------------------------------------------ one size
def plan_size(size: str, args, skips: dict, ram: int | None) -> dict:
    from pipeline.testing.synth import parse_size

    h, w = parse_size(size)
    specs = row_specs(args.dtypes, args.schemes, args.outputs, args.rows)
    rounds = dict(DEFAULT_ROUNDS_AT)
    rounds.update(dict(args.rounds_at))
    p = {"specs": specs, "active": [], "skipped": {}, "rounds": rounds.get(size.lower(), args.rounds),
         "full_check": args.full_check}
    for spec in specs:
        note = skip_note(spec["id"], size, skips) or memory_skip(spec, h * w, ram)
        if note is not None:
            p["skipped"][spec["id"]] = note
        else:
            p["active"].append(spec)
    p["dtypes"] = sorted({s["dtype"] for s in p["active"]} | ({"uint16"} if p["active"] else set()),
                         key=DTYPES.index)
    p["references"] = sorted({(s["dtype"], s["scheme"]) for s in p["active"] if s["kind"] not in ("read", "copy")})
    return p


def bench_size(size: str, args, p: dict, results: dict, log) -> None:
    import rasterio

    workdir = args.workdir.resolve()
    scenes, gen = {}, {}
    for d in p["dtypes"]:
        scenes[d], gen[d] = ensure_scene(workdir, size, args.seed, d)
    scene = scenes["uint16"]
    with rasterio.open(scene) as src:
        shape = [src.height, src.width]
    sz = {"input": str(scene), "inputs": {d: str(s) for d, s in scenes.items()}, "shape": shape,
          "pixels": shape[0] * shape[1], "input_mib": round(scene.stat().st_size / MiB, 1),
          "generated_s": gen.get("uint16"), "generated": gen, "rounds": p["rounds"],
          "rows": {}, "order": [], "notes": [], "references": {}}
    if "float32" in scenes:
        sz["input_float32_mib"] = round(scenes["float32"].stat().st_size / MiB, 1)
    results["sizes"][size] = sz
    out_dir = workdir / "out" / size
    out_dir.mkdir(parents=True, exist_ok=True)
    log(f"[{size}] scenes " + ", ".join(f"{d} {s}" for d, s in scenes.items()) + f" ({shape[0]}x{shape[1]})"
        + "".join(f", {d} generated in {g:.1f} s" for d, g in gen.items() if g))
    refs = {}
    for d, sch in p["references"]:
        refs[(d, sch)] = workdir / "ref" / f"classes_{size}_s{args.seed}_{d}_{sch}.tif"
        info = ensure_reference(scenes[d], refs[(d, sch)], args.timeout, sch, bench_rows.SCHEMES[sch]
                                if sch != "equal_interval" else bench_rows.N_CLASSES)
        sz["references"][f"{d}/{sch}"] = {"path": str(refs[(d, sch)]), **info}
        log(f"[{size}] reference {d}/{sch}" + ("" if info["reused"] else f": {info['wall_s']:.1f} s"))
    ei = refs.get(("uint16", "equal_interval"))
    if ei is not None:
        sz["reference"] = sz["references"]["uint16/equal_interval"]
        with rasterio.open(ei) as src:
            edges = json.loads(src.tags().get("BENCH_EDGES", "null"))
        if edges and "xarray-spatial" in args.rows:
            on_int = [e for e in edges[1:-1] if float(e).is_integer()]
            sz["notes"].append(
                f"uint16 equal_interval: {len(on_int)} of the {len(edges) - 2} interior class edges fall on an "
                "integer value; only pixels equal to such an edge can land one class apart under "
                "xarray-spatial's right-closed bins (integer input)")
    for spec in p["specs"]:
        note = p["skipped"].get(spec["id"])
        sz["rows"][spec["id"]] = {"spec": spec, "runs": []}
        if note is not None:
            sz["rows"][spec["id"]].update(skipped=True, skip_note=note)
            sz["notes"].append(f"`{spec['id']}` skipped at {size}: {note}")
    rng = random.Random(f"{args.seed}:{size}")
    dropped: set[str] = set()
    for rnd in range(1, p["rounds"] + 1):
        order = [s for s in p["active"] if s["id"] not in dropped]
        if args.order == "shuffle":
            rng.shuffle(order)
        sz["order"].append([s["id"] for s in order])
        for spec in order:
            inp = refs[("uint16", "equal_interval")] if spec["kind"] == "floor" else scenes[spec["dtype"]]
            run = run_row_once(spec, rnd, inp, output_path(out_dir, spec), args.timeout)
            if run["status"] == "not installed":
                dropped.add(spec["id"])
            sz["rows"][spec["id"]]["runs"].append(run)
            log(f"[{size}] round {rnd} {spec['id']:<40} {run['status']:<13} {run['wall_s']:8.2f} s "
                f"{run['maxrss_mib']:7.0f} MiB  cpu {run['cpu_s']:6.1f} s")
    for spec in p["active"]:
        row = spec["id"]
        r = sz["rows"][row]
        bad = next((run for run in r["runs"] if run["status"] != "ok"), None)
        if bad:
            sz["notes"].append(f"`{row}` round {bad['round']}: {bad['status']} (exit {bad['exit']})"
                               + (f": {bad['stderr_tail'][-1]}" if bad.get("stderr_tail") else ""))
        if any(run["status"] == "ok" for run in r["runs"]):  # the last round's output is checked
            out = output_path(out_dir, spec)
            r["output_mib"] = round(_size_of(out) / MiB, 2) if out.exists() else None
            if not checked(spec, size, args.full_check):
                r["check"] = {"ok": True, "fatal": False, "mismatches": None, "skipped": True}
                continue
            ref = refs.get((spec["dtype"], spec["scheme"]))
            r["check"] = check_output(spec, out, ref, scenes["uint16"])
            if r["check"] is not None and not r["check"]["ok"]:
                sz["notes"].append(f"`{row}`: {check_text(row, r)}")
    summarize_size(sz)


def checked(spec: dict, size: str, full: bool) -> bool:
    """Whether a row's output is compared with the reference at ``size``."""
    return full or spec["output"] == "cog" or size.lower() not in LIGHT_CHECK_SIZES


def _size_of(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


# ------------------------------------------------------------------------------ the batch
def bench_batch(args, results: dict, log) -> None:
    """One ``sceneclass run`` of a batch config of N scenes against N single ``sceneclass run``
    processes, rounds interleaved. Per-scene overhead = batch wall / N minus the single-scene
    classify time (the median over the single runs of wall minus start-up; start-up is the
    arrival of the run's plan line, after interpreter start, imports, config and plan)."""
    import rasterio

    n = args.batch_scenes
    wd = args.workdir.resolve() / "batch"
    scenes = [ensure_scene(wd, args.batch_size, args.seed + i)[0] for i in range(n)]
    with rasterio.open(scenes[0]) as src:
        shape = [src.height, src.width]
    b = {"scenes": n, "size": args.batch_size, "shape": shape, "rounds": [], "notes": []}
    results["batch"] = b
    base = bench_rows.sceneclass_config(str(scenes[0]), str(wd / "x.tif"))
    batch_cfg = wd / "batch.yaml"
    cfg = {k: v for k, v in base.items() if k != "input"}
    cfg["inputs"] = [str(s) for s in scenes]
    cfg["output"] = {"folder": str(wd / "batch_out"), "path": "{stem}.tif"}
    batch_cfg.write_text(json.dumps(cfg, indent=2) + "\n")
    singles = []
    for s in scenes:
        c = wd / f"single_{s.stem}.yaml"
        c.write_text(json.dumps({**base, "input": str(s), "output": {"path": str(wd / "single_out" / s.name)}},
                                indent=2) + "\n")
        singles.append(c)
    head = bench_rows.sceneclass_command(str(scenes[0]), str(wd / "x.tif"))[:-3]
    rng = random.Random(f"{args.seed}:batch")
    for rnd in range(1, args.batch_rounds + 1):
        order = ["batch", "singles"]
        if args.order == "shuffle":
            rng.shuffle(order)
        entry: dict = {"round": rnd, "order": order}
        for what in order:
            if what == "batch":
                shutil.rmtree(wd / "batch_out", ignore_errors=True)
                os.sync()
                res = run_measured([*head, "run", str(batch_cfg), "--no-progress"], args.timeout)
                plans = [t for t, line in res["stderr"] if SCENECLASS_MARKS[0][0].search(line)]
                entry["batch"] = {"wall_s": res["wall_s"], "maxrss_mib": res["maxrss_mib"], "exit": res["exit"],
                                  "startup_s": plans[0] if plans else None, "scenes_started": len(plans)}
                if res["exit"] != 0:
                    entry["batch"]["stderr_tail"] = [line for _, line in res["stderr"][-10:]]
            else:
                shutil.rmtree(wd / "single_out", ignore_errors=True)
                runs = []
                for c in singles:
                    os.sync()
                    res = run_measured([*head, "run", str(c), "--no-progress"], args.timeout)
                    ph = sceneclass_phases(res)
                    runs.append({"wall_s": res["wall_s"], "maxrss_mib": res["maxrss_mib"], "exit": res["exit"],
                                 "startup_s": ph.get("import+plan")})
                entry["singles"] = {"wall_s": round(sum(r["wall_s"] for r in runs), 3),
                                    "maxrss_mib": max(r["maxrss_mib"] for r in runs), "runs": runs,
                                    "exit": max(r["exit"] for r in runs)}
        bw = entry["batch"]
        cls = [r["wall_s"] - r["startup_s"] for r in entry["singles"]["runs"] if r["startup_s"] is not None]
        if bw["exit"] == 0 and entry["singles"]["exit"] == 0 and cls:
            entry["single_classify_s"] = round(statistics.median(cls), 3)
            entry["overhead_per_scene_s"] = round(bw["wall_s"] / n - entry["single_classify_s"], 3)
        b["rounds"].append(entry)
        log(f"[batch] round {rnd}: one batch {bw['wall_s']:.2f} s (exit {bw['exit']}), {n} single runs "
            f"{entry['singles']['wall_s']:.2f} s; overhead per scene {entry.get('overhead_per_scene_s')}")
    summarize_batch(b)


def summarize_batch(b: dict) -> None:
    ok = [e for e in b["rounds"] if "overhead_per_scene_s" in e]
    for name, label in (("batch", f"one `sceneclass run` of a batch of {b['scenes']}"),
                        ("singles", f"{b['scenes']} single `sceneclass run` processes, one after another")):
        walls = [e[name]["wall_s"] for e in ok]
        b[name] = {"label": label, "wall_median_s": _median(walls), "wall_min_s": min(walls, default=None),
                   "wall_max_s": max(walls, default=None),
                   "rss_mib_max": max((e[name]["maxrss_mib"] for e in ok), default=None)}
    bad = [e for e in b["rounds"] if "overhead_per_scene_s" not in e]
    for e in bad:
        b["notes"].append(f"round {e['round']}: a run failed (batch exit {e['batch']['exit']}, "
                          f"single runs' worst exit {e['singles']['exit']})")
    b["status"] = "FAILED" if bad else ("ok" if ok else "not run")
    b["overhead_rounds_s"] = [e["overhead_per_scene_s"] for e in ok]
    b["overhead_per_scene_s"] = _median(b["overhead_rounds_s"])
    b["single_classify_s"] = _median([e["single_classify_s"] for e in ok])
    b["batch_per_scene_s"] = _median([e["batch"]["wall_s"] / b["scenes"] for e in ok])
    b["batch_startup_s"] = _median([e["batch"]["startup_s"] for e in ok])
    b["single_startup_s"] = _median([r["startup_s"] for e in ok for r in e["singles"]["runs"]])
    b["singles_over_batch"] = _median([e["singles"]["wall_s"] / e["batch"]["wall_s"] for e in ok])


# ------------------------------------------------------------------------------------ main
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.rounds < 1 or args.batch_rounds < 1:
        raise SystemExit("--rounds and --batch-rounds must be >= 1")
    skips = {} if args.no_default_skips else dict(DEFAULT_SKIPS)
    for row, size in args.skip:
        skips[(row, size)] = "--skip"
    ram = _ram_bytes()
    plans = {size: plan_size(size, args, skips, ram) for size in args.sizes}
    batch = ({"size": args.batch_size, "scenes": args.batch_scenes, "rounds": args.batch_rounds}
             if args.batch_scenes > 0 and "sceneclass" in args.rows else None)
    est = estimate(plans, args.workdir.resolve(), args.seed, batch)
    print(f"expected run time on a quiet machine: ~{est['total_min']} min ("
          + ", ".join(f"{k} {v / 60:.1f} min" for k, v in est["per_part_s"].items()) + ")", flush=True)
    if args.estimate_only:
        return 0
    command = [sys.executable, *sys.argv] if argv is None else [sys.executable, str(Path(__file__)), *argv]
    results = {
        "command": shlex.join(command),
        "cwd": os.getcwd(),
        "started": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "machine": machine_info(),
        "estimate": est,
        "settings": {"sizes": args.sizes, "rounds": args.rounds,
                     "rounds_per_size": {s: p["rounds"] for s, p in plans.items()}, "rows": args.rows,
                     "dtypes": args.dtypes, "schemes": args.schemes, "outputs": args.outputs,
                     "skips": {f"{r}@{s}": n for (r, s), n in skips.items()},
                     "timeout_s": args.timeout, "seed": args.seed, "order": args.order,
                     "workdir": str(args.workdir.resolve()), "cog_options": bench_rows.COG_OPTIONS,
                     "classes": {k: bench_rows.SCHEMES[k] for k in args.schemes}, "nodata": bench_rows.NODATA,
                     "batch": batch},
        "sizes": {},
    }

    def log(msg: str) -> None:
        print(msg, flush=True)

    t0 = time.perf_counter()
    for size in args.sizes:
        bench_size(size, args, plans[size], results, log)
        results["cross_size"] = cross_size(results["sizes"])
        write_results(results, args.out)
    if batch:
        bench_batch(args, results, log)
    results["finished"] = _dt.datetime.now().astimezone().isoformat(timespec="seconds")
    results["elapsed_s"] = round(time.perf_counter() - t0, 1)
    results["machine"]["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    write_results(results, args.out)
    print_tables(results)
    print(f"\nelapsed {results['elapsed_s'] / 60:.1f} min (expected ~{est['total_min']} min when quiet)")
    print(f"wrote {args.out / 'bench.json'} and {args.out / 'bench.md'}")
    failed = [f"{row}@{size}" for size, sz in results["sizes"].items()
              for row, r in sz["rows"].items() if r["status"] in ("FAILED", "TIMEOUT")]
    if (results.get("batch") or {}).get("status") == "FAILED":
        failed.append("batch")
    if failed:
        print("FAILED rows: " + ", ".join(failed))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
