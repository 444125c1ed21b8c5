"""Mosaics (``output.mosaic``): overlapping crops of the real Landsat band, written with rasterio
into tmp_path, classified as one output and checked against the mosaic built in memory with
numpy (later inputs on top, nodata of an upper input showing the one below), against
``rasterio.merge.merge`` and, where it is installed, against GDAL's own ``gdalbuildvrt``.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess

import numpy as np
import pytest
import rasterio
from rasterio.crs import CRS
from rasterio.merge import merge
from rasterio.transform import Affine
from rasterio.windows import Window

from pipeline import cli
from pipeline.jobs.batch import run_batch
from pipeline.jobs.config import build_config

from _procs import read_classes, read_legend, sceneclass
from conftest import B2, B10, data_path

A_WIN = Window(100, 200, 700, 500)  # col, row, width, height in the source scene
B_WIN = Window(500, 450, 600, 520)  # overlaps A by 300 x 250 pixels
HOLE = (slice(10, 60), slice(20, 90))  # nodata pixels of B, inside the overlap with A


def crop(path, win, *, source=B2, add=0, nodata=0, hole=False, crs=None, dtype=None, res=None, shift=(0, 0),
         masked_hole=False):
    """Write a window of a real scene as a GeoTIFF (128 tiles) georeferenced with the window's
    transform; ``add`` offsets the valid pixels, ``hole`` punches nodata into the overlap,
    ``masked_hole`` flags the same pixels invalid in a GDAL per-dataset mask instead."""
    with rasterio.open(data_path(source)) as src:
        a = src.read(1, window=win)
        t = src.window_transform(win)
        crs = crs or src.crs
    dtype = np.dtype(dtype or a.dtype)
    fill = np.nan if nodata is None and dtype.kind == "f" else (nodata if nodata is not None else 0)
    valid = np.isfinite(a) & (a != 0) if a.dtype.kind == "f" else a != 0
    out = np.where(valid, a.astype(np.float64) + add, fill).astype(dtype)
    if hole:
        out[HOLE] = fill
    if res is not None:
        t = Affine(res, 0, t.c, 0, -res, t.f)
    t = t * Affine.translation(*shift)
    with rasterio.open(path, "w", driver="GTiff", width=out.shape[1], height=out.shape[0], count=1, dtype=dtype,
                       crs=crs, transform=t, nodata=nodata, tiled=True, blockxsize=128, blockysize=128) as dst:
        dst.write(out, 1)
        if masked_hole:
            mask = np.full(out.shape, 255, np.uint8)
            mask[HOLE] = 0
            dst.write_mask(mask)
    return path


def merged(paths, nodata, first_on_top=False):
    """The mosaic in memory: the union grid, each input's valid pixels painted in order."""
    srcs = [rasterio.open(p) for p in paths]
    try:
        t0 = srcs[0].transform
        offs = [(round((s.transform.f - t0.f) / t0.e), round((s.transform.c - t0.c) / t0.a)) for s in srcs]
        r0, c0 = min(r for r, _ in offs), min(c for _, c in offs)
        h = max(r + s.height for (r, _), s in zip(offs, srcs)) - r0
        w = max(c + s.width for (_, c), s in zip(offs, srcs)) - c0
        dtype = srcs[0].dtypes[0]
        out = np.full((h, w), np.nan if nodata is None else nodata, dtype=dtype)
        covered = np.zeros((h, w), bool)
        order = list(zip(offs, srcs))[::-1] if first_on_top else list(zip(offs, srcs))
        for (r, c), s in order:
            a = s.read(1)
            ok = np.isfinite(a) if a.dtype.kind == "f" else np.ones(a.shape, bool)
            if nodata is not None:
                ok &= a != nodata
            view = out[r - r0:r - r0 + s.height, c - c0:c - c0 + s.width]
            view[ok] = a[ok]
            covered[r - r0:r - r0 + s.height, c - c0:c - c0 + s.width] |= ok
        return out, covered, t0 * Affine.translation(c0, r0)
    finally:
        for s in srcs:
            s.close()


