"""The Python API on xarray DataArrays (rioxarray, uneven dask chunks, numpy-backed), checked
against the command line's outputs on the same files and against numpy on the same pixels."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import dask
import numpy as np
import pytest
import rasterio
import rioxarray
import xarray as xr
import yaml
from dask.callbacks import Callback
from dask.delayed import Delayed

import pipeline as sc
from pipeline.errors import ConfigError

from _procs import child_env, read_classes, read_legend, sceneclass, start_sceneclass
from conftest import B2, B10, LE07, RGBN, data_path

CHUNKS = {"x": 300, "y": 250}  # divides none of the scenes
#: the files and the nodata each is classified with (B2's fill 0 is not declared in the file)
FILES = {B2: 0, B10: "auto", LE07: "auto"}
SCHEMES = {
    "equal_interval": {"count": 10},
    "quantile": {"count": 10},
    "manual": {"breaks": [0.0, 1.0, 5.0, 9.0, 7500.0, 8000.0, 30000.0]},
    "natural_breaks": {"count": 5},
    "std_mean": {"multiples": [-1.5, -0.5, 0.5, 1.5]},
    "head_tail_breaks": {},
    "percentiles": {"pct": [5, 25, 50, 75, 95, 100]},
    "box_plot": {"hinge": 1.5},
}


class Computes(Callback):
    """Counts ``dask.compute`` calls (local schedulers)."""

    def __init__(self):
        super().__init__()
        self.n = 0

    def _start(self, dsk):
        self.n += 1


def open_da(name: str) -> xr.DataArray:
    return rioxarray.open_rasterio(data_path(name), chunks=CHUNKS)


def valid_pixels(name: str) -> tuple[np.ndarray, np.ndarray]:
    """(all pixels, valid mask) read with rasterio: an independent view of the same file."""
    with rasterio.open(data_path(name)) as src:
        a, declared = src.read(1), src.nodata
    nodata = FILES[name] if FILES[name] != "auto" else declared
    valid = np.ones(a.shape, bool) if a.dtype.kind != "f" else np.isfinite(a)
    if nodata is not None:
        valid &= a != a.dtype.type(nodata)
    return a, valid


def reference_ids(a: np.ndarray, valid: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """numpy.histogram's bin of every pixel (1-based; outside the edges and nodata: 0)."""
    dt = np.result_type(a.dtype, edges.dtype)
    x, e = a.astype(dt), edges.astype(dt)
    ids = np.searchsorted(e, x, side="right")
    ids[x == e[-1]] = len(e) - 1
    ids[(ids > len(e) - 1) | ~valid] = 0
    return ids.astype(np.uint8)


@pytest.fixture(scope="module")
def cli_outputs(tmp_path_factory):
    """One ``sceneclass run`` per scheme over the three files (a batch): scheme -> output folder."""
    root = tmp_path_factory.mktemp("cli")
    out, procs = {}, {}
    for scheme, options in SCHEMES.items():
        folder = root / scheme
        cfg = {
            "inputs": [{"path": str(data_path(name)), **({"nodata": nd} if nd != "auto" else {})}
                       for name, nd in FILES.items()],
            "classes": {"scheme": scheme, **options},
            "output": {"folder": str(folder), "path": "{stem}.tif", "overviews": False, "blocksize": 128},
            "processing": {"chunk": 192},
        }
        path = root / f"{scheme}.yaml"
        path.write_text(yaml.safe_dump(cfg))
        procs[scheme] = start_sceneclass("run", path, "-q")  # all at once: the imports dominate
        out[scheme] = folder
    for scheme, proc in procs.items():
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, (scheme, err)
    return out


def cli_output(folder: Path, name: str) -> Path:
    return folder / (Path(name).stem + ".tif")


