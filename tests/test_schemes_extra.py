"""natural_breaks, std_mean, head_tail_breaks, percentiles and box_plot against mapclassify.

How mapclassify's results map onto sceneclass edges (mapclassify gives K upper bounds
b_0 < ... < b_{K-1}, classes closed on the right, the first from min(y); sceneclass gives N+1
edges, classes closed on the left, the last closed):

* std_mean, head_tail_breaks, percentiles, box_plot: mapclassify's bounds are sceneclass's inner
  edges (``edges[1:K] == bins[:K-1]``), the outer edges are min and max (or a fence/cut beyond
  them), and mapclassify class i is sceneclass class i + 1. Only pixels exactly on an edge can
  land one class apart (x == b is in mapclassify's lower class, in sceneclass's upper one); the
  tests count them and check that every differing pixel is on an edge.
* natural_breaks: mapclassify's bound b is the largest value of its class; the sceneclass edge
  is the smallest valid value above b (the first value of the next class), so the partition is
  the same pixel for pixel.

mapclassify.FisherJenks is O(n²) in the pixels and accumulates in float32; on millions of
pixels it cannot run, so natural_breaks is compared on scene crops (written as GeoTIFFs and run
through sceneclass's statistics, i.e. the exact histogram of the same crop), with the values
centred on the crop's median before mapclassify sees them (Fisher-Jenks is shift-invariant;
without it mapclassify's float32 sums of squares of 16-bit values lose precision and return
sub-optimal breaks, which ``test_mapclassify_fisher_jenks_uncentred_is_suboptimal`` shows). On
whole scenes the exact breaks are checked against an independent O(k·m²) dynamic program.
"""

from __future__ import annotations

import logging
import warnings
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest
import rasterio
import zarr
from rasterio.windows import Window

from pipeline import schemes
from pipeline.jobs.config import (BoxPlot, HeadTailBreaks, NaturalBreaks, Percentiles, StdMean, build_config)
from pipeline.scene import open_scene
from pipeline.jenks import fisher_jenks, gvf, sse
from pipeline.kernels import classify_values
from pipeline.jobs.run import run
from pipeline.schemes import SCHEMES
from pipeline.stats import Passes, compute_stats

from conftest import B2, B10, RGBN, data_path

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    import mapclassify as mc

# scene id -> (file, band, nodata setting)
SCENES = {"B2": (B2, 1, 0), "RGBN": (RGBN, 2, "file"), "B10": (B10, 1, "file")}
INTEGER = ("B2", "RGBN")


@lru_cache(maxsize=None)
def _valid(scene_id: str) -> np.ndarray:
    name, band, _ = SCENES[scene_id]
    with rasterio.open(data_path(name)) as src:
        a = src.read(band)
    v = a[np.isfinite(a)] if a.dtype.kind == "f" else a[a != 0]
    v.setflags(write=False)
    return v


@lru_cache(maxsize=None)
def _stats(scene_id: str, chunk: int = 1024):
    name, band, nodata = SCENES[scene_id]
    return _passes(open_scene(str(data_path(name)), band, nodata, chunk), distribution=True)


def _passes(scene, distribution: bool = False) -> Passes:
    """The statistics of ``scene`` with its extra passes (``.stats``, ``.moments()``, ...)."""
    return Passes(compute_stats(scene, distribution), scene)


def _both(px: Passes) -> tuple:
    return px.stats, px


