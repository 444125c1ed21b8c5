"""The Python API on xarray: fit class edges to a DataArray, classify, colour and write it.

Every function takes a 2-D :class:`xarray.DataArray` (dask- or numpy-backed; a ``(band, y, x)``
array with one band, as ``rioxarray.open_rasterio`` gives, is squeezed) and goes through the same
machinery as the command line: :func:`pipeline.core.fit` (one statistics pass, exact edges),
:func:`pipeline.core.classify` (lazy, block by block) and the COG and Zarr writers. Results
are DataArrays with the input's coordinates, attributes and CRS.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import dask
import dask.array as da
import numpy as np
import rioxarray  # noqa: F401  (registers the .rio accessor)
import xarray as xr
from affine import Affine
from pydantic import BaseModel, TypeAdapter, ValidationError

from . import __version__
from . import core
from .errors import ConfigError, InputError
from .jobs.config import SCHEME_MODELS, Classes, Output, Palette, format_validation_error
from .palette import build_palette
from .scene import SUPPORTED_DTYPES, Scene, resolve_nodata
from .writers import build_legend, legend_path, write_legend

__all__ = ["FitResult", "fit", "classify", "colorize", "write_cog", "write_zarr", "to_scene", "scheme_config",
           "band_math"]

#: output modes: colour bands per pixel (0: class ids with a colour table)
BANDS = {"paletted": 0, "rgb": 3, "rgba": 4}
#: attributes that describe the input's values, not class ids: not carried over to the classes
VALUE_ATTRS = ("_FillValue", "missing_value", "nodata", "scale_factor", "add_offset", "units", "valid_range",
               "valid_min", "valid_max", "actual_range", "long_name", "standard_name")
_CLASSES_ADAPTER = TypeAdapter(dict[Literal["classes"], Classes])
_AUTO = "auto"


# ------------------------------------------------------------------------------ inputs
def _plane(data: xr.DataArray, what: str = "data") -> tuple[xr.DataArray, int]:
    """The (y, x) plane of ``data`` and its band number: other dimensions of length 1 (a band,
    a time) are squeezed; a longer one is refused."""
    if not isinstance(data, xr.DataArray):
        raise TypeError(f"{what}: expected an xarray.DataArray, got {type(data).__name__}")
    if data.ndim < 2:
        raise ConfigError(f"{what}: expected a 2-D (y, x) array, got dimensions {data.dims}")
    y, x = _spatial_dims(data)
    band = 1
    for dim in [d for d in data.dims if d not in (y, x)]:
        if data.sizes[dim] != 1:
            raise ConfigError(
                f"{what}: has {data.sizes[dim]} {dim}s along '{dim}'; classify one at a time, "
                f"e.g. data.isel({dim}=0)"
            )
        if dim == "band" and dim in data.coords and np.issubdtype(data[dim].dtype, np.integer):
            band = int(data[dim].values[0])
        data = data.isel({dim: 0})
    return data.transpose(y, x), band


def _spatial_dims(data: xr.DataArray) -> tuple[str, str]:
    """(y, x) dimension names: rioxarray's when it finds them, else the last two."""
    try:
        return data.rio.y_dim, data.rio.x_dim
    except Exception:  # rioxarray raises its own errors when no x/y-like dims exist
        return data.dims[-2], data.dims[-1]


def _declared_nodata(data: xr.DataArray) -> float | None:
    """The nodata value the DataArray declares: rioxarray's (``_FillValue``, encoded or not),
    else a ``nodata`` or ``missing_value`` attribute."""
    try:
        value = data.rio.nodata
    except Exception:
        value = None
    if value is None:
        value = data.attrs.get("nodata", data.attrs.get("missing_value"))
    return None if value is None else float(value)


def _georef(data: xr.DataArray):
    """(crs, transform) through rioxarray; (None, identity) for a plain array."""
    try:
        crs = data.rio.crs
    except Exception:
        crs = None
    try:
        transform = data.rio.transform()
    except Exception:
        transform = Affine.identity()
    return crs, transform


