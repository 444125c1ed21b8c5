"""The dask scheduler a run uses: local threads/processes, a LocalCluster, or an existing cluster.

Both passes (statistics and write) run on the chosen scheduler. Workers read the input
themselves (shared path or URL); for a COG they send back compressed tiles that the client
writes into the file, for a Zarr they write their own chunks. Otherwise only the histogram and
the class counts travel back to the client. Before any pixel is read, the run checks that the
workers see its local paths (:mod:`pipeline.jobs.probe`).
"""

from __future__ import annotations

import logging
import os
import threading
from concurrent.futures import wait
from contextlib import contextmanager
from typing import Iterator

import dask
import numpy as np
import rasterio
from dask.system import CPU_COUNT
try:
    from dask.threaded import ContextAwareThreadPoolExecutor
except ImportError:  # older dask: the tasks need no contextvars here
    from concurrent.futures import ThreadPoolExecutor as ContextAwareThreadPoolExecutor
from dask.threaded import get as threaded_get

from .config import Dask
from .memory import check_workers, classify_bytes, task_need, window_bytes
from .progress import distributed_get
from ..errors import ConfigError
from ..scene import is_url

log = logging.getLogger(__name__.replace("pipeline", "sceneclass", 1))

LOCAL_SCHEDULERS = ("threads", "processes", "synchronous")


class SettlingPool(ContextAwareThreadPoolExecutor):
    """dask's thread pool that can wait for the tasks it is running: when a computation stops
    early (a failed task, an interrupt), tasks already running would go on writing into
    temporaries that are being removed (a Zarr chunk write re-creates its folder)."""

    def __init__(self, workers: int) -> None:
        super().__init__(workers, thread_name_prefix="sceneclass-dask")
        self._futures: set = set()
        self._guard = threading.Lock()

    def submit(self, fn, /, *args, **kwargs):
        fut = super().submit(fn, *args, **kwargs)
        with self._guard:
            self._futures.add(fut)
        fut.add_done_callback(self._done)
        return fut

    def _done(self, fut) -> None:
        with self._guard:
            self._futures.discard(fut)

    def settle(self) -> None:
        """Cancel the tasks not started yet and wait for the running ones."""
        with self._guard:
            futures = list(self._futures)
        for f in futures:
            f.cancel()
        wait(futures)


def _settling_get(pool: SettlingPool):
    """dask's threaded scheduler on ``pool``; when the computation raises (a task failed, or
    SIGINT/SIGTERM arrived), it returns only once no task of it is running any more."""

    def get(dsk, keys, **kwargs):
        kwargs.pop("num_workers", None)
        kwargs.pop("pool", None)
        try:
            return threaded_get(dsk, keys, pool=pool, **kwargs)
        except BaseException:
            from .interrupt import deferred

            with deferred():
                pool.settle()
            raise

    return get


def _set_environ(env: dict) -> None:
    os.environ.update(env)


@contextmanager
def scheduler(cfg: Dask, gdal_env: dict | None = None, need_of=None) -> Iterator[object | None]:
    """Make ``cfg.scheduler`` the default for every ``dask.compute`` inside; yields the
    distributed Client, if any.

    On a distributed scheduler every compute shows the progress bars and stops when a worker
    stays paused (:func:`pipeline.jobs.progress.distributed_get`); with ``need_of``
    (``need_of(threads) -> bytes``, see :func:`pipeline.jobs.memory.task_need`) workers whose
    memory limit cannot hold the run refuse it first (:class:`ConfigError`)."""
    if cfg.scheduler in LOCAL_SCHEDULERS:
        # the scheduler function itself: a name makes dask import distributed to look for a
        # Client (about 0.25 s per run)
        from dask.base import named_schedulers

        if cfg.scheduler == "threads":
            pool = SettlingPool(cfg.workers or CPU_COUNT)
            try:
                with dask.config.set(scheduler=_settling_get(pool)):
                    yield None
            finally:
                pool.shutdown(wait=True, cancel_futures=True)
            return
        opts = {"scheduler": named_schedulers[cfg.scheduler]}
        if cfg.workers:
            opts["num_workers"] = cfg.workers
        with dask.config.set(opts):
            yield None
        return
    from .._engine.deferred import allow

    allow("jinja2")  # the dashboard (bokeh) renders with it; the CLI hid it while dask loaded
    from distributed import Client, LocalCluster

    if cfg.scheduler == "local":
        # added to dask's own (MALLOC_TRIM_THRESHOLD_, which lets a worker's freed chunks go back to
        # the system, and one thread for the numeric libraries), not instead of them
        env = {**dask.config.get("distributed.nanny.pre-spawn-environ", {}),
               **{k: str(v) for k, v in (gdal_env or {}).items()}}
        with dask.config.set({"distributed.nanny.pre-spawn-environ": env}):
            cluster = LocalCluster(
                n_workers=cfg.workers or 2, threads_per_worker=cfg.threads_per_worker,
                memory_limit=cfg.memory_limit, processes=True, dashboard_address=cfg.dashboard_address,
                # the worker processes share our stderr: their shutdown races (a heartbeat to a
                # scheduler already closed) print tracebacks; task errors reach us as exceptions
                silence_logs=logging.WARNING if log.isEnabledFor(logging.DEBUG) else logging.CRITICAL,
            )
        with cluster, Client(cluster) as client:
            log.info("dask LocalCluster with %d workers; dashboard: %s", len(cluster.workers), dashboard(client))
            with _distributed(client, need_of, cfg.pause_timeout):
                yield client
        return
    try:
        client = Client(cfg.scheduler, timeout=cfg.connect_timeout)
    except (OSError, TimeoutError) as e:
        raise ConfigError(f"dask.scheduler: cannot connect to {cfg.scheduler} ({e})") from None
    with client:
        if gdal_env:  # the run's GDAL settings on every worker (read by GDAL at first use)
            client.run(_set_environ, {k: str(v) for k, v in gdal_env.items()})
        workers = len(client.scheduler_info().get("workers", {}))
        log.info("dask cluster %s with %d workers; dashboard: %s", cfg.scheduler, workers, dashboard(client))
        with _distributed(client, need_of, cfg.pause_timeout):
            yield client


@contextmanager
def _distributed(client, need_of, pause_timeout: float) -> Iterator[None]:
    """Every compute inside through :func:`distributed_get` on ``client``, after the memory check
    (a worker paused for ``pause_timeout`` seconds while no task finishes stops the compute)."""
    watch = check_workers(client, need_of, pause_timeout) if need_of is not None else None
    with dask.config.set(scheduler=distributed_get(client, watch)):
        yield


def _has_bokeh() -> bool:
    import importlib.util

    return importlib.util.find_spec("bokeh") is not None


def dashboard(client) -> str:
    """The dashboard link, or what to install when the scheduler has no bokeh (its page would
    only say that dask needs bokeh)."""
    try:
        ok = client.run_on_scheduler(_has_bokeh)
    except Exception:  # a scheduler that refuses to run functions: assume it serves the page
        ok = True
    if not ok:
        return 'not available (the scheduler needs bokeh: pip install "sceneclass[cluster]")'
    return client.dashboard_link


def gdal_env(cfg) -> dict:
    """GDAL settings for the run: a bounded block cache; for remote inputs, no directory
    listing on open (each listing is a request). Local inputs keep GDAL's default, so sidecar
    files (``.aux.xml`` nodata and scale/offset, ``.tfw`` world files, ``.msk`` masks) are
    found exactly as ``gdalinfo`` and QGIS find them."""
    env = {"GDAL_CACHEMAX": cfg.processing.gdal_cache_mb}
    if any(is_url(p) for p in cfg.sources):
        env["GDAL_DISABLE_READDIR_ON_OPEN"] = "EMPTY_DIR"
    return env


@contextmanager
def runtime(cfg) -> Iterator[None]:
    """GDAL settings and the dask scheduler for the whole run."""
    from ..storage import access_for, gdal_env as storage_env

    env = gdal_env(cfg)
    access = access_for(cfg.input) if cfg.input is not None else None  # this thread's reads (the tasks carry it)
    with rasterio.Env(**env), environ(env), storage_env(access), scheduler(cfg.dask, env, _need_of(cfg)):
        yield


def _need_of(cfg):
    """``threads -> bytes`` a worker needs for ``cfg``'s passes (:func:`task_need`), from the
    input's header: pixel type, size and block shape (for ``bands``: 8 bytes per pixel of each
    band, every band's blocks read); the largest pixel type, and a chunk's own size as the
    blocks read, when the header cannot be read (the run then fails on it with its own
    message). The header is read when the function is first called (only distributed
    schedulers check their workers)."""
    known: list[tuple] = []

    def need(threads: int) -> int:
        if not known:
            known.append(_task_shape(cfg))
        itemsize, per_pixel, window = known[0]
        chunk, cache = cfg.processing.chunk, cfg.processing.gdal_cache_mb
        out = {"rgb": 3, "rgba": 4}.get(getattr(cfg.output, "mode", "paletted"), 1)
        mode = getattr(cfg.output, "overview_resampling", "nearest") == "mode"
        return task_need(chunk, itemsize, threads, cache, window, out, per_pixel, mode)

    return need


def _task_shape(cfg) -> tuple[int, int, int]:
    """(bytes per pixel of a task's values, classification bytes per pixel, bytes of the input
    blocks a chunk's read decodes) of ``cfg``'s input."""
    chunk = cfg.processing.chunk
    itemsize, per_pixel, window = 8, classify_bytes("u", 8), chunk * chunk * 8
    bands = getattr(cfg, "bands", None)
    paths = [b.path for b in bands.values()] if bands is not None else [cfg.input] if cfg.input is not None else []
    try:
        from ..storage import gdal_path

        windows = []
        for i, path in enumerate(paths):
            with rasterio.open(gdal_path(path)) as src:
                index = ((bands[list(bands)[i]].band if bands is not None else cfg.band) or 1) - 1
                dtype = np.dtype(src.dtypes[index])
                windows.append(window_bytes(src.shape, src.block_shapes[index], chunk, dtype.itemsize))
        if paths:
            window = sum(windows)
            if bands is None:
                itemsize, per_pixel = dtype.itemsize, classify_bytes(dtype.kind, dtype.itemsize)
            else:  # a derived band: per task every band's chunk and its float values, classified in pieces
                itemsize, per_pixel = 8 * len(bands), 0
    except Exception:
        pass
    return itemsize, per_pixel, window


@contextmanager
def environ(env: dict) -> Iterator[None]:
    """Set environment variables for the run (inherited by process pools and LocalCluster workers)."""
    old = {k: os.environ.get(k) for k in env}
    os.environ.update({k: str(v) for k, v in env.items()})
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