def expected(arr, ok, classes):
    """numpy's edges (numpy.histogram / numpy.quantile on the valid pixels) and class ids."""
    valid = arr[ok]
    n = classes["count"]
    if classes["scheme"] == "equal_interval":
        edges = np.histogram_bin_edges(valid, n)
    else:
        edges = np.quantile(valid, np.linspace(0, 1, n + 1))
    x = arr.astype(np.float64)
    ids = np.searchsorted(edges, x, side="right")
    ids[x == edges[-1]] = n
    ids[(ids > n) | ~ok] = 0
    return edges, ids.astype(np.uint8)


def run_mosaic(tmp_path, inputs, classes, chunk, **extra):
    out = tmp_path / "out" / "mosaic.tif"
    data = {"inputs": [str(p) for p in inputs], "classes": classes, "processing": {"chunk": chunk},
            "output": {"path": str(out), "mosaic": True, "blocksize": 128, **extra.pop("output", {})}, **extra}
    batch = run_batch(build_config(data, base_dir=tmp_path, source="test"))
    assert batch.exit_code == 0, [j.error for j in batch.jobs]
    return out, batch


def run_cli(capfd, *args) -> tuple[int, str, str]:
    """``sceneclass ARGS`` in this process (a subprocess costs seconds of imports): (exit code, stderr, stdout)."""
    capfd.readouterr()
    root, warn = logging.getLogger("sceneclass"), logging.getLogger("py.warnings")
    saved = root.handlers[:], root.level, root.propagate, warn.handlers[:]
    try:
        code = cli.main([str(a) for a in args])
    finally:  # the command's handlers write to this test's captured stderr: do not keep them
        root.handlers[:], root.level, root.propagate, warn.handlers[:] = saved
        logging.captureWarnings(False)
    out, err = capfd.readouterr()
    return code, err, out


@pytest.fixture
def pair(tmp_path):
    a = crop(tmp_path / "a.tif", A_WIN)
    b = crop(tmp_path / "b.tif", B_WIN, add=1000, hole=True)
    return a, b


@pytest.mark.parametrize("classes", [{"scheme": "equal_interval", "count": 9}, {"scheme": "quantile", "count": 7}],
                         ids=["equal_interval", "quantile"])
@pytest.mark.parametrize("chunk", [100, 300])
def test_mosaic_equals_numpy_on_the_merged_array(tmp_path, pair, classes, chunk):
    arr, ok, transform = merged(pair, 0)
    # the reference itself: the overlap shows B (+1000) except in B's hole, which shows A
    with rasterio.open(pair[0]) as a:
        a_pixels = a.read(1)
    r, c = 250 + HOLE[0].start, 400 + HOLE[1].start  # B's hole on A's grid (B starts at row 250, col 400 of A)
    assert (arr[r:r + 50, c:c + 70] == a_pixels[r:r + 50, c:c + 70]).all() and ok[r:r + 50, c:c + 70].all()
    assert (arr[250:300, 500:600] > 1000).mean() > 0.9  # B on top (valid pixels of B are > 1000)
    # an independent GDAL-backed mosaic agrees (rasterio.merge: method "last" = later on top)
    ref, ref_t = merge([str(p) for p in pair], method="last", nodata=0)
    np.testing.assert_array_equal(ref[0], arr)
    assert ref_t == transform

    edges, ids = expected(arr, ok, classes)
    out, batch = run_mosaic(tmp_path, pair, classes, chunk)
    got = read_classes(out)
    with rasterio.open(out) as dst:
        assert dst.transform == transform and dst.crs == CRS.from_epsg(32621)
    np.testing.assert_array_equal(got, ids)
    leg = read_legend(out)
    np.testing.assert_allclose(leg["edges"], edges, rtol=0, atol=0)
    assert leg["valid_pixels"] == int(ok.sum())  # the overlap counted once
    total = 0
    for p in pair:
        with rasterio.open(p) as src:
            total += int((src.read(1) != 0).sum())
    assert leg["valid_pixels"] < total
    assert [c["count"] for c in leg["classes"]] == np.bincount(ids[ok], minlength=len(edges))[1:].tolist()
    assert leg["nodata_pixels"] == int((~ok).sum())
    assert leg["input"] == "mosaic of 2 inputs"
    assert leg["inputs"] == [str(p) for p in pair]
    assert leg["shape"] == list(arr.shape)