def _dask(data: xr.DataArray) -> da.Array:
    """The DataArray's dask array, or its numpy values wrapped as one (one chunk)."""
    values = data.data
    if isinstance(values, da.Array):
        return values
    return da.from_array(np.asarray(values), chunks=-1)


def to_scene(data: xr.DataArray, *, nodata: float | None | str = _AUTO) -> Scene:
    """View a DataArray as a lazy, georeferenced :class:`~pipeline.scene.Scene`.

    Parameters
    ----------
    data : xarray.DataArray
        Shape (y, x), or (band, y, x) with one band; any dtype of
        :data:`pipeline.scene.SUPPORTED_DTYPES`; dask- or numpy-backed. Nothing is computed.
    nodata : float, None or "auto", optional
        The value that marks missing pixels (in the data's units). ``"auto"`` (default): the
        value the DataArray declares (``rio.nodata``, ``_FillValue``, ``nodata`` attribute);
        None: no value is nodata. NaN is always nodata for floats.

    Returns
    -------
    Scene
        ``array`` is the (y, x) dask array; ``crs`` and ``transform`` come from rioxarray
        (identity transform without coordinates).

    Raises
    ------
    ConfigError
        More than one band, not 2-D, or a ``nodata`` that is not a number.
    InputError
        A dtype sceneclass does not classify.
    """
    plane, band = _plane(data)
    dtype = plane.dtype
    if dtype.name not in SUPPORTED_DTYPES:
        raise InputError(f"data: data type {dtype} is not supported ({', '.join(SUPPORTED_DTYPES)})")
    if isinstance(nodata, str) and nodata != _AUTO:
        raise ConfigError(f"nodata: {nodata!r} is not a number, None or 'auto'")
    setting = "file" if nodata == _AUTO else ("none" if nodata is None else nodata)
    crs, transform = _georef(plane)
    source = data.encoding.get("source") or (str(data.name) if data.name is not None else "<DataArray>")
    return Scene(path=source, band=band, array=_dask(plane),
                 nodata=resolve_nodata(_declared_nodata(data), setting, dtype),
                 crs=crs, transform=transform)


def scheme_config(scheme: str | BaseModel = "equal_interval", **options: Any) -> BaseModel:
    """The typed scheme settings (a :mod:`pipeline.jobs.config` model) from keywords.

    Parameters
    ----------
    scheme : str or scheme model
        One of ``equal_interval``, ``quantile``, ``manual``, ``natural_breaks``, ``std_mean``,
        ``head_tail_breaks``, ``percentiles``, ``box_plot``; or a model such as
        ``Quantile(count=5)`` (then ``options`` must be empty).
    **options
        The scheme's keys as in a config's ``classes`` section (``count``, ``breaks``,
        ``multiples``, ``pct``, ``hinge``, ``max_classes``, ``float_bins``); None means the default.

    Returns
    -------
    pydantic.BaseModel
        A frozen, validated scheme model.

    Raises
    ------
    ConfigError
        Unknown scheme, a key the scheme does not take, or an invalid value (named).
    """
    given = {k: v for k, v in options.items() if v is not None}
    if isinstance(scheme, SCHEME_MODELS):
        if given:
            raise ConfigError(f"scheme: give the options inside {type(scheme).__name__}(...), not as keywords")
        return scheme
    data = {"classes": {"scheme": scheme, **given}}
    try:
        return _CLASSES_ADAPTER.validate_python(data)["classes"]
    except ValidationError as e:  # name the keyword: "fit: count: ..." (not "classes.count")
        raise ConfigError(format_validation_error(e, "fit", data).replace("fit: classes.", "fit: ", 1)) from None


def _palette_model(palette) -> Palette:
    if palette is None:
        return Palette()
    if isinstance(palette, Palette):
        return palette
    if isinstance(palette, str):
        data = {"name": palette}
    elif isinstance(palette, dict):
        data = dict(palette)
    else:
        data = {"colors": [c if isinstance(c, str) else [int(v) for v in c] for c in palette]}
    try:
        return Palette(**data)
    except ValidationError as e:
        raise ConfigError(format_validation_error(e, "palette", data)) from None


