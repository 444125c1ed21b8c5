"""Writers: classified (and coloured) tiles to a COG or a Zarr store, tile by tile."""

from .cog import write_cog
from .legend import build_legend, legend_path, write_legend
from .zarr import write_zarr

__all__ = ["write_cog", "write_zarr", "build_legend", "legend_path", "write_legend"]
