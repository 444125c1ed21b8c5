"""Helpers for the process-level tests: the CLI as a subprocess, a real dask cluster on
127.0.0.1, a Range-capable HTTP server, and readers that compare outputs.

Nothing here is mocked: the cluster is ``dask scheduler`` + ``dask worker`` processes, the
HTTP server is a real socket server answering GDAL's /vsicurl/ range requests.
"""

from __future__ import annotations

import http.server
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

PARTIAL = "sceneclass-partial"
LOCALHOST = "127.0.0.1"


# ---------------------------------------------------------------------- environment
def child_env(**extra: str) -> dict:
    """The environment for child processes: never use a proxy (only 127.0.0.1 is reached)."""
    env = dict(os.environ)
    for k in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        env.pop(k, None)
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    env.setdefault("PYTHONUNBUFFERED", "1")
    env.update(extra)
    return env


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOCALHOST, 0))
        return s.getsockname()[1]


# ------------------------------------------------------------------------------ CLI
def cli_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "pipeline", *map(str, args)]


def sceneclass(*args, cwd: Path | None = None, timeout: float = 180, **env) -> subprocess.CompletedProcess:
    """Run ``sceneclass ARGS`` to completion; returns the CompletedProcess (text)."""
    return subprocess.run(cli_cmd(*args), cwd=cwd, env=child_env(**env), capture_output=True,
                          text=True, timeout=timeout)


def sceneclass_all(*calls: tuple, cwd: Path | None = None, timeout: float = 180,
                   **env) -> list[subprocess.CompletedProcess]:
    """Run independent ``sceneclass`` commands at the same time (each is a tuple of arguments;
    a run's time is mostly its imports, one core each); returns their CompletedProcess in the
    order given. Only for commands that neither read nor write what another one writes."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=min(4, max(1, len(calls)))) as pool:
        return list(pool.map(lambda args: sceneclass(*args, cwd=cwd, timeout=timeout, **env), calls))


def start_sceneclass(*args, cwd: Path | None = None, log: Path | None = None, **env) -> subprocess.Popen:
    """Start ``sceneclass ARGS`` in the background (stdout/stderr to ``log`` or pipes)."""
    if log is not None:
        fh = open(log, "w")
        try:
            return subprocess.Popen(cli_cmd(*args), cwd=cwd, env=child_env(**env), stdout=fh,
                                    stderr=subprocess.STDOUT, text=True)
        finally:
            fh.close()
    return subprocess.Popen(cli_cmd(*args), cwd=cwd, env=child_env(**env), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen, timeout: float = 180) -> subprocess.CompletedProcess:
    """Wait for a :func:`start_sceneclass` process (pipes) and return it as :func:`sceneclass` would."""
    out, err = proc.communicate(timeout=timeout)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def partials(folder: Path) -> list[Path]:
    """Temporaries of sceneclass (hidden ``.NAME.xxxx.sceneclass-partial…``) anywhere under ``folder``."""
    if not folder.exists():
        return []
    return sorted(p for p in folder.rglob("*") if PARTIAL in p.name)


def wait_for(predicate, timeout: float, interval: float = 0.005, proc: subprocess.Popen | None = None):
    """Poll ``predicate()`` until truthy (returned); None on timeout or when ``proc`` exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            return predicate() or None
        time.sleep(interval)
    return None


def kill(proc: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
    """Send ``sig`` to one process we started (by its pid) and reap it."""
    if proc.poll() is None:
        try:
            os.kill(proc.pid, sig)
        except ProcessLookupError:
            pass
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)


# ---------------------------------------------------------------------- outputs
def read_classes(path: Path) -> np.ndarray:
    """Class ids of a COG (band 1) or a Zarr store (``classes``)."""
    path = Path(path)
    if path.is_dir():
        import zarr

        return np.asarray(zarr.open_group(str(path), mode="r")["classes"][:])
    import rasterio

    with rasterio.open(path) as src:
        return src.read(1)


def legend_file(output: Path) -> Path:
    return output.with_name(output.name.rsplit(".", 1)[0] + ".legend.json")


def read_legend(output: Path, drop: tuple[str, ...] = ("output",)) -> dict:
    data = json.loads(legend_file(output).read_text(encoding="utf-8"))
    for k in drop:
        data.pop(k, None)
    return data


def assert_same_output(got: Path, want: Path, drop: tuple[str, ...] = ("output",)) -> None:
    """Identical class ids and identical legends (except the fields in ``drop``)."""
    a, b = read_classes(got), read_classes(want)
    assert a.shape == b.shape, (got, a.shape, want, b.shape)
    diff = int(np.count_nonzero(a != b))
    assert diff == 0, f"{got} differs from {want} in {diff} pixels"
    assert read_legend(got, drop) == read_legend(want, drop)


