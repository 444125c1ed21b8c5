"""How many passes over the data the library makes, and that the lazy graphs compute the right thing.

Counted with ``ComputeCounter`` (a dask callback: ``dask.compute`` calls) and by the windows
actually read from disk (``pipeline.scene.read_window``), with and without low-level task fusion.
"""

from __future__ import annotations

import os
import threading
from collections import Counter

import dask
import dask.array as da
import numpy as np
import pytest
import rasterio
import pipeline.scene
from affine import Affine
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from pipeline.core import class_counts, classify, colorize, counts_from_hist, fit
from pipeline.jobs.config import EqualInterval, Manual, Quantile, build_config
from pipeline.scene import Scene, open_scene
from pipeline.jobs.progress import ComputeCounter
from pipeline.jobs.run import run

from conftest import B2, B10, LE07, RGBN, data_path

# name -> (file, band, nodata setting, chunk): chunk sizes chosen so the chunks do not divide the scene
SCENES = {
    "B10-float32": (B10, 1, "file", 300),
    "B2-uint16": (B2, 1, 0.0, 1000),
    "LE07-float64": (LE07, 1, "file", 100),
    "RGBN-uint8": (RGBN, 2, "file", 100),
}

EI = EqualInterval(count=20)
Q10 = Quantile(scheme="quantile", count=10)


def _open(scene_id: str) -> Scene:
    name, band, nodata, chunk = SCENES[scene_id]
    return open_scene(str(data_path(name)), band, nodata, chunk)


@pytest.fixture
def window_reads(monkeypatch):
    """Counts the windows actually read from disk (fused tasks or not)."""
    seen: Counter = Counter()
    lock = threading.Lock()
    orig = pipeline.scene.read_window

    def counting(path, band, block_info=None, out=None, **kwargs):
        out = orig(path, band, block_info=block_info, out=out, **kwargs)
        window = tuple(tuple(r) for r in block_info[None]["array-location"])
        with lock:
            seen[window] += 1
        return out

    monkeypatch.setattr(pipeline.scene, "read_window", counting)
    return seen


def _assert_tiles_scene(reads: Counter, shape: tuple[int, int]) -> None:
    """The windows read cover the scene exactly once (disjoint, complete)."""
    cover = np.zeros(shape, np.int64)
    for (y, x) in reads:
        cover[y[0]:y[1], x[0]:x[1]] += 1
    assert (cover == 1).all(), "the windows read overlap or miss pixels"


