"""Pictures of a run: quicklook of the classified map, histogram plot, legend image.

* Quicklook: read from the written output at reduced size, never from a full-resolution pass:
  for a COG, a decimated read (rasterio ``out_shape``, nearest) that GDAL serves from the
  internal overview closest to the asked size; for Zarr, a strided read of ``classes``. Class ids
  are coloured with the legend's palette; nodata is transparent in PNG (RGBA) and white in JPEG.
  Drawn north-up with square ground pixels, as GDAL and QGIS show the output on a map: a
  south-up, mirrored, rotated or non-square-pixel grid, or one georeferenced by GCPs, is warped
  (nearest neighbour, ``rasterio.warp.reproject``) onto a north-up grid in its own CRS that
  covers its footprint (outside it: transparent). A raster without georeferencing is drawn in
  raster orientation.
* Histogram plot (matplotlib, Agg canvas, imported only here): the global histogram of the valid
  pixels -- 8/16-bit data: the exact histogram of the statistics pass (no read); other dtypes:
  a 65,536-bin histogram between min and max, shared with ``natural_breaks`` when it ran,
  otherwise computed by one extra pass over the input -- drawn as bars coloured by class, each
  class's range shaded in its colour and every edge marked.
* Legend image: a swatch and the label, pixel count and percent of every class (Pillow).
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from affine import Affine
from rasterio.crs import CRS

from ..kernels import classify_values
from .styles import palette_from_legend

#: legend image layout (pixels): margins, row height, swatch box within a row
LEGEND_MARGIN = 10
LEGEND_TITLE_H = 28
LEGEND_ROW_H = 24
LEGEND_SWATCH = (LEGEND_MARGIN, 4, LEGEND_MARGIN + 36, LEGEND_ROW_H - 4)  # x0, y0, x1, y1 in a row
LEGEND_WIDTH = 320  # at least; wider when the labels need it
DISPLAY_BARS = 256
#: the CRS given to GDAL's warper, on both sides, for a grid with a transform but no CRS: the
#: same CRS on both sides means no reprojection, only the affine resampling onto a north-up grid
STAND_IN_CRS = CRS.from_epsg(3857)


# ------------------------------------------------------------------------------ quicklook
def quicklook_shape(height: int, width: int, size: int) -> tuple[int, int]:
    """The quicklook's (rows, cols): the longest side ``size`` at most, the aspect kept."""
    scale = max(height, width) / size
    if scale <= 1:
        return height, width
    return max(1, round(height / scale)), max(1, round(width / scale))


@dataclass(frozen=True)
class Georef:
    """How a raster (or a decimated sample of it) is placed on the ground: an affine
    ``transform`` in ``crs``, or ``gcps`` in ``gcps_crs`` (the transform is then identity)."""

    transform: Affine
    crs: CRS | None = None
    gcps: tuple = ()
    gcps_crs: CRS | None = None

    def sampled(self, sy: float, sx: float) -> "Georef":
        """The georeferencing of a sample ``sy`` times coarser in rows, ``sx`` in columns."""
        from rasterio.control import GroundControlPoint

        gcps = tuple(GroundControlPoint(row=g.row / sy, col=g.col / sx, x=g.x, y=g.y, z=g.z, id=g.id, info=g.info)
                     for g in self.gcps)
        return Georef(self.transform * Affine.scale(sx, sy), self.crs, gcps, self.gcps_crs)


def zarr_georef(group) -> Georef:
    """The georeferencing a Zarr output declares.

    Parameters
    ----------
    group : zarr.Group
        The output store, open for reading.

    Returns
    -------
    Georef
        From the ``spatial_ref`` attributes as rioxarray writes them (``GeoTransform``,
        ``crs_wkt``, ``gcps`` as GeoJSON); identity and no CRS when there are none.
    """
    import json

    from rasterio.control import GroundControlPoint

    attrs = dict(group["spatial_ref"].attrs) if "spatial_ref" in group else {}
    gt = attrs.get("GeoTransform")
    transform = Affine.from_gdal(*map(float, gt.split())) if gt else Affine.identity()
    crs = CRS.from_wkt(attrs["crs_wkt"]) if attrs.get("crs_wkt") else None
    gcps = tuple(
        GroundControlPoint(row=f["properties"]["row"], col=f["properties"]["col"], x=f["geometry"]["coordinates"][0],
                           y=f["geometry"]["coordinates"][1], z=(f["geometry"]["coordinates"][2:] or [None])[0],
                           id=f["properties"]["id"], info=f["properties"]["info"])
        for f in json.loads(attrs["gcps"])["features"]) if attrs.get("gcps") else ()
    return Georef(transform, None if gcps else crs, gcps, crs if gcps else None)


