"""End-to-end class ids and legends against an independent in-memory numpy reference.

The reference here reads the band with rasterio, picks the valid pixels itself, takes the edges
from ``numpy.histogram`` / ``numpy.quantile`` (or the manual breaks) and assigns classes with one
boolean mask per class (the textbook recipe) -- nothing is imported from ``pipeline`` except the
entry points under test (``build_config`` and ``run``).
"""

from __future__ import annotations

import json
import math
from functools import lru_cache

import numpy as np
import pytest
import rasterio

from pipeline.jobs.config import build_config
from pipeline.jobs.run import run

from conftest import B2, B10, LE07, RGBN, data_path

# name -> (file, band, config nodata (None: key omitted), chunk sizes, output tile size,
#          expected nodata in effect). Processing chunks are aligned to the output tiles (and the
# input's blocks), so the tile size is chosen to give three different, uneven chunkings.
SCENES = {
    # 775 x 677 float32, striped (3 rows); 128 tiles: chunks 128, 384x256, whole scene
    "B10": (B10, 1, None, (100, 300, 1000), 128, None),
    # 1860 x 2041 uint16, 256 tiles, 0 is fill but undeclared; 512 tiles: chunks 512, 1024, whole
    "B2-nodata0": (B2, 1, 0, (300, 1000, 4096), 512, 0.0),
    # 168 x 168 float64, declared nodata 32768 plus NaN; 64 tiles: chunks 64, 168x128, whole
    "LE07": (LE07, 1, None, (64, 100, 300), 64, 32768.0),
    # 212 x 276 uint8 band 2, declared nodata 0, 64 tiles: chunks 64, 128, whole scene
    "RGBN-b2": (RGBN, 2, None, (64, 100, 300), 64, 0.0),
}

SCHEMES = {
    "ei20": {"scheme": "equal_interval", "count": 20},
    "ei7": {"scheme": "equal_interval", "count": 7},
    "q10": {"scheme": "quantile", "count": 10},
    "manual": None,  # breaks picked from the data below
}


# ------------------------------------------------------------------ the independent reference
@lru_cache(maxsize=None)
def _pixels(name: str, band: int) -> tuple[np.ndarray, float | None]:
    with rasterio.open(data_path(name)) as src:
        arr = src.read(band)
        declared = src.nodata
    arr.setflags(write=False)
    return arr, declared


def _valid_mask(arr: np.ndarray, nodata: float | None) -> np.ndarray:
    ok = np.ones(arr.shape, dtype=bool)
    if arr.dtype.kind == "f":
        ok &= np.isfinite(arr)
    if nodata is not None and not (isinstance(nodata, float) and math.isnan(nodata)):
        ok &= arr != nodata
    return ok


def _manual_breaks(valid: np.ndarray) -> list[float]:
    """Five breaks that are actual data values strictly inside the data range (ties are exercised)."""
    picks = np.quantile(valid, [0.05, 0.25, 0.5, 0.8, 0.97], method="lower")
    breaks = sorted({float(v) for v in picks})
    assert len(breaks) >= 3
    assert breaks[0] > float(valid.min()) and breaks[-1] < float(valid.max())
    return breaks


