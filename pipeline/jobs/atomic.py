"""Outputs appear at their final path only when complete: write beside it, then rename.

A run writes every file it makes (raster, legend, side files, manifest) under a temporary
name in the destination folder. Inside :class:`Staging` nothing is renamed until the run
commits, so a failure anywhere leaves every previous file untouched; the commit renames the
files in the order they were written, the manifest last, so a crash in between leaves an
old manifest that no longer matches the new output (the next run redoes it).
"""

from __future__ import annotations

import contextvars
import ctypes
import ctypes.util
import errno
import functools
import logging
import os
import re
import shutil
import threading
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Literal

from .. import storage
from ..errors import OutputError
from .interrupt import deferred

log = logging.getLogger(__name__.replace("pipeline", "sceneclass", 1))

PARTIAL_TAG = ".sceneclass-partial"
#: a replaced store moved aside by a two-rename swap: ``.NAME.xxxxxxxx.sceneclass-partial.old``
_ASIDE = re.compile(r"^\.(?P<name>.+)\.[0-9a-f]{8}" + re.escape(PARTIAL_TAG) + r"\.old$")

_staging: contextvars.ContextVar["Staging | None"] = contextvars.ContextVar("sceneclass_staging", default=None)

#: every temporary this process created (:func:`partial_path` with ``make``), for :func:`remove_leftovers`
_made: set[str] = set()
_made_lock = threading.Lock()


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
    if make is not None:
        with _made_lock:
            _made.add(str(path))
    if make == "file":
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666))
    elif make == "dir":
        os.mkdir(path)
    return path


def remove_leftovers() -> list[Path]:
    """Remove every temporary this process created that is still there, and return them.

    What a run stopped by a signal calls last: a signal can arrive between the creation of a
    temporary and the statement that would have taken charge of it, or while a thread is still
    writing into a temporary folder its owner has just removed. Committed temporaries were
    renamed away; a replaced output moved aside (``.old``, restored by the next run) is never
    one of them."""
    with _made_lock:
        made = sorted(_made)
        _made.clear()
    gone = []
    for p in map(Path, made):
        if p.exists() or p.is_symlink():
            remove(p)
            gone.append(p)
    return gone


def sibling(output: Path, suffix: str) -> Path:
    """A side file named from an output: ``out/b10.tif`` + ``.legend.json`` -> ``out/b10.legend.json``."""
    output = Path(output)
    return output.with_name(output.stem + suffix)


def remove(path: Path) -> None:
    """Remove a file or a folder tree (or a staged remote store); nothing when it does not exist."""
    if hasattr(path, "discard"):
        path.discard()
        return
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        try:
            path.unlink()
        except FileNotFoundError:
            pass


# --------------------------------------------------------------------- renames
_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


@functools.cache
def _renameat2():
    """libc's ``renameat2`` (looked up once: ``find_library`` runs ``ldconfig`` in a child
    process), or None where the C library has none."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    return fn


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one atomic step (Linux ``renameat2(RENAME_EXCHANGE)``); False when the
    system or file system cannot."""
    fn = _renameat2()
    if fn is None:
        return False
    if fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.EPERM):
        return False
    raise OSError(err, os.strerror(err), str(b))


def commit(partial: Path, final: Path) -> None:
    """Move a complete file or folder into place, replacing what was there.

    A folder (Zarr store) replacing a folder is swapped with the old one in one atomic step
    where the system allows (Linux ``renameat2``); elsewhere the old folder is first renamed
    aside (``….sceneclass-partial.old``), which :func:`sweep` renames back if a crash came
    before the new one was in place.

    A path under a remote output's shadow folder (:func:`pipeline.storage.mount`) is uploaded
    instead (the object appears only complete), and the local temporary removed; a staged
    remote store (anything with ``commit()``) commits itself.

    A file never replaces a folder (someone else's folder named like the output is not the
    run's to remove): ``IsADirectoryError``.

    Raises
    ------
    OSError
        When a rename fails, or a file would replace a folder.
    OutputError
        When an upload fails (the previous object is unchanged).
    """
    if hasattr(partial, "commit"):  # a remote store staged under its own prefix
        partial.commit()
        return
    url = storage.remote_of(final)
    if url is not None:
        try:
            storage.put_file(partial, url)
        finally:
            remove(partial)
        return
    if final.is_dir() and not final.is_symlink():
        if not partial.is_dir():
            raise IsADirectoryError(errno.EISDIR, "a folder is in the way", str(final))
        if _exchange(partial, final):  # partial now holds the old store
            remove(partial)
            return
        old = partial_path(final, ".old", make=None)
        os.replace(final, old)
        os.replace(partial, final)
        remove(old)
    else:
        os.replace(partial, final)