def expected_equal_interval(path: Path, count: int, nodata: float | None) -> np.ndarray:
    """Independent oracle: numpy.histogram's bin of every valid pixel (1-based), 0 for nodata."""
    import rasterio

    with rasterio.open(path) as src:
        a = src.read(1)
    valid = np.ones(a.shape, bool) if nodata is None else a != nodata
    edges = np.histogram_bin_edges(a[valid], count)
    ids = np.searchsorted(edges, a.astype(np.float64), side="right")  # edges[k-1] <= x < edges[k] -> k
    ids[a.astype(np.float64) == edges[-1]] = count  # the last bin is closed
    ids[~valid] = 0
    return ids.astype(np.uint8)


# ---------------------------------------------------------------------- dask cluster
@dataclass
class Cluster:
    address: str
    scheduler: subprocess.Popen
    workers: dict[str, subprocess.Popen] = field(default_factory=dict)  # worker address -> process
    logs: Path | None = None

    def processes(self) -> list[subprocess.Popen]:
        return [*self.workers.values(), self.scheduler]

    def client(self, **kw):
        from distributed import Client

        return Client(self.address, set_as_default=False, timeout=30, **kw)

    def log_tail(self, n: int = 40) -> str:
        if self.logs is None:
            return ""
        out = []
        for f in sorted(self.logs.glob("*.log")):
            lines = f.read_text(errors="replace").splitlines()[-n:]
            out.append(f"--- {f.name}\n" + "\n".join(lines))
        return "\n".join(out)


@contextmanager
def dask_cluster(folder: Path, n_workers: int = 2, nanny: bool = False, timeout: float = 90,
                 worker_args: tuple[str, ...] = (), worker_prefix: tuple[str, ...] = ()) -> Iterator[Cluster]:
    """A real ``dask scheduler`` and ``n_workers`` ``dask worker`` processes on 127.0.0.1; all are
    killed (by pid) on exit. Each worker listens on a known port so a test can kill a given one;
    ``worker_args`` are added to every ``dask worker`` command (e.g. ``--memory-limit``);
    ``worker_prefix`` goes before it (e.g. ``unshare -m ...``: see :func:`own_mount_namespace`)."""
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    address = f"tcp://{LOCALHOST}:{port}"
    env = child_env()
    procs: list[subprocess.Popen] = []

    def spawn(cmd: list[str], name: str) -> subprocess.Popen:
        with open(folder / f"{name}.log", "w") as fh:
            p = subprocess.Popen(cmd, cwd=folder, env=env, stdout=fh, stderr=subprocess.STDOUT,
                                 start_new_session=True)
        procs.append(p)
        return p

    try:
        sched = spawn([sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", LOCALHOST,
                       "--port", str(port), "--dashboard-address", f"{LOCALHOST}:0"], "scheduler")
        cluster = Cluster(address, sched, logs=folder)
        for i in range(n_workers):
            wport = free_port()
            cmd = [sys.executable, "-m", "distributed.cli.dask_worker", address,
                   "--host", LOCALHOST, "--worker-port", str(wport), "--nthreads", "1", "--nworkers", "1",
                   "--dashboard-address", f"{LOCALHOST}:0", "--local-directory", str(folder / f"w{i}"),
                   "--name", f"w{i}", *worker_args]
            if nanny:
                cmd += ["--nanny", "--nanny-port", str(free_port())]
            else:
                cmd += ["--no-nanny"]
            cluster.workers[f"tcp://{LOCALHOST}:{wport}"] = spawn([*worker_prefix, *cmd], f"worker{i}")
        from distributed import Client

        deadline = time.monotonic() + timeout
        while True:  # the scheduler may not listen yet
            try:
                client = Client(address, set_as_default=False, timeout=10)
                break
            except OSError:
                if time.monotonic() > deadline or sched.poll() is not None:
                    raise RuntimeError(f"dask scheduler did not start:\n{cluster.log_tail()}") from None
                time.sleep(0.5)
        with client:
            try:
                client.wait_for_workers(n_workers, timeout=max(5.0, deadline - time.monotonic()))
            except TimeoutError:
                raise RuntimeError(f"{n_workers} dask workers did not connect:\n{cluster.log_tail()}") from None
            connected = set(client.scheduler_info()["workers"])
        assert connected == set(cluster.workers), (connected, set(cluster.workers))
        yield cluster
    finally:
        for p in reversed(procs):  # workers first, then the scheduler
            kill(p)


def own_mount_namespace(hidden: Path) -> tuple[str, ...]:
    """A command prefix that runs a command in its own mount namespace with an empty tmpfs over
    ``hidden``: the command cannot see what the client has there (as on a cluster without a
    shared filesystem). Needs root; see :func:`can_hide`."""
    return ("unshare", "-m", "sh", "-c", f'mount -t tmpfs sceneclass-hidden "{hidden}" && exec "$@"', "sh")


