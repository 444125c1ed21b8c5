"""Progress and accounting hooks for dask computes (local schedulers).

The library names the pass it is running (:func:`phase`); the CLI shows a progress bar per
compute labelled with that name; tests count computes and task executions.
"""

from __future__ import annotations

import contextvars
import sys
from collections import Counter
from contextlib import contextmanager
from typing import Iterator

from dask.callbacks import Callback

_phase: contextvars.ContextVar[str] = contextvars.ContextVar("sceneclass_phase", default="compute")


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
    """tqdm's dask callback, with one bar (on stderr) per compute labelled with the current
    phase (``statistics``, ``classify+write``); local schedulers only."""
    from tqdm import tqdm
    from tqdm.dask import TqdmCallback

    class PhaseBars(TqdmCallback):
        def _start_state(self, dsk, state):
            super()._start_state(dsk, state)
            self.pbar.set_description(current_phase(), refresh=False)

    return PhaseBars(tqdm_class=tqdm, file=file or sys.stderr, unit="task", leave=True)
