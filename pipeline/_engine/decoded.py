"""Decode the input once: the statistics pass keeps every decoded chunk in a raw file, and the
write pass (and any extra statistics pass) reads it back instead of decoding the compressed
input again (or fetching it again over HTTP).

Where the file lives (``processing.keep_decoded_in``):

* **memory**: an anonymous memory file (Linux ``memfd_create``), written with ``pwrite``. Its
  pages are never written back to disk and are freed when the run closes it, or when the
  process exits however it ends (nothing is left in ``/dev/shm``). Other processes on this
  machine (dask's process pool, LocalCluster workers) open it as ``/proc/<pid>/fd/<fd>``.
  At 16x a whole run takes about 1 s less than with the file on disk
  (``python scripts/bench_decoded.py SCENE --runs``; figures in docs/performance.md):
  a file's page cache costs more kernel time per GiB than a memory
  file, and much more when memory has been idle (``python scripts/bench_memory.py``), and the
  disk file's blocks are reserved and written back although it is deleted seconds later.
  ``auto`` takes it when the scheduler runs on this machine and the chunks take at most
  :data:`MEMORY_SHARE` of the memory still available (the cgroup's limit counts, in containers).
* **disk**: a file beside the output, for scenes larger than that and for clusters whose
  workers may run elsewhere but see the output folder.

The raw file holds each chunk contiguously at a fixed, page-aligned offset, so tasks write and
read it without locks from any thread, process or cluster worker that sees the output folder
(no two chunks share a page), and a re-run task writes the same bytes. On disk, where the
file's blocks can be reserved up front (``fallocate``), the statistics pass copies each decoded
chunk into place through a memory map, else it writes it with ``pwrite``: the map costs less
kernel time on this project's machines (``python scripts/bench_decoded.py``), and reserving
first means a full disk is an error at the start, never a SIGBUS in the middle. Chunks of a
single value (the fill around a scene's footprint) are not written; the layout returned with
the statistics says which. For 8/16-bit data a section after the chunks holds each chunk's
exact histogram (uint32, one slot per chunk), written by the same store tasks and summed by
one task reading a few slots at a time: dask's tree reduction of one 512 KiB row per chunk
took more memory the more chunks a scene has. Neither place costs resident memory (RSS)
beyond the chunks in flight; the memory file holds up to the scene's decoded size in RAM
until the run ends, as the disk file's page cache does (but that can be evicted).
"""

from __future__ import annotations

import ctypes
import dataclasses
import logging
import mmap
import os
import shutil
import threading
from pathlib import Path

import dask
import dask.array as da
import numpy as np
import rasterio

from .. import scene as io
from .. import kernels
from .. import storage
from ..scene import Scene, file_backed, gdal_path, is_url
from .scratch import scratch
from ..stats import block_hist, hist_length

log = logging.getLogger(__name__.replace("pipeline", "sceneclass", 1))


Chunks = tuple[tuple[int, ...], tuple[int, ...]]


def chunk_sizes(chunks: Chunks, itemsize: int) -> np.ndarray:
    """Bytes of every chunk, shape (ny, nx)."""
    return np.outer(chunks[0], chunks[1]).astype(np.int64) * itemsize