# ---------------------------------------------------------------------------- the fit
@dataclass(frozen=True)
class FitResult(core.Fit):
    """Class edges fitted to a DataArray, with the statistics they came from.

    Attributes
    ----------
    scheme : str
        The scheme's name.
    edges : numpy.ndarray
        Shape (N+1,), the class edges in the data's units; class k (1..N) holds
        ``edges[k-1] <= x < edges[k]``, the last class also ``x == edges[N]``.
    stats : pipeline.stats.Stats
        Count, min, max of the valid pixels (and, for 8/16-bit data, the exact histogram).
    config : pydantic.BaseModel
        The scheme settings used.
    nodata : float or None
        The nodata value honoured (NaN is always nodata for floats).
    scene : Scene
        The fitted data, as a lazy scene (for the legend's georeferencing).
    """

    config: BaseModel = None
    nodata: float | None = None
    scene: Scene = field(default=None, repr=False)

    @property
    def counts(self) -> np.ndarray | None:
        """Pixels per class id 0..N (0: nodata) from the exact histogram of 8/16-bit data, shape
        (N+1,), int64; None for other dtypes (their counts come from a write)."""
        counts = core.counts_from_hist(self.scene, self)
        return None if counts is None else counts[: self.n_classes + 1]

    def legend(self, *, palette: Any = None) -> dict:
        """The legend (the CLI's ``.legend.json`` content) as a JSON-ready dict.

        Parameters
        ----------
        palette : str, list of colours, dict or Palette, optional
            The class colours: a colormap name, hex strings or [r, g, b(, a)] lists, or a
            ``palette`` config mapping. Default: viridis.

        Returns
        -------
        dict
            Edges, colours, min/max and per class its pixel count and percent. Counts are
            exact for 8/16-bit data; for other dtypes they are None until :func:`write_cog` or
            :func:`write_zarr` fills them from the write pass.

        Raises
        ------
        ConfigError
            An invalid palette.
        """
        table = build_palette(_palette_model(palette), self.n_classes)
        counts = self.counts
        legend = build_legend(scene=self.scene, fitted=self, palette=table,
                              counts=counts if counts is not None else np.zeros(self.n_classes + 1, np.int64),
                              version=__version__, output="")
        legend["output"] = None
        if counts is None:
            legend = _with_counts(legend, None)
            legend["valid_pixels"] = self.stats.count
        return legend


def fit(data: xr.DataArray, *, scheme: str | BaseModel = "equal_interval", count: int | None = None,
        breaks: list[float] | None = None, multiples: list[float] | None = None,
        pct: list[float] | None = None, hinge: float | None = None, max_classes: int | None = None,
        float_bins: int | None = None, nodata: float | None | str = _AUTO) -> FitResult:
    """Fit class edges to the valid pixels of ``data`` (one statistics pass, one ``dask.compute``).

    The edges are the command line's, bit for bit: equal_interval gives
    ``numpy.histogram_bin_edges``, quantile ``numpy.quantile`` (linear) of the valid pixels.

    Parameters
    ----------
    data : xarray.DataArray
        Shape (y, x) or (1, y, x); uint8, int8, uint16, int16, uint32, int32, float32 or
        float64; dask- or numpy-backed.
    scheme : str or scheme model, optional
        ``equal_interval`` (default), ``quantile``, ``manual``, ``natural_breaks``, ``std_mean``,
        ``head_tail_breaks``, ``percentiles``, ``box_plot``, or a model such as ``Quantile(count=5)``.
    count : int, optional
        Number of classes (1..254) for equal_interval, quantile, natural_breaks.
    breaks : list of float, optional
        manual: the N+1 increasing edges, in the data's units.
    multiples : list of float, optional
        std_mean: edges at mean + multiples x standard deviation.
    pct : list of float, optional
        percentiles: the percentiles (0..100, the last 100) that end the classes.
    hinge : float, optional
        box_plot: fence distance in interquartile ranges (default 1.5).
    max_classes : int, optional
        head_tail_breaks: the most classes to make.
    float_bins : int, optional
        natural_breaks on non-integer data: histogram bins to optimise over.
    nodata : float, None or "auto", optional
        The nodata value (data units); "auto" (default): the one ``data`` declares; None: none.

    Returns
    -------
    FitResult
        ``edges`` (N+1,), ``stats``, ``n_classes`` and ``legend()``.

    Raises
    ------
    ConfigError
        An unknown scheme, an option it does not take, an invalid value, or more than one band.
    InputError
        An unsupported dtype.
    """
    cfg = scheme_config(scheme, count=count, breaks=breaks, multiples=multiples, pct=pct, hinge=hinge,
                        max_classes=max_classes, float_bins=float_bins)
    scene = to_scene(data, nodata=nodata)
    fitted = core.fit(scene, cfg)
    return FitResult(fitted.scheme, fitted.edges, fitted.stats, fitted.passes, outside=fitted.outside, config=cfg,
                     nodata=scene.nodata, scene=scene)