# ------------------------------------------------------------------------ every scheme
@pytest.mark.parametrize("scheme", SCHEMES)
def test_every_scheme_equals_the_cli(scheme, cli_outputs):
    for name, nodata in FILES.items():
        data = open_da(name)
        fit = sc.fit(data, scheme=scheme, nodata=nodata, **SCHEMES[scheme])
        classes = sc.classify(data, fit)
        want = cli_output(cli_outputs[scheme], name)
        legend = read_legend(want)
        assert np.array_equal(fit.edges.astype(np.float64), np.array(legend["edges"])), (name, scheme)
        assert fit.n_classes == len(legend["classes"])
        got = classes.values
        assert np.array_equal(got, read_classes(want)), (name, scheme, int((got != read_classes(want)).sum()))
        a, valid = valid_pixels(name)  # and numpy's bins of the same pixels, under these edges
        assert np.array_equal(got, reference_ids(a, valid, fit.edges)), (name, scheme)


@pytest.mark.parametrize("name", list(FILES))
def test_edges_equal_numpy(name):
    data = open_da(name)
    a, valid = valid_pixels(name)
    v = a[valid]
    ei = sc.fit(data, scheme="equal_interval", count=10, nodata=FILES[name])
    assert ei.edges.dtype == np.histogram_bin_edges(v, 10).dtype
    assert np.array_equal(ei.edges, np.histogram_bin_edges(v, 10))
    q = sc.fit(data, scheme="quantile", count=7, nodata=FILES[name])
    assert np.array_equal(q.edges, np.quantile(v, np.linspace(0, 1, 8)))
    assert ei.stats.count == v.size and ei.stats.vmin == v.min() and ei.stats.vmax == v.max()


# ------------------------------------------------------------- the README's examples
def test_readme_example_writes_what_the_cli_writes(tmp_path, cli_outputs):
    data = open_da(B2)
    with Computes() as c:
        fit = sc.fit(data, scheme="quantile", count=10, nodata=0)
    assert c.n == 1  # 16-bit data: one statistics pass, one compute
    with Computes() as c:
        classes = sc.classify(data, fit)
        rgb = sc.colorize(classes, palette="viridis")
        legend = fit.legend()
    assert c.n == 0  # lazy; the legend's counts come from the exact histogram
    # the classes keep the input's grid, chunks, CRS and attributes; nodata 0
    assert classes.dtype == np.uint8 and classes.dims == ("y", "x")
    assert classes.data.chunks == data.data.chunks[1:]
    assert np.array_equal(classes.x, data.x) and np.array_equal(classes.y, data.y)
    assert classes.rio.crs == data.rio.crs and classes.rio.transform() == data.rio.transform()
    assert classes.rio.nodata == 0 and classes.attrs["AREA_OR_POINT"] == data.attrs["AREA_OR_POINT"]
    assert "scale_factor" not in classes.attrs  # it described the input's values
    assert rgb.dims == ("band", "y", "x") and rgb.shape == (3, *classes.shape) and rgb.rio.crs == data.rio.crs
    # the colours are the palette's rows of the class ids (the CLI's legend holds the same palette)
    want = cli_output(cli_outputs["quantile"], B2)
    table = np.array([[0, 0, 0]] + [c["rgba"][:3] for c in read_legend(want)["classes"]], np.uint8)
    assert np.array_equal(rgb.values, np.moveaxis(table[read_classes(want)], -1, 0))

    out = tmp_path / "out.tif"
    assert sc.write_cog(classes, out, palette="viridis", legend=legend, overviews=False, blocksize=128) == out
    assert np.array_equal(read_classes(out), read_classes(want))
    assert read_legend(out) == read_legend(want)  # edges, colours, counts, georeferencing, input
    with rasterio.open(out) as got, rasterio.open(want) as ref:
        assert got.crs == ref.crs and got.transform == ref.transform and got.nodata == 0
        assert got.colormap(1) == ref.colormap(1) and got.block_shapes == [(128, 128)]


def test_float_legend_counts_come_from_the_write(tmp_path):
    data = open_da(B10)
    fit = sc.fit(data, scheme="equal_interval", count=6)
    legend = fit.legend(palette="magma")
    assert fit.counts is None and legend["classes"][0]["count"] is None  # not known before a pass
    classes = sc.classify(data, fit)
    out = sc.write_zarr(classes, tmp_path / "b10.zarr", legend=legend, mode="rgba")
    stored = xr.open_zarr(out)
    ids = stored["classes"].values
    assert np.array_equal(ids, classes.values) and stored.rio.crs == data.rio.crs
    written = stored.attrs["sceneclass_legend"]
    assert [c["count"] for c in written["classes"]] == [int((ids == k).sum()) for k in range(1, 7)]
    assert written["nodata_pixels"] == int((ids == 0).sum())
    assert stored["colour"].shape == (4, *ids.shape)


