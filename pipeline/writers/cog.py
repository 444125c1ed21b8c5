"""Cloud-Optimized GeoTIFF writer.

GDAL's COG driver is copy-only (before GDAL 3.13), so the write is two steps:

1. the classified tiles are stored, chunk by chunk, into an uncompressed tiled GeoTIFF beside
   the output (cheap to write and to read back; memory stays bounded by the chunk size);
2. GDAL copies it into the COG: tiles compressed on all cores (``NUM_THREADS``), internal
   overviews built with nearest/mode resampling, palette, nodata and georeferencing carried.

Both files live in the destination folder under temporary names; the COG is renamed into place
only when complete.
"""

from __future__ import annotations

import logging
from pathlib import Path

import dask
import dask.array as da
import numpy as np
import rasterio
import rasterio.shutil
from rasterio.enums import ColorInterp
from rasterio.windows import Window

from ..atomic import atomic_output, partial_path, remove
from ..config import Output
from ..io import raster_errors

log = logging.getLogger(__name__)


class WindowWriter:
    """A ``da.store`` target: each region is written as a window of an open GeoTIFF."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __setitem__(self, key, value: np.ndarray) -> None:
        window = Window.from_slices(key[-2], key[-1])
        if value.ndim == 2:
            self.dataset.write(value, 1, window=window)
        else:
            self.dataset.write(value, window=window)


def cog_options(out: Output) -> dict:
    """GDAL COG driver creation options for the configured output."""
    opts = {
        "BLOCKSIZE": out.blocksize,
        "COMPRESS": out.compression.upper(),
        "NUM_THREADS": "ALL_CPUS",
        "BIGTIFF": "IF_SAFER",
        "OVERVIEWS": "AUTO" if out.overviews else "NONE",
        "OVERVIEW_RESAMPLING": out.overview_resampling.upper(),
    }
    if out.level is not None and out.compression in ("zstd", "deflate"):
        opts["LEVEL"] = out.level
    return opts


def _staging_profile(scene, bands: int, blocksize: int) -> dict:
    height, width = scene.shape
    return {
        "driver": "GTiff", "width": width, "height": height, "count": bands, "dtype": "uint8",
        "crs": scene.crs, "transform": scene.transform, "tiled": True,
        "blockxsize": blocksize, "blockysize": blocksize, "compress": "none",
        "interleave": "band" if bands == 1 else "pixel", "bigtiff": "IF_SAFER",
        "nodata": 0 if bands == 1 else None,
    }


def write_cog(pixels: da.Array, scene, palette: np.ndarray, out: Output, final: Path, extra: dict | None = None) -> dict:
    """Write ``pixels`` ((y, x) class ids, or (band, y, x) colours) as a COG at ``final``.

    ``extra`` lazy results (e.g. class counts) are computed in the same pass as the write;
    their values are returned.
    """
    bands = 1 if pixels.ndim == 2 else pixels.shape[0]
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = partial_path(final, ".staging.tif")
    try:
        with raster_errors(str(final)):
            dst = rasterio.open(staging, "w", **_staging_profile(scene, bands, out.blocksize))
        with dst:
            if bands == 1:
                dst.write_colormap(1, {i: tuple(int(c) for c in rgba) for i, rgba in enumerate(palette)})
            elif bands == 4:
                dst.colorinterp = [ColorInterp.red, ColorInterp.green, ColorInterp.blue, ColorInterp.alpha]
            store = da.store(pixels, WindowWriter(dst), lock=True, compute=False)
            (results,) = dask.compute((store, extra or {}))
            results = results[1]
        with atomic_output(final, ".tif") as tmp, raster_errors(str(final)):
            rasterio.shutil.copy(staging, tmp, driver="COG", **cog_options(out))
    finally:
        remove(staging)
    log.info("wrote %s", final)
    return results