def _memory_files() -> list[str]:
    """This process's open memory files holding decoded chunks (memfd names, Linux)."""

    if not os.path.isdir("/proc/self/fd"):
        return []
    links = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            links.append(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:  # closed meanwhile (the listing's own descriptor)
            pass
    return [link for link in links if link.startswith("/memfd:sceneclass-decoded")]


def _unfused():
    return dask.config.set({"optimization.fuse.active": False})


# ------------------------------------------------------------------------- graph building is lazy
@pytest.mark.parametrize("scene_id", list(SCENES))
def test_building_graphs_computes_nothing(scene_id, window_reads):
    with ComputeCounter() as c:
        scene = _open(scene_id)
    assert c.computes == 0 and sum(c.tasks.values()) == 0
    assert sum(window_reads.values()) == 0, "open_scene read pixels"
    assert isinstance(scene.array, da.Array)
    assert scene.array.npartitions > 1

    fitted = fit(scene, EI)
    window_reads.clear()
    palette = np.arange(21 * 4, dtype=np.uint8).reshape(21, 4)
    with ComputeCounter() as c:
        classes = classify(scene, fitted)
        rgb = colorize(classes, palette, 3)
        rgba = colorize(classes, palette, 4)
        counts = class_counts(classes, fitted.n_classes)
    assert c.computes == 0 and sum(c.tasks.values()) == 0
    assert sum(window_reads.values()) == 0, "building the classify graph read pixels"
    for arr in (classes, rgb, rgba, counts):
        assert isinstance(arr, da.Array)
    assert classes.dtype == np.uint8 and classes.chunks == scene.array.chunks
    assert rgb.shape == (3, *scene.shape) and rgba.shape == (4, *scene.shape)


# ------------------------------------------------------------------------------ the statistics pass
@pytest.mark.parametrize(
    "scene_id,cfg,computes",
    [
        ("B10-float32", EI, 1),
        ("B2-uint16", EI, 1),
        ("LE07-float64", EI, 1),
        ("RGBN-uint8", EI, 1),
        ("B2-uint16", Q10, 1),
        ("RGBN-uint8", Q10, 1),
        # radix refinement: one extra pass per 16 key bits below the top 16
        ("B10-float32", Q10, 2),
        ("LE07-float64", Q10, 4),
    ],
    ids=lambda v: getattr(v, "scheme", v),
)
def test_fit_passes(scene_id, cfg, computes, window_reads):
    scene = _open(scene_id)
    n_chunks = scene.array.npartitions
    window_reads.clear()
    with _unfused(), ComputeCounter() as c:
        unfused = fit(scene, cfg)
    assert c.computes == computes
    assert sum(window_reads.values()) == computes * n_chunks

    window_reads.clear()
    with ComputeCounter() as c:
        fused = fit(scene, cfg)
    assert c.computes == computes
    assert sum(window_reads.values()) == computes * n_chunks
    assert len(window_reads) == n_chunks  # every chunk read, each the same number of times
    _assert_tiles_scene(window_reads, scene.shape)
    assert set(window_reads.values()) == {computes}
    np.testing.assert_array_equal(fused.edges, unfused.edges)


def test_quantile_float32_costs_exactly_two_computes():
    scene = _open("B10-float32")
    with ComputeCounter() as c:
        fitted = fit(scene, Q10)
    assert c.computes == 2
    assert fitted.passes.extra_passes == 1


@pytest.mark.parametrize(
    "scene_id,cfg,computes,reuse,decodes",
    [("B2-uint16", EI, 2, "auto", 1), ("B2-uint16", Q10, 2, "auto", 1), ("RGBN-uint8", EI, 2, "auto", 1),
     ("B2-uint16", EI, 2, "never", 2), ("B10-float32", EI, 2, "auto", 2), ("B10-float32", Q10, 3, "auto", 3),
     ("B10-float32", Q10, 3, "always", 1)],
    ids=lambda v: getattr(v, "scheme", v),
)
def test_run_computes(tmp_path, scene_id, cfg, computes, reuse, decodes, window_reads):
    """A whole run: one statistics pass (plus refinement for float quantiles) and one write pass.

    The input is decoded ``decodes`` times per chunk: once when the decoded chunks are kept
    between passes (``auto`` keeps them for compressed inputs, like B2 and RGBN; B10 is
    uncompressed), else once per pass."""
    name, band, nodata, chunk = SCENES[scene_id]
    scene = _open(scene_id)
    config = build_config(
        {"input": str(data_path(name)), "band": band, "nodata": nodata,
         "classes": cfg.model_dump(), "output": {"path": str(tmp_path / "out.tif")},
         "processing": {"chunk": chunk, "reuse_decoded": reuse}},
        base_dir=tmp_path, source="test",
    )
    window_reads.clear()
    with ComputeCounter() as c:
        run(config)
    assert c.computes == computes, c.phases
    assert c.phases == ["statistics"] * (computes - 1) + ["classify+write"]
    _assert_tiles_scene(window_reads, scene.shape)
    assert set(window_reads.values()) == {decodes}, "a chunk was decoded more often than expected"
    assert not [p for p in tmp_path.iterdir() if "sceneclass-partial" in p.name], "decoded chunks left behind"
    assert not _memory_files(), "decoded chunks left open in memory"


# ------------------------------------------------------------ dask results equal numpy (real data)
def _ref_classes(arr: np.ndarray, ok: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Class ids by numpy.digitize (left-closed bins), last class closed, out of range and invalid 0."""
    n = len(edges) - 1
    dt = np.result_type(arr.dtype, edges.dtype)
    a, e = arr.astype(dt), edges.astype(dt)
    k = np.digitize(a, e, right=False)
    k[a == e[-1]] = n
    k[(k < 1) | (k > n) | ~ok] = 0
    return k.astype(np.uint8)


def _valid(arr: np.ndarray, nodata) -> np.ndarray:
    ok = np.isfinite(arr) if arr.dtype.kind == "f" else np.ones(arr.shape, bool)
    if nodata is not None:
        ok &= arr != nodata
    return ok


@pytest.mark.parametrize("scene_id", list(SCENES))
@pytest.mark.parametrize("cfg", [EI, Q10, "manual"], ids=["ei", "q", "manual"])
def test_classify_on_uneven_chunks_equals_numpy(scene_id, cfg):
    scene = _open(scene_id)
    chunks = scene.array.chunks
    assert any(len(set(c)) > 1 for c in chunks), f"chunks {chunks} are even"
    name, band, nodata, _ = SCENES[scene_id]
    with rasterio.open(data_path(name)) as src:
        arr = src.read(band)
    ok = _valid(arr, scene.nodata)
    valid = arr[ok]
    if cfg == "manual":
        lo, hi = np.quantile(valid, [0.1, 0.9])
        cfg = Manual(scheme="manual", breaks=list(np.linspace(lo, hi, 6)))
        edges = np.asarray(cfg.breaks)
    elif cfg.scheme == "quantile":
        edges = np.quantile(valid, np.linspace(0, 1, cfg.count + 1))
    else:
        edges = np.histogram(valid, bins=cfg.count)[1]
    fitted = fit(scene, cfg)
    np.testing.assert_array_equal(fitted.edges, edges)
    assert fitted.edges.dtype == edges.dtype
    ref = _ref_classes(arr, ok, edges)

    classes = classify(scene, fitted)
    palette = np.random.default_rng(0).integers(0, 256, (fitted.n_classes + 1, 4), dtype=np.uint8)
    got, rgba, counts = dask.compute(classes, colorize(classes, palette, 4), class_counts(classes, fitted.n_classes))
    np.testing.assert_array_equal(got, ref)
    np.testing.assert_array_equal(rgba, np.moveaxis(palette[ref], -1, 0))
    np.testing.assert_array_equal(counts, np.bincount(ref.ravel(), minlength=fitted.n_classes + 1))


# ------------------------------------------------- dask results equal numpy (synthetic, every dtype)
def _chunking(draw, size: int) -> tuple[int, ...]:
    cuts = draw(st.lists(st.integers(1, max(size - 1, 1)), max_size=4, unique=True)) if size > 1 else []
    edges = [0, *sorted(c for c in cuts if 0 < c < size), size]
    return tuple(b - a for a, b in zip(edges, edges[1:]))


_INT_RANGES = {  # signed ranges kept to half the span: numpy.quantile's own b - a overflows beyond
    "uint8": (0, 255), "int8": (-60, 60), "uint16": (0, 65535), "int16": (-16000, 16000),
    "uint32": (0, 2**32 - 1), "int32": (-2**30, 2**30),
}


@st.composite
def scenes(draw):
    dtype = np.dtype(draw(st.sampled_from([*_INT_RANGES, "float32", "float64"])))
    shape = (draw(st.integers(1, 24)), draw(st.integers(1, 24)))
    if dtype.kind == "f":
        finite = st.floats(-1e6, 1e6, width=dtype.itemsize * 8)
        special = st.sampled_from([np.nan, np.inf, -np.inf, -0.0, 0.0])
        elements = st.one_of(finite, special)
        # a small pool of values, so that ties (and values equal to edges) are common
        pool = draw(st.lists(finite, min_size=1, max_size=6))
        elements = st.one_of(elements, st.sampled_from(pool))
    else:
        lo, hi = _INT_RANGES[dtype.name]
        pool = draw(st.lists(st.integers(lo, hi), min_size=1, max_size=6))
        elements = st.one_of(st.integers(lo, hi), st.sampled_from(pool))
    arr = draw(hnp.arrays(dtype, shape, elements=elements))
    nodata = draw(st.one_of(st.none(), st.sampled_from(arr.ravel().tolist())))
    if nodata is not None and isinstance(nodata, float) and not np.isfinite(nodata):
        nodata = None
    chunks = (_chunking(draw, shape[0]), _chunking(draw, shape[1]))
    return arr, nodata, chunks


def _mem_scene(arr: np.ndarray, nodata, chunks) -> Scene:
    return Scene(path="memory", band=1, array=da.from_array(arr, chunks=chunks), nodata=None if nodata is None else float(nodata),
                 crs=None, transform=Affine.identity())


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenes(), st.sampled_from(["equal_interval", "quantile"]), st.integers(1, 12))
def test_classify_any_dtype_equals_numpy(case, scheme, n):
    arr, nodata, chunks = case
    ok = _valid(arr, nodata)
    valid = arr[ok]
    assume(valid.size > 0)
    if scheme == "equal_interval":
        cfg = EqualInterval(count=n)
        ref_counts, edges = np.histogram(valid, bins=n)
    else:
        cfg = Quantile(scheme="quantile", count=n)
        edges = np.quantile(valid, np.linspace(0, 1, n + 1))
        ref_counts = np.histogram(valid, bins=edges)[0]
    scene = _mem_scene(arr, nodata, chunks)
    fitted = fit(scene, cfg)
    assert fitted.edges.dtype == edges.dtype
    np.testing.assert_array_equal(fitted.edges, edges)
    ref = _ref_classes(arr, ok, edges)
    np.testing.assert_array_equal(np.bincount(ref[ok], minlength=n + 1)[1:], ref_counts)
    got = classify(scene, fitted).compute()
    np.testing.assert_array_equal(got, ref)
    known = counts_from_hist(scene, fitted)  # the legend's counts, without a pass (8/16-bit)
    if known is not None:
        np.testing.assert_array_equal(known, np.bincount(ref.ravel(), minlength=256))


@pytest.mark.parametrize("store", ["mapped", "pwrite", "memory"])
@pytest.mark.parametrize("scene_id,cfg", [("B2-uint16", Q10), ("B10-float32", Q10), ("LE07-float64", EI)],
                         ids=lambda v: getattr(v, "scheme", v))
def test_kept_decoded_chunks_change_nothing(tmp_path, monkeypatch, scene_id, cfg, store):
    """Reading the kept decoded chunks gives the same classes and legend as decoding twice,
    whether the chunks were kept on disk, copied through a memory map of the file (where its
    blocks can be reserved) or written with pwrite (where they cannot), or in a memory file."""
    import json

    import rasterio

    import pipeline._engine.decoded

    if store == "memory":
        if not hasattr(os, "memfd_create"):
            pytest.skip("no memory files on this system")
    elif store == "pwrite":
        monkeypatch.setattr(pipeline._engine.decoded, "reserve", lambda fd, nbytes: False)
    else:
        with open(tmp_path / "probe", "wb") as f:
            if not pipeline._engine.decoded.reserve(f.fileno(), 4096):
                pytest.skip(f"{tmp_path}: this file system cannot reserve blocks")

    name, band, nodata, chunk = SCENES[scene_id]
    outs = {}
    for reuse in ("never", "always"):
        out = tmp_path / reuse / "out.tif"
        run(build_config(
            {"input": str(data_path(name)), "band": band, "nodata": nodata, "classes": cfg.model_dump(),
             "output": {"path": str(out)}, "processing": {
                 "chunk": chunk, "reuse_decoded": reuse, "keep_decoded_in": "memory" if store == "memory" else "disk"}},
            base_dir=tmp_path, source="test"))
        with rasterio.open(out) as src:
            legend = json.loads(out.with_name("out.legend.json").read_text())
            outs[reuse] = (src.read(1), legend["edges"], [c["count"] for c in legend["classes"]])
    np.testing.assert_array_equal(outs["never"][0], outs["always"][0])
    assert outs["never"][1:] == outs["always"][1:]


@pytest.mark.parametrize("dtype", ["uint16", "int16"])
@pytest.mark.parametrize("store", ["mapped", "pwrite", "memory"])
def test_decoded_chunks_round_trip_with_uniform_chunks(tmp_path, monkeypatch, store, dtype):
    """Stored chunks come back byte for byte; uniform chunks (fill, a constant) are not written
    but come back from the layout; the histogram the store tasks count is numpy's; uneven
    chunks, odd byte sizes (page-aligned offsets), chunks of several mapped pieces."""
    import pipeline._engine.decoded
    from pipeline._engine.decoded import DecodedChunks
    from pipeline.stats import hist_keys

    if store == "pwrite":
        monkeypatch.setattr(pipeline._engine.decoded, "reserve", lambda fd, nbytes: False)
    info = np.iinfo(dtype)
    rng = np.random.default_rng(3)
    arr = rng.integers(info.min, info.max, (1601, 1557), endpoint=True).astype(dtype)
    arr[:800, :800] = 0  # one whole chunk of fill
    arr[800:, 800:] = info.max  # one whole chunk of saturation
    scene = _mem_scene(arr, 0, ((800, 801), (800, 757)))
    if store == "memory" and not hasattr(os, "memfd_create"):
        pytest.skip("no memory files on this system")
    keep = DecodedChunks(scene, tmp_path / "x.decoded", memory=store == "memory")
    layout = keep.store(hist=True)
    with ComputeCounter() as c:
        keep.layout, hist = dask.compute(layout, keep.histogram(layout))
    assert c.computes == 1
    if store != "mapped":
        assert not keep.mapped
    assert len(_memory_files()) == (store == "memory")
    np.testing.assert_array_equal(hist, np.bincount(hist_keys(arr.ravel()), minlength=65536))
    assert 800 * 800 * 2 > pipeline._engine.decoded.MAP_PIECE
    assert keep.layout[..., 0].tolist() == [[0, 1], [1, 0]]
    assert keep.layout[1, 1, 1] == info.max
    assert keep.kept_bytes() == (800 * 757 + 801 * 800) * 2
    if store == "memory":  # the memory file holds the stored chunks' pages, nothing for uniform ones
        import mmap

        pages = sum(-(-n * 2 // mmap.PAGESIZE) * mmap.PAGESIZE for n in (800 * 757, 801 * 800))
        pages += -(-4 * 65536 * 4 // mmap.PAGESIZE) * mmap.PAGESIZE  # the four chunks' histograms
        fd = os.open(keep.path, os.O_RDONLY)
        try:
            assert os.fstat(fd).st_blocks * 512 == pages
        finally:
            os.close(fd)
    np.testing.assert_array_equal(keep.reader().array.compute(), arr)
    keep.remove()
    assert not keep.path.exists()
    assert not _memory_files()
    if store == "memory":
        assert not list(tmp_path.iterdir()), "a memory store wrote to the folder"


@pytest.mark.parametrize("store", ["mapped", "memory"])
def test_store_tasks_read_a_file_scene_themselves(tmp_path, store, window_reads):
    """A scene read from a file, 8/16-bit: the store tasks read each chunk once themselves (into
    a reused buffer); the kept chunks and the summed histogram equal the file's pixels, on
    chunks that do not divide the scene."""
    from pipeline._engine.decoded import DecodedChunks
    from pipeline.scene import file_backed

    if store == "memory" and not hasattr(os, "memfd_create"):
        pytest.skip("no memory files on this system")
    name, band, nodata, chunk = SCENES["B2-uint16"]
    scene = _open("B2-uint16")
    assert file_backed(scene) and any(c[-1] != c[0] for c in scene.array.chunks)
    keep = DecodedChunks(scene, tmp_path / "x.decoded", memory=store == "memory")
    layout = keep.store(hist=True)
    with ComputeCounter() as c:
        keep.layout, hist = dask.compute(layout, keep.histogram(layout))
    assert c.computes == 1
    _assert_tiles_scene(window_reads, scene.shape)
    assert set(window_reads.values()) == {1}
    with rasterio.open(data_path(name)) as src:
        arr = src.read(band)
    np.testing.assert_array_equal(hist, np.bincount(arr.ravel(), minlength=65536))
    np.testing.assert_array_equal(keep.reader().array.compute(), arr)
    keep.remove()


def test_decoded_chunks_keep_signed_zeros(tmp_path):
    """A float chunk of +0.0 and -0.0 is not uniform (the values compare equal, the bits do not):
    it is stored and comes back bit for bit."""
    from pipeline._engine.decoded import DecodedChunks

    arr = np.zeros((64, 48), np.float32)
    arr[::3, ::5] = -0.0
    arr[40:, :] = 7.5  # a second chunk row: uniform, not stored
    scene = _mem_scene(arr, None, ((40, 24), (48,)))
    keep = DecodedChunks(scene, tmp_path / "x.decoded")
    (keep.layout,) = dask.compute(keep.store())
    assert keep.layout[..., 0].tolist() == [[1], [0]]
    back = keep.reader().array.compute()
    np.testing.assert_array_equal(back.view(np.uint32), arr.view(np.uint32))
    keep.remove()


# ------------------------------------------------------------- where the decoded chunks are kept
def test_memory_available_is_a_share_of_this_machine():
    """The budget's base: positive and at most the machine's memory (None only off Linux)."""

    from pipeline._engine.decoded import memory_available

    avail = memory_available()
    if not os.path.exists("/proc/meminfo"):
        assert avail is None
        return
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    assert 0 < avail <= total


@pytest.mark.parametrize(
    "scene_id,reuse,where,local,avail,expected",
    [("B2-uint16", "auto", "auto", True, 1 << 40, "memory"),  # compressed, fits the budget
     ("B2-uint16", "auto", "auto", True, 1 << 20, "disk"),  # larger than a quarter of 1 MiB
     ("B2-uint16", "auto", "auto", False, 1 << 40, "disk"),  # a cluster's workers may be elsewhere
     ("B2-uint16", "auto", "auto", True, None, "disk"),  # memory unknown
     ("B2-uint16", "auto", "memory", False, 1 << 20, "memory"),  # asked for
     ("B2-uint16", "auto", "disk", True, 1 << 40, "disk"),
     ("B2-uint16", "never", "memory", True, 1 << 40, None),
     ("B10-float32", "auto", "auto", True, 1 << 40, None),  # uncompressed: decoding twice is cheap
     ("B10-float32", "always", "auto", True, 1 << 40, "memory")],
)
def test_keep_place(tmp_path, monkeypatch, scene_id, reuse, where, local, avail, expected):

    import pipeline._engine.decoded

    if not hasattr(os, "memfd_create"):
        expected = None if expected is None else "disk"
    monkeypatch.setattr(pipeline._engine.decoded, "memory_available", lambda: avail)
    scene = _open(scene_id)
    assert pipeline._engine.decoded.keep_place(scene, tmp_path, reuse, where, local) == expected


def test_keep_place_without_memory_files(tmp_path, monkeypatch, caplog):
    """Where memory files do not exist (macOS, Windows), chunks asked for in memory go to disk
    with a warning that names the setting."""

    import pipeline._engine.decoded

    monkeypatch.delattr(os, "memfd_create", raising=False)
    with caplog.at_level("WARNING", logger="sceneclass._engine.decoded"):
        assert pipeline._engine.decoded.keep_place(_open("B2-uint16"), tmp_path, "auto", "memory", True) == "disk"
    assert "processing.keep_decoded_in" in caplog.text
    assert pipeline._engine.decoded.keep_place(_open("B2-uint16"), tmp_path, "auto", "auto", True) == "disk"


def test_memory_store_read_by_worker_processes(tmp_path):
    """dask's process pool (real worker processes) reads and writes the memory file through
    /proc/<pid>/fd: the same classes and legend as a threaded run that decodes twice."""
    import json

    if not hasattr(os, "memfd_create"):
        pytest.skip("no memory files on this system")
    name, band, nodata, chunk = SCENES["B2-uint16"]
    outs = {}
    for label, processing, sched in (("threads", {"reuse_decoded": "never"}, "threads"),
                                     ("processes", {"keep_decoded_in": "memory"}, "processes")):
        out = tmp_path / label / "out.tif"
        cfg = build_config(
            {"input": str(data_path(name)), "band": band, "nodata": nodata, "classes": Q10.model_dump(),
             "output": {"path": str(out)}, "processing": {"chunk": chunk, **processing},
             "dask": {"scheduler": sched, "workers": 2}},
            base_dir=tmp_path, source="test")
        run(cfg)
        with rasterio.open(out) as src:
            legend = json.loads(out.with_name("out.legend.json").read_text())
            outs[label] = (src.read(1), legend["edges"], [c["count"] for c in legend["classes"]])
    np.testing.assert_array_equal(outs["threads"][0], outs["processes"][0])
    assert outs["threads"][1:] == outs["processes"][1:]
    assert not _memory_files()


@pytest.mark.parametrize("blocks", [(4, 4), (13, 11), (20, 20)], ids=["16-blocks", "143-blocks", "400-blocks"])
def test_sum_blocks_holds_a_few_rows_whatever_the_blocks(blocks):
    """The per-block rows of a statistics pass (65,536 bins each here, megabytes in a float
    refine pass) are folded into one total: in the order dask runs the graph (the synchronous
    scheduler: deterministic), the rows and totals alive at once stay five (two rows per step)
    however many blocks the scene has (the tree reduction it replaces held 8, 11 and 14:
    partial sums on every level); the total is numpy's."""
    from pipeline.stats import RADIX, reduce_blocks, sum_blocks

    rng = np.random.default_rng(7)
    ny, nx = blocks
    values = rng.integers(0, RADIX, size=(ny * 37 - 5, nx * 41 - 3), dtype=np.uint16)  # uneven last chunks
    x = da.from_array(values, chunks=(37, 41))
    alive = {"now": 0, "most": 0}
    lock = threading.Lock()

    def track(arr: np.ndarray) -> np.ndarray:
        with lock:
            alive["now"] += 1
            alive["most"] = max(alive["most"], alive["now"])

        def gone():
            with lock:
                alive["now"] -= 1

        import weakref

        weakref.finalize(arr, gone)
        return arr

    def row(block):
        return track(np.bincount(block.reshape(-1), minlength=RADIX).astype(np.int64)[None, None, :])

    def step(total, r):
        return track(total + r.reshape(-1))

    parts = reduce_blocks(x, row, RADIX, np.int64)
    (total,) = dask.compute(sum_blocks(parts, step), scheduler="synchronous")
    np.testing.assert_array_equal(total, np.bincount(values.reshape(-1), minlength=RADIX))
    assert x.npartitions == ny * nx
    assert alive["most"] <= 5, alive