def _mc(cls, v, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return cls(v, **kw)


def _membership(v: np.ndarray, edges: np.ndarray, m) -> tuple[int, int]:
    """(pixels in a different class, of which exactly on one of mapclassify's bounds, to float
    tolerance for float data) -- mapclassify class i is sceneclass class i + 1."""
    ours = classify_values(v, edges).astype(np.int64)
    diff = ours != m.yb + 1
    x = v[diff].astype(np.float64)[:, None]
    rtol = 0 if v.dtype.kind in "iu" else 1e-6
    on_edge = np.isclose(x, m.bins[None, :], rtol=rtol, atol=0).any(axis=1)
    return int(diff.sum()), int(on_edge.sum())


# ------------------------------------------------------------------ std_mean / head_tail / ...
CASES = {
    "std_mean": (StdMean(scheme="std_mean"), mc.StdMean, {}),
    "std_mean_wide": (StdMean(scheme="std_mean", multiples=[-3, -1.5, 0, 1.5, 3]), mc.StdMean,
                      {"multiples": [-3, -1.5, 0, 1.5, 3]}),
    "head_tail_breaks": (HeadTailBreaks(scheme="head_tail_breaks"), mc.HeadTailBreaks, {}),
    "percentiles": (Percentiles(scheme="percentiles"), mc.Percentiles, {}),
    "percentiles_q": (Percentiles(scheme="percentiles", pct=[25, 50, 75, 100]), mc.Percentiles,
                      {"pct": [25, 50, 75, 100]}),
    "box_plot": (BoxPlot(scheme="box_plot"), mc.BoxPlot, {}),
    "box_plot_h3": (BoxPlot(scheme="box_plot", hinge=3.0), mc.BoxPlot, {"hinge": 3.0}),
}

#: pixels classified differently from mapclassify (all on an edge), filled in by the test below
MEMBERSHIP: dict[tuple[str, str], tuple[int, int]] = {}


VARIANTS = ("std_mean_wide", "percentiles_q", "box_plot_h3")  # on the smaller scenes only (time)


@pytest.mark.parametrize("scene_id,case", [(s, c) for c in CASES for s in SCENES if not (s == "B2" and c in VARIANTS)])
def test_edges_agree_with_mapclassify(scene_id, case):
    cfg, cls, kw = CASES[case]
    st = _stats(scene_id)
    v = _valid(scene_id)
    edges = SCHEMES[cfg.scheme](cfg, st.stats, st)
    m = _mc(cls, v, **kw)
    k = len(m.bins)
    vmin, vmax = float(v.min()), float(v.max())

    # sceneclass's inner edges are mapclassify's bounds but the last
    if scene_id in INTEGER:
        np.testing.assert_array_equal(edges[1:k], m.bins[: k - 1])  # bit for bit
    else:  # mapclassify keeps float32 data in float32 (np.mean/std of float32): float32 tolerance
        np.testing.assert_allclose(edges[1:k], m.bins[: k - 1], rtol=2e-6)
    # outer edges: from the minimum (or a cut/fence below it) to the maximum (or beyond it)
    assert edges[0] == min(vmin, edges[1]) and edges[-1] >= vmax
    if len(edges) - 1 == k:  # mapclassify's last bound is the maximum
        assert m.bins[-1] == pytest.approx(vmax, rel=1e-6) and edges[-1] == vmax
    else:  # std_mean/box_plot: the last cut or fence is at or beyond the maximum, our extra class is empty
        assert len(edges) - 1 == k + 1 and m.bins[-1] >= vmax and edges[-2] == edges[-1]
        assert m.bins[-1] == pytest.approx(edges[-1], rel=2e-6)

    differ, on_edge = _membership(v, edges, m)
    MEMBERSHIP[(scene_id, case)] = (differ, on_edge)
    assert differ == on_edge, f"{differ - on_edge} pixels off an edge are classified differently"
    print(f"{scene_id} {case}: {k} mapclassify classes, {differ} of {v.size} pixels on an edge differ")


@pytest.mark.parametrize("scene_id", INTEGER)
def test_exact_statistics_match_numpy(scene_id):
    """The moments and percentiles behind the schemes, against numpy on the valid pixels."""
    st = _stats(scene_id)
    v = _valid(scene_id)
    n, mean, m2 = st.moments()
    assert n == v.size and mean == np.mean(v)  # numpy's float64 mean of integers is exact here
    assert np.sqrt(m2 / (n - 1)) == pytest.approx(v.std(ddof=1), rel=1e-13)
    edges = SCHEMES["percentiles"](CASES["percentiles"][0], st.stats, st)
    np.testing.assert_array_equal(edges[1:-1], np.percentile(v, [1, 10, 50, 90, 99]))


def test_float_moments_and_percentiles_match_numpy():
    st = _stats("B10")
    v = _valid("B10").astype(np.float64)
    n, mean, m2 = st.moments()
    assert n == v.size
    assert mean == pytest.approx(v.mean(), rel=1e-13)
    assert np.sqrt(m2 / (n - 1)) == pytest.approx(v.std(ddof=1), rel=1e-12)
    edges = SCHEMES["percentiles"](CASES["percentiles"][0], st.stats, st)
    np.testing.assert_array_equal(edges[1:-1], np.percentile(_valid("B10"), [1, 10, 50, 90, 99]))


def test_head_tail_float_multipass_equals_gathered(monkeypatch):
    """Floats: the pass-per-level path (forced with a tiny gather threshold) and the gathered
    path give the same breaks (to float64 summation order) as mapclassify (to float32)."""
    cfg = HeadTailBreaks(scheme="head_tail_breaks")
    gathered = SCHEMES["head_tail_breaks"](cfg, *_both(_stats("B10")))
    name, band, nodata = SCENES["B10"]
    st = _passes(open_scene(str(data_path(name)), band, nodata, 300))
    monkeypatch.setattr(schemes, "TAIL_GATHER", 5000)
    passes = SCHEMES["head_tail_breaks"](cfg, st.stats, st)
    assert st.extra_passes >= 5  # one per level above 5000 pixels, then one gathering pass
    np.testing.assert_allclose(passes, gathered, rtol=1e-12)
    m = _mc(mc.HeadTailBreaks, _valid("B10"))
    np.testing.assert_allclose(passes[1:], m.bins, rtol=2e-6)


def test_head_tail_max_classes_caps(caplog):
    cfg = HeadTailBreaks(scheme="head_tail_breaks", max_classes=4)
    with caplog.at_level(logging.WARNING):
        edges = SCHEMES["head_tail_breaks"](cfg, *_both(_stats("B2")))
    full = SCHEMES["head_tail_breaks"](HeadTailBreaks(scheme="head_tail_breaks"), *_both(_stats("B2")))
    assert len(edges) == 5 and edges[-1] == full[-1]
    np.testing.assert_array_equal(edges[:4], full[:4])
    assert "max_classes=4" in caplog.text


# ----------------------------------------------------------------------------- natural breaks
def _reference_jenks(x: np.ndarray, w: np.ndarray, k: int) -> tuple[np.ndarray, float]:
    """Independent O(k·m²) Fisher dynamic program on weighted values (float64 sums, loops over
    the class end, vectorised over the class start): class starts and the optimal SSE."""
    m = len(x)
    xs = x - x[m // 2]
    W = np.concatenate([[0.0], np.cumsum(w.astype(np.float64))])
    S1 = np.concatenate([[0.0], np.cumsum(w * xs)])
    S2 = np.concatenate([[0.0], np.cumsum(w * xs * xs)])

    def cost(s, j):
        ww = W[j + 1] - W[s]
        a = S1[j + 1] - S1[s]
        return S2[j + 1] - S2[s] - a * a / ww

    D = np.full((k + 1, m), np.inf)
    A = np.zeros((k + 1, m), dtype=np.int64)
    D[1] = cost(np.zeros(m, np.int64), np.arange(m))
    for c in range(2, k + 1):
        for j in range(c - 1, m):
            s = np.arange(c - 1, j + 1)
            v = D[c - 1, s - 1] + cost(s, np.full(s.size, j))
            i = int(np.argmin(v))
            D[c, j], A[c, j] = v[i], s[i]
    starts = np.zeros(k, np.int64)
    j = m - 1
    for c in range(k, 1, -1):
        starts[c - 1] = A[c, j]
        j = A[c, j] - 1
    return starts, D[k, m - 1]


@pytest.mark.parametrize("scene_id,k", [("B2", 6), ("RGBN", 6)])
def test_natural_breaks_exact_on_whole_scene(scene_id, k):
    """Whole scene, no subsampling: the breaks from the statistics pass's histogram are the
    optimum an independent O(k·m²) program finds on the (value, count) pairs."""
    st = _stats(scene_id)
    x, w = st.stats.hist_values()
    x = x.astype(np.float64)
    edges = SCHEMES["natural_breaks"](NaturalBreaks(scheme="natural_breaks", count=k), st.stats, st)
    ref_starts, ref_sse = _reference_jenks(x, w, k)
    np.testing.assert_array_equal(edges, np.concatenate([[x[0]], x[ref_starts[1:]], [x[-1]]]))
    starts = np.searchsorted(x, edges[:-1])
    assert sse(x, w, starts) == pytest.approx(ref_sse, rel=1e-9)


def _crop(tmp_path: Path, scene_id: str, window: Window) -> tuple[str, np.ndarray]:
    """Write a crop of a scene as its own GeoTIFF (same dtype); returns its path and valid values."""
    name, band, _ = SCENES[scene_id]
    with rasterio.open(data_path(name)) as src:
        a = src.read(band, window=window)
        profile = {"driver": "GTiff", "width": a.shape[1], "height": a.shape[0], "count": 1, "dtype": a.dtype,
                   "crs": src.crs, "transform": src.window_transform(window), "nodata": src.nodata}
    path = tmp_path / f"{scene_id}_crop.tif"
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(a, 1)
    v = a[np.isfinite(a)] if a.dtype.kind == "f" else a[a != 0]
    return str(path), v


def _mapclassify_fj_edges(v: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, object]:
    """mapclassify.FisherJenks on the values centred on their median, mapped to sceneclass edges
    (first value of each next class). Returns (edges, mapclassify's upper bounds, classifier)."""
    u = np.unique(v)
    med = np.median(u)
    uc = u.astype(np.float64) - med
    m = _mc(mc.FisherJenks, v.astype(np.float64) - med, k=k)
    idx = np.searchsorted(uc, m.bins)
    assert (uc[idx] == m.bins).all()  # mapclassify's bounds are (centred) data values
    return np.concatenate([[u[0]], u[idx[:-1] + 1], [u[-1]]]).astype(np.float64), u[idx], m


CROPS = {  # scene, window, k: a few thousand pixels, mapclassify takes well under 2 s each
    "B2-a": ("B2", Window(900, 900, 70, 70), 5),
    "B2-b": ("B2", Window(1200, 600, 80, 80), 7),
    "RGBN": ("RGBN", Window(0, 0, 100, 90), 6),
}


@pytest.mark.parametrize("crop", list(CROPS))
def test_natural_breaks_agree_with_mapclassify_on_crops(tmp_path, crop):
    scene_id, window, k = CROPS[crop]
    path, v = _crop(tmp_path, scene_id, window)
    _, band, nodata = SCENES[scene_id]
    st = _passes(open_scene(path, 1, nodata, 1024))
    edges = SCHEMES["natural_breaks"](NaturalBreaks(scheme="natural_breaks", count=k), st.stats, st)
    expected, upper, m = _mapclassify_fj_edges(v, k)
    np.testing.assert_array_equal(edges, expected)
    # the same partition, pixel for pixel (no pixel is "on an edge" under this mapping)
    np.testing.assert_array_equal(classify_values(v, edges).astype(np.int64), m.yb + 1)


def test_mapclassify_fisher_jenks_uncentred_is_suboptimal(tmp_path):
    """Why the centring: on raw 16-bit values mapclassify's float32 program loses precision and
    its breaks have a worse fit than sceneclass's exact ones (which equal its centred result)."""
    scene_id, window, k = CROPS["B2-b"]
    path, v = _crop(tmp_path, scene_id, window)
    st = _passes(open_scene(path, 1, 0, 1024))
    x, w = st.stats.hist_values()
    x = x.astype(np.float64)
    edges = SCHEMES["natural_breaks"](NaturalBreaks(scheme="natural_breaks", count=k), st.stats, st)
    raw = _mc(mc.FisherJenks, v, k=k)
    raw_starts = np.concatenate([[0], np.searchsorted(x, raw.bins[:-1], side="right")])
    ours = gvf(x, w, np.searchsorted(x, edges[:-1]))
    theirs = gvf(x, w, raw_starts)
    assert ours >= theirs
    print(f"GVF exact {ours:.6f}, mapclassify on raw uint16 {theirs:.6f}")


def test_natural_breaks_float_within_one_bin(tmp_path):
    """Float data: breaks on the 65,536-bin histogram are bin edges, within one bin width of the
    exact partition's (the first value of each next class): on a crop against mapclassify, and on
    the whole B10 scene against the exact program on its distinct values."""
    path, v = _crop(tmp_path, "B10", Window(300, 300, 75, 75))
    st = _passes(open_scene(path, 1, "file", 1024))
    cfg = NaturalBreaks(scheme="natural_breaks", count=5)
    edges = SCHEMES["natural_breaks"](cfg, st.stats, st)
    assert st.extra_passes == 1  # the fine histogram
    expected, _, m = _mapclassify_fj_edges(v, 5)
    width = (float(v.max()) - float(v.min())) / cfg.float_bins
    assert np.abs(edges - expected).max() <= width
    differ = int((classify_values(v, edges).astype(np.int64) != m.yb + 1).sum())
    print(f"B10 crop: {differ} of {v.size} pixels in another class than mapclassify's")
    assert differ <= v.size * 1e-3

    st = _stats("B10")
    v = _valid("B10")
    u, c = np.unique(v, return_counts=True)
    for k in (5, 9):
        edges = SCHEMES["natural_breaks"](NaturalBreaks(scheme="natural_breaks", count=k), st.stats, st)
        starts, _ = fisher_jenks(u.astype(np.float64), c, k)
        exact = np.concatenate([[u[0]], u[starts[1:]], [u[-1]]]).astype(np.float64)
        width = (float(u[-1]) - float(u[0])) / 65536
        assert np.abs(edges - exact).max() <= width


def test_natural_breaks_fewer_values_than_classes(tmp_path, caplog):
    """3 distinct values, 5 classes asked: one class per value, the rest empty and reported."""
    a = np.zeros((40, 50), np.uint16)
    a[:, 10:20], a[:, 20:35], a[:, 35:] = 100, 200, 300
    src = tmp_path / "three.tif"
    with rasterio.open(src, "w", driver="GTiff", width=50, height=40, count=1, dtype="uint16", nodata=0) as dst:
        dst.write(a, 1)
    cfg = build_config({"input": str(src), "classes": {"scheme": "natural_breaks", "count": 5},
                        "output": {"path": str(tmp_path / "three_classes.tif")}}, base_dir=tmp_path, source="t")
    with caplog.at_level(logging.WARNING):
        res = run(cfg)
    leg = res.legend
    assert leg["edges"] == [100, 200, 300, 300, 300, 300]
    assert leg["classes_effective"] == 3 and leg["empty_classes"] == [3, 4]
    assert [c["count"] for c in leg["classes"]] == [400, 600, 0, 0, 600]
    assert "3 distinct values for 5 classes" in caplog.text
    assert "3 of 5 classes hold pixels" in caplog.text


# --------------------------------------------------------------------- chunk-size invariance
INVARIANCE = {
    "natural_breaks": {"scheme": "natural_breaks", "count": 7},
    "std_mean": {"scheme": "std_mean"},
    "head_tail_breaks": {"scheme": "head_tail_breaks"},
    "percentiles": {"scheme": "percentiles"},
    "box_plot": {"scheme": "box_plot"},
    "equal_interval": {"scheme": "equal_interval", "count": 9},
    "quantile": {"scheme": "quantile", "count": 6},
}


@pytest.mark.parametrize("scene_id,scheme", [("B2", s) for s in INVARIANCE] + [
    ("B10", s) for s in ("natural_breaks", "std_mean", "head_tail_breaks", "percentiles", "box_plot")])
def test_chunk_size_invariance(tmp_path, scene_id, scheme):
    """processing.chunk 512, 1024 and one larger than the scene: identical class ids and legends."""
    name, band, nodata = SCENES[scene_id]
    results = []
    for chunk in (512, 1024, 4096):
        out = tmp_path / f"c{chunk}.zarr"
        cfg = build_config({
            "input": str(data_path(name)), "band": band, "nodata": nodata, "classes": INVARIANCE[scheme],
            "processing": {"chunk": chunk}, "output": {"path": str(out)},
        }, base_dir=tmp_path, source="t")
        res = run(cfg)
        ids = np.asarray(zarr.open_group(str(out), mode="r")["classes"][:])
        legend = {k: v for k, v in res.legend.items() if k != "output"}
        results.append((ids, legend))
    for ids, legend in results[1:]:
        np.testing.assert_array_equal(ids, results[0][0])
        assert legend == results[0][1]


# ------------------------------------------------------------------------------------ config
@pytest.mark.parametrize("classes,palette,words", [
    ({"scheme": "head_tail_breaks"}, {"colors": ["#000000", "#ffffff"]}, ["classes.max_classes"]),
    ({"scheme": "percentiles", "pct": [10, 50, 90]}, {}, ["classes", "100"]),
    ({"scheme": "percentiles", "pct": [50, 10, 100]}, {}, ["increasing"]),
    ({"scheme": "std_mean", "multiples": [1, -1]}, {}, ["increasing"]),
    ({"scheme": "box_plot", "hinge": 0}, {}, ["classes", "hinge"]),
])
def test_config_refuses(tmp_path, classes, palette, words):
    from pipeline.errors import ConfigError

    with pytest.raises(ConfigError) as e:
        build_config({"input": "x.tif", "classes": classes, "palette": palette, "output": {"path": "o.tif"}},
                     base_dir=tmp_path, source="job.yaml")
    for w in words:
        assert w in str(e.value)


def test_config_class_counts(tmp_path):
    def count(classes, palette=None):
        cfg = build_config({"input": "x.tif", "classes": classes, "palette": palette or {},
                            "output": {"path": "o.tif"}}, base_dir=tmp_path, source="t")
        return cfg.class_count

    assert count({"scheme": "natural_breaks", "count": 9}) == 9
    assert count({"scheme": "std_mean"}) == 5
    assert count({"scheme": "percentiles"}) == 6
    assert count({"scheme": "box_plot"}) == 6
    assert count({"scheme": "head_tail_breaks"}) == 254  # an upper bound, decided by the fit
    assert count({"scheme": "head_tail_breaks", "max_classes": 3}, {"colors": ["#000000"] * 3}) == 3
