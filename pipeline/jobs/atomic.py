"""Outputs appear at their final path only when complete: write beside it, then rename."""

from __future__ import annotations

import os
import shutil
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

PARTIAL_TAG = ".sceneclass-partial"


def partial_path(final: Path, suffix: str = "") -> Path:
    """A unique temporary name in the destination folder (hidden, recognisable for sweeping)."""
    return final.with_name(f".{final.name}.{uuid.uuid4().hex[:8]}{PARTIAL_TAG}{suffix}")


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
        old = partial_path(final, ".old")
        os.replace(final, old)
        os.replace(partial, final)
        remove(old)
    else:
        os.replace(partial, final)


@contextmanager
def atomic_output(final: Path, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path; on success move it to ``final``, on any failure remove it."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = partial_path(final, suffix)
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
