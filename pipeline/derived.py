"""Derived bands: named bands on one grid combined by a band-math expression into one lazy
float band, classified like any other.

Each named band is a :class:`~pipeline.scene.Scene` opened with its own pixel settings (nodata,
valid range, GDAL mask, QA mask raster, scale/offset). Its physical values, NaN at every
invalid pixel, go into the expression chunk by chunk; the result is NaN (nodata) where any band
it uses is invalid (also where ``where`` takes the other branch) and where the expression is not
finite (a division by zero, the logarithm of a negative), as QGIS's raster calculator makes such
pixels nodata.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Mapping

import dask.array as da
import numpy as np

from .errors import ConfigError
from .expression import Expression
from .kernels import ValueRule, clean_block
from .scene import Scene

log = logging.getLogger(__name__.replace("pipeline", "sceneclass", 1))

__all__ = ["Derivation", "derive", "check_grid"]


@dataclass(frozen=True)
class Derivation:
    """How a derived band was made, for logs and the legend.

    Attributes
    ----------
    expression : str
        The expression's text.
    index : str or None
        The preset's name when the expression is a named index (``ndvi``), else None.
    bands : tuple of (str, str, int)
        ``(name, path, band)`` of every band the expression uses, sorted by name.
    """

    expression: str
    index: str | None
    bands: tuple[tuple[str, str, int], ...]

    def legend(self) -> dict:
        """The legend's fields: ``expression``, ``index`` and ``bands`` ``{name: {path, band}}``
        (and ``band`` None: the classified values are no band of one file)."""
        from .urls import redact

        return {"band": None, "expression": self.expression, "index": self.index,
                "bands": {name: {"path": redact(path), "band": band} for name, path, band in self.bands}}


def _describe(name: str, scene: Scene) -> str:
    return f"'{name}' ({scene.path} band {scene.band})"


def check_grid(scenes: Mapping[str, Scene]) -> None:
    """Refuse bands that are not on one pixel grid (from their headers; no pixel is read).

    Parameters
    ----------
    scenes : mapping of str to Scene
        The named bands, opened lazily.

    Raises
    ------
    ConfigError
        Naming the first band and one that differs from it in shape, transform, CRS or GCPs.
    """
    items = list(scenes.items())
    first_name, first = items[0]
    for name, other in items[1:]:
        differ = []
        if other.shape != first.shape:
            differ.append(f"shape {first.shape[1]} x {first.shape[0]} vs {other.shape[1]} x {other.shape[0]}")
        if not other.transform.almost_equals(first.transform):
            differ.append(f"transform {tuple(first.transform)[:6]} vs {tuple(other.transform)[:6]}")
        if other.crs != first.crs:
            differ.append(f"CRS {first.crs.to_string() if first.crs else None} vs "
                          f"{other.crs.to_string() if other.crs else None}")
        if other.gcps != first.gcps or other.gcps_crs != first.gcps_crs:
            differ.append("GCPs")
        if differ:
            raise ConfigError(
                f"bands: {_describe(first_name, first)} and {_describe(name, other)} are not on one grid "
                f"({'; '.join(differ)}); band math needs bands of the same shape, transform and CRS "
                "(resample one onto the other's grid first, e.g. with gdalwarp)")


def _valid_values(scene: Scene, dtype: np.dtype, chunks) -> da.Array:
    """Lazy physical values of ``scene`` in ``dtype`` with NaN at every invalid pixel, in ``chunks``."""
    rule: ValueRule = scene.rule
    array, mask = scene.array, scene.mask
    if array.chunks != chunks:  # another internal tiling: follow the first band's chunks
        array = array.rechunk(chunks)
        mask = mask.rechunk(chunks) if mask is not None else None
    args = (mask,) if mask is not None else ()
    return da.map_blocks(clean_block, array, *args, rule=rule, out_dtype=dtype.str, dtype=dtype,
                         meta=np.empty((0, 0), dtype))


def _nodata_where_any(result: np.ndarray, *bands: np.ndarray) -> np.ndarray:
    """Block kernel: ``result`` with NaN wherever a band's block is NaN (invalid)."""
    bad = np.isnan(bands[0])
    for band in bands[1:]:
        bad |= np.isnan(band)
    if not bad.any():
        return result
    out = result.copy()
    out[bad] = np.nan
    return out


def derive(scenes: Mapping[str, Scene], expression: Expression, *, units: str | None = None,
           index: str | None = None) -> Scene:
    """One lazy float band computed from named bands.

    Parameters
    ----------
    scenes : mapping of str to Scene
        The named bands (``(rows, cols)`` each, any supported dtype), opened with their own
        pixel settings; those the expression does not use are ignored (with a warning).
    expression : Expression
        The checked expression on the band names.
    units : str, optional
        Units of the result (none by default: an index has none).
    index : str, optional
        The preset's name when ``expression`` is a named index (for the legend).

    Returns
    -------
    Scene
        Its ``array`` is the result, float32 (float64 when a band used is float64 or a 32-bit
        integer: :func:`pipeline.expression.result_dtype` of the raw dtypes), NaN where any band
        used is invalid or the result is not finite; nodata None, scale 1, offset 0; the grid and
        georeferencing of the first band used; ``path`` names the index or the expression,
        ``sources`` every band file, ``derivation`` the recipe. Nothing is read.

    Raises
    ------
    ConfigError
        A band the expression uses is missing, or the bands are not on one grid.
    """
    missing = sorted(expression.names - set(scenes))
    if missing:
        raise ConfigError(f"expression: no band {', '.join(missing)} under bands")
    unused = [name for name in scenes if name not in expression.names]
    if unused:
        log.warning("bands: %s not used by the expression %s", ", ".join(unused), expression.text)
    used = {name: scenes[name] for name in sorted(expression.names)}
    check_grid(used)
    dtype = expression.result_dtype({name: s.dtype for name, s in used.items()})
    first = next(iter(used.values()))
    chunks = first.array.chunks
    values = {name: _valid_values(s, dtype, chunks) for name, s in used.items()}
    # nodata in any band used is nodata in the result, even in a branch ``where`` does not take
    names = sorted(values)
    result = da.map_blocks(_nodata_where_any, expression.lazy(values), *(values[n] for n in names),
                           dtype=dtype, meta=np.empty((0, 0), dtype))
    log.info("%s: %s of %s, computed in %s", f"index {index}" if index else "expression", expression.text,
             ", ".join(_describe(n, s) for n, s in used.items()), dtype)
    recipe = Derivation(expression.text, index, tuple((n, s.path, s.band) for n, s in used.items()))
    return Scene(
        path=f"index {index}" if index else f"expression {expression.text}", band=1, array=result,
        nodata=None, crs=first.crs, transform=first.transform, nodata_values=(), units=units,
        gcps=first.gcps, gcps_crs=first.gcps_crs, rpcs=first.rpcs,
        sources=tuple(dict.fromkeys(f for s in used.values() for f in s.files)), derivation=recipe,
    )
