"""Every kind of georeferencing reaches the outputs as GDAL reads it from the input: GCPs with
their CRS, rotated / south-up / mirrored / non-square-pixel geotransforms, world-file sidecars,
and none at all (one warning line). The quicklook is drawn north-up with the ground aspect.

Inputs are real GeoTIFFs written in tmp_path; the reference is the input's own metadata as
rasterio reads it (rasterio.transform.xy for pixel positions); runs go through the CLI.
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import rasterio
import rioxarray  # noqa: F401  (registers .rio)
import xarray as xr
import yaml
from affine import Affine
from PIL import Image
from rasterio.control import GroundControlPoint
from rasterio.crs import CRS
from rasterio.errors import NotGeoreferencedWarning
from rasterio.rpc import RPC
from rasterio.transform import xy
from rio_cogeo.cogeo import cog_validate

from _procs import sceneclass_all

QUICKLOOK = 64  # quicklook size: smaller than the scenes, so the pictures are decimated first
H, W = 90, 130  # rows, cols: neither is a multiple of the 64-pixel tiles and chunks
UTM = CRS.from_epsg(32633)
WGS84 = CRS.from_epsg(4326)
#: class id k (1..4) is ground quadrant k: 1 north-west, 2 north-east, 3 south-west, 4 south-east
COLOURS = {1: (255, 0, 0), 2: (0, 255, 0), 3: (0, 0, 255), 4: (255, 255, 0)}
QUADRANT_VALUE = {1: 100, 2: 200, 3: 300, 4: 400}


def rotation(deg: float, res: float, x0: float, y0: float) -> Affine:
    """A north-up ``res`` grid at (x0, y0) rotated by ``deg`` degrees (b and d non-zero)."""
    return Affine.translation(x0, y0) * Affine.rotation(deg) * Affine.scale(res, -res)


GRIDS = {
    "rotated": rotation(17.0, 30.0, 500000.0, 4000000.0),
    "south-up": Affine(30.0, 0.0, 500000.0, 0.0, 30.0, 4000000.0),
    "non-square": Affine(10.0, 0.0, 500000.0, 0.0, -40.0, 4000000.0),
    "mirrored": Affine(-20.0, 0.0, 503000.0, 0.0, -20.0, 4000000.0),  # columns run west
}


def centres(transform: Affine, shape=(H, W)) -> tuple[np.ndarray, np.ndarray]:
    rows, cols = np.mgrid[0:shape[0], 0:shape[1]]
    return transform * (cols + 0.5, rows + 0.5)


def footprint(transform: Affine, shape=(H, W)) -> tuple[float, float, float, float]:
    """left, bottom, right, top of the raster's four corners."""
    xs, ys = transform * (np.array([0, shape[1], 0, shape[1]]), np.array([0, 0, shape[0], shape[0]]))
    return xs.min(), ys.min(), xs.max(), ys.max()


def quadrant_values(transform: Affine, shape=(H, W)) -> np.ndarray:
    """uint16 pixels whose value says the ground quadrant of their centre (about the footprint's centre)."""
    x, y = centres(transform, shape)
    left, bottom, right, top = footprint(transform, shape)
    cx, cy = (left + right) / 2, (bottom + top) / 2
    quadrant = 1 + (x >= cx) + 2 * (y < cy)
    return np.vectorize(QUADRANT_VALUE.get)(quadrant).astype(np.uint16)


def write_tif(path: Path, data: np.ndarray, **georef) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(path, "w", driver="GTiff", height=data.shape[0], width=data.shape[1], count=1,
                           dtype=data.dtype, tiled=True, blockxsize=64, blockysize=64, **georef) as dst:
            dst.write(data, 1)
    return path


def gcp_dicts(gcps) -> list[dict]:
    return [g.asdict() for g in gcps]


# ------------------------------------------------------------------------------- inputs
#: a rotated, south-up lon/lat placement with non-square pixels, given to the raster only as 4 GCPs
GCP_AFFINE = Affine.translation(10.0, 49.0) * Affine.rotation(25.0) * Affine.scale(0.01, 0.005)
#: a north-up grid with non-square pixels, given to the raster only by a .tfw and an .aux.xml
SIDECAR_AFFINE = Affine(15.0, 0.0, 300000.0, 0.0, -25.0, 5000000.0)