# ------------------------------------------------------------------------ the results
def band_math(expression: str | None = None, *, index: str | None = None, nodata: float | None | str = _AUTO,
              **bands: xr.DataArray) -> xr.DataArray:
    """A band computed lazily from named DataArrays, as ``bands:`` with ``expression:`` or
    ``index:`` computes it in a config (see :mod:`pipeline.expression` for the syntax).

    Parameters
    ----------
    expression : str, optional
        Band math on the keyword names, e.g. ``"(nir - red) / (nir + red)"``.
    index : str, optional
        Or a named index preset instead (``ndvi``, ``ndwi``, ``mndwi``, ``nbr``, ``ndbi``,
        ``savi``); its band names must be given.
    nodata : float, None or "auto", optional
        Each band's nodata value, as for :func:`to_scene` (``auto``: what each declares).
    **bands : xarray.DataArray
        The named bands: (y, x) or (1, y, x), one shape, CRS and transform; any dtype of
        :data:`pipeline.scene.SUPPORTED_DTYPES`; dask- or numpy-backed (the first band's
        chunks are used). Names cannot be ``expression``, ``index`` or ``nodata``.

    Returns
    -------
    xarray.DataArray
        (y, x) with the first band's coordinates and CRS; float32 (float64 when a band used is
        float64 or a 32-bit integer); NaN where any band used is nodata or the result is not
        finite. Lazy: nothing is computed. ``fit`` / ``classify`` take it as any float band.

    Raises
    ------
    ConfigError
        Neither or both of ``expression`` and ``index``; an expression that is not allowed or
        uses a name not given; bands on different grids.
    """
    from .derived import derive
    from .expression import check_band_names, index as preset, parse

    if (expression is None) == (index is None):
        raise ConfigError("band_math: give exactly one of expression or index")
    check_band_names(bands)
    checked = preset(index) if index is not None else parse(expression, set(bands))
    missing = sorted(checked.names - set(bands))
    if missing:
        raise ConfigError(f"index: {index} needs the band(s) {', '.join(missing)}")
    scenes = {name: to_scene(band, nodata=nodata) for name, band in bands.items() if name in checked.names}
    result = derive(scenes, checked, index=index)
    first = min(checked.names)
    plane, _ = _plane(bands[first], first)
    return _like(plane, result.array, index or "expression", {"expression": checked.text}, result.crs)


def _result_attrs(attrs: dict) -> dict:
    return {k: v for k, v in attrs.items() if k not in VALUE_ATTRS and not k.startswith("STATISTICS_")}


def _like(plane: xr.DataArray, values: da.Array, name: str, attrs: dict, crs) -> xr.DataArray:
    out = xr.DataArray(values, dims=plane.dims, coords=plane.coords, name=name, attrs=attrs)
    return out.rio.write_crs(crs) if crs is not None else out