def chunk_offsets(chunks: Chunks, itemsize: int, align: int = mmap.PAGESIZE) -> np.ndarray:
    """Byte offset of every chunk (C order of chunks, each chunk C-contiguous, starting on a
    multiple of ``align``), shape (ny, nx)."""
    sizes = -(-chunk_sizes(chunks, itemsize) // align) * align
    return np.concatenate([[0], np.cumsum(sizes.ravel())[:-1]]).reshape(sizes.shape)


def reserve(fd: int, nbytes: int) -> bool:
    """Allocate a file's blocks now (Linux ``fallocate(2)``, never emulated by writing zeros as
    ``posix_fallocate`` may be); False where the system or the file system cannot."""
    try:
        fallocate = ctypes.CDLL(None, use_errno=True).fallocate
    except (OSError, AttributeError, TypeError):  # no fallocate (macOS), no CDLL(None) (Windows)
        return False
    fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
    return nbytes == 0 or fallocate(fd, 0, 0, nbytes) == 0


#: bytes copied through the memory map before its pages are dropped from this process
#: (they stay in the page cache): a chunk in flight maps 1 MiB, not all of its 8 MiB.
MAP_PIECE = 1 << 20


def _copy_mapped(fd: int, offset: int, flat: np.ndarray) -> None:
    """Copy ``flat`` to ``offset`` of the file through a memory map, piece by piece, unmapping
    each piece's pages once written (they count as resident while mapped)."""
    with mmap.mmap(fd, flat.nbytes, offset=offset) as m:
        dst = np.frombuffer(m, dtype=flat.dtype)
        step = MAP_PIECE // flat.itemsize
        for a in range(0, flat.size, step):
            dst[a:a + step] = flat[a:a + step]
            start = a * flat.itemsize
            m.madvise(mmap.MADV_DONTNEED, start, min(MAP_PIECE, flat.nbytes - start))
        del dst


def store_chunk(block: np.ndarray, path: str, offsets: np.ndarray, mapped: bool, hist: tuple[int, int] | None = None,
                block_info=None) -> np.ndarray:
    """Block kernel: keep a decoded chunk at its offset of the raw file, through a memory map
    (``mapped``: the file's blocks are reserved) or ``pwrite``. A uniform chunk (all fill, say)
    is not written. With ``hist`` ((offset, bins) of the file's histogram section, 8/16-bit
    data), the chunk's exact histogram (:func:`pipeline.stats.block_hist`) is written too, as
    uint32 counts in the chunk's slot there (:func:`sum_histograms` adds them up): one task
    per decoded chunk, so no chunk waits in memory for a second consumer. Returns the chunk's
    layout entry, [1, 0] if stored, [0, value] if not, shape (1, 1, 2), float64 (any dtype's value)."""
    i, j = block_info[0]["chunk-location"]
    return _store(block, i, j, path, offsets, mapped, hist)


def decode_chunk(src: str, band: int, dtype: str, bounds: tuple[np.ndarray, np.ndarray], path: str,
                 offsets: np.ndarray, mapped: bool, hist: tuple[int, int] | None = None,
                 block_info=None, access=None) -> np.ndarray:
    """Block kernel over the layout (one (1, 1, 2) block per chunk): read the chunk of ``band``
    of ``src`` (``bounds``: the chunks' pixel edges along y and x) into this thread's scratch
    buffer and keep it as :func:`store_chunk` does. The input array's own read would allocate
    a chunk per task; the scratch buffer is reused (see :mod:`pipeline.scratch`)."""
    i, j, _ = block_info[None]["chunk-location"]
    ys, xs = bounds
    window = [(int(ys[i]), int(ys[i + 1])), (int(xs[j]), int(xs[j + 1]))]
    block = scratch("decoded", (window[0][1] - window[0][0], window[1][1] - window[1][0]), dtype)
    io.read_window(src, band, block_info={None: {"array-location": window}}, out=block, access=access)
    return _store(block, i, j, path, offsets, mapped, hist)


def _store(block: np.ndarray, i: int, j: int, path: str, offsets: np.ndarray, mapped: bool,
           hist: tuple[int, int] | None) -> np.ndarray:
    row = np.zeros((1, 1, 2), np.float64)
    fd = os.open(path, os.O_RDWR)
    try:
        if hist is not None:
            start, bins = hist
            counts = block_hist(block)[0, 0].astype(np.uint32)  # a chunk holds fewer than 2**32 pixels
            os.pwrite(fd, counts.data, start + (i * offsets.shape[1] + j) * bins * 4)
            del counts
        if kernels.uniform(block.view(f"u{block.itemsize}")):  # same bits (floats: -0.0 is not 0.0)
            row[0, 0, 1] = block.flat[0]
            return row
        offset = int(offsets[i, j])
        if mapped:
            _copy_mapped(fd, offset, np.ascontiguousarray(block).reshape(-1))
        else:
            os.pwrite(fd, np.ascontiguousarray(block).data, offset)
    finally:
        os.close(fd)
    row[0, 0, 0] = 1
    return row


#: histogram slots summed per read by :func:`sum_histograms` (16 x 256 KiB for uint16 data)
SUM_SLOTS = 16


def sum_histograms(path: str, start: int, bins: int, slots: int, layout: np.ndarray | None = None) -> np.ndarray:
    """Task: the scene's exact histogram, int64, from the per-chunk uint32 counts the store
    tasks wrote at ``start`` of the raw file, read :data:`SUM_SLOTS` slots at a time. (``layout``
    is only there to run this after every store task.)"""
    total = np.zeros(bins, np.int64)
    slot = bins * 4
    fd = os.open(path, os.O_RDONLY)
    try:
        for k in range(0, slots, SUM_SLOTS):
            n = min(SUM_SLOTS, slots - k)
            buf = _pread_exact(fd, n * slot, start + k * slot)
            total += np.frombuffer(buf, np.uint32).reshape(n, bins).sum(axis=0, dtype=np.int64)
    finally:
        os.close(fd)
    return total


def _pread_exact(fd: int, nbytes: int, offset: int) -> bytearray:
    buf = bytearray(nbytes)
    view = memoryview(buf)
    done = 0
    while done < nbytes:
        n = os.preadv(fd, [view[done:]], offset + done)
        if n == 0:
            raise OSError(f"short read of the decoded chunks' histograms at byte {offset + done}")
        done += n
    return buf


def read_raw(path: str, offsets: np.ndarray, layout: np.ndarray, dtype: str, block_info=None) -> np.ndarray:
    """Block kernel: a decoded chunk back from the raw file, as a read-only view of the file's
    pages (see :func:`map_chunk`); a uniform chunk (not stored) as a read-only view of its one
    value from the layout, so the fill around a footprint takes no memory (else each such chunk,
    8 MiB with the defaults and 60 of them at 16x, would be allocated, filled and dropped)."""
    info = block_info[None]
    i, j = info["chunk-location"]
    shape = info["chunk-shape"]
    stored, value = layout[i, j]
    if not stored:
        return np.broadcast_to(np.full((), value, dtype=dtype), tuple(shape))
    return map_chunk(path, int(offsets[i, j]), np.dtype(dtype), tuple(shape))


def map_chunk(path: str, offset: int, dtype: np.dtype, shape: tuple[int, int]) -> np.ndarray:
    """A read-only array over ``shape`` pixels at ``offset`` (page-aligned) of the raw file,
    mapped with its pages populated at once: no copy of the chunk, no fresh memory for it (the
    pages are the memory file's, or the disk file's page cache). The mapping lives as long as
    the array, and counts as resident memory only while it does (a chunk or two per thread)."""
    nbytes = dtype.itemsize * shape[0] * shape[1]
    fd = os.open(path, os.O_RDONLY)
    try:
        if hasattr(mmap, "MAP_POPULATE"):  # Linux
            m = mmap.mmap(fd, nbytes, flags=mmap.MAP_SHARED | mmap.MAP_POPULATE, prot=mmap.PROT_READ, offset=offset)
        else:
            m = mmap.mmap(fd, nbytes, access=mmap.ACCESS_READ, offset=offset)
    finally:
        os.close(fd)
    return np.frombuffer(m, dtype=dtype).reshape(shape)


#: the largest share of the available memory the decoded chunks may take in memory (``auto``)
MEMORY_SHARE = 0.25


def memory_available() -> int | None:
    """Bytes of memory this process can still fill: ``MemAvailable``, capped by the cgroup's
    limit when it is lower (containers, batch jobs); None where unknown (not Linux)."""
    try:
        with open("/proc/meminfo") as f:
            avail = next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:"))
    except (OSError, StopIteration, ValueError):
        return None
    try:  # cgroup v2: the limit of this process's group, if any
        group = Path("/proc/self/cgroup").read_text().split("::", 1)[1].strip()
        base = Path("/sys/fs/cgroup") / Path(group).relative_to("/")
        limit = (base / "memory.max").read_text().strip()
        if limit != "max":
            avail = min(avail, int(limit) - int((base / "memory.current").read_text()))
    except (OSError, IndexError, ValueError):
        pass
    return avail


def keep_place(scene: Scene, folder: Path, reuse: str, where: str, local: bool) -> str | None:
    """Where to keep the decoded chunks between the passes: "memory", "disk", or None (decode
    twice). ``reuse`` (``processing.reuse_decoded``) ``auto`` keeps them when decoding costs
    (compressed or remote input); ``where`` (``processing.keep_decoded_in``) ``auto`` chooses
    memory when the scheduler is ``local`` to this machine and they fit in
    :data:`MEMORY_SHARE` of the available memory, else disk when the output folder has room
    (twice their size free)."""
    if reuse == "never" or (reuse == "auto" and not decoding_costs(scene)):
        return None
    raw = scene.dtype.itemsize * scene.shape[0] * scene.shape[1]
    memfd = hasattr(os, "memfd_create")
    if where == "memory":
        if memfd:
            return "memory"
        log.warning("processing.keep_decoded_in: memory needs Linux (memfd_create); keeping them on disk")
    elif where == "auto" and memfd and local:
        avail = memory_available()
        if avail is not None and raw <= MEMORY_SHARE * avail:
            return "memory"
        log.info("decoded chunks (%d MiB) exceed %d%% of the available memory: keeping them on disk",
                 raw >> 20, MEMORY_SHARE * 100)
    if reuse == "auto":
        try:
            free = shutil.disk_usage(folder).free
        except OSError:
            return None
        if free < 2 * raw:
            log.info("not keeping decoded chunks: %d MiB free in %s", free >> 20, folder)
            return None
    return "disk"


def decoding_costs(scene: Scene) -> bool:
    """True for inputs worth decoding only once: compressed or remote (any of the files a
    scene reads: a derived band's band files, whose chunks are then also computed only once,
    or a mosaic's inputs)."""
    for path in scene.files:
        if is_url(path):
            return True
        with rasterio.open(gdal_path(path)) as src:
            if src.compression is not None:
                return True
    return False


@dataclasses.dataclass
class DecodedChunks:
    """The raw file of decoded chunks for one scene: at ``path`` on disk, or, with ``memory``,
    an anonymous memory file (``path`` is then only its name in logs until :meth:`create`)."""

    scene: Scene
    path: Path
    memory: bool = False

    def __post_init__(self):
        x = self.scene.array
        self.sizes = chunk_sizes(x.chunks, x.dtype.itemsize)
        self.offsets = chunk_offsets(x.chunks, x.dtype.itemsize)
        end = int(self.offsets[-1, -1] + self.sizes[-1, -1])
        # 8/16-bit data: a section after the chunks for their histograms (uint32, one slot each)
        self.hist_start = -(-end // mmap.PAGESIZE) * mmap.PAGESIZE
        self.hist_bins = hist_length(x.dtype)
        self.nbytes = self.hist_start + self.sizes.size * self.hist_bins * 4 if self.hist_bins else end
        self.mapped = False
        self.layout: np.ndarray | None = None  # per chunk [stored, value], set by the statistics pass
        self._fd: int | None = None  # the memory file, open until removed
        self._remover: threading.Thread | None = None

    def create(self) -> None:
        """Create the file at full size: a sparse memory file (its pages come with the writes),
        or on disk with its blocks reserved where the file system can."""
        if self.memory:
            self._fd = os.memfd_create(f"sceneclass-decoded-{self.path.name}")
            os.ftruncate(self._fd, self.nbytes)
            self.path = Path(f"/proc/{os.getpid()}/fd/{self._fd}")  # opened by tasks in any local process
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # a new file only: nothing planted at the name (a symlink least of all) is written through
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            os.ftruncate(fd, self.nbytes)
            self.mapped = reserve(fd, self.nbytes)
        finally:
            os.close(fd)
        if not self.mapped:
            log.debug("%s: blocks not reserved; decoded chunks are written with pwrite", self.path)

    def store(self, hist: bool = False) -> da.Array:
        """Create the file; lazy: store every decoded chunk (compute it with the statistics pass,
        which decodes them) and, with ``hist`` (8/16-bit data), its histogram. The result is the
        layout :meth:`reader` needs, shape (ny, nx, 2) (see :func:`store_chunk`). With ``hist``,
        the chunks of a scene read from a file are read by the store tasks themselves
        (:func:`decode_chunk`): nothing else in the pass may read the scene's array then."""
        if hist and not self.hist_bins:
            raise ValueError(f"{self.scene.dtype} data has no exact histogram")
        self.create()
        x = self.scene.array
        section = (self.hist_start, self.hist_bins) if hist else None
        args = (str(self.path), dask.delayed(self.offsets, pure=True), self.mapped, section)
        meta = np.empty((0, 0, 0), np.float64)
        if not (hist and file_backed(self.scene)):  # store the chunks the scene's array computes
            return x.map_blocks(store_chunk, *args, new_axis=2, chunks=(1, 1, 2), dtype=np.float64, meta=meta)
        # with ``hist`` the store tasks are the pass's only readers (its statistics all come from
        # the histogram), so they read the file themselves, into a reused buffer
        bounds = tuple(np.cumsum((0,) + c) for c in x.chunks)
        return da.map_blocks(
            decode_chunk, gdal_path(self.scene.path), self.scene.band, x.dtype.str, bounds, *args,
            access=storage.access_for(self.scene.path),
            chunks=tuple((1,) * len(c) for c in x.chunks) + ((2,),), dtype=np.float64, meta=meta,
            name=f"decode-store-{dask.base.tokenize(x.name, str(self.path), section)}",
        )

    def histogram(self, layout: da.Array) -> da.Array:
        """Lazy: the scene's exact histogram (int64, by key), summed from the slots the store
        tasks of ``layout`` (:meth:`store` with ``hist``) wrote: one task reading them in a few
        4 MiB pieces, so the memory the sum takes does not grow with the number of chunks (as
        it does with a tree reduction of one whole-histogram row per chunk)."""
        return da.blockwise(  # one task over the whole layout (an array op, so the store tasks are shared)
            sum_histograms, "k", str(self.path), None, self.hist_start, None, self.hist_bins, None,
            self.sizes.size, None, layout, "ijl", concatenate=True, new_axes={"k": self.hist_bins},
            dtype=np.int64, meta=np.empty((0,), np.int64),
        )

    def kept_bytes(self) -> int:
        """Bytes of decoded chunks actually stored (uniform chunks are not), once :attr:`layout` is set."""
        return int(self.sizes[self.layout[..., 0] != 0].sum())

    def reader(self) -> Scene:
        """The same scene, read from the raw file (once :attr:`layout` holds the computed :meth:`store`)."""
        if self.layout is None:
            raise RuntimeError(f"{self.path}: the decoded chunks are not stored yet")
        x = self.scene.array
        arr = da.map_blocks(
            read_raw, str(self.path), dask.delayed(self.offsets, pure=True), dask.delayed(self.layout, pure=True),
            x.dtype.str, chunks=x.chunks, dtype=x.dtype, meta=np.empty((0, 0), x.dtype),
            name=f"decoded-{dask.base.tokenize(str(self.path), x.name, self.layout)}",
        )
        return dataclasses.replace(self.scene, array=arr)

    def start_removal(self) -> None:
        """Remove the file in a background thread (freeing 2 GB of memory takes a core
        about 0.35 s): for when the last pass has read it but the run goes on (COG assembly)."""
        if self._remover is None:
            self._remover = threading.Thread(target=self._unlink, name="sceneclass-remove-decoded")
            self._remover.start()

    def remove(self) -> None:
        """Remove the file (waiting for a removal already started)."""
        if self._remover is not None:
            self._remover.join()
        self._unlink()

    def _unlink(self) -> None:
        if self.memory:  # closing the last descriptor frees the pages
            fd, self._fd = self._fd, None
            if fd is not None:
                os.close(fd)
            return
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass
