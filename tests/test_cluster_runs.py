"""Progress bars and worker memory limits on real distributed clusters: a ``dask scheduler`` +
``dask worker`` processes on 127.0.0.1 and LocalClusters started by the command.

Runs are the CLI in a subprocess (stderr captured); a run that would hang is caught by the
subprocess timeout, and finished runs are compared with the default threads run.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
import yaml

from pipeline.jobs.batch import run_batch
from pipeline.jobs.config import load_config
from pipeline.testing.synth import make_scene

from _procs import assert_same_output, dask_cluster, partials, sceneclass

ROOT = Path(__file__).resolve().parents[1]
CHUNK = 384  # does not divide the 1000 x 1300 scene: 3 x 4 chunks


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cluster_runs")


@pytest.fixture(scope="module")
def scene(work) -> Path:
    return make_scene(work / "scene.tif", size="1000x1300", seed=11)


@pytest.fixture(scope="module")
def threads_output(work, scene) -> Path:
    """The default (threads) run, in process: the reference for every cluster run."""
    cfg = write_config(work / "threads", scene)
    conf = load_config(cfg, [])
    assert conf.dask.scheduler == "threads"
    result = run_batch(conf)
    assert [j.status for j in result.jobs] == ["done"], [j.error for j in result.jobs]
    return work / "threads" / "out" / "classes.tif"


@pytest.fixture(scope="module")
def cluster(work):
    with dask_cluster(work / "cluster", n_workers=2) as c:
        yield c


def write_config(folder: Path, scene: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    cfg = {"input": str(scene), "nodata": 0, "classes": {"scheme": "quantile", "count": 12},
           "output": {"path": "out/classes.tif"}, "processing": {"chunk": CHUNK}}
    path = folder / "job.yaml"
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return path


def bars(stderr: str) -> dict[str, str]:
    """The last state of each tqdm bar on ``stderr`` (bars redraw with carriage returns)."""
    last = {}
    for piece in re.split(r"[\r\n]", stderr):
        m = re.match(r"^(statistics|classify\+write): +(\d+%)", piece.strip())
        if m:
            last[m.group(1)] = m.group(2)
    return last


LOCAL = ("--set", "dask.scheduler=local", "--set", "dask.workers=2", "--set", "dask.dashboard_address=127.0.0.1:0")


# ------------------------------------------------------------------------ progress
def test_progress_bars_on_a_tcp_cluster(work, scene, cluster, threads_output):
    folder = work / "tcp-progress"
    cfg = write_config(folder, scene)
    proc = sceneclass("run", cfg, "--progress", "--scheduler", cluster.address, cwd=folder, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert bars(proc.stderr) == {"statistics": "100%", "classify+write": "100%"}, proc.stderr
    assert_same_output(folder / "out" / "classes.tif", threads_output)


def test_progress_bars_on_a_local_cluster_with_a_sensible_memory_limit(work, scene, threads_output):
    folder = work / "local-progress"
    cfg = write_config(folder, scene)
    proc = sceneclass("run", cfg, "--progress", *LOCAL, "--set", "dask.memory_limit=400MiB", cwd=folder,
                      timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert bars(proc.stderr) == {"statistics": "100%", "classify+write": "100%"}, proc.stderr
    assert_same_output(folder / "out" / "classes.tif", threads_output)
    assert not partials(folder)


def test_no_bars_without_progress_and_the_dashboard_line(work, scene, cluster):
    import importlib.util

    folder = work / "tcp-quiet"
    cfg = write_config(folder, scene)
    proc = sceneclass("run", cfg, "--no-progress", "-v", "--scheduler", cluster.address, cwd=folder, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert bars(proc.stderr) == {}
    if importlib.util.find_spec("bokeh") is None:  # the scheduler runs in this environment
        assert 'dashboard: not available (the scheduler needs bokeh: pip install "sceneclass[cluster]")' \
            in proc.stderr, proc.stderr
    else:
        assert re.search(r"dashboard: http://127\.0\.0\.1:\d+/status", proc.stderr), proc.stderr


# -------------------------------------------------------------------------- memory
def assert_refused(proc, folder: Path) -> None:
    assert proc.returncode == 2, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("sceneclass: error:")]
    assert len(errors) == 1, proc.stderr
    m = re.search(r"dask\.memory_limit: .* needs at least (\d+) MiB per worker", errors[0])
    assert m, errors[0]
    assert int(m.group(1)) > 200
    assert "Traceback" not in proc.stderr
    assert not (folder / "out" / "classes.tif").exists()
    assert not partials(folder)


def test_local_cluster_memory_limit_too_low_fails_fast(work, scene):
    folder = work / "local-200"
    cfg = write_config(folder, scene)
    proc = sceneclass("run", cfg, *LOCAL, "--set", "dask.memory_limit=200MiB", cwd=folder, timeout=90)
    assert_refused(proc, folder)


def test_tcp_cluster_memory_limit_too_low_fails_fast(work, scene):
    folder = work / "tcp-200"
    cfg = write_config(folder, scene)
    with dask_cluster(work / "cluster-200", n_workers=2, worker_args=("--memory-limit", "200MiB")) as c:
        proc = sceneclass("run", cfg, "--scheduler", c.address, cwd=folder, timeout=90)
    assert_refused(proc, folder)


def test_workers_that_stay_paused_stop_the_run(work, scene, cluster):
    """Workers paused after the memory check, as their memory monitor pauses them (held
    paused: the monitor is stopped meanwhile, as memory that never drops would hold them): the
    run stops with the one line instead of waiting forever (after ``dask.pause_timeout``, 2 s
    here instead of the default 10: held paused, they never resume, however long it waits)."""
    from distributed.core import Status

    def set_status(dask_worker, paused: bool):
        monitor = dask_worker.periodic_callbacks["memory_monitor"]
        (monitor.stop if paused else monitor.start)()
        dask_worker.status = Status.paused if paused else Status.running

    folder = work / "tcp-paused"
    cfg = write_config(folder, scene)
    with cluster.client() as client:
        client.run(set_status, paused=True)
        try:
            proc = sceneclass("run", cfg, "--scheduler", cluster.address, "--set", "dask.pause_timeout=2",
                              cwd=folder, timeout=90)
        finally:
            client.run(set_status, paused=False)
    assert_refused(proc, folder)
    assert "paused" in proc.stderr


# ------------------------------------------------------------------------ dashboard
def test_cluster_extra_satisfies_distributeds_bokeh_requirement():
    from distributed.versions import BOKEH_REQUIREMENT
    from packaging.requirements import Requirement

    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    (bokeh,) = [Requirement(r) for r in extras["cluster"] if Requirement(r).name == "bokeh"]
    floor = next(s.version for s in bokeh.specifier if s.operator == ">=")
    assert BOKEH_REQUIREMENT.specifier.contains(floor)


def test_pause_timeout_is_a_positive_number_of_seconds(work, scene):
    """``dask.pause_timeout`` reaches the watchdog as given; zero or a word is refused naming it."""
    from pipeline.errors import ConfigError
    from pipeline.jobs.memory import PAUSE_TIMEOUT

    cfg = write_config(work / "pause-timeout", scene)
    assert load_config(cfg, []).dask.pause_timeout == PAUSE_TIMEOUT == 10
    assert load_config(cfg, ["dask.pause_timeout=2.5"]).dask.pause_timeout == 2.5
    for bad in ("0", "soon"):
        with pytest.raises(ConfigError, match="dask.pause_timeout"):
            load_config(cfg, [f"dask.pause_timeout={bad}"])
