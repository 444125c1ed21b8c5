"""Locks that keep two runs from writing into the same folders at once.

A run locks every folder it writes into (the output folder and each output's folder) and,
shared, every folder above them, so that two runs conflict when one writes inside what the
other writes (``out`` and ``out/sub``: the first holds ``out`` exclusively, the second needs it
shared) and never when their folders are disjoint (``out1`` and ``out2`` share only their
parents, and shared locks do not conflict). The locks are ``flock(2)`` locks, released by the
kernel when the process ends however it ends, on files in a private lock folder
(:func:`lock_dir`) named by each folder's device and inode, so a symlinked, ``..``-laden or
differently cased path to the same folder takes the same lock.

The output folder also gets ``.sceneclass.lock`` (who holds it, for people and for runs of
other users, whose lock folders are separate). No lock file is ever opened through a symlink
(``O_NOFOLLOW``): a symlink planted as ``.sceneclass.lock`` is removed, not written through.
``filelock`` is not used: it opens its lock file with ``O_TRUNC`` and follows symlinks.
"""

from __future__ import annotations

import datetime as dt
import errno
import fcntl
import logging
import os
import stat
import tempfile
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Iterable, Iterator

from ..errors import ConfigError, SceneclassError, output_error

log = logging.getLogger(__name__.replace("pipeline", "sceneclass", 1))

#: the lock file in the output folder
LOCK_NAME = ".sceneclass.lock"
#: environment variable naming the lock folder (default: a private folder in the temp folder)
LOCK_DIR_ENV = "SCENECLASS_LOCK_DIR"


class LockedError(SceneclassError):
    """Another run writes into the same output folder, or into one inside or around it."""

    exit_code = 3


def lock_dir() -> Path:
    """The folder holding the folder locks: ``$SCENECLASS_LOCK_DIR``, else
    ``sceneclass-locks-UID`` in the temp folder, created private (0700).

    Returns
    -------
    Path
        An existing directory (never a symlink) that only this user may write.

    Raises
    ------
    ConfigError
        When the folder is a symlink, not a directory, or (the default one) belongs to another
        user or is writable by others.
    """
    env = os.environ.get(LOCK_DIR_ENV)
    path = Path(env) if env else Path(tempfile.gettempdir()) / f"sceneclass-locks-{os.getuid()}"
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    except OSError as e:
        raise ConfigError(f"{LOCK_DIR_ENV}: cannot create the lock folder {path} ({e.strerror})") from None
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode):
        raise ConfigError(f"{LOCK_DIR_ENV}: the lock folder {path} is not a directory (a symlink?); remove it")
    if not env and (st.st_uid != os.getuid() or st.st_mode & 0o022):
        raise ConfigError(f"{LOCK_DIR_ENV}: the lock folder {path} belongs to another user or is writable "
                          f"by others; remove it or set {LOCK_DIR_ENV}")
    return path


def _open_nofollow(path: Path, flags: int) -> int:
    """Open (creating) a regular file without following a symlink at ``path``: a symlink there
    is removed (removing a link never touches its target) and the file created in its place."""
    flags |= os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(path, flags, 0o644)
    except OSError as e:
        if e.errno != errno.ELOOP:
            raise
        log.warning("%s was a symlink (to %s); removed it, not following it", path, os.readlink(path))
        os.unlink(path)
        fd = os.open(path, flags | os.O_EXCL, 0o644)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise ConfigError(f"output.folder: {path} is not a regular file; remove it")
    return fd


def _holders(fd: int) -> str:
    """Process ids holding a flock on ``fd``'s file (from ``/proc/locks``; Linux)."""
    st = os.fstat(fd)
    dev = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    pids = set()
    try:
        with open("/proc/locks", encoding="ascii", errors="replace") as f:
            for line in f:
                parts = line.split()
                if len(parts) > 5 and parts[1] == "FLOCK" and parts[5] == dev and parts[4] != str(os.getpid()):
                    pids.add(parts[4])
    except OSError:
        pass
    return ", ".join(f"pid {p}" for p in sorted(pids, key=int)) or "another process"


def _try_lock(fd: int, exclusive: bool) -> bool:
    try:
        fcntl.flock(fd, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _key(folder: Path) -> str:
    st = os.stat(folder)
    return f"{st.st_dev:x}-{st.st_ino}.lock"


@contextmanager
def folder_lock(folder: Path, writes_in: Iterable[Path] = ()) -> Iterator[None]:
    """Hold the locks for a run that writes into ``folder`` and ``writes_in`` (non-blocking).

    Parameters
    ----------
    folder : Path
        The output folder (created if missing); it gets ``.sceneclass.lock`` naming the holder.
    writes_in : iterable of Path
        Every other folder the run writes into (each output's folder; created if missing).

    Raises
    ------
    LockedError
        Exit code 3: another run holds ``folder`` or one of ``writes_in``, a folder inside one
        of them, or a folder above one of them.
    ConfigError
        The lock folder or a lock file cannot be used.
    """
    folders = []
    for f in (folder, *writes_in):
        try:
            f.mkdir(parents=True, exist_ok=True)
        except FileExistsError as e:  # the folder, or a folder above it, is a file
            e.strerror = "a file is in the way (not a folder)"
            raise output_error(e, f, "cannot use the output folder") from None
        except OSError as e:
            raise output_error(e, f, "cannot use the output folder") from None
        folders.append(Path(os.path.realpath(f)))
    exclusive = {_key(f): f for f in folders}
    shared = {}
    for f in folders:
        for up in f.parents:
            k = _key(up)
            if k not in exclusive:
                shared.setdefault(k, up)
    locks = lock_dir()
    with ExitStack() as stack:
        try:
            own = _open_own(folder)  # same folder, any user: the folder's own lock file
        except OSError as e:
            raise output_error(e, folder, "cannot use the output folder") from None
        stack.callback(os.close, own)
        if not _try_lock(own, True):
            holder = os.pread(own, 200, 0).decode(errors="replace").strip() or _holders(own)
            raise LockedError(f"{folder}: another sceneclass run is using this output folder ({holder}); not starting")
        # folders above first (top down), then the folders written into
        order = sorted(shared.items(), key=lambda kv: len(kv[1].parts)) + sorted(exclusive.items())
        for k, f in order:
            fd = _open_nofollow(locks / k, os.O_RDONLY)
            stack.callback(os.close, fd)
            excl = k in exclusive
            if not _try_lock(fd, excl):
                who = _holders(fd)
                what = (f"{f} or a folder inside it" if excl else f"{f}, which holds {folder}")
                raise LockedError(f"{folder}: another sceneclass run ({who}) is writing in {what}; not starting")
        try:
            os.ftruncate(own, 0)
            os.pwrite(own, f"pid {os.getpid()} since {dt.datetime.now().isoformat(timespec='seconds')}\n".encode(), 0)
        except OSError:
            pass  # a lock file of another user, opened read-only: the lock itself holds
        yield


def _open_own(folder: Path) -> int:
    path = folder / LOCK_NAME
    try:
        return _open_nofollow(path, os.O_RDWR)
    except PermissionError:  # another user's lock file: read-only is enough to lock it
        return _open_nofollow(path, os.O_RDONLY)
