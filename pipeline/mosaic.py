"""Mosaics: several rasters on one pixel grid read as one lazy scene, with the semantics of
GDAL's ``gdalbuildvrt`` (and QGIS's *Build Virtual Raster*): the output grid is the union of
the inputs' extents, later inputs lie on top of earlier ones (or the reverse with
``first_on_top``), an invalid pixel of an upper input (a nodata value, NaN, outside the valid
range, masked by GDAL's mask) does not hide the input below, and pixels no input covers with
a valid value are nodata. Overlaps are read once per output pixel, so every statistic counts
them once.

Each chunk of the mosaic is composed by one task that reads the windows of the inputs it
overlaps (a file handle per task, as :func:`pipeline.scene.read_window` does), so threads,
processes and cluster workers need nothing but the input paths.

What ``gdalbuildvrt`` resamples or skips with a warning is refused here, before any pixel is
read, with one line naming the input: another CRS, another resolution, an origin off the
common pixel grid, a rotated or south-up grid, GCPs, another data type, or pixel metadata
(nodata, scale/offset, units) that differs from the first input's.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, replace
from typing import Literal

import dask
import dask.array as da
import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.windows import Window

from .errors import ConfigError, InputError
from .kernels import ValueRule
from .scene import (
    SUPPORTED_DTYPES, Scene, bounded_chunks, check_layout, chunk_tuple, gdal_mask_kind, gdal_path, is_url, raster_errors,
    resolve_nodata_values,
)

#: how far (in pixels) an input's origin may lie from the common pixel grid and still be on it
GRID_TOLERANCE = 1e-3

Order = Literal["last_on_top", "first_on_top"]


@dataclass(frozen=True)
class Member:
    """One input of a mosaic, as its header says, and where it lies on the mosaic grid."""

    path: str
    band: int
    dtype: np.dtype
    shape: tuple[int, int]  # (height, width)
    transform: Affine
    crs: CRS | None
    declared_nodata: float | None
    scale: float | None
    offset: float | None
    units: str | None
    mask_kind: str | None  # GDAL mask beyond nodata (see pipeline.scene.gdal_mask_kind)
    row: int = 0  # offset of the input's first row on the mosaic grid
    col: int = 0


@dataclass(frozen=True)
class Mosaic:
    """The grid that covers every input, and the inputs in the order they are drawn (bottom first)."""

    members: tuple[Member, ...]  # drawn in this order: the last is on top
    crs: CRS | None
    transform: Affine
    shape: tuple[int, int]  # (height, width)
    dtype: np.dtype
    order: Order

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(left, bottom, right, top) in CRS units."""
        h, w = self.shape
        t = self.transform
        return (t.c, t.f + t.e * h, t.c + t.a * w, t.f)

    def covered(self) -> bool:
        """True when the inputs' footprints leave no gap in the grid (their valid pixels may)."""
        h, w = self.shape
        rows = sorted({0, h, *(m.row for m in self.members), *(m.row + m.shape[0] for m in self.members)})
        cols = sorted({0, w, *(m.col for m in self.members), *(m.col + m.shape[1] for m in self.members)})
        hit = np.zeros((len(rows) - 1, len(cols) - 1), bool)
        for m in self.members:
            r0, r1 = rows.index(m.row), rows.index(m.row + m.shape[0])
            c0, c1 = cols.index(m.col), cols.index(m.col + m.shape[1])
            hit[r0:r1, c0:c1] = True
        return bool(hit.all())

    def describe(self) -> dict:
        """The grid and its inputs, JSON-ready (for ``validate`` and ``--dry-run``)."""
        h, w = self.shape
        return {"inputs": [m.path for m in self.members[:: 1 if self.order == "last_on_top" else -1]],
                "order": self.order, "width": w, "height": h, "bounds": list(self.bounds),
                "crs": self.crs.to_string() if self.crs else None, "transform": list(self.transform)[:6],
                "dtype": str(self.dtype)}


def label(n: int) -> str:
    """The readable name of a mosaic of ``n`` inputs (its legend's ``input``, its logs)."""
    return f"mosaic of {n} input{'s' if n != 1 else ''}"


