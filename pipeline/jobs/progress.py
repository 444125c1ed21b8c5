"""Progress and accounting hooks for dask computes, on every scheduler.

The library names the pass it is running (:func:`phase`); the CLI shows a progress bar per
compute labelled with that name; tests count computes and task executions. Local schedulers
report through dask's callbacks; a distributed Client runs each compute through
:func:`distributed_get`, which follows the tasks on the scheduler (distributed's progress
plugin) to draw the same bar and to let a watchdog stop a compute that cannot finish.
"""

from __future__ import annotations

import contextvars
import sys
from collections import Counter
from contextlib import contextmanager
from typing import Callable, Iterator

import dask
from dask.callbacks import Callback

_phase: contextvars.ContextVar[str] = contextvars.ContextVar("sceneclass_phase", default="compute")
_bar_files: list = []  # streams of the active progress_bars() (the distributed computes draw there too)


@contextmanager
def phase(name: str) -> Iterator[None]:
    token = _phase.set(name)
    try:
        yield
    finally:
        _phase.reset(token)


def current_phase() -> str:
    return _phase.get()


class ComputeCounter(Callback):
    """Counts ``dask.compute`` calls and executed tasks by key name prefix."""

    def __init__(self):
        super().__init__()
        self.computes = 0
        self.phases: list[str] = []
        self.tasks: Counter[str] = Counter()

    def _start(self, dsk):
        self.computes += 1
        self.phases.append(current_phase())

    def _posttask(self, key, result, dsk, state, worker_id):
        name = key[0] if isinstance(key, tuple) else key
        self.tasks[str(name).rsplit("-", 1)[0]] += 1


def progress_bars(file=None) -> Callback:
    """Progress bars on ``file`` (default stderr), one per compute, labelled with the current
    phase (``statistics``, ``classify+write``): tqdm's dask callback for the local schedulers,
    and the same bars for computes on a distributed Client (:func:`distributed_get`)."""
    from tqdm import tqdm
    from tqdm.dask import TqdmCallback

    stream = file or sys.stderr

    class PhaseBars(TqdmCallback):
        def _start_state(self, dsk, state):
            super()._start_state(dsk, state)
            self.pbar.set_description(current_phase(), refresh=False)

        def __enter__(self):
            _bar_files.append(stream)
            return super().__enter__()

        def __exit__(self, *args):
            _bar_files.remove(stream)
            return super().__exit__(*args)

    return PhaseBars(tqdm_class=tqdm, file=stream, unit="task", leave=True)


def distributed_get(client, watch: Callable[[int], None] | None = None, interval: float = 0.5):
    """A dask scheduler function (for ``dask.config.set(scheduler=...)``) that runs each
    compute on ``client``, follows its tasks on the scheduler and draws a progress bar while
    :func:`progress_bars` is active.

    Parameters
    ----------
    client : distributed.Client
        The run's client.
    watch : callable, optional
        Called every ``interval`` seconds while the compute runs, with the number of its tasks
        finished so far; it may raise to stop the compute (its futures are cancelled).
    interval : float
        Seconds between the calls of ``watch``.

    Returns
    -------
    callable
        ``get(dsk, keys, **kwargs)``, as ``Client.get``.
    """
    from distributed import futures_of, wait

    def follow(futures) -> None:
        flat = futures_of(futures)
        tracker = _Tracker(client, flat, current_phase(), _bar_files[-1] if _bar_files else None)
        try:
            while True:
                try:
                    wait(flat, timeout=interval)
                    break
                except TimeoutError:
                    if watch is not None:
                        watch(tracker.done)
            tracker.finish()
        except BaseException:
            client.cancel(flat)
            raise
        finally:
            tracker.close()

    def get(dsk, keys, **kwargs):
        futures = client.get(dsk, keys, sync=False, **kwargs)
        follow(futures)
        return client.gather(futures)

    get.follow = follow  # for results that stay on the workers (see follow_futures)
    return get


def follow_futures(futures) -> None:
    """Wait for ``futures`` (already submitted to the distributed client) as a compute would:
    with the progress bar and the worker watch of the active :func:`distributed_get`, if any;
    the results stay on the workers.

    Raises
    ------
    Exception
        What a task raised, or the watch (its futures are then cancelled).
    """
    follow = getattr(dask.config.get("scheduler", None), "follow", None)
    if follow is not None:
        follow(futures)
        return
    from distributed import wait

    wait(futures)


class _Tracker:
    """Counts the finished tasks of one compute on a distributed scheduler (distributed's
    ``Progress`` plugin, fed to the client's event loop) and draws them as a tqdm bar."""

    def __init__(self, client, futures, label: str, file):
        import asyncio

        from distributed.diagnostics.progressbar import ProgressBar

        tracker = self
        self.client, self.futures = client, futures
        self._done, self._finished = 0, False
        self.pbar = None
        if file is not None:
            from tqdm import tqdm

            self.pbar = tqdm(desc=label, total=None, file=file, unit="task", leave=True)

        class Feed(ProgressBar):
            def _draw_bar(self, remaining, all, status=None, **kwargs):
                tracker._update(all - remaining, all, status in ("finished", "error"))

        self.feed = Feed(futures, scheduler=client.scheduler.address, interval="100ms")
        self.listening = asyncio.run_coroutine_threadsafe(self.feed.listen(), client.loop.asyncio_loop)

    @property
    def done(self) -> int:
        """Tasks finished so far; the finished results when the scheduler refuses the feed
        (``distributed.scheduler.pickle: false``)."""
        if self.listening.done() and not self._finished:  # the feed stopped without the end
            return sum(f.done() for f in self.futures)
        return self._done

    def _update(self, done: int, total: int, finished: bool) -> None:
        self._done, self._finished = done, finished
        if self.pbar is not None:
            self.pbar.total = total
            self.pbar.n = done
            self.pbar.refresh()

    def finish(self) -> None:
        """Wait (briefly) for the scheduler's last report, so the bar ends at 100%."""
        import concurrent.futures

        try:
            self.listening.result(timeout=5)
        except (concurrent.futures.TimeoutError, Exception):
            pass

    def close(self) -> None:
        if not self.listening.done():  # stopped early: stop listening (on the client's loop)
            self.listening.cancel()
            comm = getattr(self.feed, "comm", None)
            if comm is not None:
                self.client.loop.add_callback(comm.abort)
        if self.pbar is not None:
            self.pbar.close()
