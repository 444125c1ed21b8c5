"""Shared by the benchmark scripts: time one child process as the measured unit."""

from __future__ import annotations

import os
import subprocess
import time


def timed_process(argv: list[str], quiet: bool = True) -> tuple[float, float, int]:
    """Run ``argv`` to completion after ``sync`` (no run pays for writing back the previous
    one's output): wall time, the child's CPU time (user + system, from ``wait4``), and its
    exit status."""
    os.sync()
    t0 = time.perf_counter()
    pid = subprocess.Popen(argv, stdout=subprocess.DEVNULL if quiet else None).pid
    _, status, ru = os.wait4(pid, 0)
    return time.perf_counter() - t0, ru.ru_utime + ru.ru_stime, status