def classify(data: xr.DataArray, fitted: FitResult, *, nodata: float | None | str = _AUTO) -> xr.DataArray:
    """Class ids of every pixel of ``data`` under ``fitted``'s edges (lazy, block by block).

    Parameters
    ----------
    data : xarray.DataArray
        Shape (y, x) or (1, y, x), any supported dtype; usually the array ``fitted`` came from.
    fitted : FitResult
        From :func:`fit`.
    nodata : float, None or "auto", optional
        "auto" (default): the nodata value of the fit.

    Returns
    -------
    xarray.DataArray
        Shape (y, x), uint8: 0 nodata (also NaN and values outside the edges), 1..N the
        classes. Same coordinates, chunks and CRS as ``data``; the input's attributes except
        those describing its values; ``class_edges``, ``scheme`` attributes; nodata 0 (``rio.nodata``).

    Raises
    ------
    ConfigError, InputError
        As :func:`fit`.
    """
    if not isinstance(fitted, FitResult):
        raise TypeError(f"fitted: expected the result of pipeline.fit, got {type(fitted).__name__}")
    scene = to_scene(data, nodata=fitted.nodata if nodata == _AUTO else nodata)
    plane, _ = _plane(data)
    attrs = _result_attrs(data.attrs)
    attrs.update(long_name="class id (0 = nodata)", scheme=fitted.scheme,
                 class_edges=[float(e) for e in fitted.edges])
    out = _like(plane, core.classify(scene, fitted), "classes", attrs, scene.crs)
    return out.rio.write_nodata(0, encoded=False)


def _n_classes(classes: xr.DataArray, legend: dict | None = None) -> int:
    if "class_edges" in classes.attrs:
        return len(classes.attrs["class_edges"]) - 1
    if legend is not None:
        return len(legend["classes"])
    raise ConfigError("classes: no 'class_edges' attribute (use the result of pipeline.classify()) and no legend")


def _class_plane(classes: xr.DataArray) -> tuple[xr.DataArray, Scene]:
    plane, band = _plane(classes, "classes")
    if plane.dtype != np.uint8:
        raise ConfigError(f"classes: expected uint8 class ids (from pipeline.classify()), got {plane.dtype}")
    crs, transform = _georef(plane)
    return plane, Scene(path=str(classes.name), band=band, array=_dask(plane), nodata=0, crs=crs,
                        transform=transform)


def colorize(classes: xr.DataArray, *, palette: Any = None, mode: Literal["rgb", "rgba"] = "rgb") -> xr.DataArray:
    """Colours of class ids through a palette (lazy).

    Parameters
    ----------
    classes : xarray.DataArray
        Shape (y, x), uint8 class ids from :func:`classify` (its ``class_edges`` attribute gives N).
    palette : str, list of colours, dict or Palette, optional
        A colormap name (default viridis), hex strings or [r, g, b(, a)] lists, or a ``palette``
        config mapping.
    mode : {"rgb", "rgba"}
        3 or 4 bands; nodata (class 0) is transparent black.

    Returns
    -------
    xarray.DataArray
        Shape (band, y, x), uint8, ``band`` = 1..3 (or 4), same coordinates and CRS as ``classes``.

    Raises
    ------
    ConfigError
        An invalid palette or mode, or ``classes`` without ``class_edges``.
    """
    if mode not in ("rgb", "rgba"):
        raise ConfigError(f"mode: {mode!r}; one of 'rgb', 'rgba'")
    plane, scene = _class_plane(classes)
    table = build_palette(_palette_model(palette), _n_classes(classes))
    bands = BANDS[mode]
    colours = core.colorize(scene.array, table, bands)
    out = xr.DataArray(colours, dims=("band", *plane.dims), name="colour",
                       coords={**{k: v for k, v in plane.coords.items()}, "band": np.arange(1, bands + 1)},
                       attrs={"band_names": ["red", "green", "blue", "alpha"][:bands]})
    return out.rio.write_crs(scene.crs) if scene.crs is not None else out


