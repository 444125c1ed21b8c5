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


def build_legend(*, scene, fitted, palette: np.ndarray, counts: np.ndarray, version: str, output: str) -> dict:
    """The legend as a JSON-ready dict."""
    edges = fitted.edges
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
            "label": f"{k}: {fmt(lo)} - {fmt(hi)}",
            "color": to_hex(palette[k]),
            "rgba": [int(c) for c in palette[k]],
            "count": n,
            "percent": round(100.0 * n / valid, 6) if valid else 0.0,
        })
    empty = [c["id"] for c in classes if c["count"] == 0]
    stats = fitted.stats
    return {
        "sceneclass_version": version,
        "input": redact(scene.path),
        "band": scene.band,
        "dtype": str(scene.dtype),
        "shape": list(scene.shape),
        "crs": scene.crs.to_string() if scene.crs else None,
        "transform": list(scene.transform)[:6],
        "nodata": _num(scene.nodata),
        "scheme": fitted.scheme,
        "classes_requested": fitted.n_classes,
        "edges": [_num(float(e)) for e in edges],
        "edges_dtype": str(edges.dtype),
        "min": _num(stats.vmin),
        "max": _num(stats.vmax),
        "valid_pixels": valid,
        "nodata_pixels": int(counts[0]),
        "empty_classes": empty,
        "classes_effective": len(classes) - len(empty),  # classes holding pixels
        "nodata_class": {"id": 0, "color": to_hex(palette[0]), "count": int(counts[0])},
        "classes": classes,
        "output": output,
    }


def write_legend(legend: dict, path: Path) -> None:
    with atomic_output(path, ".json") as tmp:
        tmp.write_text(json.dumps(legend, indent=2, allow_nan=False) + "\n", encoding="utf-8")