def _assign(arr: np.ndarray, ok: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Class ids: one boolean mask per class, ``lo <= x < hi`` (last class ``lo <= x <= hi``)."""
    n = len(edges) - 1
    out = np.zeros(arr.shape, dtype=np.uint8)
    taken = np.zeros(arr.shape, dtype=bool)
    for k in range(1, n + 1):
        lo, hi = edges[k - 1], edges[k]
        sel = ok & (arr >= lo) & ((arr <= hi) if k == n else (arr < hi))
        assert not (sel & taken).any(), "reference classes overlap"
        out[sel] = k
        taken |= sel
    return out


@lru_cache(maxsize=None)
def reference(scene_id: str, scheme_id: str):
    name, band, cfg_nodata, *_ = SCENES[scene_id]
    arr, declared = _pixels(name, band)
    nodata = declared if cfg_nodata is None else cfg_nodata
    ok = _valid_mask(arr, nodata)
    valid = arr[ok]
    n_valid = valid.size
    assert n_valid > 0
    if scheme_id == "manual":
        breaks = _manual_breaks(valid)
        classes_cfg = {"scheme": "manual", "breaks": breaks}
        edges = np.asarray(breaks, dtype=np.float64)
        hist_counts = np.histogram(valid, bins=edges)[0]
    else:
        classes_cfg = dict(SCHEMES[scheme_id])
        n = classes_cfg["count"]
        if classes_cfg["scheme"] == "equal_interval":
            hist_counts, edges = np.histogram(valid, bins=n)
        else:
            edges = np.quantile(valid, np.linspace(0, 1, n + 1))
            hist_counts = np.histogram(valid, bins=edges)[0]
    classes = _assign(arr, ok, edges)
    counts = np.bincount(classes.ravel(), minlength=len(edges)).astype(np.int64)
    # the mask recipe and numpy.histogram must agree, or the reference itself is wrong
    np.testing.assert_array_equal(counts[1:], hist_counts)
    if scheme_id != "manual":
        assert counts[1:].sum() == n_valid
    return classes_cfg, edges, classes, counts, valid, nodata


# ----------------------------------------------------------------------------------- tests
def _run(tmp_path, scene_id: str, classes_cfg: dict, chunk: int):
    name, band, cfg_nodata, *_ = SCENES[scene_id]
    out = tmp_path / f"{scene_id}-{chunk}.tif"
    cfg = {
        "input": str(data_path(name)),
        "band": band,
        "classes": classes_cfg,
        "output": {"path": str(out), "blocksize": SCENES[scene_id][4]},
        "processing": {"chunk": chunk},
    }
    if cfg_nodata is not None:
        cfg["nodata"] = cfg_nodata
    result = run(build_config(cfg, base_dir=tmp_path, source="test"))
    with rasterio.open(out) as src:
        got = src.read(1)
        assert src.dtypes[0] == "uint8"
    legend = json.loads(result.legend_path.read_text())
    return got, legend


def _check_legend(legend: dict, edges: np.ndarray, counts: np.ndarray, valid: np.ndarray, nodata, scheme: str):
    n = len(edges) - 1
    assert legend["scheme"] == scheme
    assert legend["classes_requested"] == n
    assert legend["edges"] == [float(e) for e in edges]  # exact, bit for bit
    assert legend["edges_dtype"] == str(edges.dtype)
    assert legend["min"] == valid.min().item()
    assert legend["max"] == valid.max().item()
    assert legend["nodata"] == nodata
    in_classes = int(counts[1:].sum())
    assert legend["valid_pixels"] == in_classes
    outside = valid.size - in_classes  # valid pixels outside manual breaks
    assert legend["outside_pixels"] == outside
    assert legend["masked_pixels"] == 0
    assert legend["nodata_pixels"] == int(counts[0]) - outside, "nodata pixel count in the legend is wrong"
    assert legend["nodata_class"]["count"] == int(counts[0])
    assert [c["id"] for c in legend["classes"]] == list(range(1, n + 1))
    assert [c["count"] for c in legend["classes"]] == counts[1:].tolist()
    assert [c["lower"] for c in legend["classes"]] == [float(e) for e in edges[:-1]]
    assert [c["upper"] for c in legend["classes"]] == [float(e) for e in edges[1:]]
    for c in legend["classes"]:
        assert c["percent"] == pytest.approx(100.0 * c["count"] / in_classes, abs=1e-6)
    assert sum(c["percent"] for c in legend["classes"]) == pytest.approx(100.0, abs=1e-3)
    assert legend["empty_classes"] == [k for k in range(1, n + 1) if counts[k] == 0]


@pytest.mark.parametrize("scheme_id", list(SCHEMES))
@pytest.mark.parametrize("scene_id", list(SCENES))
def test_matches_numpy_reference(tmp_path, scene_id, scheme_id):
    classes_cfg, edges, ref, counts, valid, nodata = reference(scene_id, scheme_id)
    _, _, _, chunks, _, expected_nodata = SCENES[scene_id]
    assert nodata == expected_nodata or (nodata is None and expected_nodata is None)
    outputs = []
    for chunk in chunks:
        got, legend = _run(tmp_path, scene_id, classes_cfg, chunk)
        assert got.shape == ref.shape
        diff = np.flatnonzero(got != ref)
        assert diff.size == 0, (
            f"chunk {chunk}: {diff.size} pixels differ from the numpy reference, e.g. at flat index "
            f"{diff[:5].tolist()}: got {got.ravel()[diff[:5]].tolist()}, want {ref.ravel()[diff[:5]].tolist()}"
        )
        _check_legend(legend, edges, counts, valid, expected_nodata, classes_cfg["scheme"])
        legend.pop("output")
        outputs.append((got, legend))
    first_pixels, first_legend = outputs[0]
    for got, legend in outputs[1:]:
        np.testing.assert_array_equal(got, first_pixels)
        assert legend == first_legend


def test_manual_breaks_leave_pixels_out(tmp_path):
    """The manual breaks really do push pixels out on both sides (so the test above exercises it)."""
    for scene_id in SCENES:
        _, edges, ref, counts, valid, _ = reference(scene_id, "manual")
        assert (valid < edges[0]).any() and (valid > edges[-1]).any()
        assert np.isin(edges, valid.astype(np.float64)).all()  # breaks hit data values: ties tested


def test_b2_without_nodata_counts_fill_as_data(tmp_path):
    """B2 does not declare its 0 fill: with the file's (absent) nodata, zeros are valid pixels."""
    arr, declared = _pixels(B2, 1)
    assert declared is None
    counts_ref, edges = np.histogram(arr, bins=5)
    classes_cfg = {"scheme": "equal_interval", "count": 5}
    out = tmp_path / "b2.tif"
    result = run(build_config(
        {"input": str(data_path(B2)), "classes": classes_cfg, "output": {"path": str(out)},
         "processing": {"chunk": 1000}},
        base_dir=tmp_path, source="test",
    ))
    with rasterio.open(out) as src:
        got = src.read(1)
    ref = _assign(arr, np.ones(arr.shape, bool), edges)
    np.testing.assert_array_equal(got, ref)
    assert result.legend["edges"] == edges.tolist()
    assert result.legend["min"] == 0
    assert [c["count"] for c in result.legend["classes"]] == counts_ref.tolist()
    assert result.legend["nodata_pixels"] == 0
