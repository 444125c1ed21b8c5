"""Worker memory on a distributed cluster: refuse a run the workers cannot hold, and stop a
run whose workers paused for good.

A dask worker pauses (runs no task) at a fraction of its ``memory_limit``
(``distributed.worker.memory.pause``, 0.8 by default). Memory a worker cannot spill (the
imported libraries, about 150 MiB; GDAL's block cache; the task running) never drops, so a
worker paused by it never resumes and the run would wait forever. Both checks here fail with
one line naming ``dask.memory_limit`` and the minimum the run needs.
"""

from __future__ import annotations

import logging
import math
import time

from ..errors import ConfigError

log = logging.getLogger(__name__.replace("pipeline", "sceneclass", 1))

MiB = 1 << 20
#: what a worker's first tasks add to its memory beyond the tiles (GDAL drivers, thread stacks,
#: allocator arenas): measured 17-30 MiB on Linux x86-64
RUNTIME_MARGIN = 32 * MiB
#: a worker paused this long while no task of the compute finished stops the run
PAUSE_TIMEOUT = 10.0


def task_need(chunk: int, itemsize: int, threads: int, gdal_cache_mb: int, input_bytes: int) -> int:
    """Bytes a worker needs beyond its idle memory to run the passes.

    Parameters
    ----------
    chunk : int
        Processing tile edge, in pixels (``processing.chunk``).
    itemsize : int
        Bytes per input pixel.
    threads : int
        Threads per worker (tasks running at once).
    gdal_cache_mb : int
        GDAL block cache, in MiB (``processing.gdal_cache_mb``), one per worker process.
    input_bytes : int
        Uncompressed size of the input band; the block cache holds no more than that.

    Returns
    -------
    int
        Bytes: per running task a decoded chunk, its scratch copy, its class ids and an RGBA
        look-up block, plus 1 MiB for histograms; plus the block cache and
        :data:`RUNTIME_MARGIN`.
    """
    pixels = chunk * chunk
    per_task = pixels * (2 * itemsize + 1 + 4) + MiB
    return threads * per_task + min(gdal_cache_mb * MiB, input_bytes) + RUNTIME_MARGIN


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


def check_workers(client, need_of) -> "PauseWatch":
    """Refuse the run (:class:`ConfigError`) when a worker would pause under it.

    Parameters
    ----------
    client : distributed.Client
        The run's client, its workers connected.
    need_of : callable
        ``need_of(threads) -> bytes`` beyond a worker's idle memory (see :func:`task_need`).

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
    return PauseWatch(client, minimum, min(pauses))


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
