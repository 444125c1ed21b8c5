"""Give large freed buffers back to the system at once (glibc's allocator).

glibc serves an allocation of at least ``M_MMAP_THRESHOLD`` bytes with its own memory map and
unmaps it when freed, but by default it raises that threshold to the size of every such buffer
freed (up to 32 MiB), so the next chunk-sized arrays (8-16 MiB decoded chunks) come from its
heaps instead, and their pages stay resident after they are freed: a 4x float32 run held about
85 MiB more after its statistics pass than before it, a different amount on every run.
Setting the threshold explicitly turns that adjustment off: every buffer of
:data:`LARGE` bytes or more is mapped and unmapped on its own, so resident memory follows the
chunks in flight, whatever the scene's size.
"""

from __future__ import annotations

import ctypes
import sys

#: buffers of at least this many bytes get their own memory map (a 2048 x 2048 uint8 tile of
#: class ids is 4 MiB; smaller buffers are left to the heaps)
LARGE = 4 << 20
M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter


def return_large_blocks(threshold: int = LARGE) -> bool:
    """Make glibc map every allocation of ``threshold`` bytes or more on its own (and unmap it
    when freed) for the rest of the process. Returns False where that does not apply (not
    glibc, not Linux); nothing changes then.

    Parameters
    ----------
    threshold : int
        Bytes; glibc accepts up to 32 MiB on 64-bit systems.

    Returns
    -------
    bool
        True when glibc took the setting.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # musl and others: no mallopt
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return mallopt(M_MMAP_THRESHOLD, int(threshold)) == 1
