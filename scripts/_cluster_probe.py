"""A dask preload for ``scripts/bench_cluster.py``: what a LocalCluster's scheduler and workers
saw during one ``sceneclass run``, written as JSON when they close.

Loaded by distributed itself (``distributed.scheduler.preload`` / ``distributed.worker.preload``,
set through ``DASK_DISTRIBUTED__...`` environment variables by the bench), so the measured run is
the unmodified ``sceneclass`` command. Files go to ``$SCENECLASS_PROBE_DIR``:

- ``scheduler-<pid>.json``: every task that finished (``processing -> memory`` or ``-> erred``
  transitions, which carry the worker's ``startstops``): its key name, worker, compute start and
  stop (worker clock, same machine) and result size (``nbytes``, dask's ``sizeof``); and the bytes
  of every graph the client submitted (the serialized ``update-graph`` frames).
- ``worker-<pid>.json``: the worker's outgoing transfers from its ``transfer_outgoing_log``
  (each ``get_data`` answer: ``who`` is the asking worker, or None when the scheduler gathers
  for the client), with the ``nbytes`` of the keys and the bytes written to the socket; its
  incoming peer transfers; the largest GDAL block-cache use seen, the largest resident memory
  and the largest managed memory (results the worker holds, which it may spill), sampled every
  0.2 s, and the largest resident memory beyond the managed memory at the same moment; its resident memory when the preload ran (an idle worker, before any task); with
  ``SCENECLASS_PROBE_TASK_MEMORY=1``, per task name the largest memory a task allocated while it
  ran beyond what was allocated when it started (``tracemalloc`` peak: numpy arrays, bytes and
  Python objects, including the task's result; GDAL's own C allocations are not traced, its
  block cache is the separate figure). Exact only with one thread per worker (the default
  LocalCluster of the bench).
"""

from __future__ import annotations

import ctypes
import inspect
import json
import os
import time

OUT = os.environ.get("SCENECLASS_PROBE_DIR", ".")


def _name(key) -> str:
    """The task's name without its token (dask's ``key_split``: ``_row``, ``encode_chunk``)."""
    from dask.utils import key_split

    return key_split(key)


def _dump(kind: str, data: dict) -> None:
    path = os.path.join(OUT, f"{kind}-{os.getpid()}.json")
    with open(path + ".part", "w") as f:
        json.dump(data, f)
    os.replace(path + ".part", path)


# ------------------------------------------------------------------------ scheduler
class _Tasks:
    name = "sceneclass-bench-tasks"

    def __init__(self):
        self.tasks: list[dict] = []
        self.graph_bytes = 0
        self.graphs = 0

    def transition(self, key, start, finish, *args, **kwargs):
        if start != "processing" or finish not in ("memory", "erred"):
            return
        spans = [s for s in kwargs.get("startstops") or () if s.get("action") == "compute"]
        if not spans:
            return
        self.tasks.append({"key": str(key), "name": _name(key), "worker": kwargs.get("worker"),
                           "start": min(s["start"] for s in spans), "stop": max(s["stop"] for s in spans),
                           "compute": sum(s["stop"] - s["start"] for s in spans),
                           "nbytes": kwargs.get("nbytes"), "state": finish})


_tasks: _Tasks | None = None


def _setup_scheduler(scheduler) -> None:
    global _tasks
    from distributed.diagnostics.plugin import SchedulerPlugin

    class Plugin(_Tasks, SchedulerPlugin):
        pass

    _tasks = Plugin()
    scheduler.add_plugin(_tasks)
    handler = scheduler.stream_handlers["update-graph"]

    async def update_graph(*args, **kwargs):  # distributed awaits coroutine functions only
        ser = kwargs.get("expr_ser")
        frames = getattr(ser, "frames", None) or ()
        _tasks.graph_bytes += sum(memoryview(f).nbytes for f in frames)
        _tasks.graphs += 1
        result = handler(*args, **kwargs)
        if inspect.isawaitable(result):
            result = await result
        return result

    scheduler.stream_handlers["update-graph"] = update_graph


# --------------------------------------------------------------------------- worker
def _gdal():
    import glob

    import rasterio

    libs = glob.glob(os.path.join(os.path.dirname(rasterio.__file__), os.pardir, "rasterio.libs", "libgdal*"))
    try:
        lib = ctypes.CDLL(libs[0]) if libs else ctypes.CDLL("libgdal.so")
    except (OSError, IndexError):
        return None
    lib.GDALGetCacheUsed64.restype = ctypes.c_int64
    return lib


