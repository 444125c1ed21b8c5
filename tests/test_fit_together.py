"""Classes shared by scenes: ``classes.fit: together`` over a batch, ``classes.edges_from`` (a legend of
an earlier run) and ``classes.outside`` (nodata | clip), against numpy on the same pixels in memory.

The scenes are crops of the real uint16 Landsat band (0 is fill) with different value offsets and
shapes, written as tiled GeoTIFFs; processing chunks (96) do not divide them.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
import yaml
from rasterio.windows import Window

from _procs import read_classes, read_legend, sceneclass, sceneclass_all
from conftest import B2, data_path

# (row, col, height, width, value offset, tile size)
CROPS = [(200, 100, 300, 260, 0, 128), (600, 800, 250, 330, 800, 256), (1100, 300, 210, 280, 5000, 128)]


def write_crop(path: Path, spec, *, dtype: str = "uint16", extra: int = 0) -> np.ndarray:
    """One crop of the real band, offset (0 stays 0: fill), as a tiled GeoTIFF; returns its pixels."""
    row, col, h, w, offset, tile = spec
    with rasterio.open(data_path(B2)) as src:
        raw = src.read(1, window=Window(col, row, w, h))
        transform = src.window_transform(Window(col, row, w, h))
        crs = src.crs
    valid = raw != 0
    shifted = np.clip(raw.astype(np.int64) + offset + extra, 1, 65535).astype(np.uint16)
    a = np.where(valid, shifted, 0).astype(np.uint16)
    nodata = None
    if dtype == "float32":
        a = np.where(valid, a.astype(np.float32) * np.float32(1e-4), np.float32(np.nan)).astype(np.float32)
        nodata = float("nan")
    with rasterio.open(path, "w", driver="GTiff", width=w, height=h, count=1, dtype=dtype, crs=crs,
                       transform=transform, tiled=True, blockxsize=tile, blockysize=tile, nodata=nodata,
                       compress="deflate") as dst:
        dst.write(a, 1)
    return a


def make_scenes(folder: Path, dtype: str = "uint16") -> dict[str, np.ndarray]:
    folder.mkdir(parents=True, exist_ok=True)
    return {name: write_crop(folder / f"{name}.tif", spec, dtype=dtype)
            for name, spec in zip(("a", "b", "c"), CROPS)}


def valid_of(a: np.ndarray) -> np.ndarray:
    return a[np.isfinite(a) & (a != 0)] if a.dtype.kind == "f" else a[a != 0]


def reference_classes(a: np.ndarray, edges: np.ndarray, clip: bool = False) -> np.ndarray:
    """numpy's class ids: np.digitize (left-closed bins), the last bin closed; outside -> 0, or
    with ``clip`` the values first clipped to [edges[0], edges[-1]]; fill/NaN -> 0."""
    n = len(edges) - 1
    ok = np.isfinite(a) & (a != 0) if a.dtype.kind == "f" else a != 0
    v = np.where(ok, a, edges[0]).astype(np.result_type(a.dtype, edges.dtype))
    if clip:
        v = np.clip(v, edges[0], edges[-1])
    ids = np.digitize(v, edges, right=False)
    ids[v == edges[-1]] = n
    ids[(ids < 1) | (ids > n)] = 0
    ids[~ok] = 0
    return ids.astype(np.uint8)


def write_config(path: Path, inputs, out: Path, classes: dict, **extra) -> Path:
    cfg = {"inputs": inputs, "nodata": 0, "classes": classes,
           "output": {"folder": str(out), "path": "{stem}_classes.tif", "blocksize": 128},
           "processing": {"chunk": 96}, **extra}
    path.write_text(yaml.safe_dump(cfg))
    return path


def legend_edges(legend: dict) -> np.ndarray:
    return np.array(legend["edges"], dtype=np.float64)


@pytest.mark.parametrize("scheme", ["quantile", "equal_interval"])
def test_together_equals_numpy_on_all_scenes(tmp_path, scheme):
    arrays = make_scenes(tmp_path / "in")
    out = tmp_path / "out"
    cfg = write_config(tmp_path / "b.yaml", [str(tmp_path / "in" / "*.tif")], out,
                       {"scheme": scheme, "count": 10, "fit": "together"})
    res = sceneclass("run", cfg)
    assert res.returncode == 0, res.stderr
    assert res.stdout.count("shared edges") == 1, res.stdout
    every = np.concatenate([valid_of(a) for a in arrays.values()])
    want = (np.quantile(every, np.linspace(0, 1, 11)) if scheme == "quantile"
            else np.histogram_bin_edges(every, bins=10))
    # the scenes on their own would give other edges: the test can tell shared from own edges
    own = np.quantile(valid_of(arrays["a"]), np.linspace(0, 1, 11))
    assert not np.array_equal(own, want)
    for name, a in arrays.items():
        legend = read_legend(out / f"{name}_classes.tif")
        got = legend_edges(legend)
        assert got.tobytes() == want.astype(np.float64).tobytes(), (name, got, want)
        assert legend["fit"] == "together" and len(legend["fitted_on"]) == 3
        np.testing.assert_array_equal(read_classes(out / f"{name}_classes.tif"), reference_classes(a, want))
        assert legend["valid_pixels"] == valid_of(a).size
        assert legend["outside_pixels"] == 0  # the shared edges span every scene's values
        manifest = json.loads((out / f"{name}_classes.manifest.json").read_text())
        assert manifest["fit"] == "together" and len(manifest["fitted_on"]) == 3


def read_layers(key, dsk) -> list[str]:
    """The scene read layers (``read-<token>``) an executed task runs: the task itself, or the
    read tasks inside a fused subgraph (dask fuses each read into its first consumer)."""
    from pipeline.scene import READ_PREFIX

    name = key[0] if isinstance(key, tuple) else key
    if str(name).startswith(READ_PREFIX):
        return [name]
    found, tasks = [], [dsk[key]]
    while tasks:  # fused subgraphs may nest
        for arg in getattr(tasks.pop(), "args", ()):
            if isinstance(arg, dict):
                found += [k.split("_", 1)[0] for k in arg if isinstance(k, str) and k.startswith(READ_PREFIX)]
                tasks += list(arg.values())
    return found


def test_together_reads_each_scene_once(tmp_path):
    """The together statistics read every chunk of every scene once per pass: uint16 one
    dask.compute (the summed exact histograms), float32 two (the statistics and the one pass
    refining the exact order statistics). Counted from the tasks the scheduler runs."""
    from dask.callbacks import Callback

    from pipeline.jobs.batch import plan
    from pipeline.jobs.config import load_config
    from pipeline.jobs.shared import fit_together, open_all

    for dtype, passes in (("uint16", 1), ("float32", 2)):
        arrays = make_scenes(tmp_path / dtype, dtype)
        cfg = load_config(write_config(tmp_path / f"{dtype}.yaml", [str(tmp_path / dtype / "*.tif")],
                                       tmp_path / f"out-{dtype}", {"scheme": "quantile", "count": 10,
                                                                   "fit": "together"},
                                       nodata="file" if dtype == "float32" else 0))
        jobs = plan(cfg)
        chunks = {s.array.name: s.array.npartitions for s in open_all([j.config for j in jobs])}
        assert len(chunks) == 3
        computes: list[list] = []

        class Count(Callback):
            def _start(self, dsk):
                computes.append([])

            def _pretask(self, key, dsk, state):
                computes[-1].extend(read_layers(key, dsk))

        with Count():
            shared = fit_together([j.config for j in jobs])
        every = np.concatenate([valid_of(a) for a in arrays.values()])
        np.testing.assert_array_equal(shared.edges, np.quantile(every, np.linspace(0, 1, 11)))
        assert len(computes) == passes, [len(c) for c in computes]
        for reads in computes:
            assert {n: reads.count(n) for n in set(reads)} == chunks, (dtype, chunks)


def test_float_together_quantile(tmp_path):
    arrays = make_scenes(tmp_path / "in", "float32")
    out = tmp_path / "out"
    cfg = write_config(tmp_path / "b.yaml", [str(tmp_path / "in" / "*.tif")], out,
                       {"scheme": "quantile", "count": 7, "fit": "together"}, nodata="file")
    res = sceneclass("run", cfg)
    assert res.returncode == 0, res.stderr
    every = np.concatenate([valid_of(a) for a in arrays.values()])
    want = np.quantile(every, np.linspace(0, 1, 8))
    for name, a in arrays.items():
        legend = read_legend(out / f"{name}_classes.tif")
        assert legend_edges(legend).tobytes() == want.astype(np.float64).tobytes()
        np.testing.assert_array_equal(read_classes(out / f"{name}_classes.tif"), reference_classes(a, want))


def one_job(tmp_path: Path, name: str, src: Path, classes: dict, **extra) -> tuple[Path, Path]:
    """A one-input config in its own output folder: (config, output)."""
    out = tmp_path / f"out-{name}"
    cfg = tmp_path / f"{name}.yaml"
    data = {"input": str(src), "nodata": 0, "classes": classes,
            "output": {"path": str(out / "x.tif"), "blocksize": 128}, "processing": {"chunk": 96}, **extra}
    cfg.write_text(yaml.safe_dump(data))
    return cfg, out / "x.tif"


def run_one(tmp_path: Path, name: str, src: Path, classes: dict, **extra) -> tuple:
    cfg, out = one_job(tmp_path, name, src, classes, **extra)
    return sceneclass("run", cfg), out


def run_many(jobs: list[tuple[Path, Path]]) -> list[tuple]:
    """``sceneclass run`` of independent one-input configs (:func:`one_job`) at once: (result, output)."""
    return list(zip(sceneclass_all(*(("run", cfg) for cfg, _ in jobs)), (out for _, out in jobs)))


@pytest.mark.parametrize("dtype", ["uint16", "float32"])
def test_edges_from_outside_counts_and_clip(tmp_path, dtype):
    """Edges of scene a applied to b and c (offset +800, +5000): bit for bit the same edges and
    colours; every valid pixel outside them counted per scene, nodata or clipped as numpy."""
    arrays = make_scenes(tmp_path / "in", dtype)
    nodata = {"nodata": "file"} if dtype == "float32" else {}
    res, first = run_one(tmp_path, "first", tmp_path / "in" / "a.tif", {"scheme": "quantile", "count": 6},
                         palette={"name": "viridis"}, **nodata)
    assert res.returncode == 0, res.stderr
    legend_a = read_legend(first)
    edges = legend_edges(legend_a).astype(legend_a["edges_dtype"])
    lpath = str(first.with_name("x.legend.json"))
    # the runs with a's legend are independent (own folders): at once
    cases = [(name, outside) for name in ("b", "c") for outside in ("nodata", "clip")]
    runs = run_many([one_job(tmp_path, "again", tmp_path / "in" / "a.tif", {"edges_from": lpath}, **nodata)]
                    + [one_job(tmp_path, f"{name}-{outside}", tmp_path / "in" / f"{name}.tif",
                               {"edges_from": lpath, "outside": outside}, **nodata) for name, outside in cases])
    # the same input with its own legend: the same edges, colours and class ids
    res, again = runs[0]
    assert res.returncode == 0, res.stderr
    legend = read_legend(again)
    assert legend["edges"] == legend_a["edges"] and legend["edges_dtype"] == legend_a["edges_dtype"]
    assert [c["rgba"] for c in legend["classes"]] == [c["rgba"] for c in legend_a["classes"]]
    assert legend["scheme"] == "quantile" and legend["fit"] == "edges_from"
    np.testing.assert_array_equal(read_classes(again), read_classes(first))
    with rasterio.open(again) as a, rasterio.open(first) as b:
        assert a.colormap(1) == b.colormap(1)
    for (name, outside), (res, out) in zip(cases, runs[1:]):
        assert res.returncode == 0, res.stderr
        a = arrays[name]
        v = valid_of(a)
        below = int((v < edges[0]).sum())
        above = int((v > edges[-1]).sum())
        assert below + above > (0.05 * v.size if name == "c" else 0)  # c: +5000 moves most pixels out
        legend = read_legend(out)
        assert legend["outside_pixels"] == below + above, (name, outside)
        assert legend["outside"] == outside
        assert legend_edges(legend).tobytes() == legend_edges(legend_a).tobytes()
        np.testing.assert_array_equal(read_classes(out), reference_classes(a, edges, clip=outside == "clip"))
        warn = [ln for ln in res.stderr.splitlines() if "outside the class edges" in ln]
        if below + above > 0.05 * v.size:
            assert len(warn) == 1 and f"{name}.tif" in warn[0], res.stderr
            assert "classes hold pixels" not in res.stderr
        else:
            assert not warn, res.stderr
        assert legend["valid_pixels"] == (v.size if outside == "clip" else v.size - below - above)


def test_manual_outside_counted(tmp_path):
    arrays = make_scenes(tmp_path / "in", "float32")
    breaks = [0.75, 0.8, 0.9, 1.0]
    res, out = run_one(tmp_path, "m", tmp_path / "in" / "b.tif",
                       {"scheme": "manual", "breaks": breaks, "outside": "clip"}, nodata="file")
    assert res.returncode == 0, res.stderr
    v = valid_of(arrays["b"])
    e = np.array(breaks)
    legend = read_legend(out)
    assert legend["outside_pixels"] == int(((v < e[0]) | (v > e[-1])).sum()) > 0
    np.testing.assert_array_equal(read_classes(out), reference_classes(arrays["b"], e, clip=True))


def test_edges_from_refused(tmp_path):
    make_scenes(tmp_path / "in")
    res, first = run_one(tmp_path, "first", tmp_path / "in" / "a.tif", {"scheme": "quantile", "count": 5})
    assert res.returncode == 0, res.stderr
    legend = json.loads(first.with_name("x.legend.json").read_text())
    bad = {"units.json": dict(legend, units="K"),
           "float.json": dict(legend, dtype="float32", units="reflectance"),
           "broken.json": None, "missing.json": "missing"}
    jobs = []
    for name, content in bad.items():
        path = tmp_path / name
        if content is None:
            path.write_text("{not json")
        elif content != "missing":
            path.write_text(json.dumps(content))
        jobs.append(one_job(tmp_path, f"r-{name}", tmp_path / "in" / "b.tif", {"edges_from": str(path)}))
    # a batch is refused as a whole, before anything is written
    cfg = write_config(tmp_path / "b.yaml", [str(tmp_path / "in" / "*.tif")], tmp_path / "out-batch",
                       {"edges_from": str(tmp_path / "units.json")})
    jobs.append((cfg, tmp_path / "out-batch"))
    *refused, (res, _) = run_many(jobs)  # every one refused in its own folder: at once
    for name, (res_one, out) in zip(bad, refused):
        assert res_one.returncode == 2, (name, res_one.stderr)
        lines = [ln for ln in res_one.stderr.splitlines() if "error" in ln.lower()]
        assert len(lines) == 1 and "classes.edges_from" in lines[0] and name in lines[0], lines
        assert "Traceback" not in res_one.stderr
        assert not out.parent.exists() or not any(out.parent.iterdir())
    assert res.returncode == 2, res.stderr
    lines = [ln for ln in res.stderr.splitlines() if "error" in ln.lower()]
    assert len(lines) == 1 and "classes.edges_from" in lines[0] and "units.json" in lines[0], res.stderr
    assert not (tmp_path / "out-batch").exists() or not any((tmp_path / "out-batch").glob("*.tif"))


def test_dry_run_refits_when_an_input_changes(tmp_path):
    folder = tmp_path / "in"
    make_scenes(folder)
    out = tmp_path / "out"
    cfg = write_config(tmp_path / "b.yaml", [str(folder / "*.tif")], out,
                       {"scheme": "quantile", "count": 5, "fit": "together"})
    assert sceneclass("run", cfg).returncode == 0
    res = sceneclass("run", cfg, "--dry-run")
    assert res.stdout.count("up to date") == 3, res.stdout
    write_crop(folder / "c.tif", CROPS[2], extra=7)  # one input's content changes
    res = sceneclass("run", cfg, "--dry-run")
    lines = [ln for ln in res.stdout.splitlines() if ln.strip()]
    assert len(lines) == 3 and all(ln.startswith("changed") for ln in lines), res.stdout
    assert all("edges are fitted on all 3 inputs: 1 changed, all 3 are redone" in ln for ln in lines), res.stdout
    assert sceneclass("run", cfg).returncode == 0
    write_crop(folder / "d.tif", (1500, 1000, 200, 200, 100, 128))  # a fourth scene
    res = sceneclass("run", cfg, "--dry-run")
    lines = [ln for ln in res.stdout.splitlines() if ln.strip()]
    assert len(lines) == 4 and not any(ln.startswith("up to date") for ln in lines), res.stdout
    assert all("edges are fitted on all 4 inputs: 1 added, all 4 are redone" in ln for ln in lines), res.stdout

    # pinned edges: only the changed scene is redone; a changed legend redoes all
    pinned = write_config(tmp_path / "p.yaml", [str(folder / "*.tif")], tmp_path / "out-p",
                          {"edges_from": str(out / "a_classes.legend.json")})
    legend_copy = tmp_path / "pinned.legend.json"
    legend_copy.write_bytes((out / "a_classes.legend.json").read_bytes())
    pinned = write_config(tmp_path / "p.yaml", [str(folder / "*.tif")], tmp_path / "out-p",
                          {"edges_from": str(legend_copy)})
    res = sceneclass("run", pinned)
    assert res.returncode == 0, res.stderr
    write_crop(folder / "b.tif", CROPS[1], extra=3)
    res = sceneclass("run", pinned, "--dry-run")
    lines = [ln for ln in res.stdout.splitlines() if ln.strip()]
    assert sum(ln.startswith("changed") for ln in lines) == 1 and "b_classes" in [ln for ln in lines
                                                                                  if ln.startswith("changed")][0]
    assert sum(ln.startswith("up to date") for ln in lines) == 3, res.stdout
    data = json.loads(legend_copy.read_text())
    data["classes"][0]["color"] = "#123456"
    legend_copy.write_text(json.dumps(data))
    res = sceneclass("run", pinned, "--dry-run")
    lines = [ln for ln in res.stdout.splitlines() if ln.strip()]
    assert all(ln.startswith("changed") for ln in lines), res.stdout


def test_clip_kernels_compiled_and_numpy_agree():
    """The clip look-up table through the compiled uint16 kernel and through numpy equals numpy's
    clip-then-digitize; without clip, values outside the edges are 0."""
    from pipeline import kernels
    from pipeline.kernels import ValueRule

    rng = np.random.default_rng(5)
    block = rng.integers(0, 65536, (300, 257)).astype(np.uint16)
    block[:3] = 0
    edges = np.array([9000.0, 9500.5, 12000.0, 15000.0])
    rule = ValueRule((0,), None, 1.0, 0.0)
    for clip in (False, True):
        want = reference_classes(block, edges, clip=clip)
        lut = kernels.value_lut(block.dtype, edges, rule, clip)
        got_numpy = kernels.lookup_block(block, lut) if kernels._fastkernels is None else None
        saved = kernels._fastkernels
        try:
            kernels._fastkernels = None
            got_numpy = kernels.lookup_block(block, lut)
        finally:
            kernels._fastkernels = saved
        np.testing.assert_array_equal(got_numpy, want)
        np.testing.assert_array_equal(kernels.lookup_block(block, lut), want)
        values = block.astype(np.float32)
        values[block == 0] = np.nan
        np.testing.assert_array_equal(kernels.classify_values(values, edges, clip=clip), want)
    if not kernels.compiled():
        pytest.skip("the compiled kernels are not built here: the numpy path was checked")


def test_together_batch_reads_each_uint16_scene_once_for_statistics(tmp_path):
    """A whole uint16 batch with fit: together: the shared statistics pass is each scene's only
    statistics read (its exact histogram is kept per scene), and the write reads it once more;
    a scene whose file changed after the shared pass makes its own pass instead (not tested
    here: the run's identity check covers a change during the run)."""
    from dask.callbacks import Callback

    from pipeline.jobs.batch import plan, run_batch
    from pipeline.jobs.config import load_config
    from pipeline.jobs.shared import open_all

    arrays = make_scenes(tmp_path / "in")
    cfg = load_config(write_config(tmp_path / "b.yaml", [str(tmp_path / "in" / "*.tif")], tmp_path / "out",
                                   {"scheme": "quantile", "count": 10, "fit": "together"},
                                   processing={"chunk": 96, "reuse_decoded": "never"}))
    reads: list[str] = []
    computes: list[int] = []

    class Count(Callback):
        def _start(self, dsk):
            computes.append(1)

        def _pretask(self, key, dsk, state):
            reads.extend(read_layers(key, dsk))

    with Count():
        result = run_batch(cfg)
    assert not result.failed
    assert len(computes) == 1 + len(arrays), computes  # one shared statistics pass, one write per scene
    chunks = {s.array.name: s.array.npartitions for s in open_all([j.config for j in plan(cfg)])}
    # every chunk of every scene read exactly twice: the shared statistics pass, then its write
    assert {n: reads.count(n) for n in set(reads)} == {n: 2 * c for n, c in chunks.items()}
    shared_edges = legend_edges(read_legend(tmp_path / "out" / "a_classes.tif"))
    every = np.concatenate([valid_of(a) for a in arrays.values()])
    np.testing.assert_array_equal(shared_edges, np.quantile(every, np.linspace(0, 1, 11)))
    for name, a in arrays.items():
        out = tmp_path / "out" / f"{Path(name).stem}_classes.tif"
        np.testing.assert_array_equal(read_classes(out), reference_classes(a, shared_edges))
