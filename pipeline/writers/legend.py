"""The legend: per class its id, edges, colour, pixel count and percent, plus how it was made.

The legend is strict JSON (no NaN or Infinity, which JSON does not have): an infinite edge
is written as ``null``. Edges never decrease and only the ends may be infinite, so a ``null``
first edge (a class's ``lower``) means "everything below the next edge" and a ``null`` last
edge (a class's ``upper``) means "everything above the previous edge"; manual breaks such as
``[-.inf, 0, 10, .inf]`` give them.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from ..jobs.atomic import atomic_output, sibling
from ..palette import to_hex
from ..urls import redact


def legend_path(output: Path) -> Path:
    """``scene_classes.tif`` -> ``scene_classes.legend.json`` (beside the output)."""
    return sibling(output, ".legend.json")


def _num(v) -> float | int | None:
    if v is None:
        return None
    v = v.item() if hasattr(v, "item") else v
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def fmt(v: float) -> str:
    """An edge for a label: 6 significant digits (an open end as -inf or inf)."""
    return f"{v:.6g}"


def edge_decimals(edges: np.ndarray) -> int:
    """Decimals for printing class edges: two significant digits of the narrowest class, more
    until every two adjacent different edges print differently."""
    e = np.asarray(edges, dtype=np.float64)
    e = e[np.isfinite(e)]
    widths = np.diff(e)
    widths = widths[widths > 0]
    d = 0 if widths.size == 0 else max(0, 1 - math.floor(math.log10(widths.min())))
    d = min(d, 17)
    while d < 17:
        text = [f"{v:.{d}f}" for v in e]
        if all(a != b for a, b, x, y in zip(text, text[1:], e, e[1:]) if x != y):
            break
        d += 1
    return d


def _edge_text(v: float, decimals: int) -> str:
    text = f"{v:.{decimals}f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text == "-0" else text


def class_labels(edges: np.ndarray, units: str | None = None) -> list[str]:
    """``lo to hi [units]`` for every class, with :func:`edge_decimals` decimals (trailing zeros
    dropped), e.g. ``-11.2 to -1.8 K``."""
    d = edge_decimals(edges)
    tail = f" {units}" if units else ""
    return [f"{_edge_text(float(lo), d)} to {_edge_text(float(hi), d)}{tail}" for lo, hi in zip(edges[:-1], edges[1:])]


def pixel_breakdown(stats, counts: np.ndarray, outside: int | None = None, clip: bool = False) -> dict[str, int]:
    """Invalid pixels split by cause: ``nodata_pixels`` (nodata values, NaN, outside the valid
    range), ``masked_pixels`` (GDAL mask, mask raster), and ``outside_pixels``: valid, but below
    the first class edge or above the last (shared, pinned or manual edges). ``outside``: that
    count when the fit counted it, else what class 0 holds beyond the invalid pixels. Outside
    pixels are in class 0, or with ``clip`` in the first/last class."""
    removed = getattr(stats, "removed", None) or {}
    if not removed:
        out = 0 if outside is None else int(outside)
        return {"nodata_pixels": int(counts[0]) - (0 if clip else out), "masked_pixels": 0, "outside_pixels": out}
    nodata = sum(removed["nodata_values"].values()) + removed["nonfinite"] + removed["valid_range"]
    masked = removed["masked"]
    if outside is None:
        outside = 0 if clip else int(counts[0]) - int(nodata) - int(masked)
    return {"nodata_pixels": int(nodata), "masked_pixels": int(masked), "outside_pixels": int(outside)}


def build_legend(*, scene, fitted, palette: np.ndarray, counts: np.ndarray, version: str, output: str,
                 labels: list[str] | None = None, made: dict | None = None) -> dict:
    """The legend as a JSON-ready dict: edges, min and max in physical values (``units``),
    the invalid pixels split into nodata and masked pixels, and the valid pixels outside the
    edges. ``labels``: one per class (default: the value ranges, :func:`class_labels`).
    ``made``: how the edges were made, recorded after ``edges_dtype`` (``fit``: each (default),
    together with ``fitted_on``, or edges_from with the legend's path and hash); ``outside``
    follows (nodata, or clip when ``fitted.clip``)."""
    edges = fitted.edges
    units = getattr(scene, "units", None)
    names = labels if labels is not None else class_labels(edges, units)
    valid = int(counts[1:].sum())
    classes = []
    for k in range(1, fitted.n_classes + 1):
        lo, hi = float(edges[k - 1]), float(edges[k])
        n = int(counts[k])
        classes.append({
            "id": k,
            "lower": _num(lo),
            "upper": _num(hi),
            "closed": "both" if k == fitted.n_classes else "left",
            "label": names[k - 1],
            "color": to_hex(palette[k]),
            "rgba": [int(c) for c in palette[k]],
            "count": n,
            "percent": round(100.0 * n / valid, 6) if valid else 0.0,
        })
    empty = [c["id"] for c in classes if c["count"] == 0]
    stats = fitted.stats
    rule = scene.rule if hasattr(scene, "rule") else None
    return {
        "sceneclass_version": version,
        "input": redact(scene.path),
        **({"inputs": [redact(p) for p in scene.sources]} if getattr(scene, "sources", ()) else {}),
        "band": scene.band,
        "dtype": str(scene.dtype),
        "shape": list(scene.shape),
        "crs": scene.crs.to_string() if scene.crs else None,
        "transform": list(scene.transform)[:6],
        "nodata": _num(scene.nodata),
        "nodata_values": [_num(v) for v in rule.nodata] if rule else None,
        "valid_range": list(rule.valid_range) if rule and rule.valid_range else None,
        "mask": list(getattr(scene, "mask_sources", ())),
        "scale": rule.scale if rule else 1.0,
        "offset": rule.offset if rule else 0.0,
        "units": units,
        "scheme": fitted.scheme,
        "classes_requested": fitted.n_classes,
        "edges": [_num(float(e)) for e in edges],
        "edges_dtype": str(edges.dtype),
        **(made or {"fit": "each"}),
        "outside": "clip" if getattr(fitted, "clip", False) else "nodata",
        "min": _num(stats.vmin),
        "max": _num(stats.vmax),
        "valid_pixels": valid,
        **pixel_breakdown(stats, counts, getattr(fitted, "outside_pixels", None)
                          if getattr(fitted, "outside", None) is not None else None, getattr(fitted, "clip", False)),
        "empty_classes": empty,
        "classes_effective": len(classes) - len(empty),  # classes holding pixels
        "nodata_class": {"id": 0, "color": to_hex(palette[0]), "count": int(counts[0])},
        "classes": classes,
        "output": output,
        **(scene.derivation.legend() if getattr(scene, "derivation", None) is not None else {}),
    }


def write_legend(legend: dict, path: Path) -> None:
    with atomic_output(path, ".json") as tmp:
        tmp.write_text(json.dumps(legend, indent=2, allow_nan=False) + "\n", encoding="utf-8")
