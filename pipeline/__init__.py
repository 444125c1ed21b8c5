"""sceneclass: classify very large satellite scenes into value classes, out of core.

The Python API works on xarray DataArrays (dask- or numpy-backed, e.g. from
``rioxarray.open_rasterio(path, chunks=True)``)::

    import pipeline as sc
    fit = sc.fit(da, scheme="quantile", count=10)   # one statistics pass: edges + statistics
    classes = sc.classify(da, fit)                   # lazy uint8 DataArray, nodata 0, same coords/CRS
    rgb = sc.colorize(classes, palette="viridis")    # lazy (band, y, x)
    sc.write_cog(classes, "out.tif", legend=fit.legend())
    da.sceneclass.classify(scheme="natural_breaks", count=7)   # the same, as an accessor

The functions load on first use, so that ``sceneclass`` on the command line does not pay for
xarray's import; the ``.sceneclass`` accessor registers itself when xarray is imported.
"""

from __future__ import annotations

import importlib
import sys

__version__ = "0.1.0"

#: public name -> the module that defines it
_EXPORTS = {
    "fit": "api", "classify": "api", "colorize": "api", "write_cog": "api", "write_zarr": "api",
    "FitResult": "api", "to_scene": "api", "scheme_config": "api", "band_math": "api",
    "EqualInterval": "jobs.config", "Quantile": "jobs.config", "Manual": "jobs.config",
    "NaturalBreaks": "jobs.config", "StdMean": "jobs.config", "HeadTailBreaks": "jobs.config",
    "Percentiles": "jobs.config", "BoxPlot": "jobs.config", "Palette": "jobs.config",
    "SceneclassError": "errors", "ConfigError": "errors", "InputError": "errors",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


def _register_accessor(_xarray=None) -> None:
    importlib.import_module(".accessor", __name__)


if sys.modules.get("xarray") is not None:
    _register_accessor()
else:  # when (and if) xarray is imported
    import wrapt

    wrapt.register_post_import_hook(_register_accessor, "xarray")
