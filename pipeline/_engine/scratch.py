"""Per-thread scratch buffers, for block kernels whose result never leaves the task.

A chunk decoded only to be stored (the statistics pass) or looked up only to be written (the
write pass) needs a chunk-sized buffer for a moment. A fresh one per chunk makes glibc's
malloc keep a varying amount of freed memory in each thread's arenas, so whole runs would peak
higher and more variably on larger scenes (docs/performance.md). A buffer reused by the same
thread costs the same memory at any scene size.

A buffer is the calling thread's: valid until that thread asks for the same ``name`` again,
so a task must not return it (or a view of it) to dask.
"""

from __future__ import annotations

import threading

import numpy as np

_local = threading.local()


def scratch(name: str, shape: tuple[int, ...], dtype) -> np.ndarray:
    """An uninitialised C-contiguous array of ``shape`` and ``dtype`` over this thread's
    buffer ``name`` (grown when too small, else reused)."""
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    buffers = _local.__dict__.setdefault("buffers", {})
    buf = buffers.get(name)
    if buf is None or buf.nbytes < nbytes:
        buf = buffers[name] = np.empty(max(nbytes, 1), np.uint8)
    return buf[:nbytes].view(dtype).reshape(shape)
