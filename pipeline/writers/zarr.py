"""Zarr writer: class ids (and optionally colours) chunked like the processing tiles, georeferenced
as ``rioxarray.open_rasterio`` georeferences the input, so that ``xarray.open_zarr(...).rio``
recovers the CRS, the transform and the GCPs:

* rectilinear grids (north-up, south-up, any pixel shape): 1-D ``x``/``y`` pixel-centre
  coordinates and the geotransform;
* rotated grids: the geotransform only. 1-D coordinates cannot describe them, and 2-D ones
  (rioxarray's ``xc``/``yc``) would cost 16 bytes per pixel, 16 times the class ids; the
  position of pixel (row, col) is ``ds.rio.transform() * (col + 0.5, row + 0.5)``;
* GCPs: the GCPs and their CRS (``ds.rio.get_gcps()``, ``ds.rio.crs``), no x/y coordinates.

RPCs have no place in a Zarr store that GDAL or rioxarray read: a scene with RPCs gets a
warning that the Zarr output leaves them out.

Every chunk is written by the task that computed it, with no lock (chunks are aligned one to
one)."""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path
from typing import Callable

import dask
import dask.array as da
import numpy as np

from ..jobs.atomic import atomic_output

log = logging.getLogger(__name__.replace("pipeline", "sceneclass", 1))


def _dataset(classes: da.Array, colours: da.Array | None, scene):
    from .._engine.deferred import allow

    allow()
    import rioxarray  # noqa: F401  (registers the .rio accessor)
    import xarray as xr

    coords = scene.coords()
    ds = xr.Dataset({"classes": (("y", "x"), classes)}, coords=coords)
    # nodata as a plain attribute (rioxarray reads it), not _FillValue: ids stay uint8 on reopening
    ds["classes"].attrs.update(long_name="class id (0 = nodata)", nodata=0)
    ds["classes"].encoding["_FillValue"] = None
    if colours is not None:
        bands = colours.shape[0]
        ds["colour"] = (("band", "y", "x"), colours)
        ds = ds.assign_coords(band=("band", np.arange(1, bands + 1)))  # GDAL-style 1-based bands
        ds["colour"].attrs["band_names"] = ["red", "green", "blue", "alpha"][:bands]
    ds = scene.write_georeferencing(ds)
    if scene.rpcs is not None:
        log.warning("%s: its RPCs are left out of the Zarr output (Zarr has no place for them that GDAL or "
                    "rioxarray read; a COG output keeps them)", scene.path)
    for name in ds.data_vars:  # list spatial_ref as a coordinate, so plain open_zarr georeferences
        ds[name].encoding["coordinates"] = "spatial_ref"
    return ds


def write_zarr(
    classes: da.Array, colours: da.Array | None, scene, final: Path,
    extra: dict | None = None, attrs_fn: Callable[[dict], dict] | None = None,
    staged: Callable[[], None] | None = None,
) -> dict:
    """Write a Zarr store at ``final`` (atomically); returns the computed ``extra`` results.

    ``attrs_fn(results)`` gives group attributes known only after the pass (the legend).
    ``staged()`` is called once every chunk is written, before the store replaces anything
    at ``final``; if it raises, the store is removed and nothing is replaced.
    """
    import zarr

    ds = _dataset(classes, colours, scene)
    with atomic_output(final, make="dir") as tmp:
        with warnings.catch_warnings():  # consolidated metadata: what xarray.open_zarr looks for first
            warnings.filterwarnings("ignore", message="Consolidated metadata", category=UserWarning)
            delayed = ds.to_zarr(tmp, mode="w", compute=False, consolidated=True, zarr_format=3)
        (results,) = dask.compute((delayed, extra or {}))
        results = results[1]
        if staged is not None:
            staged()
        if attrs_fn is not None:
            attrs = json.loads(json.dumps(attrs_fn(results)))
            zarr.open_group(tmp, mode="r+").attrs.update(attrs)
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="Consolidated metadata", category=UserWarning)
                zarr.consolidate_metadata(tmp)
    log.info("wrote %s", final)
    return results
