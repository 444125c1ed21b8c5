"""Before any work: no file a run (or batch) writes may be a file it reads, or a file another
of its outputs writes.

A run writes its output, the legend, the manifest, every requested extra (quicklook, style
files, report, ...) and the output folder's lock file. It reads its inputs and the sidecar
files GDAL reads with them (``.aux.xml`` nodata and statistics, ``.msk`` masks, ``.ovr``
overviews, world files). Paths are compared as the file system sees them: symlinks and
``..`` resolved, and letter case folded in folders whose file system ignores it, so that an
alias is caught as well as an identical name. A Zarr output is a folder: nothing the run
reads or writes may lie inside it.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Iterable

from ..errors import ConfigError
from ..scene import is_url

#: sidecar files GDAL reads with a raster ``X.ext``: suffixes appended to the whole name ...
SIDECAR_SUFFIXES = (".aux.xml", ".aux", ".msk", ".ovr")
#: ... and suffixes replacing the extension (world files)
WORLD_SUFFIXES = (".tfw", ".tifw", ".wld")


def read_paths(path: str) -> list[tuple[Path, str]]:
    """The files a local input ``path`` stands for: itself and its sidecars (existing or not:
    creating one would change how the input reads). Empty for URLs.

    Parameters
    ----------
    path : str
        An input path or URL.

    Returns
    -------
    list of (Path, str)
        Each file with a short description (``input``, ``sidecar of input``).
    """
    if is_url(path):
        return []
    p = Path(path)
    out = [(p, "input")]
    out += [(p.with_name(p.name + s), "sidecar of input") for s in SIDECAR_SUFFIXES]
    out += [(p.with_suffix(s), "sidecar of input") for s in WORLD_SUFFIXES if p.suffix]
    return out


@lru_cache(maxsize=1024)
def _case_insensitive(folder: str) -> bool:
    """Does the file system of ``folder`` ignore letter case? Tested on the nearest component
    of the path that has cased letters (its swapped-case name names the same folder)."""
    p = Path(folder)
    for q in (p, *p.parents):
        if q.name and q.name.swapcase() != q.name:
            alt = q.with_name(q.name.swapcase())
            try:
                return os.path.samefile(q, alt)
            except OSError:
                return False
    return False


def _key(path: Path) -> tuple[str, str]:
    """(real folder, name) of a path, the name case-folded where the folder's file system
    ignores case."""
    real = os.path.realpath(path)
    folder, name = os.path.split(real)
    if _case_insensitive(folder):
        return folder.casefold(), name.casefold()
    return folder, name


def _inside(inner: tuple[str, str], outer: tuple[str, str]) -> bool:
    folder = os.path.join(*outer)
    return inner[0] == folder or inner[0].startswith(folder.rstrip(os.sep) + os.sep)


def check_collisions(writes: Iterable[tuple[Path, str, bool]], reads: Iterable[tuple[Path, str]]) -> None:
    """Refuse a plan whose written files collide with each other or with what it reads.

    Parameters
    ----------
    writes : iterable of (Path, str, bool)
        Every path the plan writes, what it is (``quicklook of out/a.tif``), and whether it is a
        folder the run replaces as a whole (a Zarr store).
    reads : iterable of (Path, str)
        Every path the plan reads, with what it is.

    Raises
    ------
    ConfigError
        Exit code 2, naming both paths: a written path is a read path (or lies inside a written
        folder), or two written paths are the same file.
    """
    written: dict[tuple[str, str], tuple[Path, str]] = {}
    folders: list[tuple[tuple[str, str], Path, str]] = []
    for path, what, is_folder in writes:
        key = _key(path)
        if key in written:
            other, other_what = written[key]
            raise ConfigError(f"output.path: {other} ({other_what}) and {path} ({what}) are the same file; "
                              "choose output names that differ")
        written[key] = (path, what)
        if is_folder:
            folders.append((key, path, what))
    for path, what in reads:
        key = _key(path)
        hit = written.get(key)
        if hit is not None:
            raise ConfigError(f"output.path: {hit[0]} ({hit[1]}) would overwrite {path} ({what}); "
                              "choose another output path")
        for fkey, fpath, fwhat in folders:
            if _inside(key, fkey):
                raise ConfigError(f"output.path: {fpath} ({fwhat}) would replace a folder holding {path} ({what}); "
                                  "choose another output path")
    for key, (path, what) in written.items():
        for fkey, fpath, fwhat in folders:
            if key != fkey and _inside(key, fkey):
                raise ConfigError(f"output.path: {path} ({what}) lies inside {fpath} ({fwhat}), "
                                  "which the run replaces; choose other output names")