def north_up(rgba: np.ndarray, georef: Georef, shape: tuple[int, int], size: int) -> np.ndarray:
    """``rgba`` drawn north-up with square ground pixels, as a map shows it.

    Parameters
    ----------
    rgba : (rows, cols, 4) uint8
        The picture in raster orientation: a decimated sample of the whole raster.
    georef : Georef
        The georeferencing of the full-resolution raster.
    shape : (int, int)
        The full-resolution raster's (rows, cols).
    size : int
        The longest side of the result at most, in pixels.

    Returns
    -------
    (rows', cols', 4) uint8
        ``rgba`` itself when it is north-up with square pixels or has no georeferencing;
        otherwise warped (nearest neighbour) onto a north-up grid in the same CRS covering its
        footprint, pixels the footprint misses transparent. The ground pixel is the sample's
        finest spacing, coarser if the longest side would exceed ``size``.
    """
    from rasterio.warp import Resampling, calculate_default_transform, reproject

    h, w = rgba.shape[:2]
    full = georef.transform
    if not georef.gcps and full.is_identity:
        return rgba  # no georeferencing: pixel coordinates, raster orientation
    if full.b == 0 and full.d == 0 and full.a > 0 and full.e < 0 and math.isclose(full.a, -full.e, rel_tol=1e-9):
        return rgba  # north-up, square pixels
    georef = georef.sampled(shape[0] / h, shape[1] / w)
    t = georef.transform
    if georef.gcps:
        crs = georef.gcps_crs or STAND_IN_CRS
        guess, gw, gh = calculate_default_transform(crs, crs, w, h, gcps=list(georef.gcps))
        left, top, right, bottom = guess.c, guess.f, guess.c + guess.a * gw, guess.f + guess.e * gh
        fine = min(abs(guess.a), abs(guess.e))
        source = {"gcps": list(georef.gcps), "src_crs": crs}
    else:
        crs = georef.crs or STAND_IN_CRS
        xs, ys = t * (np.array([0, w, 0, w]), np.array([0, 0, h, h]))
        left, right, bottom, top = xs.min(), xs.max(), ys.min(), ys.max()
        fine = min(math.hypot(t.a, t.d), math.hypot(t.b, t.e))
        source = {"src_transform": t, "src_crs": crs}
    res = max(fine, max(right - left, top - bottom) / size)
    cols, rows = (max(1, min(size, round(n / res))) for n in (right - left, top - bottom))
    out = np.zeros((4, rows, cols), np.uint8)  # alpha 0 outside the footprint
    reproject(np.ascontiguousarray(np.moveaxis(rgba, -1, 0)), out, dst_transform=Affine(res, 0, left, 0, -res, top),
              dst_crs=crs, resampling=Resampling.nearest, **source)
    return np.ascontiguousarray(np.moveaxis(out, 0, -1))


