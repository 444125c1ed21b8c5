"""The dask scheduler a run uses: local threads/processes, a LocalCluster, or an existing cluster.

Both passes (statistics and write) run on the chosen scheduler. Workers read the input
themselves (shared path or URL) and write their own tiles/chunks; only the histogram and the
class counts travel back to the client.
"""

from __future__ import annotations

import logging
import os
from contextlib import contextmanager
from typing import Iterator

import dask
import rasterio

from .config import Dask
from ..errors import ConfigError
from ..scene import is_url

log = logging.getLogger(__name__.replace("pipeline", "sceneclass", 1))

LOCAL_SCHEDULERS = ("threads", "processes", "synchronous")


def _set_environ(env: dict) -> None:
    os.environ.update(env)


@contextmanager
def scheduler(cfg: Dask, gdal_env: dict | None = None) -> Iterator[object | None]:
    """Make ``cfg.scheduler`` the default for every ``dask.compute`` inside; yields the
    distributed Client, if any."""
    if cfg.scheduler in LOCAL_SCHEDULERS:
        # the scheduler function itself: a name makes dask import distributed to look for a
        # Client (about 0.25 s per run)
        from dask.base import named_schedulers

        opts = {"scheduler": named_schedulers[cfg.scheduler]}
        if cfg.workers:
            opts["num_workers"] = cfg.workers
        with dask.config.set(opts):
            yield None
        return
    from distributed import Client, LocalCluster

    if cfg.scheduler == "local":
        env = {k: str(v) for k, v in (gdal_env or {}).items()}
        with dask.config.set({"distributed.nanny.pre-spawn-environ": env}):
            cluster = LocalCluster(
                n_workers=cfg.workers or 2, threads_per_worker=cfg.threads_per_worker,
                memory_limit=cfg.memory_limit, processes=True, dashboard_address=cfg.dashboard_address,
            )
        with cluster, Client(cluster) as client:
            log.info("dask LocalCluster with %d workers; dashboard: %s", len(cluster.workers), client.dashboard_link)
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
        log.info("dask cluster %s with %d workers; dashboard: %s", cfg.scheduler, workers, client.dashboard_link)
        yield client


def gdal_env(cfg) -> dict:
    """GDAL settings for the run: a bounded block cache; for remote inputs, no directory
    listing on open (each listing is a request). Local inputs keep GDAL's default, so sidecar
    files (``.aux.xml`` nodata and scale/offset, ``.tfw`` world files, ``.msk`` masks) are
    found exactly as ``gdalinfo`` and QGIS find them."""
    env = {"GDAL_CACHEMAX": cfg.processing.gdal_cache_mb}
    if cfg.input is not None and is_url(cfg.input):
        env["GDAL_DISABLE_READDIR_ON_OPEN"] = "EMPTY_DIR"
    return env


@contextmanager
def runtime(cfg) -> Iterator[None]:
    """GDAL settings and the dask scheduler for the whole run."""
    env = gdal_env(cfg)
    with rasterio.Env(**env), environ(env), scheduler(cfg.dask, env):
        yield


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