def test_mosaic_order_first_on_top_reverses_the_overlap(tmp_path, pair):
    classes = {"scheme": "equal_interval", "count": 6}
    arr, ok, _ = merged(pair, 0, first_on_top=True)
    ref, _ = merge([str(p) for p in pair], method="first", nodata=0)
    np.testing.assert_array_equal(ref[0], arr)
    _, last_ids = expected(*merged(pair, 0)[:2], classes)
    edges, ids = expected(arr, ok, classes)
    out, _ = run_mosaic(tmp_path, pair, classes, 200, output={"mosaic_order": "first_on_top"})
    got = read_classes(out)
    np.testing.assert_array_equal(got, ids)
    assert (got != last_ids).sum() > 10_000  # the overlap changed hands
    assert read_legend(out)["inputs"] == [str(p) for p in pair]


def test_mosaic_gaps_are_nodata(tmp_path):
    """Inputs that do not touch: the pixels between them are nodata, with and without a nodata value."""
    a = crop(tmp_path / "a.tif", Window(100, 200, 300, 200))
    b = crop(tmp_path / "b.tif", Window(600, 500, 250, 300), add=500)
    classes = {"scheme": "quantile", "count": 5}
    arr, ok, _ = merged([a, b], 0)
    assert (~ok).sum() > 100_000
    edges, ids = expected(arr, ok, classes)
    out, _ = run_mosaic(tmp_path, [a, b], classes, 150)
    np.testing.assert_array_equal(read_classes(out), ids)
    assert read_legend(out)["nodata_pixels"] == int((~ok).sum())
    # no nodata at all (every pixel of the files is valid, 0 too): the gaps still are nodata
    out2 = tmp_path / "none" / "m.tif"
    data = {"inputs": [str(a), str(b)], "nodata": "none", "classes": classes, "processing": {"chunk": 150},
            "output": {"path": str(out2), "mosaic": True, "blocksize": 128}}
    assert run_batch(build_config(data, base_dir=tmp_path, source="test")).exit_code == 0
    raw, covered, _ = merged([a, b], 65535)  # every pixel of the crops (none is 65535), 65535 between them
    edges2, ids2 = expected(raw, covered, classes)
    np.testing.assert_array_equal(read_classes(out2), ids2)
    leg = read_legend(out2)
    assert leg["valid_pixels"] == int(covered.sum())
    assert leg["masked_pixels"] == int((~covered).sum())


def test_float32_mosaic_with_nan_holes(tmp_path):
    """float32 inputs whose nodata is NaN (nothing declared): NaN of the upper input is transparent."""
    a = crop(tmp_path / "a.tif", Window(50, 60, 400, 300), source=B10, nodata=None)
    b = crop(tmp_path / "b.tif", Window(300, 250, 350, 380), source=B10, nodata=None, add=2.5, hole=True)
    with rasterio.open(b) as src:
        assert src.dtypes[0] == "float32" and np.isnan(src.read(1)[HOLE]).all()
    arr, ok, _ = merged([a, b], None)
    classes = {"scheme": "equal_interval", "count": 8}
    edges, ids = expected(arr, ok, classes)
    out, _ = run_mosaic(tmp_path, [a, b], classes, 130)
    np.testing.assert_array_equal(read_classes(out), ids)
    leg = read_legend(out)
    assert leg["valid_pixels"] == int(ok.sum())
    np.testing.assert_allclose(leg["edges"], edges.astype(np.float32), rtol=1e-6)


@pytest.mark.skipif(shutil.which("gdalbuildvrt") is None, reason="gdalbuildvrt (GDAL's command-line tools) not installed")
def test_mosaic_equals_gdalbuildvrt(tmp_path, pair):
    vrt = tmp_path / "ref.vrt"
    subprocess.run(["gdalbuildvrt", "-q", str(vrt), *map(str, pair)], check=True)
    with rasterio.open(vrt) as src:
        ref, ref_t = src.read(1), src.transform
    classes = {"scheme": "quantile", "count": 6}
    edges, ids = expected(ref, ref != 0, classes)
    out, _ = run_mosaic(tmp_path, pair, classes, 256)
    np.testing.assert_array_equal(read_classes(out), ids)
    with rasterio.open(out) as dst:
        assert dst.transform == ref_t and dst.shape == ref.shape