def test_numpy_backed_dataarray(tmp_path):
    lazy = open_da(LE07)
    loaded = rioxarray.open_rasterio(data_path(LE07)).load()  # numpy-backed
    assert isinstance(loaded.data, np.ndarray)
    for scheme in ("quantile", "natural_breaks"):
        a, b = sc.fit(lazy, scheme=scheme, count=6), sc.fit(loaded, scheme=scheme, count=6)
        assert np.array_equal(a.edges, b.edges)
        assert np.array_equal(sc.classify(lazy, a).values, sc.classify(loaded, b).values)
    # a bare 2-D array without coordinates or CRS: NaN and the nodata keyword are nodata
    arr = np.arange(30, dtype=np.float32).reshape(5, 6)
    arr[0, 0] = np.nan
    plain = xr.DataArray(arr, dims=("y", "x"))
    fit = sc.fit(plain, scheme="equal_interval", count=4, nodata=29)
    valid = arr[np.isfinite(arr) & (arr != 29)]
    assert np.array_equal(fit.edges, np.histogram_bin_edges(valid, 4))
    ids = sc.classify(plain, fit).values
    assert ids[0, 0] == 0 and ids[-1, -1] == 0 and ids[0, 1] == 1 and ids[-1, -2] == 4


def test_nodata_from_attributes():
    arr = np.array([[1, 2, 3], [4, 5, 9]], np.uint16)
    for attrs in ({"_FillValue": 9}, {"nodata": 9}):
        fit = sc.fit(xr.DataArray(arr, dims=("y", "x"), attrs=attrs), scheme="equal_interval", count=2)
        assert fit.nodata == 9 and fit.stats.vmax == 5
    fit = sc.fit(xr.DataArray(arr, dims=("y", "x"), attrs={"_FillValue": 9}), count=2, nodata=None)
    assert fit.nodata is None and fit.stats.vmax == 9


def test_accessor_equals_functions():
    data = open_da(B2)
    got = data.sceneclass.classify(scheme="natural_breaks", count=7, nodata=0)
    fit = sc.fit(data, scheme="natural_breaks", count=7, nodata=0)
    assert got.attrs["class_edges"] == [float(e) for e in fit.edges]
    assert np.array_equal(got.values, sc.classify(data, fit).values)
    assert np.array_equal(data.sceneclass.classify(fit).values, got.values)
    rgb = got.sceneclass.colorize(palette="turbo", mode="rgba")
    assert rgb.shape[0] == 4
    with pytest.raises(ConfigError, match="either a fit or fit options"):
        data.sceneclass.classify(fit, scheme="quantile")


def test_accessor_registers_when_xarray_comes_later():
    code = ("import sys, pipeline; assert 'xarray' not in sys.modules; "
            "import numpy as np, xarray as xr; "
            "c = xr.DataArray(np.array([[1, 2], [3, 4]], np.uint8), dims=('y', 'x')).sceneclass.classify(count=3); "
            "print(c.values.tolist())")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=child_env(), timeout=120)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout) == [[1, 2], [3, 3]]  # edges 1, 2, 3, 4


def test_write_cog_compute_false_is_delayed(tmp_path):
    data = open_da(LE07)
    fit = sc.fit(data, scheme="quantile", count=5)
    classes = sc.classify(data, fit)
    out = tmp_path / "later.tif"
    job = sc.write_cog(classes, out, legend=fit.legend(), compute=False, blocksize=64)
    assert isinstance(job, Delayed) and not out.exists() and not list(tmp_path.iterdir())
    (path,) = dask.compute(job)
    assert path == out and np.array_equal(read_classes(out), classes.values)
    assert sum(c["count"] for c in read_legend(out)["classes"]) == int((classes.values > 0).sum())
    zjob = sc.write_zarr(classes, tmp_path / "later.zarr", compute=False)
    assert not (tmp_path / "later.zarr").exists()
    assert np.array_equal(read_classes(zjob.compute()), classes.values)


