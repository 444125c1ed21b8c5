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


class TqdmProgress(Callback):
    """A tqdm bar (on stderr) per compute, labelled with the current phase."""

    def __init__(self, file=None):
        super().__init__()
        self.file = file or sys.stderr
        self.bar = None

    def _start_state(self, dsk, state):
        from tqdm import tqdm

        total = sum(len(state[k]) for k in ("ready", "waiting", "running", "finished"))
        self.bar = tqdm(total=total, desc=current_phase(), unit="task", file=self.file, leave=True)

    def _posttask(self, key, result, dsk, state, worker_id):
        if self.bar is not None:
            self.bar.update(1)

    def _finish(self, dsk, state, errored):
        if self.bar is not None:
            self.bar.close()
            self.bar = None
