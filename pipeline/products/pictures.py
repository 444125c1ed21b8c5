"""Pictures of a run: quicklook of the classified map, histogram plot, legend image.

* Quicklook: read from the written output at reduced size, never from a full-resolution pass:
  for a COG, a decimated read (rasterio ``out_shape``, nearest) that GDAL serves from the
  internal overview closest to the asked size; for Zarr, a strided read of ``classes``. Class ids
  are coloured with the legend's palette; nodata is transparent in PNG (RGBA) and white in JPEG.
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
from pathlib import Path

import numpy as np

from ..kernels import classify_values
from .styles import palette_from_legend

#: legend image layout (pixels): margins, row height, swatch box within a row
LEGEND_MARGIN = 10
LEGEND_TITLE_H = 28
LEGEND_ROW_H = 24
LEGEND_SWATCH = (LEGEND_MARGIN, 4, LEGEND_MARGIN + 36, LEGEND_ROW_H - 4)  # x0, y0, x1, y1 in a row
LEGEND_WIDTH = 320  # at least; wider when the labels need it
DISPLAY_BARS = 256


# ------------------------------------------------------------------------------ quicklook
def quicklook_shape(height: int, width: int, size: int) -> tuple[int, int]:
    """The quicklook's (rows, cols): the longest side ``size`` at most, the aspect kept."""
    scale = max(height, width) / size
    if scale <= 1:
        return height, width
    return max(1, round(height / scale)), max(1, round(width / scale))


def quicklook_rgba(output: Path, fmt: str, mode: str, palette: np.ndarray, size: int) -> np.ndarray:
    """(rows, cols, 4) uint8 RGBA of the written output, decimated (overviews / strided read)."""
    if fmt == "zarr":
        import zarr

        z = zarr.open_group(str(output), mode="r")["classes"]
        h, w = z.shape
        step = max(1, math.ceil(max(h, w) / size))
        return palette[np.asarray(z[::step, ::step])]
    import rasterio
    from rasterio.enums import Resampling

    with rasterio.open(output) as src:
        shape = quicklook_shape(src.height, src.width, size)
        if src.count == 1:  # paletted: class ids
            ids = src.read(1, out_shape=shape, resampling=Resampling.nearest)
            return palette[ids]
        bands = src.read(out_shape=(src.count, *shape), resampling=Resampling.nearest)
    rgba = np.moveaxis(bands, 0, -1)
    if rgba.shape[-1] == 4:
        return np.ascontiguousarray(rgba)
    # RGB output: nodata pixels carry the nodata colour; transparent unless a class shares it
    alpha = np.full(rgba.shape[:2], 255, np.uint8)
    nod = palette[0, :3]
    if not (palette[1:, :3] == nod).all(axis=1).any():
        alpha[(rgba == nod).all(axis=-1)] = 0
    return np.dstack([rgba, alpha])


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
def value_histogram(stats, bins: int = 65536) -> tuple[np.ndarray, np.ndarray, bool, str]:
    """(values, counts, integer, source) for the plot: the exact (value, count) pairs for 8/16-bit
    data; for others the non-empty bins of a fine histogram (bin means), possibly one extra pass."""
    if stats.hist is not None:
        values, counts = stats.hist_values()
        return values.astype(np.float64), counts, not stats.scaled, "exact histogram (statistics pass)"
    cached = [k for k in stats._cache if isinstance(k, tuple) and k[0] == "binned"]
    edges, counts, sums = stats.binned(cached[0][1] if cached else bins)
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


def histogram_png(legend: dict, stats, edges: np.ndarray, *, size=(10.0, 4.5), dpi=100) -> tuple[bytes, str]:
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
        values, counts, integer, source = value_histogram(stats)
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
    ax.set_title(f"{Path(legend['input']).name}: {legend['scheme']}, {len(legend['classes'])} classes "
                 f"({source})", fontsize=9)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue(), source


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
    title = f"{legend['scheme']}: {Path(legend['input']).name}"
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
