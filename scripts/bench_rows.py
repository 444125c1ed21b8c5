#!/usr/bin/env python
"""One benchmark row as a standalone process:
``python scripts/bench_rows.py ROW INPUT OUTPUT [SCHEME COUNT [KIND]]``.

Every classifying row turns the single-band INPUT (uint8/uint16: 0 is nodata; float32: NaN is
nodata) into COUNT classes of SCHEME (default: 20 equal-interval classes) exactly as sceneclass
defines them (class 0 is nodata, class k holds ``edges[k-1] <= x < edges[k]``, the last class
closed; see :func:`scheme_edges`) and writes the class ids as a georeferenced, paletted uint8
COG with sceneclass's default COG creation options (the sceneclass row: KIND ``cog``, ``rgb``
or ``zarr``). SCHEME/COUNT apply to ``numpy``, ``xarray-spatial``, ``sceneclass`` and
``reference``; the other rows do uint16, equal_interval 20.

Rows (what users would otherwise run, and two references):

``read``            decode every pixel once (block reads) and discard; OUTPUT is ignored.
``copy``            ``rasterio.shutil.copy(INPUT, OUTPUT, driver="COG")``: the I/O users know.
``recipe``          the blog recipe as written: whole array, ``np.histogram``, a boolean mask
                    and an RGB colour per class (its 8-colour table cycled for 20 classes).
``numpy``           a careful in-memory numpy version: the statistics per row block
                    (``bincount`` for integers), the scheme's edges, a value -> class look-up
                    table (integers) or ``searchsorted`` per row block (floats).
``xarray-spatial``  ``xrspatial.classify.<SCHEME>`` on a dask array (rioxarray), written with
                    ``.rio.to_raster``. Closes its bins on the right, approximates quantiles and
                    samples for natural breaks: some pixels differ (reported, not failed).
``floor``           sceneclass's own COG writer fed with precomputed classes (INPUT is then the
                    classes GeoTIFF made by the ``reference`` helper): read once + write, no stats.
``sceneclass``      the CLI, ``sceneclass run CFG``, with a generated config (this script
                    ``exec``s it, so the process measured is the CLI itself).

Helper (not a benchmark row): ``reference INPUT CLASSES.tif [SCHEME COUNT]`` writes the numpy
row's classes as an uncompressed tiled GeoTIFF, computed strip by strip (bounded memory but for
quantile's gathered valid pixels): the floor row's input and the bench's agreement reference.

Each row prints one line ``BENCH_ROW {json}`` on stdout with its in-process phase times.
Rows do all their work in this process (no worker processes), so the parent's
``wait4`` rusage covers the whole row. Heavy imports happen inside the rows (and are timed).
No row pays for what the sceneclass CLI avoids: every row leaves without the interpreter's
teardown (``os._exit`` after its report, as the CLI does), and the floor keeps dask.array from
importing xarray and scipy (:func:`pipeline._engine.deferred.hide`, as the CLI does); before both,
the floor took about 0.6 s more than it needed at every size.
"""

from __future__ import annotations

import time

T_START = time.perf_counter()

import json  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

#: The classification every row does.
N_CLASSES = 20
NODATA = 0
#: sceneclass's default processing chunk (``processing.chunk``); dask rows use the same.
CHUNK = 2048
#: sceneclass's default COG creation options (``pipeline.writers.cog.cog_options(Output(...))``;
#: kept literal here so the in-memory rows do not pay for importing dask; a test checks they agree).
COG_OPTIONS = {
    "BLOCKSIZE": 512,
    "COMPRESS": "ZSTD",
    "NUM_THREADS": "ALL_CPUS",
    "BIGTIFF": "IF_SAFER",
    "OVERVIEWS": "AUTO",
    "OVERVIEW_RESAMPLING": "NEAREST",
    "LEVEL": 3,
}
#: Exit code of a row whose optional dependency is missing (the bench reports "not installed").
EXIT_NOT_INSTALLED = 3

ROWS = ("read", "copy", "recipe", "numpy", "xarray-spatial", "floor", "sceneclass")
HELPERS = ("reference",)

#: Rows whose output is a class-id COG compared with the reference; ``copy`` is compared with
#: the input itself; ``read`` writes nothing.
CLASS_ROWS = ("recipe", "numpy", "xarray-spatial", "floor", "sceneclass")
#: Rows whose pixel mismatches against the reference are expected and only reported.
TOLERATED_MISMATCH = ("xarray-spatial",)
#: The schemes of the matrix with their class counts.
SCHEMES = {"equal_interval": 20, "quantile": 10, "natural_breaks": 7}
#: The pixel types of the matrix (the synthetic scene's uint16 DNs and its float32 form).
DTYPES = ("uint16", "float32")
#: The outputs of the matrix: paletted COG, Zarr, RGB COG (sceneclass rows).
OUTPUT_KINDS = ("cog", "zarr", "rgb")
#: Rows that classify by any scheme of the matrix and any dtype (the others: uint16, equal_interval 20).
SCHEME_ROWS = ("numpy", "xarray-spatial", "sceneclass", "reference")


class Phases:
    """Named wall-clock phases of a row, reported as ``BENCH_ROW {json}`` on stdout."""

    def __init__(self, row: str):
        self.row = row
        self.times: dict[str, float] = {}
        self._t = time.perf_counter()
        self.extra: dict = {}

    def mark(self, name: str) -> None:
        now = time.perf_counter()
        self.times[name] = round(self.times.get(name, 0.0) + now - self._t, 4)
        self._t = now

    def report(self) -> None:
        payload = {"row": self.row, "phases": self.times,
                   "in_process_s": round(time.perf_counter() - T_START, 4), **self.extra}
        print("BENCH_ROW " + json.dumps(payload), flush=True)


# --------------------------------------------------------------------------- shared helpers
def palette_rgba(n: int = N_CLASSES) -> list[tuple[int, int, int, int]]:
    """A viridis-like ramp: entry 0 (nodata) transparent, 1..n interpolated between anchors."""
    anchors = [(68, 1, 84), (59, 82, 139), (33, 145, 140), (94, 201, 98), (253, 231, 37)]
    out = [(0, 0, 0, 0)]
    for i in range(n):
        t = i / max(n - 1, 1) * (len(anchors) - 1)
        k = min(int(t), len(anchors) - 2)
        f = t - k
        a, b = anchors[k], anchors[k + 1]
        out.append(tuple(round(a[c] + (b[c] - a[c]) * f) for c in range(3)) + (255,))
    return out


def colormap(palette) -> dict[int, tuple[int, int, int, int]]:
    return {i: tuple(int(c) for c in rgba) for i, rgba in enumerate(palette)}


def write_cog_array(classes, crs, transform, palette, output: str | os.PathLike) -> None:
    """An in-memory (GDAL MEM) dataset of the class ids + colour table, copied into a COG."""
    import rasterio
    import rasterio.shutil

    height, width = classes.shape
    profile = {"driver": "MEM", "width": width, "height": height, "count": 1, "dtype": "uint8",
               "crs": crs, "transform": transform, "nodata": NODATA}
    with rasterio.open("/vsimem/bench_rows_classes", "w", **profile) as mem:
        mem.write(classes, 1)
        mem.write_colormap(1, colormap(palette))
        rasterio.shutil.copy(mem, str(output), driver="COG", **COG_OPTIONS)


def lut_from_edges(edges, size: int):
    """Value -> class id for every value 0..size-1 under numpy.histogram's rule (0 -> nodata)."""
    import numpy as np

    n = len(edges) - 1
    values = np.arange(size)
    cls = np.searchsorted(edges, values, side="right")  # edges[k-1] <= v < edges[k] -> k
    cls[values == edges[-1]] = n  # the last bin is closed
    cls[cls > n] = 0  # above the last edge
    lut = cls.astype(np.uint8)
    lut[NODATA] = 0
    return lut


def is_float(dtype) -> bool:
    import numpy as np

    return np.dtype(dtype).kind == "f"


def valid_of(block):
    """The valid pixels of a block: not 0 (integers: the fill), not NaN (floats: the fill)."""
    import numpy as np

    return block[~np.isnan(block)] if is_float(block.dtype) else block[block != NODATA]


def _pad(edges: list[float], n: int):
    """N+1 edges from fewer (fewer distinct values than classes): repeat the last edge."""
    import numpy as np

    return np.asarray(edges[:-1] + [edges[-1]] * (n + 2 - len(edges)), dtype=np.float64)


def scheme_edges(strips, dtype, scheme: str, count: int, size_hint: int | None = None):
    """The N+1 class edges of ``scheme`` over the valid pixels of ``strips()`` (a callable giving
    an iterator of pixel blocks; called once or twice), with sceneclass's documented semantics:

    * ``equal_interval``: ``numpy.histogram_bin_edges([min, max], bins=N)`` in the data's dtype;
    * ``quantile``: ``numpy.quantile(valid, linspace(0, 1, N + 1))`` (the valid pixels gathered);
    * ``natural_breaks``: Fisher-Jenks (``pipeline.jenks.fisher_jenks``) on the exact value
      counts (8/16-bit) or on a 65,536-bin ``numpy.histogram`` over [min, max] (floats), each bin
      represented by the mean of its values; inner edges are the first value (bin edge) of a class.

    ``size_hint`` (at least the number of pixels) lets quantile gather the valid pixels into one
    buffer (no per-strip copies, no concatenation; ``numpy.quantile`` then works in place).
    """
    import numpy as np

    dtype = np.dtype(dtype)
    integer = not is_float(dtype)
    n_valid, lo, hi, gathered, counts = 0, None, None, [], None
    buf = np.empty(size_hint, dtype) if scheme == "quantile" and size_hint and is_float(dtype) else None
    if integer:
        counts = np.zeros(np.iinfo(dtype).max + 1, np.int64)
    for block in strips():
        if integer:
            counts += np.bincount(block.reshape(-1), minlength=counts.size)
            continue
        v = valid_of(block)
        if v.size:
            n_valid += v.size
            lo = v.min() if lo is None else min(lo, v.min())
            hi = v.max() if hi is None else max(hi, v.max())
            if buf is not None:
                buf[n_valid - v.size:n_valid] = v
            elif scheme == "quantile":
                gathered.append(v)
    if integer:
        counts[NODATA] = 0
        present = np.flatnonzero(counts)
        n_valid = int(counts.sum())
        if present.size:
            lo, hi = dtype.type(present[0]), dtype.type(present[-1])
    if n_valid == 0:
        return np.histogram_bin_edges(np.empty(0, dtype), bins=count)
    if scheme == "equal_interval":
        return np.histogram_bin_edges(np.array([lo, hi], dtype), bins=count)
    q = np.linspace(0, 1, count + 1)
    if scheme == "quantile":
        if integer:
            valid = np.repeat(present.astype(dtype), counts[present])
        elif buf is not None:
            valid = buf[:n_valid]
        else:
            valid = np.concatenate(gathered) if len(gathered) > 1 else gathered[0].copy()
            gathered.clear()
        return np.quantile(valid, q, overwrite_input=True)  # same result, no copy
    if scheme != "natural_breaks":
        raise ValueError(f"unknown scheme {scheme!r}")
    from pipeline.jenks import fisher_jenks

    if integer:
        x = lower = present.astype(np.float64)
        w = counts[present]
    else:
        bins = 65536
        edges = np.linspace(float(lo), float(hi), bins + 1)
        w = np.zeros(bins, np.int64)
        sums = np.zeros(bins)
        for block in strips():  # numpy.histogram's bins: [e_i, e_i+1), the last one closed
            v = valid_of(block).astype(np.float64)
            idx = np.searchsorted(edges, v, side="right") - 1
            idx[idx == bins] = bins - 1  # v == max
            w += np.bincount(idx, minlength=bins)
            sums += np.bincount(idx, weights=v, minlength=bins)
        keep = w > 0
        w = w[keep]
        x = sums[keep] / w
        lower = edges[:-1][keep]
    starts, _ = fisher_jenks(x, w, count)
    return _pad([float(lo), *(float(v) for v in lower[starts[1:]]), float(hi)], count)


def classify_block(block, edges, lut=None):
    """Class ids (uint8) of one block: ``edges[k-1] <= x < edges[k]`` -> k, the last class
    closed, nodata (0 / NaN) and out-of-range values -> 0."""
    import numpy as np

    if lut is not None:
        return lut[block]
    n = len(edges) - 1
    cls = np.searchsorted(edges, block, side="right")
    cls[block == edges[-1]] = n
    cls[cls > n] = 0  # above the last edge, and NaN (sorted last)
    return cls.astype(np.uint8)