def corner_gcps(transform: Affine, shape=(H, W)) -> list[GroundControlPoint]:
    corners = [(0, 0), (0, shape[1]), (shape[0], 0), (shape[0], shape[1])]
    return [GroundControlPoint(row=r, col=c, x=x, y=y, z=0.0, id=str(i + 1), info=f"corner {i + 1}")
            for i, (r, c) in enumerate(corners) for x, y in [transform * (c, r)]]


def sensor_rpcs(shape=(H, W)) -> RPC:
    """RPCs of a plain sensor model: column = scaled longitude, row = minus scaled latitude."""
    den = [1.0] + [0.0] * 19
    return RPC(height_off=0.0, height_scale=100.0, lat_off=49.5, lat_scale=0.5, long_off=10.5, long_scale=0.5,
               line_off=shape[0] / 2, line_scale=shape[0] / 2, line_num_coeff=[0.0, 0.0, -1.0] + [0.0] * 17,
               line_den_coeff=den, samp_off=shape[1] / 2, samp_scale=shape[1] / 2,
               samp_num_coeff=[0.0, 1.0] + [0.0] * 18, samp_den_coeff=den)


def write_inputs(folder: Path) -> None:
    folder.mkdir()
    write_tif(folder / "gcps.tif", quadrant_values(GCP_AFFINE), gcps=corner_gcps(GCP_AFFINE), crs=WGS84)
    # one tile: a COG without overviews
    small = quadrant_values(GCP_AFFINE, (40, 50))
    write_tif(folder / "gcps_small.tif", small, gcps=corner_gcps(GCP_AFFINE, small.shape), crs=WGS84)
    for kind, transform in GRIDS.items():
        write_tif(folder / f"{kind}.tif", quadrant_values(transform), crs=UTM, transform=transform)
    write_tif(folder / "plain.tif", quadrant_values(Affine.identity()))
    write_tif(folder / "rpcs.tif", quadrant_values(Affine.identity()), rpcs=sensor_rpcs())
    write_tif(folder / "sidecar.tif", quadrant_values(SIDECAR_AFFINE))  # no georeferencing inside
    centre = SIDECAR_AFFINE * (0.5, 0.5)  # a world file gives the centre of the top-left pixel
    t = SIDECAR_AFFINE
    (folder / "sidecar.tfw").write_text("\n".join(repr(v) for v in (t.a, t.d, t.b, t.e, *centre)) + "\n")
    (folder / "sidecar.tif.aux.xml").write_text(f"<PAMDataset><SRS>{UTM.to_wkt()}</SRS></PAMDataset>\n")


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict:
    """Every input through the CLI once per format (one batch each: quicklooks on, 64-pixel
    tiles and chunks, which do not divide the 90 x 130 scenes); {fmt: (folder, stderr)}."""
    root = tmp_path_factory.mktemp("georef")
    write_inputs(root / "in")
    result, paths = {}, {}
    for fmt in ("tif", "zarr"):
        cfg = {
            "inputs": [str(root / "in" / "*.tif")],
            "classes": {"scheme": "manual", "breaks": [50, 150, 250, 350, 450]},
            "palette": {"colors": [list(COLOURS[k]) for k in (1, 2, 3, 4)]},
            "output": {"folder": str(root / fmt), "path": "{stem}." + fmt, "blocksize": 64},
            "processing": {"chunk": 64},
            "outputs": {"quicklook": True, "quicklook_size": QUICKLOOK},
        }
        path = root / f"{fmt}.yaml"
        path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
        paths[fmt] = path
    for fmt, proc in zip(paths, sceneclass_all(*(("run", path) for path in paths.values()))):  # own folders
        assert proc.returncode == 0, proc.stderr
        assert "NotGeoreferencedWarning" not in proc.stderr, proc.stderr
        result[fmt] = (root / fmt, proc.stderr)
    result["in"] = root / "in"
    return result


# --------------------------------------------------------------------------------- GCPs
@pytest.mark.parametrize("name", ["gcps", "gcps_small"])
def test_gcps_carried_into_the_cog(runs, name):
    src, out = runs["in"] / f"{name}.tif", runs["tif"][0] / f"{name}.tif"
    with rasterio.open(src) as ref, rasterio.open(out) as got:
        (ref_gcps, ref_crs), (got_gcps, got_crs) = ref.gcps, got.gcps
        assert len(ref_gcps) == 4 and ref_crs == WGS84  # the reference is what we meant
        assert gcp_dicts(got_gcps) == gcp_dicts(ref_gcps)
        assert got_crs == ref_crs
        assert got.transform.is_identity and got.crs is None  # as GDAL has it for a GCP raster
        assert bool(got.overviews(1)) == (name == "gcps")  # both assembly paths
    assert cog_validate(str(out), strict=True)[0]


