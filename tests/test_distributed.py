"""Runs on a real dask.distributed cluster (scheduler + worker processes on 127.0.0.1), on a
LocalCluster, from an HTTP server answering range requests, and through the loss of a worker.

Every distributed result is compared with the default threads run of the same config: the
same class ids pixel for pixel and the same legend (except its ``output`` field).
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio
import rasterio.shutil
import yaml

from pipeline.jobs.atomic import PARTIAL_TAG
from pipeline.jobs.batch import run_batch
from pipeline.jobs.config import load_config
from pipeline.testing.synth import make_scene

from _procs import (
    assert_same_output, dask_cluster, expected_equal_interval, finish, http_server, kill, partials, read_classes,
    read_legend, sceneclass, start_sceneclass, wait_for,
)
from conftest import B2, data_path

CHUNK = 512  # many tasks: a 1200x1500 scene has 9 chunks, B2 (2041x1860) 16


# ------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("distributed")


@pytest.fixture(scope="module")
def generated(work) -> Path:
    return make_scene(work / "scenes" / "generated.tif", size="1200x1500", seed=7)


@pytest.fixture(scope="module")
def cluster(work):
    """One scheduler and two single-threaded workers (no nanny), shared by this module."""
    with dask_cluster(work / "cluster", n_workers=2) as c:
        yield c


def write_config(folder: Path, name: str, input: str, output: str, **extra) -> Path:
    cfg = {"input": input, "nodata": 0, "classes": {"scheme": "equal_interval", "count": 20},
           "output": {"path": output}, "processing": {"chunk": CHUNK}, **extra}
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return path


def threads_run(cfg: Path, output: Path) -> Path:
    """The default (threads) run of ``cfg``, in process, writing ``output``."""
    conf = load_config(cfg, [f"output.path={output}"])
    assert conf.dask.scheduler == "threads"
    result = run_batch(conf)
    assert [j.status for j in result.jobs] == ["done"], [j.error for j in result.jobs]
    assert output.exists()
    return output


def executed(cluster) -> dict[str, int]:
    """Tasks executed so far by each worker (asked of the workers themselves)."""
    with cluster.client() as client:
        return client.run(lambda dask_worker: dask_worker.state.executed_count)


def scene_input(which: str, generated: Path) -> Path:
    return generated if which == "generated" else data_path(B2)


# ------------------------------------------------------------ cluster == threads
@pytest.mark.parametrize("fmt", ["cog", "zarr"])
@pytest.mark.parametrize("which", ["generated", "B2"])
def test_cluster_run_equals_threads_run(which, fmt, work, generated, cluster):
    src = scene_input(which, generated)
    folder = work / f"{which}-{fmt}"
    ext = "tif" if fmt == "cog" else "zarr"
    cfg = write_config(folder, "job", str(src), f"out/classes.{ext}")

    before = executed(cluster)
    t0 = time.monotonic()
    proc = start_sceneclass("run", cfg, "--scheduler", cluster.address, "-v", cwd=folder)
    try:  # meanwhile the reference, in this process on threads (its own folder; the cluster is not used)
        want = threads_run(cfg, folder / "threads" / f"classes.{ext}")
    finally:
        proc = finish(proc)
    seconds = time.monotonic() - t0
    assert proc.returncode == 0, proc.stderr + cluster.log_tail()
    assert f"dask cluster {cluster.address} with 2 workers" in proc.stderr
    after = executed(cluster)

    got = folder / "out" / f"classes.{ext}"
    assert got.exists() and not partials(folder / "out")
    assert_same_output(got, want)
    # the pixels really were computed by both workers of the cluster
    done = {w: after[w] - before.get(w, 0) for w in after}
    with rasterio.open(src) as s:
        n_chunks = -(-s.height // CHUNK) * -(-s.width // CHUNK)
    assert sum(done.values()) >= 2 * n_chunks, done  # statistics pass + write pass
    assert all(n > 0 for n in done.values()), f"a worker did no work: {done}"
    # and the classes are numpy.histogram's bins (an oracle independent of sceneclass)
    np.testing.assert_array_equal(read_classes(got), expected_equal_interval(src, 20, 0))
    print(f"\n{which}/{fmt}: cluster run {seconds:.1f} s, tasks per worker {done}")


def test_local_cluster_equals_threads_run(work, generated):
    folder = work / "local"
    cfg = write_config(folder, "job", str(generated), "out/classes.tif")
    proc = start_sceneclass("run", cfg, "--set", "dask.scheduler=local", "--set", "dask.workers=2",
                            "--set", "dask.dashboard_address=127.0.0.1:0", "-v", cwd=folder)
    try:
        want = threads_run(cfg, folder / "threads" / "classes.tif")  # meanwhile, in this process (own folder)
    finally:
        proc = finish(proc)
    assert proc.returncode == 0, proc.stderr
    assert "dask LocalCluster with 2 workers" in proc.stderr
    got = folder / "out" / "classes.tif"
    assert not partials(folder / "out")
    assert_same_output(got, want)


# ----------------------------------------------------------------------- HTTP input
@pytest.fixture(scope="module")
def served(work, generated) -> Path:
    """The generated scene as a COG in a folder to serve over HTTP."""
    folder = work / "http" / "served"
    folder.mkdir(parents=True)
    cog = folder / "scene.tif"
    rasterio.shutil.copy(generated, cog, driver="COG", BLOCKSIZE=512, COMPRESS="DEFLATE")
    return cog


def test_http_input_threads_and_cluster(work, served, cluster):
    folder = served.parent.parent
    size = served.stat().st_size
    disk_cfg = write_config(folder, "disk", str(served), "disk/classes.tif")
    want = threads_run(disk_cfg, folder / "disk" / "classes.tif")

    with http_server(served.parent) as (base, stats):
        url = f"{base}/{served.name}"
        cfg = write_config(folder, "http", url, "out/classes.tif")
        report = {}
        for name, args in (("threads", ()), ("cluster", ("--scheduler", cluster.address))):
            stats.reset()
            out = folder / name / "classes.tif"
            proc = sceneclass("run", cfg, "--set", f"output.path={out}", *args, cwd=folder)
            assert proc.returncode == 0, proc.stderr
            snap = stats.snapshot()
            report[name] = snap
            # the input was read with range requests, never downloaded whole
            assert snap["status"].get(206, 0) > 0, snap
            whole = [r for r in stats.requests_log if r[0] == "GET" and r[2] == 200]
            assert not whole, f"GET without Range: {whole}"
            assert not partials(out.parent)
            assert_same_output(out, want, drop=("output", "input"))
            assert read_legend(out, drop=())["input"] == url
    print(f"\nHTTP input: file {size} bytes; served per run: "
          + "; ".join(f"{k}: {v['requests']} requests {v['methods']}, {v['status']}, {v['bytes_sent']} bytes "
                      f"({v['bytes_sent'] / size:.2f}x the file), 404 for {v['not_found']}"
                      for k, v in report.items()))


def test_cluster_workers_use_the_runs_gdal_settings(work, served, cluster):
    """With GDAL_DISABLE_READDIR_ON_OPEN=EMPTY_DIR (what the threads run uses) GDAL asks for the
    scene only: no request for a sidecar file or a folder listing, hence no 404."""
    folder = served.parent.parent
    with http_server(served.parent) as (base, stats):
        cfg = write_config(folder, "http-env", f"{base}/{served.name}", "env/classes.tif")
        proc = sceneclass("run", cfg, "--scheduler", cluster.address, cwd=folder)
        assert proc.returncode == 0, proc.stderr
        snap = stats.snapshot()
    assert snap["status"].get(206, 0) > 0, snap
    assert not snap["not_found"], f"cluster workers asked for files that are not the input: {snap['not_found']}"


# ------------------------------------------------------------------- worker failure
@pytest.fixture
def fragile_cluster(tmp_path):
    """A fresh 2-worker cluster for the test that kills a worker (the shared one survives)."""
    with dask_cluster(tmp_path / "fragile-cluster", n_workers=2) as c:
        yield c


def test_worker_killed_mid_write(tmp_path, fragile_cluster):
    cluster = fragile_cluster
    src = make_scene(tmp_path / "big.tif", size="4000x4000", seed=11)
    cfg = write_config(tmp_path, "job", str(src), "out/classes.tif")
    want = threads_run(cfg, tmp_path / "threads" / "classes.tif")
    out_dir = tmp_path / "out"
    final = out_dir / "classes.tif"

    log = tmp_path / "run.log"
    proc = start_sceneclass("run", cfg, "--scheduler", cluster.address, "-v", cwd=tmp_path, log=log)
    killed = None
    try:
        # the write pass begins once the statistics pass has logged the edges (the workers then
        # classify and compress their tiles; nothing is written beside the output on a cluster)
        edges = wait_for(lambda: "edges:" in log.read_text(), timeout=90, proc=proc)
        assert edges, "the run ended before its write pass was seen:\n" + log.read_text()
        with cluster.client() as client:
            busy = wait_for(lambda: [w for w, keys in client.processing().items() if keys], timeout=10,
                            interval=0.01)
        assert busy, "no worker was running tasks during the write pass"
        assert proc.poll() is None, "the run finished before a worker could be killed"
        killed = busy[0]
        os.kill(cluster.workers[killed].pid, signal.SIGKILL)
        cluster.workers[killed].wait(timeout=30)
        rc = proc.wait(timeout=150)
    finally:
        if proc.poll() is None:
            kill(proc)
    text = log.read_text()
    lines = [ln for ln in text.splitlines() if ln.strip()]
    left = [p.name for p in partials(out_dir)]
    assert final.name not in left
    if rc == 0:
        outcome = "exit 0, the output equals the threads run"
        assert final.exists(), text
        assert_same_output(final, want)
        assert json.loads((out_dir / "classes.manifest.json").read_text())["status"] == "done"
    else:
        outcome = f"exit {rc}, clean failure"
        assert not final.exists(), f"a failed run left {final}"
        assert not (out_dir / "classes.legend.json").exists()
        assert "Traceback" not in text, text
        errors = [ln for ln in lines if ln.startswith("sceneclass: error:")]
        assert len(errors) == 1 and lines[-1] == errors[0], text
    # the temporaries of a killed worker (if any) must be hidden partial names, swept by the next run
    assert all(n.startswith(".") and PARTIAL_TAG in n for n in left), left
    print(f"\nworker {killed} SIGKILLed mid-write: {outcome}; temporaries left: {left or 'none'}")