def test_gdal_masked_pixels_of_an_upper_input_are_transparent(tmp_path):
    """GDAL's mask of an input (here an internal per-dataset mask) hides its pixels as nodata does."""
    a = crop(tmp_path / "a.tif", A_WIN)
    b = crop(tmp_path / "b.tif", B_WIN, add=1000, masked_hole=True)
    with rasterio.open(b) as src:
        assert src.mask_flag_enums[0] == [rasterio.enums.MaskFlags.per_dataset]
        assert (src.read(1)[HOLE] > 1000).mean() > 0.9  # real values under the mask
    (tmp_path / "ref").mkdir()
    ref = crop(tmp_path / "ref" / "b.tif", B_WIN, add=1000, hole=True)  # the same, the hole as nodata
    arr, ok, _ = merged([a, ref], 0)
    classes = {"scheme": "quantile", "count": 6}
    edges, ids = expected(arr, ok, classes)
    out, _ = run_mosaic(tmp_path, [a, b], classes, 200)
    np.testing.assert_array_equal(read_classes(out), ids)


def test_a_damaged_input_is_named_and_nothing_is_written(tmp_path, pair, capfd):
    size = pair[1].stat().st_size
    with open(pair[1], "r+b") as f:
        f.truncate(size // 2)
    cfg = tmp_path / "m.yaml"
    cfg.write_text(json.dumps({"inputs": ["a.tif", "b.tif"], "output": {"path": "out/m.tif", "mosaic": True}}))
    code, err, _ = run_cli(capfd, "run", cfg)
    assert code == 1 and str(pair[1]) in err and "truncated" in err, err
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------ refusals: exit 2, nothing written
@pytest.mark.parametrize("odd", ["crs", "resolution", "offgrid", "dtype"])
def test_mosaic_refuses_an_input_on_another_grid(tmp_path, pair, odd, capfd):
    kw = {"crs": {"crs": CRS.from_epsg(4326)}, "resolution": {"res": 60.0}, "offgrid": {"shift": (0.5, 0)},
          "dtype": {"dtype": "int32"}}[odd]
    c = crop(tmp_path / "c_odd.tif", Window(1000, 900, 300, 300), **kw)
    cfg = tmp_path / "m.yaml"
    cfg.write_text(json.dumps({"inputs": ["*.tif"], "output": {"path": "out/m.tif", "mosaic": True}}))
    if odd == "crs":  # once as a real process
        r = sceneclass("run", cfg, cwd=tmp_path)
        code, err = r.returncode, r.stderr
    else:
        code, err, _ = run_cli(capfd, "run", cfg)
    assert code == 2, err
    line = err.strip()
    assert len(line.splitlines()) == 1 and str(c) in line, line
    assert {"crs": "EPSG:4326", "resolution": "pixel width 60", "offgrid": "pixel grid",
            "dtype": "int32"}[odd] in line, line
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("case", ["nodata", "per_input", "mask", "template", "order_alone", "single"])
def test_mosaic_config_refusals(tmp_path, pair, case, capfd):
    data = {"inputs": [str(p) for p in pair], "output": {"path": "out/m.tif", "mosaic": True}}
    if case == "nodata":  # the files declare different nodata values
        crop(tmp_path / "b.tif", B_WIN, add=1000, nodata=1)
        want = "b.tif has nodata 1"
    elif case == "per_input":
        data["inputs"][1] = {"path": str(pair[1]), "nodata": 5}
        want = "inputs.1.nodata"
    elif case == "mask":
        data["mask"] = {"path": str(pair[0]), "values": [1]}
        want = "mask"
    elif case == "template":
        data["output"]["path"] = "out/{stem}.tif"
        want = "{stem}"
    elif case == "order_alone":
        data["output"] = {"path": "out/m.tif", "mosaic_order": "first_on_top"}
        want = "output.mosaic_order"
    else:
        data = {"input": str(pair[0]), "output": {"path": "out/m.tif", "mosaic": True}}
        want = "output.mosaic"
    cfg = tmp_path / "m.yaml"
    cfg.write_text(json.dumps(data))
    code, err, _ = run_cli(capfd, "run", cfg)
    assert code == 2, err
    assert want in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "out").exists()


