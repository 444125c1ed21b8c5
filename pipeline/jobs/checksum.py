"""The input's content checksum (SHA-256) for the manifest, computed beside the work, and the
input's identity (size, modification time, inode, device) that tells whether it changed.

A run's manifest records the input's checksum, so that a later run can tell a touched but
unchanged input from a changed one. Reading and hashing the 921 MiB 16x scene takes a core
about 0.6 s. It runs in a background thread at the lowest CPU priority, and the command
starts it (:func:`start_for_config`) as soon as it has read the config's ``input``, before
numpy, dask and rasterio are imported: that takes about 0.5 s on one core, and the other core
hashes meanwhile. ``python scripts/bench_checksum.py`` measures what that saves.

Files are hashed with :func:`hashlib.file_digest` (reads, no memory map): a memory-mapped
input that another process truncates kills the reading process with SIGBUS; a read just
ends early, and the identity taken before and after (:func:`identity`) says the file changed.

Standard library only at import (PyYAML is loaded when a config is read): this module is
imported before everything else.
"""

from __future__ import annotations

import hashlib
import os
import stat
import threading
from concurrent.futures import Future

#: (size, mtime_ns, inode, device) of a regular file
Identity = tuple[int, int, int, int]

_lock = threading.Lock()
_started: dict[str, tuple[Identity, Future]] = {}


def _identity(st: os.stat_result) -> Identity:
    return st.st_size, st.st_mtime_ns, st.st_ino, st.st_dev


def identity(path: str) -> Identity | None:
    """What tells whether a local file changed: its size, modification time (ns), inode and
    device (an atomic replacement changes the inode; a rewrite in place the time or size).

    Parameters
    ----------
    path : str
        A local path, or an object-storage or HTTP(S) URL (a GDAL ``/vsi`` path or a missing
        file gives None).

    Returns
    -------
    tuple or None
        (size in bytes, mtime in ns, inode, device) of a local file; for a URL the sorted
        ``(name, value)`` pairs of its ETag, last modification and size; None when ``path`` is
        not a regular file that can be stat'ed or the URL cannot be looked up.
    """
    if "://" in path:  # object storage and HTTP(S): ETag, last modification and size (one HEAD request)
        from ..storage import remote_identity

        return remote_identity(path)
    if path.startswith("/vsi"):
        return None
    try:
        st = os.stat(path)
    except OSError:
        return None
    return _identity(st) if stat.S_ISREG(st.st_mode) else None


def lowest_priority() -> None:
    """Nice the calling thread to 19 (Linux: a thread id is a process id for setpriority)."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
    except (AttributeError, OSError):
        pass


def file_checksum(path: str) -> str:
    """SHA-256 of a file (hex): OpenSSL's is hardware-accelerated on current CPUs, about twice
    as fast as BLAKE2b here. Read with :func:`hashlib.file_digest` (no memory map)."""
    return _hashed(path)[1]


def _hashed(path: str) -> tuple[Identity | None, str]:
    """(identity of the file hashed, or None if it changed while it was read; SHA-256 hex)."""
    with open(path, "rb") as f:
        before = _identity(os.fstat(f.fileno()))
        digest = hashlib.file_digest(f, "sha256").hexdigest()
        after = _identity(os.fstat(f.fileno()))
    return (before if before == after else None), digest


def start(path: str) -> None:
    """Begin checksumming a local file in a background thread (daemon, lowest priority);
    :func:`checksum` of the same, unchanged file then waits for that result."""
    if "://" in path:
        return
    ident = identity(path)
    if ident is None:
        return
    real = os.path.realpath(path)
    fut: Future = Future()

    def work() -> None:
        lowest_priority()
        try:
            fut.set_result(_hashed(real))
        except BaseException as e:  # noqa: BLE001 - handed to whoever asks for the result
            fut.set_exception(e)

    with _lock:
        if real in _started:
            return
        _started[real] = (ident, fut)
    threading.Thread(target=work, name="sceneclass-checksum", daemon=True).start()


def checksum(path: str) -> str:
    """SHA-256 of a file: the one :func:`start` began if the file it hashed is the file now at
    ``path`` (same size, modification time, inode and device), else computed now."""
    ident = identity(path) if "://" not in path else None
    if ident is not None:
        with _lock:
            began = _started.pop(os.path.realpath(path), None)
        if began is not None:
            try:
                hashed, digest = began[1].result()
            except OSError:
                hashed = None
            if hashed is not None and hashed == ident:
                return digest
    return file_checksum(path)


def start_for_config(config_path: str, overrides: list[str] = ()) -> None:
    """Start the checksum of a config's single local ``input`` (``--set input=...`` counts) or
    of its ``bands`` files, before the config is validated; any problem is left for
    :func:`pipeline.config.load_config` to report. Relative paths resolve as the config
    resolves them."""
    from pathlib import Path

    import yaml  # loaded by the config anyway

    from ..errors import ConfigError
    from .config import load_yaml_text, read_yaml  # the config's own guarded loader (size, UTF-8, aliases)

    try:
        data = read_yaml(Path(config_path))
        paths = [data.get("input")]
        if isinstance(data.get("bands"), dict):  # every band file of a derived band
            paths += [b.get("path") for b in data["bands"].values() if isinstance(b, dict)]
        base = os.path.dirname(os.path.realpath(config_path))
        for text in overrides:
            key, sep, value = text.partition("=")
            if sep and key.strip() == "input":
                paths, base = [load_yaml_text(value)], os.getcwd()
    except (OSError, ValueError, yaml.YAMLError, ConfigError):
        return
    for path in dict.fromkeys(p for p in paths if isinstance(p, str)):
        if "://" not in path and not path.startswith("/vsi") and "{" not in path:
            start(os.path.join(base, os.path.expanduser(path)))
