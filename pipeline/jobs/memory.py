"""Worker memory on a distributed cluster: refuse a run the workers cannot hold, and stop a
run whose workers paused for good.

A dask worker pauses (runs no task) at a fraction of its ``memory_limit``
(``distributed.worker.memory.pause``, 0.8 by default). Memory a worker cannot spill (the
imported libraries, about 160 MiB; its threads' decode buffers; GDAL's block cache; the tasks
running) never drops, so a worker paused by it never resumes and the run would wait forever.
Results the worker holds between tasks are spilled to disk from 70% on
(``distributed.worker.memory.spill``) and are not counted. Both checks here fail with
one line naming ``dask.memory_limit`` and the minimum the run needs.
"""

from __future__ import annotations

import logging
import math
import time

from ..errors import ConfigError

log = logging.getLogger(__name__.replace("pipeline", "sceneclass", 1))

MiB = 1 << 20
#: what a worker's first tasks add beyond its idle memory and the parts below (GDAL drivers and
#: imagecodecs loaded, thread stacks, allocator arenas); measured 16 MiB at 4x with the defaults
#: (docs/cluster.md, "Worker memory, by part")
RUNTIME_MARGIN = 24 * MiB
#: what a task holds besides pixels: a 16-bit histogram (65,536 int64 bins), lists of tiles
TASK_OVERHEAD = MiB
#: chunks of output pixels a task holds when it joins 2 x 2 chunks of a level into the piece a
#: MODE overview chunk reads: its 4 inputs and what it allocates (measured 7.5 chunks: 30.3 MiB at
#: chunk 2048, the piece and dask's intermediate concatenations)
MODE_JOIN = 12
#: a worker paused this long (seconds) while no task of the compute finished stops the run
#: (the default of ``dask.pause_timeout``)
PAUSE_TIMEOUT = 10.0


def classify_bytes(kind: str, itemsize: int) -> int:
    """Bytes per pixel a task's classification adds to its input and output.

    8/16-bit integers are looked up in a table (nothing more); other integers go through
    ``numpy.searchsorted`` on the whole chunk (int64 indices and a boolean mask); floats are
    classified in pieces of a fixed size (:data:`pipeline.kernels.CLASSIFY_PIECE`): nothing
    per pixel of the chunk.

    Parameters
    ----------
    kind : str
        numpy dtype kind of the input (``"u"``, ``"i"``, ``"f"``).
    itemsize : int
        Bytes per input pixel.

    Returns
    -------
    int
        Bytes per pixel.
    """
    if kind in "ui" and itemsize > 2:
        return 8 + 1
    return 0


def window_bytes(shape: tuple[int, int], block: tuple[int, int], chunk: int, itemsize: int) -> int:
    """Bytes of the input blocks one chunk's read decodes (GDAL's block cache holds them until
    the task closes the file), for the chunk that touches the most blocks.

    Parameters
    ----------
    shape : (int, int)
        Input height and width, pixels.
    block : (int, int)
        The input's block (tile or strip) height and width, pixels.
    chunk : int
        Processing tile edge, pixels.
    itemsize : int
        Bytes per pixel.

    Returns
    -------
    int
        Bytes.
    """
    spans = []
    for n, b in zip(shape, block):  # GDAL caches edge blocks whole
        b = max(1, b)
        spans.append(max(-(-min(n, s + chunk) // b) * b - s // b * b for s in range(0, n, max(1, chunk))))
    return spans[0] * spans[1] * itemsize


def need_parts(chunk: int, itemsize: int, threads: int, gdal_cache_mb: int, window: int,
               bands: int = 1, per_pixel: int = 0, mode: bool = False) -> dict[str, int]:
    """What a worker needs beyond its idle memory to run the passes, by part.

    Parameters
    ----------
    chunk : int
        Processing tile edge, in pixels (``processing.chunk``).
    itemsize : int
        Bytes per input pixel.
    threads : int
        Threads per worker (tasks running at once).
    gdal_cache_mb : int
        GDAL block cache limit, MiB (``processing.gdal_cache_mb``).
    window : int
        Bytes of input blocks one chunk's read decodes (:func:`window_bytes`).
    bands : int
        Bytes per output pixel (1: class ids; 3, 4: RGB, RGBA colours).
    per_pixel : int
        Bytes per pixel the classification adds (:func:`classify_bytes`).
    mode : bool
        MODE overviews (``output.overview_resampling: mode``): a task joins the 2 x 2 chunks of
        the level before that an overview chunk's windows cover into one piece
        (:data:`MODE_JOIN`).

    Returns
    -------
    dict of str to int
        Bytes of each part: ``decode buffer`` (each thread keeps a decoded chunk's buffer),
        ``tasks`` (per running task its input chunk, its classification temporaries, its output
        and :data:`TASK_OVERHEAD`; with ``mode``, at least the joining of an overview piece),
        ``GDAL block cache`` (per running task the blocks of its window; each task closes its
        file, which empties them; at most the cache limit) and
        ``runtime`` (:data:`RUNTIME_MARGIN`). Results a worker holds between tasks are not
        counted: dask spills them to disk before the worker pauses.
    """
    pixels = chunk * chunk
    task = pixels * max(itemsize + per_pixel + bands, MODE_JOIN * bands if mode else 0)
    return {"decode buffer": threads * pixels * itemsize,
            "tasks": threads * (task + TASK_OVERHEAD),
            "GDAL block cache": min(gdal_cache_mb * MiB, threads * window),
            "runtime": RUNTIME_MARGIN}


def task_need(*args, **kwargs) -> int:
    """Bytes a worker needs beyond its idle memory: the sum of :func:`need_parts` (same
    parameters)."""
    return sum(need_parts(*args, **kwargs).values())


def _worker_memory(dask_worker) -> dict:
    """On a worker: its limit, pause fraction, threads and resident memory once the
    libraries the tasks use are imported."""
    import psutil
    import rasterio  # noqa: F401  (imported by the first task anyway: counted now)

    from .. import core  # noqa: F401

    mm = dask_worker.memory_manager
    pause = mm.memory_pause_fraction or mm.memory_terminate_fraction or mm.memory_target_fraction
    return {"limit": mm.memory_limit or 0, "pause": float(pause or 0), "nthreads": dask_worker.state.nthreads,
            "memory": psutil.Process().memory_info().rss}


def minimum_limit(memory: int, need: int, pause: float) -> int:
    """The smallest ``memory_limit`` (MiB, rounded up to 10) at which a worker using
    ``memory`` bytes idle and ``need`` more stays below its pause fraction ``pause``."""
    return int(math.ceil((memory + need) / pause / MiB / 10) * 10)


def _message(minimum: int, what: str) -> str:
    return (f"dask.memory_limit: {what}; this run needs at least {minimum} MiB per worker "
            f"(or a smaller processing.chunk / processing.gdal_cache_mb)")


def check_workers(client, need_of, pause_timeout: float = PAUSE_TIMEOUT) -> "PauseWatch":
    """Refuse the run (:class:`ConfigError`) when a worker would pause under it.

    Parameters
    ----------
    client : distributed.Client
        The run's client, its workers connected.
    need_of : callable
        ``need_of(threads) -> bytes`` beyond a worker's idle memory (see :func:`task_need`).
    pause_timeout : float
        Seconds a worker may stay paused while no task finishes before the watchdog stops
        the compute (``dask.pause_timeout``).

    Returns
    -------
    PauseWatch
        The watchdog for the computes of the run, with the minimum found here.

    Raises
    ------
    ConfigError
        A worker whose memory now plus the run's need exceeds its pause threshold.
    """
    workers = client.run(_worker_memory)
    minimum, pauses = 0, [0.8]
    for addr, w in workers.items():
        if not w["limit"] or not w["pause"]:
            continue
        need = need_of(w["nthreads"])
        pauses.append(w["pause"])
        low = minimum_limit(w["memory"], need, w["pause"])
        minimum = max(minimum, low)
        log.debug("worker %s: %d MiB used of a %d MiB limit (pauses at %d%%), the run needs %d MiB more",
                  addr, w["memory"] // MiB, w["limit"] // MiB, round(w["pause"] * 100), need // MiB)
        if w["memory"] + need > w["pause"] * w["limit"]:
            raise ConfigError(_message(low, f"a worker limited to {w['limit'] // MiB} MiB would pause "
                                            f"(it uses {w['memory'] // MiB} MiB idle)"))
    return PauseWatch(client, minimum, min(pauses), pause_timeout)


class PauseWatch:
    """Stops a compute (:class:`ConfigError`) when a worker stays paused while no task
    finishes for ``timeout`` seconds: it would never resume.

    Called by :func:`pipeline.jobs.progress.distributed_get` with the compute's count of
    finished tasks."""

    def __init__(self, client, minimum: int, pause: float = 0.8, timeout: float = PAUSE_TIMEOUT):
        self.client, self.minimum, self.pause, self.timeout = client, minimum, pause, timeout
        self._since: float | None = None
        self._done = -1

    def __call__(self, done: int) -> None:
        workers = self.client.scheduler_info(n_workers=-1).get("workers", {}).values()
        paused = [w for w in workers if w.get("status") == "paused"]
        now = time.monotonic()
        if not paused or done != self._done:
            self._since, self._done = (now if paused else None), done
            return
        if self._since is None:
            self._since = now
        elif now - self._since > self.timeout:
            w = max(paused, key=lambda w: w.get("metrics", {}).get("memory", 0))
            used, limit = w.get("metrics", {}).get("memory", 0), w.get("memory_limit", 0)
            # it paused at this limit: more than the limit, and more than the estimate
            minimum = max(self.minimum, minimum_limit(used, 0, self.pause) + 10,
                          int(math.ceil(limit * 1.25 / MiB / 10) * 10))
            raise ConfigError(_message(minimum, f"a worker paused at {used // MiB} MiB of its "
                                                f"{limit // MiB} MiB limit and cannot go on"))
