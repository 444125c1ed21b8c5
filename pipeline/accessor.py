"""The ``.sceneclass`` accessor on xarray DataArrays (registered when xarray is imported).

``da.sceneclass.classify(scheme="quantile", count=10)`` fits and classifies in one call; each
method is the :mod:`pipeline.api` function of the same name with the DataArray as first argument.
"""

from __future__ import annotations

import xarray as xr


@xr.register_dataarray_accessor("sceneclass")
class SceneclassAccessor:
    """Classify, colour and write a DataArray with sceneclass (see :mod:`pipeline.api`)."""

    def __init__(self, data: xr.DataArray):
        self._data = data

    def fit(self, **options):
        """:func:`pipeline.api.fit` of this DataArray (keyword options only); returns a FitResult."""
        from .api import fit

        return fit(self._data, **options)

    def classify(self, fitted=None, **options) -> xr.DataArray:
        """Class ids of this DataArray (lazy uint8, nodata 0).

        Parameters
        ----------
        fitted : FitResult, optional
            Edges from :func:`pipeline.api.fit`; without it they are fitted here from
            ``options`` (``scheme``, ``count``, ``nodata``, ... as :func:`pipeline.api.fit`).
        **options
            Passed to :func:`pipeline.api.fit`.

        Returns
        -------
        xarray.DataArray
            (y, x) uint8 class ids with this array's coordinates and CRS; ``class_edges`` attribute.

        Raises
        ------
        ConfigError
            ``fitted`` given together with fit options, or as :func:`pipeline.api.fit`.
        """
        from .api import classify, fit
        from .errors import ConfigError

        if fitted is not None and options:
            raise ConfigError(f"classify: give either a fit or fit options ({', '.join(options)}), not both")
        if fitted is None:
            fitted = fit(self._data, **options)
        return classify(self._data, fitted, nodata=fitted.nodata)

    def colorize(self, **options) -> xr.DataArray:
        """:func:`pipeline.api.colorize` of these class ids."""
        from .api import colorize

        return colorize(self._data, **options)

    def write_cog(self, path, **options):
        """:func:`pipeline.api.write_cog` of these class ids."""
        from .api import write_cog

        return write_cog(self._data, path, **options)

    def write_zarr(self, path, **options):
        """:func:`pipeline.api.write_zarr` of these class ids."""
        from .api import write_zarr

        return write_zarr(self._data, path, **options)
