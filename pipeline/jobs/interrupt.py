"""SIGINT and SIGTERM as exceptions, so a stopped run cleans up like a failed one.

:func:`stop_on_signals` (used by the command) makes both signals raise :class:`Interrupted` (a
``KeyboardInterrupt``) in the main thread; every ``finally`` block and ``atomic_output`` then
removes its temporaries on the way out. A second signal during that cleanup is ignored, so
the cleanup is never cut short. An error that a library raises because the signal cut
into it (for example while it was releasing a resource) is reported as the interruption it
is (see :func:`received`). Inside :func:`deferred` (the final renames of a run) a signal
is held until the block ends, so the renames are never cut in half.
"""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from typing import Iterator

#: exit status of a run stopped by a signal: 128 + the signal number (as shells report it)
EXIT_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143}

_state = {"received": None, "deferring": 0, "pending": None}


class Interrupted(KeyboardInterrupt):
    """The run was stopped by SIGINT or SIGTERM (``signum``)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return EXIT_CODES.get(self.signum, 128 + self.signum)


def _handler(signum, frame) -> None:
    if _state["received"] is not None:
        return  # already stopping: let the cleanup finish
    _state["received"] = signum
    if _state["deferring"]:
        _state["pending"] = signum
        return
    raise Interrupted(signum)


def received() -> int | None:
    """The signal that is stopping the run (under :func:`stop_on_signals`), if any."""
    return _state["received"]


@contextmanager
def stop_on_signals(*, exiting: bool = False) -> Iterator[None]:
    """Inside, SIGINT and SIGTERM raise :class:`Interrupted` in the main thread (the previous
    handlers come back on exit). Does nothing outside the main thread. ``exiting``: the process
    ends after the block (the command): once a signal was received, both stay ignored instead,
    so a second signal cannot interrupt the error line or the interpreter's shutdown."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _state.update(received=None, pending=None)
    previous = {sig: signal.signal(sig, _handler) for sig in EXIT_CODES}
    try:
        yield
    finally:
        stopping = exiting and _state["received"] is not None
        for sig, handler in previous.items():
            signal.signal(sig, signal.SIG_IGN if stopping else handler)


@contextmanager
def deferred() -> Iterator[None]:
    """Hold SIGINT/SIGTERM until the block ends (then raise :class:`Interrupted`)."""
    _state["deferring"] += 1
    try:
        yield
    finally:
        _state["deferring"] -= 1
        pending = _state["pending"]
        if not _state["deferring"] and pending is not None:
            _state["pending"] = None
            raise Interrupted(pending)