def quicklook_rgba(output: Path, fmt: str, mode: str, palette: np.ndarray, size: int) -> np.ndarray:
    """(rows, cols, 4) uint8 RGBA of the written output, decimated (overviews / strided read),
    drawn north-up with square ground pixels (:func:`north_up`)."""
    if fmt == "zarr":
        import zarr

        group = zarr.open_group(str(output), mode="r")
        z = group["classes"]
        h, w = z.shape
        step = max(1, math.ceil(max(h, w) / size))
        return north_up(palette[np.asarray(z[::step, ::step])], zarr_georef(group), (h, w), size)
    import rasterio
    from rasterio.enums import Resampling

    with rasterio.open(output) as src:
        shape = quicklook_shape(src.height, src.width, size)
        gcps, gcps_crs = src.gcps
        georef, full = Georef(src.transform, src.crs, tuple(gcps), gcps_crs), (src.height, src.width)
        if src.count == 1:  # paletted: class ids
            ids = src.read(1, out_shape=shape, resampling=Resampling.nearest)
            return north_up(palette[ids], georef, full, size)
        bands = src.read(out_shape=(src.count, *shape), resampling=Resampling.nearest)
    rgba = np.moveaxis(bands, 0, -1)
    if rgba.shape[-1] == 4:
        return north_up(np.ascontiguousarray(rgba), georef, full, size)
    # RGB output: nodata pixels carry the nodata colour; transparent unless a class shares it
    alpha = np.full(rgba.shape[:2], 255, np.uint8)
    nod = palette[0, :3]
    if not (palette[1:, :3] == nod).all(axis=1).any():
        alpha[(rgba == nod).all(axis=-1)] = 0
    return north_up(np.dstack([rgba, alpha]), georef, full, size)


def encode(rgba: np.ndarray, fmt: str) -> bytes:
    """PNG (RGBA, transparency kept) or JPEG (alpha composited on white) bytes."""
    from PIL import Image

    img = Image.fromarray(rgba, "RGBA")
    buf = io.BytesIO()
    if fmt == "png":
        img.save(buf, format="PNG", optimize=True)
    else:
        white = Image.new("RGBA", img.size, (255, 255, 255, 255))
        Image.alpha_composite(white, img).convert("RGB").save(buf, format="JPEG", quality=92)
    return buf.getvalue()


# ------------------------------------------------------------------------------ histogram
def value_histogram(stats, passes, bins: int | None = None) -> tuple[np.ndarray, np.ndarray, bool, str]:
    """(values, counts, integer, source) for the plot: the exact (value, count) pairs for 8/16-bit
    data; for others the non-empty bins of a fine histogram (bin means): one the fit already made
    (``passes``, a :class:`pipeline.stats.Passes` over the input), else one extra pass
    (``bins`` bins; None: 65,536)."""
    if stats.hist is not None:
        values, counts = stats.hist_values()
        return values.astype(np.float64), counts, not stats.scaled, "exact histogram (statistics pass)"
    edges, counts, sums = passes.binned(bins)
    keep = counts > 0
    src = f"{len(edges) - 1}-bin histogram between min and max"
    return sums[keep] / counts[keep], counts[keep], False, src


def display_bars(values: np.ndarray, counts: np.ndarray, integer: bool, edges: np.ndarray,
                 vmin: float, vmax: float, bars: int = DISPLAY_BARS):
    """Bars for the plot: about ``bars`` equal bins over [vmin, vmax], split at the class edges
    (so each bar lies in one class). Returns (left, width, density, class id) per bar, density in
    pixels per unit of value (integers: per distinct possible value)."""
    grid = np.linspace(vmin, vmax, bars + 1) if vmax > vmin else np.array([vmin, vmin + 1.0])
    inner = edges[(edges > grid[0]) & (edges < grid[-1])]
    bounds = np.unique(np.concatenate([grid, inner]))
    idx = np.clip(np.searchsorted(bounds, values, side="right") - 1, 0, len(bounds) - 2)
    cnt = np.bincount(idx, weights=counts, minlength=len(bounds) - 1)
    width = np.diff(bounds)
    if integer:  # how many integers each bar can hold (the last bar holds vmax too)
        units = np.ceil(bounds[1:]) - np.ceil(bounds[:-1])
        units[-1] += 1 if float(bounds[-1]).is_integer() else 0
    else:
        units = width
    keep = units > 0
    left = bounds[:-1][keep]
    cls = classify_values(left, edges.astype(np.float64))
    return left, width[keep], cnt[keep] / units[keep], cls