_plugins: list = []
_gdal_peak = 0
_rss_peak = 0
_managed_peak = 0
_unmanaged_peak = 0
_idle_rss = 0
_task_peaks: dict[str, int] = {}


class _TaskMemory:
    """Per task name, the largest ``tracemalloc`` peak over what was traced when the task started."""

    name = "sceneclass-bench-task-memory"

    def __init__(self):
        self._start: dict = {}

    def transition(self, key, start, finish, **kwargs):
        import tracemalloc

        if finish == "executing":
            tracemalloc.reset_peak()
            self._start[key] = tracemalloc.get_traced_memory()[0]
        elif start == "executing" and key in self._start:
            peak = tracemalloc.get_traced_memory()[1] - self._start.pop(key)
            name = _name(key)
            _task_peaks[name] = max(_task_peaks.get(name, 0), peak)


def _setup_worker(worker) -> None:
    import psutil
    from tornado.ioloop import PeriodicCallback

    global _idle_rss
    lib = _gdal()
    ticks = [0]
    proc = psutil.Process()
    _idle_rss = proc.memory_info().rss
    if os.environ.get("SCENECLASS_PROBE_TASK_MEMORY"):
        import tracemalloc

        from distributed import WorkerPlugin

        class Plugin(_TaskMemory, WorkerPlugin):
            pass

        tracemalloc.start()
        worker.plugins[Plugin.name] = plugin = Plugin()  # no await in a preload: registered directly
        _plugins.append(plugin)

    def sample():  # also writes the report every second: a worker killed at the end leaves it too
        global _gdal_peak, _rss_peak, _managed_peak, _unmanaged_peak
        if lib is not None:
            _gdal_peak = max(_gdal_peak, lib.GDALGetCacheUsed64())
        rss, managed = proc.memory_info().rss, int(worker.state.nbytes)
        _rss_peak, _managed_peak = max(_rss_peak, rss), max(_managed_peak, managed)
        _unmanaged_peak = max(_unmanaged_peak, rss - managed)
        ticks[0] += 1
        if ticks[0] % 5 == 0:
            _dump("worker", _worker_report(worker))

    pc = PeriodicCallback(sample, 200)
    worker.periodic_callbacks["sceneclass-bench-probe"] = pc
    pc.start()
    _dump("worker", _worker_report(worker))


def _worker_report(worker) -> dict:
    out = {"to_client": {"transfers": 0, "nbytes": 0, "wire": 0},
           "to_workers": {"transfers": 0, "nbytes": 0, "wire": 0}}
    by_name: dict[str, dict[str, int]] = {"to_client": {}, "to_workers": {}}
    for entry in worker.transfer_outgoing_log:
        where = "to_client" if entry.get("who") is None else "to_workers"
        side = out[where]
        side["transfers"] += 1
        side["nbytes"] += int(entry.get("total") or 0)
        side["wire"] += int(entry.get("compressed") or 0)
        for k, n in (entry.get("keys") or {}).items():
            by_name[where][_name(k)] = by_name[where].get(_name(k), 0) + int(n or 0)
    return {"pid": os.getpid(), "address": worker.address, "name": str(worker.name), **out,
            "to_client_by_name": by_name["to_client"], "to_workers_by_name": by_name["to_workers"],
            "outgoing_total": int(worker.transfer_outgoing_bytes_total),
            "incoming_total": int(getattr(worker.state, "transfer_incoming_bytes_total", 0)),
            "log_entries": len(worker.transfer_outgoing_log),
            "log_maxlen": worker.transfer_outgoing_log.maxlen,
            "gdal_cache_peak": _gdal_peak, "rss_peak": _rss_peak, "managed_peak": _managed_peak,
            "unmanaged_peak": _unmanaged_peak,
            "idle_rss": _idle_rss, "task_peaks": dict(sorted(_task_peaks.items(), key=lambda kv: -kv[1]))}


# ---------------------------------------------------------------------- preload API
def dask_setup(server) -> None:
    from distributed import Scheduler, Worker

    if isinstance(server, Scheduler):
        _setup_scheduler(server)
    elif isinstance(server, Worker):
        _setup_worker(server)


def dask_teardown(server) -> None:
    from distributed import Scheduler, Worker

    if isinstance(server, Scheduler) and _tasks is not None:
        _dump("scheduler", {"pid": os.getpid(), "closed": time.time(), "tasks": _tasks.tasks,
                            "graph_bytes": _tasks.graph_bytes, "graphs": _tasks.graphs})
    elif isinstance(server, Worker):
        _dump("worker", _worker_report(server))
