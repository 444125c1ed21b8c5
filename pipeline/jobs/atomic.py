"""Outputs appear at their final path only when complete: write beside it, then rename."""

from __future__ import annotations

import os
import shutil
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Literal

PARTIAL_TAG = ".sceneclass-partial"


def partial_path(final: Path, suffix: str = "", make: Literal["file", "dir"] | None = "file") -> Path:
    """A unique temporary name in the destination folder (hidden, recognisable for sweeping).

    Parameters
    ----------
    final : Path
        The path the temporary stands in for; its folder must exist.
    suffix : str
        Appended to the name (``.tif``: GDAL picks drivers and sidecar names by suffix).
    make : {"file", "dir", None}
        Create the temporary at once, exclusively: an empty file (``O_CREAT | O_EXCL |
        O_NOFOLLOW``, so nothing planted at that name, a symlink least of all, is ever opened
        or written through) or an empty folder; None: only the name (a rename target).

    Returns
    -------
    Path
        The temporary's path.

    Raises
    ------
    OSError
        The temporary cannot be created (``FileExistsError`` if something took the name).
    """
    path = final.with_name(f".{final.name}.{uuid.uuid4().hex[:8]}{PARTIAL_TAG}{suffix}")
    if make == "file":
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666))
    elif make == "dir":
        os.mkdir(path)
    return path


def sibling(output: Path, suffix: str) -> Path:
    """A side file named from an output: ``out/b10.tif`` + ``.legend.json`` -> ``out/b10.legend.json``."""
    output = Path(output)
    return output.with_name(output.stem + suffix)


def remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        try:
            path.unlink()
        except FileNotFoundError:
            pass


def commit(partial: Path, final: Path) -> None:
    """Move a complete file or folder into place, replacing what was there."""
    if final.is_dir() and not final.is_symlink():
        old = partial_path(final, ".old", make=None)
        os.replace(final, old)
        os.replace(partial, final)
        remove(old)
    else:
        os.replace(partial, final)


@contextmanager
def atomic_output(final: Path, suffix: str = "", make: Literal["file", "dir"] = "file") -> Iterator[Path]:
    """Yield a temporary (an empty file, or folder with ``make="dir"``, created exclusively:
    see :func:`partial_path`); on success move it to ``final``, on any failure remove it."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = partial_path(final, suffix, make)
    try:
        yield tmp
    except BaseException:
        remove(tmp)
        raise
    commit(tmp, final)


def sweep(folder: Path) -> list[Path]:
    """Remove temporaries left by killed runs in ``folder``; returns what was removed."""
    gone = [p for p in folder.glob(f".*{PARTIAL_TAG}*")]
    for p in gone:
        remove(p)
    return gone