def test_gcps_carried_into_the_zarr(runs):
    src, out = runs["in"] / "gcps.tif", runs["zarr"][0] / "gcps.zarr"
    ds = xr.open_zarr(out)
    with rasterio.open(src) as ref:
        ref_gcps, ref_crs = ref.gcps
    expected = rioxarray.open_rasterio(src)  # rioxarray's own reading of the input
    assert gcp_dicts(ds.rio.get_gcps()) == gcp_dicts(ref_gcps)
    assert ds.rio.crs == ref_crs
    assert "x" not in ds.coords and "y" not in ds.coords  # GCPs: no 1-D coordinates, as rioxarray reads it
    assert set(ds.coords) == set(expected.coords) - {"band"}
    assert ds.rio.transform() == expected.rio.transform()
    np.testing.assert_array_equal(ds["classes"].values, quadrant_values(GCP_AFFINE) // 100)


@pytest.mark.parametrize("fmt", ["tif", "zarr"])
def test_gcp_quicklook_is_warped_north_up(runs, fmt):
    assert_north_up(runs[fmt][0] / "gcps.quicklook.png", GCP_AFFINE)


# ------------------------------------------------------------------------ no georeferencing
@pytest.mark.parametrize("fmt", ["tif", "zarr"])
def test_no_georeferencing_is_one_warning_line(runs, fmt):
    folder, stderr = runs[fmt]
    src = runs["in"] / "plain.tif"
    lines = [ln for ln in stderr.splitlines() if "georeferenc" in ln.lower() or "plain.tif" in ln and "WARN" in ln]
    assert len(lines) == 1, stderr  # one line for plain.tif, none for the georeferenced inputs
    assert f"WARNING {src} has no georeferencing (no CRS, transform or GCPs)" in lines[0]
    assert "pixel coordinates" in lines[0]
    if fmt == "tif":
        with rasterio.open(folder / "plain.tif") as got:  # as GDAL reads the input: identity, no CRS or GCPs
            assert got.transform.is_identity and got.crs is None and not got.gcps[0]
    else:
        ds = xr.open_zarr(folder / "plain.zarr")
        assert ds.rio.crs is None and ds.rio.transform().is_identity
        np.testing.assert_array_equal(ds.x.values, np.arange(W) + 0.5)  # rioxarray's pixel coordinates
    # no georeferencing: the quicklook is the raster as it is
    ql = np.asarray(Image.open(folder / "plain.quicklook.png"))
    rows, cols = ql.shape[:2]
    assert QUICKLOOK / 2 < cols <= QUICKLOOK and abs(rows - cols * H / W) <= 1  # the raster's aspect
    ids = quadrant_values(Affine.identity()) // 100
    for fy, fx in ((0.2, 0.2), (0.2, 0.8), (0.8, 0.2), (0.8, 0.8)):
        assert tuple(ql[int(fy * rows), int(fx * cols)]) == (*COLOURS[ids[int(fy * H), int(fx * W)]], 255)


# ------------------------------------------------------------- rotated, south-up, non-square
@pytest.mark.parametrize("kind", list(GRIDS))
def test_grid_in_cog_and_zarr(runs, kind):
    transform = GRIDS[kind]
    with rasterio.open(runs["in"] / f"{kind}.tif") as ref:
        ref_transform, ref_crs = ref.transform, ref.crs
    assert ref_transform == transform  # the reference is what we meant
    with rasterio.open(runs["tif"][0] / f"{kind}.tif") as got:
        assert got.transform == ref_transform and got.crs == ref_crs

    ds = xr.open_zarr(runs["zarr"][0] / f"{kind}.zarr")
    assert ds.rio.crs == ref_crs
    assert ds.rio.transform() == ref_transform
    expected = xy(ref_transform, 10, 20)  # the ground position of pixel (row 10, col 20)
    np.testing.assert_allclose(ds.rio.transform() * (20.5, 10.5), expected, rtol=0, atol=1e-6)
    if kind == "rotated":  # no 1-D coordinates can describe it: none are claimed
        assert "x" not in ds.coords and "y" not in ds.coords
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "non-rectilinear ... Unable to recalculate"
            assert ds.rio.transform(recalc=True) == ref_transform
    else:  # 1-D pixel-centre coordinates, any sign and size of the pixel
        np.testing.assert_allclose((ds.x.values[20], ds.y.values[10]), expected, rtol=0, atol=1e-6)
        np.testing.assert_allclose(tuple(ds.rio.transform(recalc=True))[:6], tuple(ref_transform)[:6],
                                   rtol=0, atol=1e-6)
    assert int(ds["classes"].values[10, 20]) == quadrant_values(transform)[10, 20] // 100


@pytest.mark.parametrize("fmt", ["tif", "zarr"])
@pytest.mark.parametrize("kind", list(GRIDS))
def test_quicklook_north_up_with_ground_aspect(runs, kind, fmt):
    assert_north_up(runs[fmt][0] / f"{kind}.quicklook.png", GRIDS[kind])


def assert_north_up(png: Path, transform: Affine) -> None:
    """The quicklook covers the footprint north-up with square ground pixels: each ground
    quadrant's colour is where a map shows it, and the aspect is the ground's."""
    ql = np.asarray(Image.open(png))
    rows, cols = ql.shape[:2]
    left, bottom, right, top = footprint(transform)
    ratio = (right - left) / (top - bottom)
    assert QUICKLOOK / 2 < max(rows, cols) <= QUICKLOOK  # at most the size (Zarr: a strided read)
    assert abs(cols - rows * ratio) <= 1 + ratio, (rows, cols, ratio)  # the ground's aspect, to a pixel
    cx, cy = (left + right) / 2, (bottom + top) / 2
    # points well inside the footprint (a disc about the centre), one per quadrant
    half = min(math.hypot(transform.a, transform.d) * W, math.hypot(transform.b, transform.e) * H) / 2
    r = 0.3 * half
    for k, (x, y) in {1: (cx - r, cy + r), 2: (cx + r, cy + r), 3: (cx - r, cy - r), 4: (cx + r, cy - r)}.items():
        col = int((x - left) / (right - left) * cols)
        row = int((top - y) / (top - bottom) * rows)
        assert tuple(ql[row, col]) == (*COLOURS[k], 255), (k, row, col, ql[row, col])


# ------------------------------------------------------------------------------- RPCs
def test_rpcs_carried_into_the_cog_and_named_for_zarr(runs):
    with rasterio.open(runs["in"] / "rpcs.tif") as ref, rasterio.open(runs["tif"][0] / "rpcs.tif") as got:
        assert ref.rpcs is not None and ref.gcps[0] == [] and ref.transform.is_identity
        assert got.rpcs is not None and got.rpcs.to_gdal() == ref.rpcs.to_gdal()
    tif_warnings = [ln for ln in runs["tif"][1].splitlines() if "WARNING" in ln and "rpcs.tif" in ln]
    assert tif_warnings == []  # RPCs are georeferencing: no warning for the COG
    zarr_warnings = [ln for ln in runs["zarr"][1].splitlines() if "WARNING" in ln and "rpcs.tif" in ln]
    assert len(zarr_warnings) == 1 and "RPCs are left out of the Zarr output" in zarr_warnings[0]


# ------------------------------------------------------------------------- sidecar files
def test_world_file_and_aux_xml_georeference_a_local_tif(runs):
    with rasterio.open(runs["in"] / "sidecar.tif") as ref:  # plain rasterio (GDAL) reads the sidecars
        ref_transform, ref_crs = ref.transform, ref.crs
    assert ref_transform == SIDECAR_AFFINE and ref_crs == UTM  # the reference is what we meant
    for fmt in ("tif", "zarr"):
        assert "sidecar.tif has no georeferencing" not in runs[fmt][1]
    out = runs["tif"][0] / "sidecar.tif"
    with rasterio.open(out) as got:
        assert got.transform == ref_transform and got.crs == ref_crs
    legend = json.loads(out.with_suffix(".legend.json").read_text())
    assert legend["crs"] == ref_crs.to_string() and legend["transform"] == list(ref_transform)[:6]
    ds = xr.open_zarr(runs["zarr"][0] / "sidecar.zarr")
    assert ds.rio.crs == ref_crs and ds.rio.transform() == ref_transform