def numpy_classes(path: str, ph: Phases | None = None, scheme: str = "equal_interval", count: int = N_CLASSES):
    """The numpy row's computation, in memory: (class ids, crs, transform, edges)."""
    import numpy as np
    import rasterio

    ph and ph.mark("import")
    with rasterio.open(path) as src:
        crs, transform = src.crs, src.transform
        arr = src.read(1)
    if arr.dtype not in (np.uint8, np.uint16, np.float32, np.float64):
        raise SystemExit(f"{path}: the numpy row handles uint8/uint16/float32/float64 input, got {arr.dtype}")
    ph and ph.mark("read")
    step = max(1, (1 << 22) // max(arr.shape[1], 1))  # ~4 Mpixel blocks: bounded temporaries

    def strips(a=arr):
        return (a[r:r + step] for r in range(0, a.shape[0], step))

    edges = scheme_edges(strips, arr.dtype, scheme, count, arr.size)
    lut = None if is_float(arr.dtype) else lut_from_edges(edges, np.iinfo(arr.dtype).max + 1)
    ph and ph.mark("stats")
    classes = np.empty(arr.shape, np.uint8)
    for r in range(0, arr.shape[0], step):
        classes[r:r + step] = classify_block(arr[r:r + step], edges, lut)
    del arr
    ph and ph.mark("classify")
    return classes, crs, transform, edges


# ------------------------------------------------------------------------------- the rows
def row_read(inp: str, out: str, ph: Phases) -> int:
    import rasterio

    ph.mark("import")
    pixels = 0
    with rasterio.open(inp) as src:
        for _, window in src.block_windows(1):
            pixels += src.read(1, window=window).size
    ph.extra["pixels"] = pixels
    ph.mark("read")
    return 0


def row_copy(inp: str, out: str, ph: Phases) -> int:
    import rasterio
    import rasterio.shutil

    ph.mark("import")
    rasterio.shutil.copy(inp, out, driver="COG", **COG_OPTIONS)
    ph.mark("write")
    return 0


def row_recipe(inp: str, out: str, ph: Phases) -> int:
    """The blog recipe, as written (fixed only where it crashes)."""
    import numpy as np
    import rasterio

    ph.mark("import")
    with rasterio.open(inp) as src:
        band = src.read(1)
        crs, transform = src.crs, src.transform
    ph.mark("read")

    valid = band[band != 0]
    hist, bin_edges = np.histogram(valid, bins=20)
    ph.mark("stats")

    colors = [(0, 0, 255), (0, 128, 255), (0, 255, 255), (0, 255, 0),
              (255, 255, 0), (255, 128, 0), (255, 0, 0), (128, 0, 0)]
    rgb = np.zeros((band.shape[0], band.shape[1], 3), dtype=np.uint8)
    classes = np.zeros(band.shape, dtype=np.uint8)
    for i in range(len(hist)):
        if i == len(hist) - 1:
            mask = (band >= bin_edges[i]) & (band <= bin_edges[i + 1])
        else:
            mask = (band >= bin_edges[i]) & (band < bin_edges[i + 1])
        rgb[mask] = colors[i % len(colors)]  # as written: colors[i] -> IndexError at i == 8
        classes[mask] = i + 1
    ph.mark("classify")

    palette = [(0, 0, 0, 0)] + [colors[i % len(colors)] + (255,) for i in range(len(hist))]
    write_cog_array(classes, crs, transform, palette, out)
    ph.mark("write")
    return 0


def row_numpy(inp: str, out: str, ph: Phases, scheme: str = "equal_interval", count: int = N_CLASSES) -> int:
    classes, crs, transform, _ = numpy_classes(inp, ph, scheme, count)
    write_cog_array(classes, crs, transform, palette_rgba(count), out)
    ph.mark("write")
    return 0


def row_xarray_spatial(inp: str, out: str, ph: Phases, scheme: str = "equal_interval", count: int = N_CLASSES) -> int:
    try:
        from xrspatial import classify as xrs_classify
    except ImportError as e:
        print(f"xarray-spatial is not installed ({e}); pip install -e '.[bench]'", file=sys.stderr)
        print("BENCH_ROW " + json.dumps({"row": "xarray-spatial", "status": "not installed"}), flush=True)
        return EXIT_NOT_INSTALLED
    import threading

    import rasterio
    import rasterio.shutil
    import rioxarray

    ph.mark("import")
    agg = rioxarray.open_rasterio(inp, chunks={"band": 1, "y": CHUNK, "x": CHUNK}).squeeze("band", drop=True)
    agg = agg.where(agg != NODATA)  # nodata -> NaN (float32); the float32 form's NaN stays NaN
    # equal_interval runs its min/max pass eagerly (+ numba JIT); natural_breaks fits on a sample
    classified = getattr(xrs_classify, scheme)(agg, k=count)
    ph.mark(scheme)
    ids = (classified + 1).fillna(0).astype("uint8")  # 0 = nodata, 1..N = classes
    ids = ids.rio.write_nodata(NODATA)
    outp = Path(out)
    staging = outp.with_name(f".{outp.name}.xrs-staging.tif")
    try:
        ids.rio.to_raster(staging, dtype="uint8", tiled=True, blockxsize=512, blockysize=512,
                          lock=threading.Lock())
        ph.mark("classify+stage")
        with rasterio.open(staging, "r+") as dst:  # rioxarray cannot write a colour map (#706)
            dst.write_colormap(1, colormap(palette_rgba(count)))
        rasterio.shutil.copy(staging, out, driver="COG", **COG_OPTIONS)
    finally:
        staging.unlink(missing_ok=True)
    ph.mark("write")
    return 0


def row_floor(inp: str, out: str, ph: Phases) -> int:
    """The physical floor of sceneclass: decode the input scene once and write the output with
    sceneclass's writer, fed with precomputed classes (``inp`` is the reference classes GeoTIFF;
    its BENCH_SOURCE tag names the scene). No statistics, no classification."""
    from pipeline._engine.deferred import hide

    hide()  # as the CLI does: dask.array would import xarray and scipy, which no write uses
    import dask.array as da
    import rasterio

    from pipeline.jobs.config import Output, Palette, RunConfig
    from pipeline.scene import open_scene
    from pipeline.palette import build_palette
    from pipeline.jobs.run import runtime
    from pipeline.writers.cog import write_cog

    with rasterio.open(inp) as src:
        source = src.tags().get("BENCH_SOURCE")
    ph.mark("import")
    cfg = RunConfig(input=str(inp), nodata=NODATA, output=Output(path=str(out)))
    with runtime(cfg):
        classes = open_scene(cfg.input, cfg.band, cfg.nodata, cfg.processing.chunk, cfg.output.blocksize)
        pixels = classes.array
        if source:  # decode the scene chunk by chunk alongside (values discarded)
            scene = open_scene(source, 1, NODATA, cfg.processing.chunk, cfg.output.blocksize)
            pixels = da.map_blocks(_first, pixels, scene.array, dtype=pixels.dtype)
        palette = build_palette(Palette(), N_CLASSES)
        ph.mark("open")
        write_cog(pixels, classes, palette, cfg.output, Path(out), count=False)  # no statistics
    ph.mark("write")
    return 0


def _first(classes, decoded):
    return classes


def sceneclass_config(inp: str, out: str, scheme: str = "equal_interval", count: int = N_CLASSES,
                      kind: str = "cog") -> dict:
    """The config of a sceneclass row: ``kind`` is ``cog`` (paletted), ``rgb`` (an RGB COG) or
    ``zarr`` (OUTPUT's name decides the format: ``.tif`` or ``.zarr``). Integer input: 0 is
    nodata; float input: NaN (always nodata for floats)."""
    config = {"input": str(Path(inp).absolute())}
    if not _is_float_file(inp):
        config["nodata"] = NODATA
    config["classes"] = {"scheme": scheme, "count": count}
    config["output"] = {"path": str(Path(out).absolute())}
    if kind == "rgb":
        config["output"]["mode"] = "rgb"
    return config


def _is_float_file(path: str) -> bool:
    import rasterio

    with rasterio.open(path) as src:
        return is_float(src.dtypes[0])


def sceneclass_command(inp: str, out: str, scheme: str = "equal_interval", count: int = N_CLASSES,
                       kind: str = "cog") -> list[str]:
    """Write the sceneclass config for this row beside OUTPUT and return the CLI's argv."""
    outp = Path(out).absolute()
    cfg_path = outp.with_name(outp.stem + ".sceneclass.yaml")
    config = sceneclass_config(inp, out, scheme, count, kind)
    outp.parent.mkdir(parents=True, exist_ok=True)
    cfg_path.write_text(json.dumps(config, indent=2) + "\n")  # JSON is YAML
    exe = Path(sys.executable).parent / "sceneclass"
    if exe.exists():
        head = [str(exe)]
    elif shutil.which("sceneclass"):
        head = [shutil.which("sceneclass")]
    else:
        head = [sys.executable, "-m", "pipeline"]
    return head + ["run", str(cfg_path), "--no-progress"]


def helper_reference(inp: str, out: str, ph: Phases, scheme: str = "equal_interval", count: int = N_CLASSES) -> int:
    """The numpy row's classes as an uncompressed tiled GeoTIFF (floor input, check reference),
    computed strip by strip (memory: a strip, plus the valid pixels for ``quantile``), so that
    it also serves scenes the in-memory numpy row cannot hold."""
    import numpy as np
    import rasterio
    from rasterio.windows import Window

    with rasterio.open(inp) as src:
        crs, transform, dtype = src.crs, src.transform, np.dtype(src.dtypes[0])
        height, width = src.height, src.width
        step = max(512, ((1 << 24) // max(width, 1)) // 512 * 512)  # ~16 Mpixel strips

        def strips():
            for r in range(0, height, step):
                yield src.read(1, window=Window(0, r, width, min(step, height - r)))

        edges = scheme_edges(strips, dtype, scheme, count, height * width)
        ph.mark("stats")
        lut = None if is_float(dtype) else lut_from_edges(edges, np.iinfo(dtype).max + 1)
        profile = {"driver": "GTiff", "width": width, "height": height, "count": 1, "dtype": "uint8",
                   "crs": crs, "transform": transform, "nodata": NODATA, "tiled": True,
                   "blockxsize": 512, "blockysize": 512, "compress": "none", "bigtiff": "IF_SAFER"}
        outp = Path(out)
        tmp = outp.with_name(f".{outp.name}.partial")
        with rasterio.open(tmp, "w", **profile) as dst:
            for r in range(0, height, step):
                w = Window(0, r, width, min(step, height - r))
                dst.write(classify_block(src.read(1, window=w), edges, lut), 1, window=w)
            dst.write_colormap(1, colormap(palette_rgba(count)))
            dst.update_tags(BENCH_EDGES=json.dumps([float(e) for e in edges]),
                            BENCH_SOURCE=str(Path(inp).absolute()), BENCH_SCHEME=scheme)
    os.replace(tmp, outp)
    ph.extra["edges"] = [float(e) for e in edges]
    ph.mark("write")
    return 0


RUNNERS = {
    "read": row_read,
    "copy": row_copy,
    "recipe": row_recipe,
    "numpy": row_numpy,
    "xarray-spatial": row_xarray_spatial,
    "floor": row_floor,
    "reference": helper_reference,
}


def run_row(row: str, inp: str, out: str, scheme: str = "equal_interval", count: int = N_CLASSES) -> int:
    """Run one row in this process (the sceneclass row is a separate CLI: see ``sceneclass_command``).
    ``scheme``/``count`` apply to the rows that classify by a scheme (SCHEME_ROWS)."""
    if row not in RUNNERS:
        raise ValueError(f"unknown row {row!r}; rows: {', '.join(ROWS + HELPERS)}")
    ph = Phases(row)
    extra = (scheme, count) if row in SCHEME_ROWS else ()
    if not extra and (scheme, count) != ("equal_interval", N_CLASSES):
        raise ValueError(f"row {row!r} only does equal_interval with {N_CLASSES} classes")
    rc = RUNNERS[row](str(inp), str(out), ph, *extra)
    if rc == 0:
        ph.report()
    return rc


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) not in (3, 5, 6) or argv[0] not in ROWS + HELPERS:
        print(f"usage: bench_rows.py ROW INPUT OUTPUT [SCHEME COUNT [KIND]]   (ROW: {' | '.join(ROWS + HELPERS)}; "
              f"SCHEME: {' | '.join(SCHEMES)}; KIND (sceneclass): {' | '.join(OUTPUT_KINDS)})", file=sys.stderr)
        return 2
    row, inp, out = argv[:3]
    scheme, count = (argv[3], int(argv[4])) if len(argv) >= 5 else ("equal_interval", N_CLASSES)
    kind = argv[5] if len(argv) == 6 else "cog"
    if not os.path.exists(inp):
        print(f"bench_rows.py: {inp}: input not found", file=sys.stderr)
        return 1
    if row != "read":
        Path(out).absolute().parent.mkdir(parents=True, exist_ok=True)
    if row == "sceneclass":
        cmd = sceneclass_command(inp, out, scheme, count, kind)
        sys.stdout.flush()
        os.execv(cmd[0], cmd)  # the measured process becomes the CLI itself
    return run_row(row, inp, out, scheme, count)


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # every row leaves without the interpreter's teardown, as the sceneclass CLI does