def can_hide(folder: Path) -> bool:
    """True when :func:`own_mount_namespace` works here (root, unshare and mount permitted)."""
    folder.mkdir(parents=True, exist_ok=True)
    try:
        done = subprocess.run([*own_mount_namespace(folder), "true"], capture_output=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


# ---------------------------------------------------------------- HTTP with Range
_RANGE = re.compile(r"^bytes=(.+)$")


@dataclass
class HttpStats:
    requests: int = 0
    status: dict[int, int] = field(default_factory=dict)
    bytes_sent: int = 0
    ranges: list[tuple[int, int]] = field(default_factory=list)
    requests_log: list[tuple[str, str, int, int]] = field(default_factory=list)  # method, path, status, bytes
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def reset(self) -> None:
        with self.lock:
            self.requests, self.bytes_sent = 0, 0
            self.status, self.ranges, self.requests_log = {}, [], []

    def snapshot(self) -> dict:
        with self.lock:
            return {"requests": self.requests, "status": dict(self.status), "bytes_sent": self.bytes_sent,
                    "ranges": len(self.ranges), "methods": sorted({m for m, *_ in self.requests_log}),
                    "not_found": sorted({p for _, p, st, _ in self.requests_log if st == 404})}


def parse_range(header: str, size: int) -> tuple[int, int] | None:
    """``bytes=a-b`` / ``a-`` / ``-n`` (several ranges are coalesced into one covering them,
    which RFC 9110 allows) -> inclusive (first, last); None when unsatisfiable or malformed."""
    m = _RANGE.match(header.strip())
    if not m:
        return None
    spans = []
    for part in m.group(1).split(","):
        a, sep, b = part.strip().partition("-")
        if not sep:
            return None
        if a == "":
            if not b.isdigit() or int(b) == 0:
                return None
            first, last = max(0, size - int(b)), size - 1
        else:
            if not a.isdigit() or (b and not b.isdigit()):
                return None
            first, last = int(a), (int(b) if b else size - 1)
            if first > last:
                return None
            last = min(last, size - 1)
        if first >= size:
            continue
        spans.append((first, last))
    if not spans:
        return None
    return min(s[0] for s in spans), max(s[1] for s in spans)


def make_handler(root: Path, stats: HttpStats, gate: threading.Event | None = None):
    class RangeHandler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as GDAL expects

        def log_message(self, *args):  # quiet
            pass

        def _file(self) -> Path | None:
            rel = self.path.split("?", 1)[0].lstrip("/")
            path = (root / rel).resolve()
            if not path.is_relative_to(root.resolve()) or not path.is_file():
                return None
            return path

        def _count(self, status: int, sent: int, span=None) -> None:
            with stats.lock:
                stats.requests_log.append((self.command, self.path, status, sent))
                stats.requests += 1
                stats.status[status] = stats.status.get(status, 0) + 1
                stats.bytes_sent += sent
                if span is not None:
                    stats.ranges.append(span)

        def _head_or_get(self, body: bool) -> None:
            if gate is not None:  # a slow server: answer only once the test opens the gate
                gate.wait(timeout=120)
            path = self._file()
            if path is None:
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()
                self._count(404, 0)
                return
            size = path.stat().st_size
            rng = self.headers.get("Range")
            if rng is not None:
                span = parse_range(rng, size)
                if span is None:
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{size}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    self._count(416, 0)
                    return
                first, last = span
                n = last - first + 1
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {first}-{last}/{size}")
            else:
                first, n, span = 0, size, None
                self.send_response(200)
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("Content-Type", "image/tiff")
            self.send_header("Content-Length", str(n))
            self.end_headers()
            sent = 0
            if body:
                with open(path, "rb") as f:
                    f.seek(first)
                    data = f.read(n)
                self.wfile.write(data)
                sent = len(data)
            self._count(206 if rng is not None else 200, sent, span)

        def do_GET(self):
            self._head_or_get(True)

        def do_HEAD(self):
            self._head_or_get(False)

    return RangeHandler


@contextmanager
def http_server(root: Path, gate: threading.Event | None = None) -> Iterator[tuple[str, HttpStats]]:
    """Serve ``root`` on 127.0.0.1 (a thread per request); yields (base URL, stats). With a
    ``gate``, every request waits until the gate is set."""
    stats = HttpStats()
    server = http.server.ThreadingHTTPServer((LOCALHOST, 0), make_handler(root, stats, gate))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="range-http", daemon=True)
    thread.start()
    try:
        yield f"http://{LOCALHOST}:{server.server_address[1]}", stats
    finally:
        if gate is not None:
            gate.set()
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
