"""The legend: per class its id, edges, colour, pixel count and percent, plus how it was made."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from ..jobs.atomic import atomic_output, sibling
from ..palette import to_hex


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
            "lower": lo,
            "upper": hi,
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
        "input": scene.path,
        "band": scene.band,
        "dtype": str(scene.dtype),
        "shape": list(scene.shape),
        "crs": scene.crs.to_string() if scene.crs else None,
        "transform": list(scene.transform)[:6],
        "nodata": _num(scene.nodata),
        "scheme": fitted.scheme,
        "classes_requested": fitted.n_classes,
        "edges": [float(e) for e in edges],
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
        tmp.write_text(json.dumps(legend, indent=2) + "\n", encoding="utf-8")
