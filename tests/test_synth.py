"""Tests for pipeline.testing.synth (synthetic Landsat-like scenes)."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.testing.synth import SIZES, footprint_columns, make_scene, parse_size

REPO = Path(__file__).resolve().parents[1]


def _read(path):
    with rasterio.open(path) as src:
        return src.read(1)


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    """A 1000 x 1300 scene, seed 0, default options."""
    path = make_scene(tmp_path_factory.mktemp("scene") / "scene.tif", "1000x1300", seed=0)
    return path, _read(path)


# ---------------------------------------------------------------------------
# file format
# ---------------------------------------------------------------------------
def test_profile(scene):
    path, _ = scene
    with rasterio.open(path) as src:
        assert src.count == 1
        assert src.dtypes == ("uint16",)
        assert (src.height, src.width) == (1000, 1300)
        assert src.profile["tiled"] is True
        assert src.block_shapes == [(512, 512)]
        assert src.compression == rasterio.enums.Compression.deflate
        struct = src.tags(ns="IMAGE_STRUCTURE")
        assert struct["COMPRESSION"] == "DEFLATE"
        assert struct["PREDICTOR"] == "2"
        assert src.crs == rasterio.crs.CRS.from_epsg(32633)
        assert src.res == (30.0, 30.0)
        assert src.transform == Affine(30.0, 0.0, 300_000.0, 0.0, -30.0, 4_500_000.0)
        assert src.nodata is None  # like USGS Level-1: 0 is fill but undeclared


def test_blocksize_crs_and_nodata_options(tmp_path):
    path = make_scene(
        tmp_path / "x.tif", "512x700", seed=1, blocksize=256, nodata_declared=True, crs="EPSG:32610"
    )
    with rasterio.open(path) as src:
        assert src.block_shapes == [(256, 256)]
        assert src.nodata == 0
        assert src.crs == rasterio.crs.CRS.from_epsg(32610)


def test_compression_none(tmp_path):
    path = make_scene(tmp_path / "raw.tif", "300x200", compress=None)
    with rasterio.open(path) as src:
        assert src.compression is None
        assert src.profile["tiled"] is True


def test_compressed_smaller_than_raw(scene):
    path, data = scene
    assert path.stat().st_size < 0.8 * data.nbytes


# ---------------------------------------------------------------------------
# footprint / fill
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("size", ["512x700", "1000x1300", "700x512", "256x256", "200x1500", "0.002x"])
def test_fill_fraction(tmp_path, size):
    data = _read(make_scene(tmp_path / "f.tif", size, seed=2))
    fill = float((data == 0).mean())
    assert 0.25 <= fill <= 0.35, fill


@pytest.mark.parametrize("size", ["1x", "4x", "16x", (20, 3000), (3000, 20)])
def test_fill_fraction_geometry(size):
    # exact fill fraction of the footprint geometry, without writing anything
    h, w = parse_size(size)
    start, stop = footprint_columns(h, w)
    fill = 1.0 - (stop - start).sum() / (h * w)
    assert 0.25 <= fill <= 0.35, fill


def test_zeros_are_exactly_outside_rotated_footprint(scene):
    _, data = scene
    h, w = data.shape
    start, stop = footprint_columns(h, w)
    cols = np.arange(w)
    inside = (cols[None, :] >= start[:, None]) & (cols[None, :] < stop[:, None])
    assert np.array_equal(data != 0, inside)  # no 0 inside, only 0 outside
    # centre region all valid, corners fill
    assert (data[h // 4 : 3 * h // 4, w // 4 : 3 * w // 4] != 0).all()
    for corner in (data[:20, :20], data[:20, -20:], data[-20:, :20], data[-20:, -20:]):
        assert (corner == 0).all()
    # rotated: the footprint's left edge moves across rows, and every row of
    # the footprint is one contiguous run of valid pixels
    valid_rows = np.nonzero(stop > start)[0]
    assert start[valid_rows].max() - start[valid_rows].min() > 0.1 * w
    counts = (data != 0).sum(axis=1)
    assert np.array_equal(counts, stop - start)


def test_values_realistic(scene):
    _, data = scene
    v = data[data > 0]
    p1, p50, p99 = np.percentile(v, [1, 50, 99])
    assert 6000 <= p1 <= 8000
    assert 8000 <= p50 <= 14000
    assert p99 > 20000  # some clouds
    assert v.min() >= 5000
    # multi-modal: water, land and cloud populations, not uniform
    water = np.mean(v < 7500)
    land = np.mean((v >= 8000) & (v < 15000))
    cloud = np.mean(v > 20000)
    assert 0.02 < water < 0.25
    assert land > 0.5
    assert 0.01 < cloud < 0.25
    hist, _ = np.histogram(v, bins=64, range=(0, 65536))
    assert hist.max() > 5 * hist.mean()


# ---------------------------------------------------------------------------
# determinism / seamlessness
# ---------------------------------------------------------------------------
def test_deterministic_and_seed_dependent(tmp_path, scene):
    _, data = scene
    again = _read(make_scene(tmp_path / "again.tif", "1000x1300", seed=0))
    assert again.tobytes() == data.tobytes()
    other = _read(make_scene(tmp_path / "other.tif", "1000x1300", seed=1))
    assert np.array_equal(other == 0, data == 0)  # same footprint
    assert (other != data).mean() > 0.5


def test_seamless_across_blocksizes(tmp_path, scene):
    _, data = scene
    for bs in (256, 160):
        other = _read(make_scene(tmp_path / f"bs{bs}.tif", "1000x1300", seed=0, blocksize=bs))
        assert other.tobytes() == data.tobytes(), bs


def test_independent_of_thread_count(tmp_path, scene):
    _, data = scene
    other = _read(make_scene(tmp_path / "w1.tif", "1000x1300", seed=0, workers=1))
    assert other.tobytes() == data.tobytes()


def test_nodata_flag_does_not_change_pixels(tmp_path, scene):
    _, data = scene
    path = make_scene(tmp_path / "nd.tif", "1000x1300", seed=0, nodata_declared=True)
    with rasterio.open(path) as src:
        assert src.nodata == 0
        assert src.read(1).tobytes() == data.tobytes()


# ---------------------------------------------------------------------------
# file handling
# ---------------------------------------------------------------------------
def test_no_partial_left_and_overwrite(tmp_path):
    path = tmp_path / "sub" / "s.tif"
    out = make_scene(path, "200x300", seed=5)
    assert out == path and path.exists()
    assert sorted(p.name for p in path.parent.iterdir()) == ["s.tif"]
    with pytest.raises(FileExistsError):
        make_scene(path, "200x300", seed=6, overwrite=False)
    make_scene(path, "200x300", seed=6)  # overwrite=True is the default
    assert sorted(p.name for p in path.parent.iterdir()) == ["s.tif"]


def test_partial_removed_on_failure(tmp_path):
    with pytest.raises(Exception):
        make_scene(tmp_path / "bad.tif", "200x300", crs="EPSG:999999")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("kw", [{"blocksize": 100}, {"blocksize": 0}, {"seed": 1.5}])
def test_bad_arguments(tmp_path, kw):
    with pytest.raises(ValueError):
        make_scene(tmp_path / "x.tif", "100x100", **kw)
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------
# parse_size
# ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "spec, expected",
    [
        ("1x", (7931, 7811)),
        ("4x", (15862, 15622)),
        ("16x", (31724, 31244)),
        (" 1X ", (7931, 7811)),
        ("1.0x", (7931, 7811)),
        ("0.25x", (3966, 3906)),
        (".01x", (793, 781)),
        ("1000x1200", (1000, 1200)),
        ("1000 x 1200", (1000, 1200)),
        ("7X9", (7, 9)),
        ((100, 200), (100, 200)),
        ([3, 4], (3, 4)),
        ((np.int64(5), np.int32(6)), (5, 6)),
    ],
)
def test_parse_size(spec, expected):
    assert parse_size(spec) == expected


def test_named_sizes_are_area_factors():
    for name, (h, w) in SIZES.items():
        assert parse_size(f"{float(name[:-1])}x") == (h, w)


@pytest.mark.parametrize(
    "bad",
    ["", "x", "2", "abc", "0x", "0.0x", "-1x", "1e3x", "nanx", "infx", "0x100", "100x0",
     "10x20x30", "-5x10", "1.5x2", "1x 2x", (1,), (1, 2, 3), (0, 5), (5, -1), (1.0, 2.0),
     (True, 5), None, 4, 1.0, "0.0000000001x"],
)
def test_parse_size_errors(bad):
    with pytest.raises(ValueError, match="invalid scene size"):
        parse_size(bad)


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 10**6), st.integers(1, 10**6))
def test_parse_size_hxw_roundtrip(h, w):
    assert parse_size(f"{h}x{w}") == (h, w)
    assert parse_size((h, w)) == (h, w)


@settings(max_examples=200, deadline=None)
@given(st.floats(min_value=1e-3, max_value=50.0, allow_nan=False))
def test_parse_size_factor(f):
    assert "e" not in repr(f)
    h, w = parse_size(f"{f!r}x")
    assert (h, w) == (round(7931 * math.sqrt(f)), round(7811 * math.sqrt(f)))


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=12), st.text(alphabet="0123456789.xX -", max_size=12)))
def test_parse_size_never_crashes(s):
    try:
        h, w = parse_size(s)
    except ValueError:
        return
    assert isinstance(h, int) and isinstance(w, int) and h >= 1 and w >= 1


# ---------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------
def _load_cli():
    spec = importlib.util.spec_from_file_location("make_scene_cli", REPO / "scripts" / "make_scene.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_cli(tmp_path, capsys):
    cli = _load_cli()
    assert cli.main([str(tmp_path), "--size", "200x300", "--size", "0.001x", "--seed", "3"]) == 0
    out = capsys.readouterr().out
    a, b = tmp_path / "scene_200x300_s3.tif", tmp_path / "scene_0.001x_s3.tif"
    assert a.exists() and b.exists()
    assert str(a) in out and "elapsed" in out
    mtime = a.stat().st_mtime_ns
    assert cli.main([str(tmp_path), "--size", "200x300", "--seed", "3"]) == 0
    assert "skip" in capsys.readouterr().out
    assert a.stat().st_mtime_ns == mtime
    assert cli.main([str(tmp_path), "--size", "200x300", "--seed", "3", "--overwrite", "--nodata-declared"]) == 0
    with rasterio.open(a) as src:
        assert src.nodata == 0
    with pytest.raises(SystemExit):
        cli.main([str(tmp_path), "--size", "bogus"])


# ---------------------------------------------------------------------------
# the float32 form
# ---------------------------------------------------------------------------
def test_float32_form_is_scaled_dn_with_nan_fill(tmp_path, scene):
    """The float32 scene of a seed is the uint16 scene of that seed, DN * scale + offset,
    NaN where DN is 0; tiled 512, DEFLATE with the floating-point predictor."""
    from pipeline.testing.synth import FLOAT_OFFSET, FLOAT_SCALE

    path, dn = scene
    f = make_scene(tmp_path / "f.tif", "1000x1300", seed=0, dtype="float32", workers=3)
    with rasterio.open(f) as src:
        assert src.dtypes[0] == "float32" and src.nodata is None
        assert src.block_shapes[0] == (512, 512) and src.profile.get("tiled")
        assert src.compression.name.lower() == "deflate"
        assert src.tags(ns="IMAGE_STRUCTURE").get("PREDICTOR") == "3"
        assert src.tags()["SYNTH_DTYPE"] == "float32"
        vals = src.read(1)
    fill = dn == 0
    assert 0.25 < fill.mean() < 0.35
    assert np.array_equal(np.isnan(vals), fill)  # NaN exactly where DN is 0
    expected = dn.astype(np.float64) * FLOAT_SCALE + FLOAT_OFFSET  # the formula, in float64
    np.testing.assert_allclose(vals[~fill], expected[~fill], rtol=2e-7, atol=0)
    # and bit for bit the documented float32 arithmetic
    exact = dn.astype(np.float32) * np.float32(FLOAT_SCALE) + np.float32(FLOAT_OFFSET)
    assert np.array_equal(vals[~fill], exact[~fill])


def test_float32_nodata_declared_and_blocksize(tmp_path):
    f = make_scene(tmp_path / "f.tif", "300x260", seed=2, dtype="float32", nodata_declared=True, blocksize=64)
    u = make_scene(tmp_path / "u.tif", "300x260", seed=2, blocksize=128)
    with rasterio.open(f) as src:
        assert math.isnan(src.nodata) and src.block_shapes[0] == (64, 64)
        vals = src.read(1)
    assert np.array_equal(np.isnan(vals), _read(u) == 0)


def test_uint16_form_unchanged_by_dtype_argument(tmp_path, scene):
    path, dn = scene
    again = make_scene(tmp_path / "u.tif", "1000x1300", seed=0, dtype="uint16")
    assert again.read_bytes() == path.read_bytes()
    with pytest.raises(ValueError, match="dtype"):
        make_scene(tmp_path / "x.tif", "100x100", dtype="int8")


def test_cli_float32(tmp_path, capsys):
    cli = _load_cli()
    assert cli.main([str(tmp_path), "--size", "200x300", "--dtype", "uint16", "--dtype", "float32"]) == 0
    with rasterio.open(tmp_path / "scene_200x300_s0_float32.tif") as src:
        assert src.dtypes[0] == "float32"
    with rasterio.open(tmp_path / "scene_200x300_s0.tif") as src:
        assert src.dtypes[0] == "uint16"