def test_refused_inputs(tmp_path):
    rgbn = rioxarray.open_rasterio(data_path(RGBN), chunks=CHUNKS)
    with pytest.raises(ConfigError, match="has 4 bands along 'band'; classify one at a time"):
        sc.fit(rgbn)
    assert sc.fit(rgbn.isel(band=[2]), count=3).scene.band == 3  # one band: squeezed, its number kept
    stacked = rgbn.isel(band=[0]).expand_dims(time=1)  # (time, band, y, x), as stackstac gives
    assert np.array_equal(sc.fit(stacked, count=3).edges, sc.fit(rgbn.isel(band=0), count=3).edges)
    with pytest.raises(ConfigError, match="has 2 times along 'time'"):
        sc.fit(xr.concat([stacked, stacked], "time"))
    with pytest.raises(ConfigError, match="expected a 2-D"):
        sc.fit(xr.DataArray(np.zeros(3, np.uint8), dims=("x",)))
    with pytest.raises(ConfigError, match="fit: count: Input should be less than or equal to 254"):
        sc.fit(open_da(B2), scheme="quantile", count=300)
    with pytest.raises(ConfigError, match="fit: breaks: required key is missing"):
        sc.fit(open_da(B2), scheme="manual")
    with pytest.raises(ConfigError, match="unknown scheme 'quantil'"):
        sc.fit(open_da(B2), scheme="quantil")
    with pytest.raises(sc.InputError, match="data type int64 is not supported"):
        sc.fit(xr.DataArray(np.zeros((3, 3), np.int64), dims=("y", "x")))
    data = open_da(B2)
    classes = sc.classify(data, sc.fit(data, count=3, nodata=0))
    (tmp_path / "x.tif").write_bytes(b"keep")
    with pytest.raises(ConfigError, match="exists"):
        sc.write_cog(classes, tmp_path / "x.tif", overwrite=False)
    with pytest.raises(ConfigError, match="blocksize"):
        sc.write_cog(classes, tmp_path / "y.tif", blocksize=100)
    with pytest.raises(ConfigError, match="expected uint8 class ids"):
        sc.write_cog(data, tmp_path / "z.tif")
    with pytest.raises(ConfigError, match="colour table stores no alpha"):
        sc.write_cog(classes, tmp_path / "t.tif", palette=["#ff000080", "#00ff00", "#0000ff"])
    with pytest.raises(ConfigError, match="palette.name: unknown colormap"):
        sc.write_cog(classes, tmp_path / "t.tif", palette="no_such_map")
    assert (tmp_path / "x.tif").read_bytes() == b"keep" and sorted(p.name for p in tmp_path.iterdir()) == ["x.tif"]


def test_scheme_models_build_without_the_tag():
    assert sc.Quantile(count=5).scheme == "quantile"
    fit = sc.fit(open_da(B2), scheme=sc.Quantile(count=5), nodata=0)
    assert np.array_equal(fit.edges, sc.fit(open_da(B2), scheme="quantile", count=5, nodata=0).edges)
    for model in (sc.EqualInterval, sc.NaturalBreaks, sc.StdMean, sc.HeadTailBreaks, sc.Percentiles, sc.BoxPlot):
        assert model().scheme in SCHEMES


def test_public_api_is_listed_and_documented():
    import inspect

    res = subprocess.run([sys.executable, "-c", "import pipeline; print(pipeline.__all__)"],
                         capture_output=True, text=True, env=child_env(), timeout=60)
    for name in ("fit", "classify", "colorize", "write_cog", "write_zarr"):
        assert repr(name) in res.stdout
        fn = getattr(sc, name)
        assert callable(fn) and not inspect.ismodule(fn)
        doc = inspect.getdoc(fn)
        assert all(part in doc for part in ("Parameters", "Returns", "Raises")), name
        kinds = [p.kind for p in list(inspect.signature(fn).parameters.values())[2:]]
        assert all(k == inspect.Parameter.KEYWORD_ONLY for k in kinds), name  # options are keyword-only