def _member(path: str, band: int) -> Member:
    if not is_url(path) and not os.path.exists(path):
        raise InputError(f"{path}: input file not found")
    with raster_errors(path):
        try:
            with rasterio.open(gdal_path(path)) as src:
                if band > src.count:
                    raise ConfigError(f"band: {path} has {src.count} band(s), band {band} was asked for")
                check_layout(src, path, band)
                i = band - 1
                gcps = src.gcps[0]
                member = Member(path, band, np.dtype(src.dtypes[i]), (src.height, src.width), src.transform,
                                src.crs, src.nodatavals[i], src.scales[i], src.offsets[i], src.units[i] or None,
                                gdal_mask_kind(src.mask_flag_enums[i]))
        except rasterio.errors.RasterioIOError as e:
            raise InputError(f"{path}: not a readable raster ({str(e).splitlines()[0]})") from None
    if member.dtype.name not in SUPPORTED_DTYPES:
        raise InputError(f"{path}: data type {member.dtype} is not supported ({', '.join(SUPPORTED_DTYPES)})")
    t = member.transform
    if gcps or t.is_identity:
        raise ConfigError(f"output.mosaic: {path} has no geotransform ({'GCPs only' if gcps else 'not georeferenced'}); "
                          "a mosaic places its inputs by their geotransforms")
    if t.b != 0 or t.d != 0:
        raise ConfigError(f"output.mosaic: {path} has a rotated grid; a mosaic needs north-up inputs "
                          "(gdalbuildvrt refuses rotated inputs too)")
    if t.e > 0:
        raise ConfigError(f"output.mosaic: {path} is south-up (positive pixel height); a mosaic needs north-up "
                          "inputs (gdalbuildvrt refuses them too)")
    return member


def _on_grid(first: Member, m: Member) -> tuple[int, int]:
    """(row, col) of ``m``'s origin in pixels of ``first``'s grid; refuses what differs."""
    a, b = first, m
    if a.crs != b.crs:
        raise ConfigError(f"output.mosaic: {b.path} is in {b.crs.to_string() if b.crs else 'no CRS'}, "
                          f"{a.path} in {a.crs.to_string() if a.crs else 'no CRS'}; a mosaic's inputs must share "
                          "one CRS (reproject with gdalwarp first)")
    for what, x, y, n in (("width", a.transform.a, b.transform.a, max(a.shape[1], b.shape[1])),
                          ("height", -a.transform.e, -b.transform.e, max(a.shape[0], b.shape[0]))):
        if abs(x - y) * n > GRID_TOLERANCE * abs(x):
            raise ConfigError(f"output.mosaic: {b.path} has pixel {what} {y:g}, {a.path} {x:g}; a mosaic's inputs "
                              "must share one resolution (gdalbuildvrt would resample; resample with gdalwarp first)")
    col = (b.transform.c - a.transform.c) / a.transform.a
    row = (b.transform.f - a.transform.f) / a.transform.e
    for what, v in (("x", col), ("y", row)):
        if abs(v - round(v)) > GRID_TOLERANCE:
            raise ConfigError(f"output.mosaic: {b.path} is not on the pixel grid of {a.path} (its origin is "
                              f"{abs(v - round(v)):.3g} pixel off in {what}); gdalbuildvrt would resample it with "
                              "nearest neighbour: align it first (gdalwarp -tap or -te)")
    return round(row), round(col)


def _same(first: Member, m: Member) -> None:
    if m.dtype != first.dtype:
        raise ConfigError(f"output.mosaic: {m.path} band {m.band} holds {m.dtype}, {first.path} band {first.band} "
                          f"{first.dtype}; a mosaic's inputs must share one data type (gdalbuildvrt skips such an "
                          "input with a warning)")


def plan_mosaic(members: list[tuple[str, int]], order: Order = "last_on_top") -> Mosaic:
    """Read the inputs' headers and lay them out on one grid covering all of them.

    Parameters
    ----------
    members : list of (str, int)
        Input paths (or URLs) with the 1-based band of each, in the order given (the first is
        drawn first, at the bottom, with ``last_on_top``).
    order : {"last_on_top", "first_on_top"}
        Which input wins where inputs overlap.

    Returns
    -------
    Mosaic
        The grid: the first input's resolution and CRS, its origin moved to the union's
        top-left corner, its size the union's.

    Raises
    ------
    ConfigError
        Naming the first input that differs from the first one in CRS, resolution, pixel
        grid alignment or data type, or that is rotated, south-up or without a geotransform.
    InputError
        An input is missing or unreadable.
    """
    if not members:
        raise ConfigError("inputs: no input matched")
    read = [_member(p, b) for p, b in members]
    first = read[0]
    placed = []
    for m in read:
        _same(first, m)
        row, col = _on_grid(first, m)
        placed.append((m, row, col))
    r0 = min(r for _, r, _ in placed)
    c0 = min(c for _, _, c in placed)
    height = max(r + m.shape[0] for m, r, _ in placed) - r0
    width = max(c + m.shape[1] for m, _, c in placed) - c0
    out = tuple(replace(m, row=r - r0, col=c - c0) for m, r, c in placed)
    if order == "first_on_top":
        out = out[::-1]
    return Mosaic(out, first.crs, first.transform * Affine.translation(c0, r0), (height, width), first.dtype, order)


def _agreed(mosaic: Mosaic, key: str, values: list) -> object:
    """The one value every input resolves ``key`` to; a ConfigError naming an input that differs."""
    members = mosaic.members
    for m, v in zip(members, values):
        if v != values[0]:
            show = lambda x: "none" if x in (None, ()) else ", ".join(f"{y:g}" for y in x) if isinstance(x, tuple) else f"{x}"  # noqa: E731
            raise ConfigError(f"{key}: {m.path} has {key} {show(v)}, {members[0].path} {show(values[0])}; a mosaic "
                              f"takes one {key} for every input: set {key} in the config")
    return values[0]


def _fill(dtype: np.dtype, nodata: tuple[float, ...], valid_range) -> float | None:
    """A raw value that is nodata by the rule, to fill what no input covers (None: none exists)."""
    if nodata:
        return nodata[0]
    if dtype.kind == "f":
        return float("nan")
    if valid_range is not None:
        info = np.iinfo(dtype)
        if info.min < valid_range[0]:
            return float(info.min)
        if info.max > valid_range[1]:
            return float(info.max)
    return None


def _overlap(m_row, m_col, shape, y0, y1, x0, x1):
    """(window in the input, slices in the chunk) where an input overlaps a chunk, or None."""
    ya, yb = max(y0, m_row), min(y1, m_row + shape[0])
    xa, xb = max(x0, m_col), min(x1, m_col + shape[1])
    if ya >= yb or xa >= xb:
        return None
    return (Window(xa - m_col, ya - m_row, xb - xa, yb - ya),
            (slice(ya - y0, yb - y0), slice(xa - x0, xb - x0)))


def compose_block(sources: tuple, rule: ValueRule, fill: float | None, dtype: str, block_info=None) -> np.ndarray:
    """Block kernel: one chunk of the mosaic. ``sources``: (path, band, row, col, (height, width),
    use GDAL mask) per input, bottom first; each paints its valid pixels (by ``rule`` and, when
    asked, GDAL's mask) over the ones below; ``fill`` (a nodata raw value, or 0 when the scene's
    mask marks the gaps) where none does."""
    (y0, y1), (x0, x1) = block_info[None]["array-location"]
    out = np.full((y1 - y0, x1 - x0), 0 if fill is None else fill, dtype=dtype)
    for path, band, row, col, shape, use_mask in sources:
        hit = _overlap(row, col, shape, y0, y1, x0, x1)
        if hit is None:
            continue
        window, where = hit
        with raster_errors(path), rasterio.open(gdal_path(path)) as src:
            data = src.read(band, window=window)
            bad = rule.invalid(data)
            if use_mask:
                masked = src.read_masks(band, window=window) == 0
                bad = masked if bad is None else bad | masked
        if bad is None:
            out[where] = data
        else:
            np.copyto(out[where], data, where=~bad)
    return out


def gaps_block(sources: tuple, rule: ValueRule, block_info=None) -> np.ndarray:
    """Block kernel: True where no input has a valid pixel (integer data without any nodata
    value, where :func:`compose_block` has no nodata value to fill with)."""
    (y0, y1), (x0, x1) = block_info[None]["array-location"]
    gap = np.ones((y1 - y0, x1 - x0), bool)
    for path, band, row, col, shape, use_mask in sources:
        hit = _overlap(row, col, shape, y0, y1, x0, x1)
        if hit is None:
            continue
        window, where = hit
        if not use_mask and rule.valid_range is None:
            gap[where] = False
            continue
        with raster_errors(path), rasterio.open(gdal_path(path)) as src:
            ok = np.ones((window.height, window.width), bool)
            if rule.valid_range is not None:
                bad = rule.invalid(src.read(band, window=window))
                ok = ~bad if bad is not None else ok
            if use_mask:
                ok &= src.read_masks(band, window=window) != 0
        gap[where] &= ~ok
    return gap


def _setting(setting, declared: float | None, default: float) -> float:
    return (default if declared is None else float(declared)) if setting == "file" else float(setting)


def open_mosaic(mosaic: Mosaic, nodata="file", chunk: int = 2048, tile: int = 1, *,
                valid_range: tuple[float, float] | None = None, gdal_mask: bool = True,
                scale: float | str = "file", offset: float | str = "file", units: str = "file") -> Scene:
    """The mosaic as one lazy :class:`~pipeline.scene.Scene` (nothing is read before compute).

    Parameters
    ----------
    mosaic : Mosaic
        From :func:`plan_mosaic`.
    nodata, valid_range, gdal_mask, scale, offset, units
        As for :func:`pipeline.scene.open_scene`, applied to every input; ``file`` settings must
        resolve to the same value for every input.
    chunk, tile : int
        Target chunk edge and the output tile edge the chunks align to (pixels).

    Returns
    -------
    Scene
        ``path`` is a readable name (``mosaic of N inputs``), ``sources`` the input paths (in
        the order given); ``array`` the composed raw values (dtype of the inputs), the pixels
        no input covers validly being a nodata value, or flagged in ``mask`` when the rule has
        no nodata value to hold them (integer data without nodata or valid range).

    Raises
    ------
    ConfigError
        A ``file`` setting resolves differently for two inputs (naming them), or the scale is
        not positive.
    """
    ms = mosaic.members
    given = ms[:: 1 if mosaic.order == "last_on_top" else -1]  # the order of the config
    dtype = mosaic.dtype
    values = _agreed(mosaic, "nodata", [resolve_nodata_values(m.declared_nodata, nodata, dtype) for m in ms])
    k_scale = _agreed(mosaic, "scale", [_setting(scale, m.scale, 1.0) for m in ms])
    k_offset = _agreed(mosaic, "offset", [_setting(offset, m.offset, 0.0) for m in ms])
    k_units = _agreed(mosaic, "units", [m.units if units == "file" else units for m in ms])
    if not (math.isfinite(k_scale) and math.isfinite(k_offset)):
        raise ConfigError(f"scale: {k_scale}, offset: {k_offset}: not finite numbers")
    if k_scale <= 0:
        raise ConfigError(f"scale: {k_scale} for the mosaic's inputs: the scale must be positive")
    if valid_range is not None and not valid_range[0] <= valid_range[1]:
        raise ConfigError(f"valid_range: {list(valid_range)} is empty (lo > hi)")
    rng = None if valid_range is None else (float(valid_range[0]), float(valid_range[1]))
    rule = ValueRule(tuple(values), rng)  # raw validity; scale/offset do not change it
    fill = _fill(dtype, tuple(values), rng)
    sources = tuple((gdal_path(m.path), m.band, m.row, m.col, m.shape, bool(gdal_mask and m.mask_kind)) for m in ms)
    height, width = mosaic.shape
    cy, cx = bounded_chunks(height, width, (height, width), chunk, tile)
    chunks = (chunk_tuple(height, cy), chunk_tuple(width, cx))
    stamps = tuple(os.stat(m.path).st_mtime_ns if not is_url(m.path) else 0 for m in ms)
    token = dask.base.tokenize(sources, stamps, rule, fill, cy, cx)
    array = da.map_blocks(compose_block, sources, rule, fill, dtype.str, chunks=chunks, dtype=dtype,
                          meta=np.empty((0, 0), dtype), name=f"mosaic-{token}")
    mask, mask_sources = None, ()
    if fill is None and (not mosaic.covered() or any(s[-1] for s in sources)):
        mask = da.map_blocks(gaps_block, sources, rule, chunks=chunks, dtype=bool, meta=np.empty((0, 0), bool),
                             name=f"mosaic-gaps-{token}")
        mask_sources = ("pixels no input of the mosaic covers with a valid value",)
    return Scene(
        path=label(len(ms)), band=given[0].band, array=array, nodata=values[0] if values else None,
        crs=mosaic.crs, transform=mosaic.transform, nodata_values=tuple(values), valid_range=rng,
        scale=k_scale, offset=k_offset, units=k_units, mask=mask, mask_sources=mask_sources,
        sources=tuple(m.path for m in given),
    )