def histogram_png(legend: dict, stats, passes, edges: np.ndarray, *, size=(10.0, 4.5), dpi=100) -> tuple[bytes, str]:
    """The histogram plot as PNG bytes, and a note on where the histogram came from."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    palette = palette_from_legend(legend) / 255.0
    fig = Figure(figsize=size, dpi=dpi)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    if stats.count == 0:
        ax.text(0.5, 0.5, "no valid pixels", ha="center", va="center", transform=ax.transAxes)
        source = "no valid pixels"
    else:
        vmin, vmax = float(stats.vmin), float(stats.vmax)
        values, counts, integer, source = value_histogram(stats, passes)
        left, width, dens, cls = display_bars(values, counts, integer, edges, vmin, vmax)
        colours = np.where(cls[:, None] > 0, palette[np.maximum(cls, 0)], (0.6, 0.6, 0.6, 1.0))
        colours[:, 3] = 1.0
        for k in range(1, len(edges)):  # each class's range, shaded in its colour
            lo, hi = max(edges[k - 1], vmin), min(edges[k], vmax)
            if hi > lo:
                ax.axvspan(lo, hi, color=(*palette[k][:3], 1.0), alpha=0.18, linewidth=0, zorder=0)
        ax.bar(left, dens, width=width, align="edge", color=colours, linewidth=0, antialiased=False, zorder=2)
        span = vmax - vmin or 1.0
        for e in edges:
            if vmin - 0.02 * span <= e <= vmax + 0.02 * span:
                ax.axvline(e, color="0.15", linewidth=0.7, linestyle="--", zorder=3)
        ax.set_xlim(vmin - 0.02 * span, vmax + 0.02 * span)
        ax.set_ylim(0, max(float(dens.max(initial=0)) * 1.05, 1e-9))
        ax.set_ylabel("pixels per unit value")
    ax.set_xlabel(f"value ({legend.get('units') or legend['dtype']})")
    ax.set_title(f"{input_name(legend)}: {legend['scheme']}, {len(legend['classes'])} classes "
                 f"({source})", fontsize=9)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue(), source


def input_name(legend: dict) -> str:
    """What a legend classified, for titles: the input's file name, or ``index ndvi`` /
    ``expression ...`` for a derived band (whose text may hold '/')."""
    if legend.get("expression") is not None:
        return str(legend["input"])
    return Path(legend["input"]).name


# --------------------------------------------------------------------------------- legend
def legend_png(legend: dict) -> bytes:
    """A legend image: per class a colour swatch (at ``LEGEND_SWATCH`` in its row), the label,
    pixel count and percent; a last row for nodata (outlined, transparent)."""
    from PIL import Image, ImageDraw, ImageFont

    classes = legend["classes"]
    try:
        font = ImageFont.load_default(size=13)
    except TypeError:  # Pillow < 10.1
        font = ImageFont.load_default()
    x0, y0, x1, y1 = LEGEND_SWATCH
    title = f"{legend['scheme']}: {input_name(legend)}"
    texts = [f"{c['label']}   {c['count']:,} px ({c['percent']:.2f}%)" for c in classes]
    texts.append(f"nodata   {legend['nodata_class']['count']:,} px")
    measure = ImageDraw.Draw(Image.new("RGBA", (1, 1)))
    width = max([LEGEND_WIDTH, LEGEND_MARGIN * 2 + int(measure.textlength(title, font=font))]
                + [x1 + 10 + LEGEND_MARGIN + int(measure.textlength(t, font=font)) for t in texts])
    h = LEGEND_MARGIN * 2 + LEGEND_TITLE_H + len(texts) * LEGEND_ROW_H
    img = Image.new("RGBA", (width, h), (255, 255, 255, 255))
    draw = ImageDraw.Draw(img)
    draw.text((LEGEND_MARGIN, LEGEND_MARGIN), title, fill=(0, 0, 0, 255), font=font)
    for i, text in enumerate(texts):
        top = legend_row_top(i)
        box = (x0, top + y0, x1 - 1, top + y1 - 1)
        if i < len(classes):
            draw.rectangle(box, fill=tuple(classes[i]["rgba"]))
        else:  # nodata: transparent, outlined
            draw.rectangle(box, outline=(120, 120, 120, 255))
        draw.text((x1 + 10, top + 5), text, fill=(0, 0, 0, 255), font=font)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def legend_row_top(i: int) -> int:
    """Top pixel row of legend row ``i`` (0 = class 1)."""
    return LEGEND_MARGIN + LEGEND_TITLE_H + i * LEGEND_ROW_H
