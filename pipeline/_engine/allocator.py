"""Give large freed buffers back to the system at once (glibc's allocator).

glibc serves an allocation of at least ``M_MMAP_THRESHOLD`` bytes with its own memory map and
unmaps it when freed, but by default it raises that threshold to the size of every such buffer
freed (up to 32 MiB), so the next chunk-sized arrays (8-16 MiB decoded chunks) come from its
heaps instead, and their pages stay resident after they are freed: a 4x float32 run held about
85 MiB more after its statistics pass than before it, a different amount on every run.
Setting the threshold explicitly turns that adjustment off: every buffer of
:data:`LARGE` bytes or more is mapped and unmapped on its own, so resident memory follows the
chunks in flight, whatever the scene's size.

It also turns off the adjustment of the trim threshold (glibc raises it to twice the mmap
threshold along with it), which then stays at 128 KiB: every free that leaves that much at the
top of a heap gives the pages back, and the next allocation faults them in again. The per-call
buffers below :data:`LARGE` (zstd's workspace for each tile, the 1 MiB tables of each chunk's
uint16 histogram) did that thousands of times a run: 3.1 s of system time instead of 3.9 s at
16x, and 0.6 s of wall time (``MALLOC_TRIM_THRESHOLD_`` against the default, 2 runs each). The
trim threshold is therefore set to what glibc would have set: twice :data:`LARGE`. A heap keeps
at most that much free memory at its top, the same at any scene size.
"""

from __future__ import annotations

import ctypes
import sys

#: buffers of at least this many bytes get their own memory map (a 2048 x 2048 uint8 tile of
#: class ids is 4 MiB; smaller buffers are left to the heaps)
LARGE = 4 << 20
M_MMAP_THRESHOLD = -3  # glibc's mallopt parameters
M_TRIM_THRESHOLD = -1


def return_large_blocks(threshold: int = LARGE) -> bool:
    """Make glibc map every allocation of ``threshold`` bytes or more on its own (and unmap it
    when freed) for the rest of the process, and keep up to ``2 * threshold`` bytes free at the
    top of a heap (the trim threshold glibc itself pairs with that mmap threshold). Returns
    False where that does not apply (not glibc, not Linux); nothing changes then.

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
    if mallopt(M_MMAP_THRESHOLD, int(threshold)) != 1:
        return False
    return mallopt(M_TRIM_THRESHOLD, 2 * int(threshold)) == 1