class Staging:
    """The files of one run, written under temporary names and committed together.

    Inside ``with staging.active():`` every :func:`atomic_output` leaves its file under its
    temporary name and records it here; :meth:`commit` then renames them all, in the order
    they were written, with signals deferred (see :mod:`pipeline.jobs.interrupt`);
    :meth:`discard` removes them.
    """

    def __init__(self) -> None:
        self.files: list[tuple[Path, Path]] = []  # (partial, final)

    @contextmanager
    def active(self) -> Iterator["Staging"]:
        token = _staging.set(self)
        try:
            yield self
        finally:
            _staging.reset(token)

    def add(self, partial: Path, final: Path) -> None:
        self.files = [(p, f) for p, f in self.files if f != final]  # written again: the newer wins
        self.files.append((partial, final))

    def path_of(self, final: Path) -> Path:
        """Where ``final``'s content is now: its temporary name when staged, else ``final``."""
        for partial, f in self.files:
            if f == final:
                return partial
        return final

    def commit(self) -> None:
        """Rename every staged file to its final path (order kept; the manifest comes last).

        Raises
        ------
        OutputError
            When a rename fails (the files not yet renamed are removed).
        """
        from .interrupt import deferred

        with deferred():
            try:
                for partial, final in self.files:
                    commit(partial, final)
            except OutputError:
                self.discard()
                raise
            except OSError as e:
                self.discard()
                raise OutputError(f"{final}: cannot put the output in place ({cause(e)})") from None
            self.files = []

    def discard(self) -> None:
        """Remove every staged file that was not committed."""
        for partial, _ in self.files:
            remove(partial)
        self.files = []


def current_staging() -> Staging | None:
    """The :class:`Staging` active in this context, if any."""
    return _staging.get()


def staged_path(final: Path) -> Path:
    """Where ``final``'s new content is: its temporary name while a :class:`Staging` holds it."""
    staging = _staging.get()
    return staging.path_of(Path(final)) if staging is not None else Path(final)


@contextmanager
def atomic_output(final: Path, suffix: str = "", make: Literal["file", "dir"] = "file") -> Iterator[Path]:
    """Yield a temporary (an empty file, or folder with ``make="dir"``, created exclusively:
    see :func:`partial_path`); on success move it to ``final`` (or leave it to the active
    :class:`Staging`), on any failure remove it."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = None
    try:
        with deferred():  # a signal waits until the temporary has its owner
            tmp = partial_path(final, suffix, make)
        yield tmp
    except BaseException:
        if tmp is not None:
            remove(tmp)
        raise
    staging = _staging.get()
    if staging is not None:
        staging.add(tmp, final)
    else:
        commit(tmp, final)


# ----------------------------------------------------------------- write errors
def cause(e: BaseException) -> str:
    """The reason of an OS or GDAL error in a few words (``No space left on device``)."""
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


_PARTIAL_NAME = re.compile(r"^\.(?P<name>.+)\.[0-9a-f]{8}" + re.escape(PARTIAL_TAG))


def final_name(path: str | os.PathLike) -> Path:
    """The final path a temporary stands for (``out/.a.tif.1234abcd.sceneclass-partial.tif`` ->
    ``out/a.tif``); other paths unchanged."""
    path = Path(path)
    for part in (path, *path.parents):
        m = _PARTIAL_NAME.match(part.name)
        if m:
            return part.with_name(m.group("name"))
    return path


@contextmanager
def output_errors(final: Path) -> Iterator[None]:
    """Turn a failed write (``OSError``, including rasterio's I/O errors) into an
    :class:`OutputError` naming ``final`` (and the side file, when that failed) and the cause.

    Raises
    ------
    OutputError
        For any ``OSError`` raised inside.
    """
    try:
        yield
    except OutputError:
        raise
    except OSError as e:
        what = final_name(e.filename) if getattr(e, "filename", None) else Path(final)
        name = "" if what == Path(final) else f" {what}"
        raise OutputError(f"{final}: cannot write{name or ' the output'} ({cause(e)}); nothing was replaced") from None


# ----------------------------------------------------------------------- sweep
def recover(folder: Path) -> list[Path]:
    """Put back a store that a crash left renamed aside (``….sceneclass-partial.old``) when its
    final path is empty; returns the restored final paths."""
    restored = []
    for p in sorted(folder.glob(f".*{PARTIAL_TAG}.old"), key=lambda q: q.stat().st_mtime_ns, reverse=True):
        m = _ASIDE.match(p.name)
        if m is None:
            continue
        final = folder / m.group("name")
        if not final.exists() and not final.is_symlink():
            os.replace(p, final)
            restored.append(final)
            log.warning("restored %s, which an interrupted run had moved aside", final)
    return restored


def sweep(folder: Path) -> list[Path]:
    """Restore what an interrupted swap moved aside (:func:`recover`), then remove the
    temporaries left by killed runs in ``folder``; returns what was removed."""
    recover(folder)
    gone = [p for p in folder.glob(f".*{PARTIAL_TAG}*")]
    for p in gone:
        remove(p)
    return gone