def test_mosaic_output_may_not_overwrite_an_input(tmp_path, pair, capfd):
    cfg = tmp_path / "m.yaml"
    cfg.write_text(json.dumps({"inputs": ["a.tif", "b.tif"], "output": {"path": "b.tif", "mosaic": True}}))
    before = pair[1].read_bytes()
    code, err, _ = run_cli(capfd, "run", cfg)
    assert code == 2 and "would overwrite" in err and "b.tif" in err, err
    assert pair[1].read_bytes() == before


# ------------------------------------------------------------------ dry run, validate, manifests
def test_dry_run_and_validate_show_the_grid(tmp_path, pair, capfd):
    cfg = tmp_path / "m.yaml"
    cfg.write_text(json.dumps({"inputs": ["*.tif"], "output": {"path": "out/m.tif", "mosaic": True}}))
    arr, _, t = merged(pair, 0)
    code, err, out = run_cli(capfd, "run", cfg, "--dry-run")
    assert code == 0, err
    assert f"{arr.shape[1]} x {arr.shape[0]} pixels" in out and "mosaic of 2 inputs" in out
    assert str(pair[0]) in out and str(pair[1]) in out
    assert f"{t.c:.12g}" in out
    code, err, out = run_cli(capfd, "validate", cfg)
    assert code == 0, err
    grid = json.loads(out)["mosaic"]
    assert grid["inputs"] == [str(p) for p in pair]
    assert (grid["width"], grid["height"]) == (arr.shape[1], arr.shape[0])
    assert grid["bounds"] == [t.c, t.f + t.e * arr.shape[0], t.c + t.a * arr.shape[1], t.f]
    assert not (tmp_path / "out").exists()


def test_a_changed_or_added_input_redoes_the_mosaic(tmp_path, pair):
    classes = {"scheme": "equal_interval", "count": 5}
    out, batch = run_mosaic(tmp_path, pair, classes, 256)
    man = json.loads(out.with_name("mosaic.manifest.json").read_text())
    assert [e["path"] for e in man["input_fingerprint"]["inputs"]] == [str(p) for p in pair]
    assert man["inputs"] == [str(p) for p in pair]
    _, again = run_mosaic(tmp_path, pair, classes, 256)
    assert again.jobs[0].status == "skipped"
    # touched, same content: still up to date
    st = os.stat(pair[0])
    os.utime(pair[0], ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    _, touched = run_mosaic(tmp_path, pair, classes, 256)
    assert touched.jobs[0].status == "skipped"
    # the lower input changes: redone, and the output shows it
    crop(pair[0], A_WIN, add=7)
    _, changed = run_mosaic(tmp_path, pair, classes, 256)
    assert changed.jobs[0].status == "done" and "a.tif" in changed.jobs[0].verdict.reason
    arr, ok, _ = merged(pair, 0)
    np.testing.assert_array_equal(read_classes(out), expected(arr, ok, classes)[1])
    # a third input: redone on the grown grid
    c = crop(tmp_path / "c.tif", Window(1000, 1000, 200, 200), add=3)
    out2, added = run_mosaic(tmp_path, [*pair, c], classes, 256)
    assert added.jobs[0].status == "done" and "inputs changed" in added.jobs[0].verdict.reason
    arr, ok, _ = merged([*pair, c], 0)
    np.testing.assert_array_equal(read_classes(out2), expected(arr, ok, classes)[1])


def test_changed_input_names_the_mosaic_input_that_changed(tmp_path, pair):
    from pipeline.jobs.batch import plan
    from pipeline.jobs.run import changed_source, identities

    data = {"inputs": [str(p) for p in pair], "output": {"path": str(tmp_path / "m.tif"), "mosaic": True}}
    job = plan(build_config(data, base_dir=tmp_path, source="test"))[0]
    before = identities(job.config)
    assert len(before) == 2 and changed_source(before) is None
    crop(pair[1], B_WIN, add=999)
    assert changed_source(before) == str(pair[1])
