"""Writers: classified (and coloured) tiles to a COG or a Zarr store, tile by tile."""

from .cog import write_cog
from .legend import build_legend, legend_path, write_legend

__all__ = ["write_cog", "write_zarr", "build_legend", "legend_path", "write_legend"]


def write_zarr(*args, **kwargs):
    """See :func:`pipeline.writers.zarr.write_zarr` (imported on use: zarr is slow to import)."""
    from .zarr import write_zarr as _write_zarr

    return _write_zarr(*args, **kwargs)