# ------------------------------------------------------------------------------ writing
def _with_counts(legend: dict, counts: np.ndarray | None) -> dict:
    """A copy of ``legend`` with its pixel counts (per class id 0..N) set, or cleared (None)."""
    legend = {**legend, "classes": [dict(c) for c in legend["classes"]],
              "nodata_class": dict(legend["nodata_class"])}
    if counts is None:
        for c in legend["classes"]:
            c["count"] = c["percent"] = None
        legend["nodata_class"]["count"] = None
        legend.update(valid_pixels=None, nodata_pixels=None, empty_classes=None, classes_effective=None)
        return legend
    valid = int(counts[1:].sum())
    for c in legend["classes"]:
        n = int(counts[c["id"]])
        c.update(count=n, percent=round(100.0 * n / valid, 6) if valid else 0.0)
    empty = [c["id"] for c in legend["classes"] if c["count"] == 0]
    legend["nodata_class"]["count"] = int(counts[0])
    legend.update(valid_pixels=valid, nodata_pixels=int(counts[0]), empty_classes=empty,
                  classes_effective=len(legend["classes"]) - len(empty))
    return legend


def _table(classes: xr.DataArray, palette, legend: dict | None) -> np.ndarray:
    """The (N+1, 4) colour table: the palette given, else the legend's colours, else viridis."""
    n = _n_classes(classes, legend)
    if palette is None and legend is not None:
        rows = [legend["nodata_class"].get("rgba", [0, 0, 0, 0])] + [c["rgba"] for c in legend["classes"]]
        return np.array(rows, np.uint8)
    return build_palette(_palette_model(palette), n)


def _recolour(legend: dict, table: np.ndarray) -> dict:
    from .palette import to_hex

    legend = {**legend, "classes": [dict(c) for c in legend["classes"]]}
    for c in legend["classes"]:
        c.update(color=to_hex(table[c["id"]]), rgba=[int(v) for v in table[c["id"]]])
    return legend


def _output(path, **options) -> Output:
    data = {"path": str(path), **options}
    try:
        return Output(**data)
    except ValidationError as e:
        raise ConfigError(format_validation_error(e, "write", data)) from None


def _target(path, overwrite: bool) -> Path:
    final = Path(path).absolute()
    if final.exists() and not overwrite:
        raise ConfigError(f"path: {final} exists (pass overwrite=True to replace it)")
    return final


def _deferred(fn, compute: bool):
    """Run ``fn`` now, or return a dask.delayed that runs it when computed."""
    if compute:
        return fn()
    return dask.delayed(fn, pure=False)()


