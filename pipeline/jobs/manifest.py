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
from .. import storage
from ..errors import ConfigError
from ..scene import is_url
from ..urls import redact

#: config sections that change the pixels or files of an output (not where or how fast it runs)
HASHED_KEYS = ("input", "bands", "expression", "index", "band", "nodata", "valid_range", "gdal_mask", "mask", "scale", "offset", "units",
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
    data["output"]["path"] = storage.display(data["output"]["path"])  # a remote output by its URL, not its shadow
    data["input"] = redact(data.get("input"))  # a credential must not be guessable from the hash
    mask = getattr(job, "mask", None)
    if mask is not None:  # the mask raster's pixels change the output too: its size and mtime
        try:
            data["mask_file"] = quick_fingerprint(mask.path)
        except OSError:
            data["mask_file"] = None
    for name, band in (getattr(job, "bands", None) or {}).items():
        data["bands"][name]["path"] = redact(band.path)
        if band.mask is not None:  # a band's own mask raster, likewise
            try:
                data.setdefault("band_mask_files", {})[name] = quick_fingerprint(band.mask.path)
            except OSError:
                data.setdefault("band_mask_files", {})[name] = None
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
    """Size and mtime (cheap); object-storage and HTTP(S) URLs by their address, ETag, last
    modification and size (one HEAD request; the address only when the lookup fails), other
    URLs by their address only."""
    if is_url(path):
        fp = {"url": redact(path)}
        if storage.is_remote(path) or storage.scheme(path) in storage.READ_ONLY:
            try:
                fp.update(storage.remote_fingerprint(path))
            except (OSError, ConfigError):
                pass
        return fp
    st = os.stat(path)
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def fingerprint(path: str) -> dict:
    fp = quick_fingerprint(path)
    if "size" in fp and not is_url(path):
        fp["sha256"] = checksum(path)
    return fp


def input_fingerprint(job, quick: bool = False) -> dict:
    """The fingerprint of every file a job reads: :func:`fingerprint` of its ``input``, or for
    a ``bands`` job ``{"files": {path: fingerprint}}`` of every band file, or for a mosaic
    (``output.mosaic``) ``{"inputs": [...]}``: each input's path, band and fingerprint, in order.

    Parameters
    ----------
    job : RunConfig
        One job's config.
    quick : bool
        Size and mtime only (:func:`quick_fingerprint`), no checksum.

    Returns
    -------
    dict

    Raises
    ------
    OSError
        A file is missing or unreadable.
    """
    fp = quick_fingerprint if quick else fingerprint
    if job.output.mosaic:
        return {"inputs": [{"path": redact(p), "band": b, **fp(p)} for p, b in job.members]}
    if getattr(job, "bands", None) is None:
        return fp(job.input)
    return {"files": {redact(path): fp(path) for path in job.sources}}


def _per_file(fp: dict | None) -> dict:
    """A fingerprint as {path: file fingerprint} (the single input's under the key '')."""
    if not fp:
        return {}
    return dict(fp["files"]) if isinstance(fp.get("files"), dict) else {"": fp}


def _same(old: dict | None, new: dict, key: str | None = None) -> bool:
    """Do the recorded fingerprints ``old`` match ``new`` file by file: every value of ``new``
    (with ``key``: that value only, which must be present)?"""
    a, b = _per_file(old), _per_file(new)
    if a.keys() != b.keys():
        return False
    if key is not None:
        return all(b[p].get(key) and a[p].get(key) == b[p][key] for p in b)
    return all(isinstance(a[p], dict) and all(a[p].get(k) == v for k, v in b[p].items()) for p in b)


def _judge_inputs(job, old: dict) -> Verdict:
    """:func:`judge`'s input check for a mosaic: the same inputs (paths and bands, in order),
    each unchanged (size and mtime, else its checksum)."""
    was = old.get("inputs") or []
    now = [(redact(p), b) for p, b in job.members]
    if [(e.get("path"), e.get("band")) for e in was] != now:
        return Verdict("changed", "the mosaic's inputs changed (added, removed, reordered or another band)")
    touched = [not all(e.get(k) == v for k, v in quick_fingerprint(p).items()) for e, (p, _) in zip(was, job.members)]
    if not any(touched):
        return Verdict("up to date", "inputs unchanged (size, mtime)")
    full, changed = [], []  # checksums of the touched inputs only; the others' records stand
    for e, (p, b), again in zip(was, job.members, touched):
        f = {"path": redact(p), "band": b, **fingerprint(p)} if again else e
        if again and (not f.get("sha256") or f.get("sha256") != e.get("sha256")):
            changed.append(redact(p))
        full.append(f)
    if changed:
        return Verdict("changed", f"input changed: {', '.join(changed)}", {"inputs": full})
    return Verdict("up to date", "inputs touched, content unchanged", {"inputs": full})


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
    url = storage.remote_of(path)
    if url is not None:
        text = storage.read_text(url)
        try:
            return json.loads(text) if text is not None else None
        except ValueError:
            return None
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
    url = storage.remote_of(output)
    if url is not None:
        return remote_output_fingerprint(url)
    output = staged_path(output)
    target = output / "zarr.json" if output.is_dir() else output
    try:
        st = target.stat()
    except OSError:
        return None
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def remote_output_fingerprint(url: str) -> dict | None:
    """ETag and size of a remote COG; for a remote Zarr store, of its group metadata, and only
    when every chunk its arrays declare is present (else None: an incomplete store is never
    up to date)."""
    if url.rstrip("/").lower().endswith(".zarr"):
        from ..writers.zarr import remote_store_complete

        if not remote_store_complete(url):
            return None
        fp = storage.file_fingerprint(url.rstrip("/") + "/zarr.json")
        return None if fp is None else {**fp, "complete": True}
    return storage.file_fingerprint(url)


def exists(path: Path) -> bool:
    """Whether an output's side file exists (locally, or in object storage for a remote output)."""
    url = storage.remote_of(path)
    return storage.exists(url) if url is not None else path.exists()


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
    missing = [p.name for p in extra_files if not exists(p)]
    if missing:
        return Verdict("changed", f"missing {', '.join(missing)}")
    old = man.get("input_fingerprint") or {}
    if job.output.mosaic:
        return _judge_inputs(job, old)
    quick = input_fingerprint(job, quick=True)
    if _same(old, quick):
        what = "ETag, size, last modified" if '"etag"' in json.dumps(quick) else "size, mtime"
        return Verdict("up to date", f"input unchanged ({what})")
    full = input_fingerprint(job)
    if _same(old, full, "sha256"):
        return Verdict("up to date", "input touched, content unchanged", full)
    return Verdict("changed", "input changed", full)
