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
one). Every chunk is written, the fill around a footprint too (``write_empty_chunks``): zarr's
check for chunks holding only the fill value (``numpy.array_equal`` with ``equal_nan``, four
whole-chunk passes and a boolean copy) cost more CPU than encoding and writing the few chunks
it would leave out (1.5 s against 0.5 s of CPU for 64 chunks of 2048 x 2048 class ids).
Readers see the same values either way.

A store in object storage (``s3://bucket/prefix/out.zarr``) is written by the tasks straight to
the bucket, under a temporary prefix beside it (``.out.zarr.<id>.sceneclass-partial``), every
chunk included (as locally: a missing chunk always means a missing write). Once
every chunk is there (checked by listing, :func:`remote_store_complete`) the run commits it
(:class:`RemoteStore`): object storage has no rename, so the previous store's metadata
(``zarr.json``) objects are deleted first (a half-replaced store is never taken for a store),
then its other objects, then the new chunks are copied in (server-side copies), the arrays'
metadata after them and the group's consolidated metadata last. A failed or interrupted run
before the commit leaves the previous store untouched; one interrupted during the commit leaves
a store without metadata, which no reader opens and the next batch redoes."""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path
from typing import Callable

import dask
import dask.array as da
import numpy as np

from .. import storage
from ..errors import OutputError
from ..jobs.atomic import PARTIAL_TAG, atomic_output, current_staging

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
    ds = _dataset(classes, colours, scene)
    url = storage.remote_of(final)
    if url is not None:
        return _write_remote(ds, url, final, extra, attrs_fn, staged)
    with atomic_output(final, make="dir") as tmp:
        results = _write_store(ds, tmp, extra, attrs_fn, staged)
    log.info("wrote %s", final)
    return results


def _write_store(ds, target, extra: dict | None, attrs_fn, staged, storage_options: dict | None = None) -> dict:
    """Write ``ds`` into the store at ``target`` (a local folder or a URL with ``storage_options``):
    every chunk (the fill's too) and ``extra`` in one ``dask.compute``, then ``staged()``, then the attributes
    ``attrs_fn(results)`` and the consolidated metadata (what xarray.open_zarr looks for first).
    Returns the computed ``extra``."""
    import zarr

    # zarr's own setting rather than to_zarr(write_empty_chunks=...): xarray 2025.1 passes that
    # keyword to zarr's create_array, which zarr 3.0 does not take. The arrays keep the setting they are
    # created with, also when pickled to workers.
    with warnings.catch_warnings(), zarr.config.set({"array.write_empty_chunks": True}):
        warnings.filterwarnings("ignore", message="Consolidated metadata", category=UserWarning)
        delayed = ds.to_zarr(target, mode="w", compute=False, consolidated=True, zarr_format=3,
                             storage_options=storage_options)
        (results,) = dask.compute((delayed, extra or {}))
    results = results[1]
    if staged is not None:
        staged()
    if attrs_fn is not None:
        attrs = json.loads(json.dumps(attrs_fn(results)))
        zarr.open_group(target, mode="r+", storage_options=storage_options).attrs.update(attrs)
        store = target if storage_options is None else zarr.storage.FsspecStore.from_url(
            target, storage_options=storage_options)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Consolidated metadata", category=UserWarning)
            zarr.consolidate_metadata(store)
    return results


def _write_remote(ds, url: str, final: Path, extra: dict | None, attrs_fn, staged) -> dict:
    """:func:`write_zarr` to object storage: chunks to a temporary prefix by the tasks, then
    staged (or committed) as a :class:`RemoteStore`."""
    import uuid

    access = storage.current()
    options = access.storage_options(storage.scheme(url))
    tmp = f"{storage.url_parent(url)}/.{storage.url_name(url)}.{uuid.uuid4().hex[:8]}{PARTIAL_TAG}"
    staged_store = RemoteStore(tmp, url)
    try:
        results = _write_store(ds, tmp, extra, attrs_fn, staged, options)
        missing = remote_store_missing(tmp)
        if missing:
            raise OutputError(f"{storage.display(url)}: {missing}; nothing was replaced")
    except BaseException:
        staged_store.discard()
        raise
    staging = current_staging()
    if staging is not None:
        staging.add(staged_store, final)
    else:
        staged_store.commit()
    log.info("wrote %s", storage.display(url))
    return results


def remote_store_missing(url: str) -> str | None:
    """What is missing from a Zarr store in object storage (its metadata, or chunks its arrays
    declare, found by listing), or None when it is complete."""
    import zarr

    options = storage.current().storage_options(storage.scheme(url))
    try:
        group = zarr.open_group(url, mode="r", storage_options=options, use_consolidated=False)
        arrays = list(group.arrays())
    except Exception as e:  # noqa: BLE001 - no store there, or unreadable metadata
        return f"no complete Zarr metadata ({storage.reason(e)})"
    for name, arr in arrays:
        if arr.nchunks_initialized != arr.nchunks:
            return f"array {name} has {arr.nchunks_initialized} of its {arr.nchunks} chunks"
    return None


def remote_store_complete(url: str) -> bool:
    """True when a Zarr store in object storage has its metadata and every chunk of every array."""
    return remote_store_missing(url) is None


class RemoteStore:
    """A Zarr store written under a temporary prefix, to be put at ``final`` (see the module
    docstring for the order of the commit) or discarded."""

    def __init__(self, tmp: str, final: str) -> None:
        self.tmp, self.final = tmp, final

    def _fs(self):
        return storage.current().filesystem(self.final)

    def commit(self) -> None:
        """Replace the store at ``final`` with the staged one; the metadata goes in last.

        Raises
        ------
        OutputError
            A request failed (the staged store is removed).
        """
        fs = self._fs()
        src, dst = self.tmp.split("://", 1)[1], self.final.split("://", 1)[1]
        try:
            fs.invalidate_cache()
            new = sorted(k[len(src) + 1:] for k in fs.find(src))
            old = sorted(k[len(dst) + 1:] for k in fs.find(dst)) if fs.exists(dst) else []
            old_meta = [k for k in old if k.rsplit("/", 1)[-1] == "zarr.json"]
            if old_meta:  # the previous store stops being a store first
                fs.rm([f"{dst}/{k}" for k in sorted(old_meta, key=lambda k: k != "zarr.json")])
            stale = sorted(set(old) - set(new) - set(old_meta))
            if stale:
                fs.rm([f"{dst}/{k}" for k in stale])
            chunks = [k for k in new if k.rsplit("/", 1)[-1] != "zarr.json"]
            meta = sorted((k for k in new if k.rsplit("/", 1)[-1] == "zarr.json"), key=lambda k: (k == "zarr.json", k))
            if chunks:
                fs.copy([f"{src}/{k}" for k in chunks], [f"{dst}/{k}" for k in chunks])
            for k in meta:  # arrays' metadata, then the group's (consolidated) last
                fs.copy(f"{src}/{k}", f"{dst}/{k}")
        except OutputError:
            raise
        except Exception as e:  # noqa: BLE001 - any client error is an output problem
            self.discard()
            raise OutputError(f"{storage.display(self.final)}: cannot put the store in place "
                              f"({storage.reason(e)})") from None
        self.discard()

    def discard(self) -> None:
        """Remove the staged store (best effort: a killed run's is swept by the next batch)."""
        try:
            storage.remove(self.tmp, recursive=True)
        except Exception:  # noqa: BLE001
            log.info("could not remove %s (the next batch sweeps it)", storage.display(self.tmp))
