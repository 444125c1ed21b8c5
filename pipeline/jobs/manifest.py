"""Per-output manifests: what made an output, so a rerun can skip work that is already done.

A manifest (``NAME.manifest.json`` beside the output) records the job's config hash, the
input's fingerprint, library versions, edges, counts, timings and status. It is put in place
last, after the output, its legend and side files, so a manifest with status ``done`` means
the output is complete. A failed run leaves the manifest of the previous output alone and
records its error in ``NAME.failed.json`` instead (removed by the next successful run); a
run refused before it writes records nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
from dataclasses import dataclass
from pathlib import Path

from .atomic import atomic_output, sibling, staged_path
from .checksum import checksum
from ..scene import is_url
from ..urls import redact

#: config sections that change the pixels or files of an output (not where or how fast it runs)
HASHED_KEYS = ("input", "band", "nodata", "valid_range", "gdal_mask", "mask", "scale", "offset", "units",
               "classes", "palette", "output")


def manifest_path(output: Path) -> Path:
    return sibling(output, ".manifest.json")


def failure_path(output: Path) -> Path:
    """``NAME.failed.json`` beside the output: the last failed run's error (the manifest keeps
    describing the previous good output)."""
    return sibling(output, ".failed.json")


def config_hash(job) -> str:
    """Hash of everything in a job's config that affects its output (not dask/processing)."""
    data = job.model_dump(mode="json", include=set(HASHED_KEYS) | {"outputs"} & set(type(job).model_fields))
    data["output"].pop("overwrite", None)
    data["input"] = redact(data.get("input"))  # a credential must not be guessable from the hash
    mask = getattr(job, "mask", None)
    if mask is not None:  # the mask raster's pixels change the output too: its size and mtime
        try:
            data["mask_file"] = quick_fingerprint(mask.path)
        except OSError:
            data["mask_file"] = None
    classes = data.get("classes")
    if isinstance(classes, dict):  # the sharing keys at their defaults: the hash of a config without them
        for key, default in (("fit", "each"), ("edges_from", None), ("outside", "nodata")):
            if classes.get(key, default) == default:
                classes.pop(key, None)
    edges_from = getattr(getattr(job, "classes", None), "edges_from", None)
    if edges_from is not None:  # the pinned edges are the legend file's content
        from .shared import legend_sha256

        data["edges_from_sha256"] = legend_sha256(edges_from)
    blob = json.dumps(data, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()


def quick_fingerprint(path: str) -> dict:
    """Size and mtime (cheap); URLs are fingerprinted by their address only."""
    if is_url(path):
        return {"url": redact(path)}
    st = os.stat(path)
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def fingerprint(path: str) -> dict:
    fp = quick_fingerprint(path)
    if "size" in fp:
        fp["sha256"] = checksum(path)
    return fp


def versions() -> dict:
    import dask
    import numpy
    import rasterio

    from .. import __version__

    return {
        "sceneclass": __version__, "numpy": numpy.__version__, "rasterio": rasterio.__version__,
        "gdal": rasterio.__gdal_version__, "dask": dask.__version__, "python": platform.python_version(),
    }


def read_manifest(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def write_manifest(path: Path, data: dict) -> None:
    with atomic_output(path, ".json") as tmp:
        tmp.write_text(json.dumps(data, indent=2, allow_nan=False) + "\n", encoding="utf-8")


def output_fingerprint(output: Path) -> dict | None:
    """Size/mtime of a COG, or of a Zarr store's metadata file; None when missing (a file
    staged by the current run is read under its temporary name: a rename keeps both)."""
    output = staged_path(output)
    target = output / "zarr.json" if output.is_dir() else output
    try:
        st = target.stat()
    except OSError:
        return None
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


@dataclass
class Verdict:
    status: str  # new | changed | up to date
    reason: str
    input_fp: dict | None = None  # the input's full fingerprint when it had to be computed


def judge(job, output: Path, extra_files: list[Path]) -> Verdict:
    """Is ``output`` up to date for ``job``? Cheap checks first; a checksum only when the
    input's size or mtime changed since the manifest."""
    man = read_manifest(manifest_path(output))
    if man is None:
        return Verdict("new", "no manifest")
    if man.get("status") != "done":
        return Verdict("changed", f"last run {man.get('status', 'unknown')}")
    if man.get("config_hash") != config_hash(job):
        return Verdict("changed", "config changed")
    if output_fingerprint(output) != man.get("output_fingerprint"):
        return Verdict("changed", "output missing or modified")
    missing = [p.name for p in extra_files if not p.exists()]
    if missing:
        return Verdict("changed", f"missing {', '.join(missing)}")
    old = man.get("input_fingerprint", {})
    quick = quick_fingerprint(job.input)
    if all(old.get(k) == v for k, v in quick.items()):
        return Verdict("up to date", "input unchanged (size, mtime)")
    full = fingerprint(job.input)
    if full.get("sha256") and full.get("sha256") == old.get("sha256"):
        return Verdict("up to date", "input touched, content unchanged", full)
    return Verdict("changed", "input changed", full)