def write_cog(classes: xr.DataArray, path: str | Path, *, palette: Any = None, legend: dict | None = None,
              mode: Literal["paletted", "rgb", "rgba"] = "paletted",
              compression: Literal["zstd", "deflate", "lzw", "none"] = "zstd", level: int | None = None,
              overviews: bool = True, overview_resampling: Literal["nearest", "mode"] = "nearest",
              blocksize: int = 512, overwrite: bool = True, compute: bool = True):
    """Write class ids as a Cloud-Optimized GeoTIFF, tile by tile (the CLI's writer), atomically.

    Parameters
    ----------
    classes : xarray.DataArray
        Shape (y, x), uint8 class ids from :func:`classify` (nodata 0), georeferenced through
        rioxarray (CRS and transform are written).
    path : str or Path
        The ``.tif`` to write; it appears only when complete.
    palette : str, list of colours, dict or Palette, optional
        Class colours (the colour table, or the RGB(A) bands). Default: the legend's colours,
        else viridis.
    legend : dict, optional
        From :meth:`FitResult.legend`: written beside the output as ``NAME.legend.json`` with
        the pixel counts of this write and the palette's colours.
    mode : {"paletted", "rgb", "rgba"}
        Class ids with a colour table (default), or their colours as 3 or 4 bands.
    compression : {"zstd", "deflate", "lzw", "none"}
        Tile compression; ``level`` its level (zstd 1..22, deflate 1..9; default zstd 3, deflate 6).
    overviews : bool
        Internal overviews (``overview_resampling``: nearest or mode).
    blocksize : int
        Tile edge in pixels, a multiple of 16 (64..4096).
    overwrite : bool
        Replace an existing file (default); False refuses.
    compute : bool
        False: return a ``dask.delayed`` that writes when computed.

    Returns
    -------
    pathlib.Path or dask.delayed.Delayed
        The written path (or a Delayed returning it).

    Raises
    ------
    ConfigError
        Invalid options, ``classes`` not uint8 class ids, ``path`` exists with ``overwrite=False``,
        or translucent colours for a paletted COG.
    SceneclassError
        GDAL failed to write (the message names the path).
    """
    out = _output(path, format="cog", mode=mode, compression=compression, level=level, overviews=overviews,
                  overview_resampling=overview_resampling, blocksize=blocksize, overwrite=overwrite)
    final = _target(path, overwrite)
    plane, scene = _class_plane(classes)
    table = _table(classes, palette, legend)
    n = len(table) - 1
    if mode == "paletted" and (table[1:, 3] != 255).any():
        raise ConfigError("palette: translucent colours, but a GeoTIFF colour table stores no alpha; "
                          "use mode='rgba', write_zarr, or opaque colours")

    def write() -> Path:
        from .writers.cog import write_cog as cog

        counts = cog(scene.array, scene, table, out, final, BANDS[mode], count=True)
        if legend is not None:
            done = _with_counts(_recolour(legend, table), counts[: n + 1])
            done["output"] = str(final)
            write_legend(done, legend_path(final))
        return final

    return _deferred(write, compute)


def write_zarr(classes: xr.DataArray, path: str | Path, *, palette: Any = None, legend: dict | None = None,
               mode: Literal["paletted", "rgb", "rgba"] = "paletted", overwrite: bool = True,
               compute: bool = True):
    """Write class ids (and optionally their colours) as a georeferenced Zarr store, atomically.

    Parameters
    ----------
    classes : xarray.DataArray
        Shape (y, x), uint8 class ids from :func:`classify`; the store's chunks are its chunks.
    path : str or Path
        The ``.zarr`` folder; it appears only when complete.
    palette : str, list of colours, dict or Palette, optional
        Colours for the ``colour`` variable and the legend (default: the legend's, else viridis).
    legend : dict, optional
        From :meth:`FitResult.legend`: stored as the ``sceneclass_legend`` group attribute with
        the counts of this write.
    mode : {"paletted", "rgb", "rgba"}
        ``paletted``: class ids only; ``rgb``/``rgba``: also a (band, y, x) ``colour`` variable.
    overwrite : bool
        Replace an existing store (default); False refuses.
    compute : bool
        False: return a ``dask.delayed`` that writes when computed.

    Returns
    -------
    pathlib.Path or dask.delayed.Delayed
        The written path (or a Delayed returning it).

    Raises
    ------
    ConfigError
        Invalid options, ``classes`` not uint8 class ids, or ``path`` exists with ``overwrite=False``.
    """
    _output(path, format="zarr", mode=mode, overwrite=overwrite)
    final = _target(path, overwrite)
    plane, scene = _class_plane(classes)
    table = _table(classes, palette, legend)
    n = len(table) - 1

    def write() -> Path:
        from .writers.zarr import write_zarr as zarr

        colours = core.colorize(scene.array, table, BANDS[mode]) if BANDS[mode] else None
        extra = {"counts": core.class_counts(scene.array, n)} if legend is not None else None

        def attrs(res: dict) -> dict:
            done = _with_counts(_recolour(legend, table), res["counts"])
            done["output"] = str(final)
            return {"sceneclass_legend": done}

        zarr(scene.array, colours, scene, final, extra, attrs if legend is not None else None)
        return final

    return _deferred(write, compute)

