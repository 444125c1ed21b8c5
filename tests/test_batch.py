"""Batches as cron runs them: interrupted runs (SIGKILL), a damaged input among good ones,
skip-if-up-to-date (counted in dask computes), the folder lock, output templates that would
escape the output folder, and machine-readable logs.

The CLI runs as a subprocess where exit codes and interruption matter; the library runs in
process (``run_batch`` under a :class:`ComputeCounter`) where the amount of work matters.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio
import yaml
from rasterio.windows import Window

from pipeline.jobs.batch import LOCK_NAME, run_batch
from pipeline.jobs.config import load_config
from pipeline.errors import ConfigError
from pipeline.jobs.progress import ComputeCounter
from pipeline.testing.synth import make_scene

from _procs import (
    assert_same_output, expected_equal_interval, finish, http_server, kill, partials, read_classes, sceneclass,
    start_sceneclass, wait_for,
)
from conftest import CORRUPT, data_path

COUNT = 20


# ------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def scenes(tmp_path_factory) -> dict[str, Path]:
    """Small generated scenes (seeds differ) and one big enough to be caught mid-write."""
    folder = tmp_path_factory.mktemp("scenes")
    out = {name: make_scene(folder / f"{name}.tif", size="500x700", seed=seed)
           for name, seed in (("a", 1), ("b", 2), ("c", 3), ("d", 4))}
    out["big"] = make_scene(folder / "big.tif", size="4000x4000", seed=5)
    return out


def write_config(path: Path, **cfg) -> Path:
    data = {"nodata": 0, "classes": {"scheme": "equal_interval", "count": COUNT},
            "processing": {"chunk": 512}, **cfg}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def snapshot(folder: Path, skip: tuple[str, ...] = ()) -> dict[str, tuple[int, int]]:
    """Every file under ``folder``: relative path -> (size, mtime_ns)."""
    out = {}
    for p in sorted(folder.rglob("*")):
        if p.is_file() and p.name not in skip:
            st = p.stat()
            out[str(p.relative_to(folder))] = (st.st_size, st.st_mtime_ns)
    return out


def counted_batch(cfg: Path, **kw):
    """``run_batch`` in process; returns (result, number of dask computes)."""
    conf = load_config(cfg)
    with ComputeCounter() as counter:
        result = run_batch(conf, **kw)
    return result, counter.computes


def statuses(result) -> dict[str, str]:
    return {j.output.name: j.status for j in result.jobs}


def manifest(output: Path) -> dict:
    base = output.name.rsplit(".", 1)[0]
    return json.loads(output.with_name(base + ".manifest.json").read_text(encoding="utf-8"))


# ----------------------------------------------------------------- SIGKILL mid-write
@pytest.mark.parametrize("fmt", ["cog", "zarr"])
def test_sigkill_mid_write_leaves_nothing_and_next_run_recovers(fmt, tmp_path, scenes):
    ext = "tif" if fmt == "cog" else "zarr"
    output = {"path": f"out/classes.{ext}"}
    if fmt == "cog":  # staging and assembly take ~0.2 s at ZSTD 3 here: DEFLATE 9 keeps the run writing ~1 s
        output.update(compression="deflate", level=9)
    cfg = write_config(tmp_path / "job.yaml", input=str(scenes["big"]), output=output)
    out_dir, final = tmp_path / "out", tmp_path / "out" / f"classes.{ext}"
    reference = tmp_path / "ref" / f"classes.{ext}"

    # a slow (single-threaded) run, killed as soon as its write pass has written for a moment
    proc = start_sceneclass("run", cfg, "--set", "dask.scheduler=synchronous", cwd=tmp_path)
    try:
        seen = wait_for(lambda: partials(out_dir), timeout=90, proc=proc)
        assert seen, "the run ended before its write pass started: " + "".join(proc.communicate())
        time.sleep(0.15)  # tiles/chunks are being written now
        assert proc.poll() is None, "the run finished before it could be killed; use a bigger scene"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        kill(proc)
    assert proc.returncode == -signal.SIGKILL
    left = partials(out_dir)
    assert left, "a run killed mid-write left no temporary: was it really writing?"
    assert all(p.name.startswith(".") and "sceneclass-partial" in p.name for p in left if p.parent == out_dir)
    assert not final.exists(), f"a killed run left {final}"
    assert not (out_dir / "classes.legend.json").exists()
    assert not (out_dir / "classes.manifest.json").exists()

    rerun = start_sceneclass("run", cfg, "-v", cwd=tmp_path)
    try:  # meanwhile the uninterrupted reference, in this process (its own folder)
        res = run_batch(load_config(cfg, [f"output.path={reference}"]))
    finally:
        rerun = finish(rerun)
    assert statuses(res) == {reference.name: "done"}
    assert rerun.returncode == 0, rerun.stderr
    assert "removed a temporary left by an interrupted run" in rerun.stderr
    assert not partials(out_dir), f"temporaries left after the next run: {partials(out_dir)}"
    assert_same_output(final, reference)
    assert manifest(final)["status"] == "done"


# ------------------------------------------------------------- one corrupt input
def test_batch_with_a_corrupt_input(tmp_path, scenes):
    inp = tmp_path / "in"
    inp.mkdir()
    for name in ("a", "b"):
        shutil.copy(scenes[name], inp / f"{name}.tif")
    shutil.copy(data_path(CORRUPT), inp / "corrupt.tif")
    cfg = write_config(tmp_path / "job.yaml", inputs=["in/*.tif"],
                       output={"folder": "out", "path": "{stem}_classes.tif"})
    proc = sceneclass("run", cfg, "--log-format", "json", cwd=tmp_path)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    out = tmp_path / "out"
    for name in ("a", "b"):
        got = out / f"{name}_classes.tif"
        assert got.exists()
        np.testing.assert_array_equal(read_classes(got), expected_equal_interval(inp / f"{name}.tif", COUNT, 0))
        assert manifest(got)["status"] == "done"
    bad = out / "corrupt_classes.tif"
    assert not bad.exists() and not (out / "corrupt_classes.legend.json").exists()
    assert not (out / "corrupt_classes.manifest.json").exists()  # a manifest describes a good output only
    # its header cannot be right, so it is refused before anything is written: no failure record
    # either (a run that fails part-way records NAME.failed.json: test_faults_writes)
    assert not (out / "corrupt_classes.failed.json").exists()
    assert "2 done, 0 up to date, 1 failed" in proc.stdout
    assert f"failed     {bad}" in proc.stdout
    assert not partials(out)
    # --log-format json: every stderr line is one JSON record; the failure is one ERROR record
    records = [json.loads(ln) for ln in proc.stderr.splitlines()]
    assert all({"time", "level", "logger", "message"} <= r.keys() for r in records), records
    errors = [r for r in records if r["level"] == "ERROR"]
    assert len(errors) == 1 and "corrupt.tif" in errors[0]["message"], records
    assert not any("Traceback" in r["message"] or "exception" in r for r in records)

    # the next run retries the failure only; the good ones are up to date
    result, computes = counted_batch(cfg)
    assert statuses(result) == {"a_classes.tif": "skipped", "b_classes.tif": "skipped",
                                "corrupt_classes.tif": "failed"}
    assert result.exit_code == 1 and computes == 0  # its last tile lies past the end of the file: refused at open


# --------------------------------------------------------------- skip if up to date
@pytest.fixture
def batch(tmp_path, scenes):
    """Three inputs, run once (in process); returns (config, inputs, outputs)."""
    inp = tmp_path / "in"
    inp.mkdir()
    inputs = {}
    for name in ("a", "b", "c"):
        inputs[name] = inp / f"{name}.tif"
        shutil.copy(scenes[name], inputs[name])
    cfg = write_config(tmp_path / "job.yaml", inputs=["in/*.tif"],
                       output={"folder": "out", "path": "{stem}_classes.tif"})
    result, computes = counted_batch(cfg)
    assert set(statuses(result).values()) == {"done"} and computes > 0
    outputs = {n: tmp_path / "out" / f"{n}_classes.tif" for n in inputs}
    return cfg, inputs, outputs


def files_of(output: Path) -> list[Path]:
    base = output.name.rsplit(".", 1)[0]
    return [output, output.with_name(base + ".legend.json"), output.with_name(base + ".manifest.json")]


def mtimes(paths) -> dict[str, int]:
    return {str(p): Path(p).stat().st_mtime_ns for p in paths}


def change_pixels(path: Path) -> None:
    """Rewrite a block of pixels in place (r+): same file, new content."""
    with rasterio.open(path, "r+") as dst:
        win = Window(300, 200, 64, 64)
        block = dst.read(1, window=win)
        dst.write(np.full_like(block, 65000), 1, window=win)


def test_rerun_with_nothing_changed_does_no_work(batch, tmp_path):
    cfg, inputs, outputs = batch
    before = snapshot(tmp_path / "out", skip=(LOCK_NAME,))
    result, computes = counted_batch(cfg)
    assert computes == 0
    assert set(statuses(result).values()) == {"skipped"}
    proc = sceneclass("run", cfg, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "0 done, 3 up to date, 0 failed" in proc.stdout
    assert snapshot(tmp_path / "out", skip=(LOCK_NAME,)) == before


def test_touched_input_does_no_pixel_work(batch, tmp_path):
    cfg, inputs, outputs = batch
    products = mtimes(p for o in outputs.values() for p in files_of(o)[:2])
    st = inputs["b"].stat()
    os.utime(inputs["b"], ns=(st.st_atime_ns, st.st_mtime_ns + 10**10))  # +10 s, same bytes
    result, computes = counted_batch(cfg)
    assert computes == 0
    assert set(statuses(result).values()) == {"skipped"}
    assert mtimes(products) == products  # outputs and legends untouched
    # the manifest remembers the new mtime, so the next run does not checksum again
    assert manifest(outputs["b"])["input_fingerprint"]["mtime_ns"] == inputs["b"].stat().st_mtime_ns


def test_changed_input_redoes_only_that_one(batch, tmp_path):
    cfg, inputs, outputs = batch
    others = mtimes(p for n in ("a", "c") for p in files_of(outputs[n]))
    old_b = read_classes(outputs["b"])
    change_pixels(inputs["b"])
    result, computes = counted_batch(cfg)
    assert statuses(result) == {"a_classes.tif": "skipped", "b_classes.tif": "done", "c_classes.tif": "skipped"}
    assert computes > 0
    assert mtimes(others) == others  # outputs, legends and manifests of the others untouched
    new_b = read_classes(outputs["b"])
    assert not np.array_equal(new_b, old_b)
    np.testing.assert_array_equal(new_b, expected_equal_interval(inputs["b"], COUNT, 0))
    assert manifest(outputs["b"])["input_fingerprint"]["size"] == inputs["b"].stat().st_size


def test_force_redoes_all(batch, tmp_path):
    cfg, inputs, outputs = batch
    before = mtimes(p for o in outputs.values() for p in files_of(o))
    result, computes = counted_batch(cfg, force=True)
    assert set(statuses(result).values()) == {"done"}
    assert computes >= 2 * len(outputs)  # statistics + write pass of each
    proc = sceneclass("run", cfg, "--force", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "3 done, 0 up to date, 0 failed" in proc.stdout
    after = mtimes(before)
    assert all(after[p] != before[p] for p in before), "--force left some files as they were"


def test_dry_run_lists_and_writes_nothing(batch, tmp_path, scenes):
    cfg, inputs, outputs = batch
    change_pixels(inputs["b"])
    shutil.copy(scenes["d"], tmp_path / "in" / "d.tif")
    before = snapshot(tmp_path)
    conf = load_config(cfg)
    with ComputeCounter() as counter:
        result = run_batch(conf, dry_run=True)
    assert counter.computes == 0
    assert {j.output.name: j.verdict.status for j in result.jobs} == {
        "a_classes.tif": "up to date", "b_classes.tif": "changed", "c_classes.tif": "up to date",
        "d_classes.tif": "new"}
    proc = sceneclass("run", cfg, "--dry-run", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout
    out = tmp_path / "out"
    assert f"up to date {out / 'a_classes.tif'}" in text
    assert f"changed    {out / 'b_classes.tif'}" in text
    assert f"up to date {out / 'c_classes.tif'}" in text
    assert f"new        {out / 'd_classes.tif'}" in text
    assert len([ln for ln in text.splitlines() if ln.strip()]) == 4, text
    assert snapshot(tmp_path) == before  # nothing written, not even the lock or a manifest


# ------------------------------------------------------------------------- the lock
def test_second_concurrent_run_is_refused(tmp_path, scenes):
    """The first run reads its first input from a slow HTTP server (it answers only when the test
    lets it), so it is certainly still running, lock held, while the second one starts."""
    inp, served = tmp_path / "in", tmp_path / "served"
    inp.mkdir()
    served.mkdir()
    for name in ("a", "b"):
        shutil.copy(scenes[name], inp / f"{name}.tif")
    shutil.copy(scenes["c"], served / "c.tif")
    gate = threading.Event()
    with http_server(served, gate=gate) as (base, stats):
        cfg = write_config(tmp_path / "job.yaml", inputs=[f"{base}/c.tif", "in/*.tif"],
                           output={"folder": "out", "path": "{stem}.tif"})
        lock = tmp_path / "out" / LOCK_NAME
        first = start_sceneclass("run", cfg, cwd=tmp_path)
        try:
            held = wait_for(lambda: lock.exists() and f"pid {first.pid} " in lock.read_text(), timeout=60,
                            interval=0.02, proc=first)
            assert held, "the first run never took the lock: " + "".join(first.communicate())
            t0 = time.monotonic()
            second = sceneclass("run", cfg, cwd=tmp_path, timeout=60)
            seconds = time.monotonic() - t0
            first_running = first.poll() is None
            gate.set()
            out1, err1 = first.communicate(timeout=120)
        finally:
            gate.set()
            kill(first)
    assert first_running
    assert second.returncode == 3, second.stdout + second.stderr
    assert seconds < 20, f"the refused run took {seconds:.1f} s"
    msg = second.stderr.strip()
    assert len(msg.splitlines()) == 1 and msg.startswith("sceneclass: error:"), msg
    assert "another sceneclass run" in msg and f"pid {first.pid}" in msg
    assert second.stdout == ""

    assert first.returncode == 0, err1
    assert "3 done, 0 up to date, 0 failed" in out1
    assert stats.snapshot()["status"].get(206, 0) > 0  # it did read the URL
    for name, src in (("a", inp / "a.tif"), ("b", inp / "b.tif"), ("c", served / "c.tif")):
        np.testing.assert_array_equal(read_classes(tmp_path / "out" / f"{name}.tif"),
                                      expected_equal_interval(src, COUNT, 0))
    assert not partials(tmp_path / "out")


# ---------------------------------------------------------------------- refusals
@pytest.mark.parametrize("output, extra", [
    pytest.param({"folder": "out", "path": "../{stem}.tif"}, {}, id="dotdot-with-folder"),
    pytest.param({"folder": "out", "path": "ABS/{stem}.tif"}, {}, id="absolute-with-folder"),
    pytest.param({"path": "out/{name}/../../x_{stem}.tif"}, {}, id="render-escapes"),
    pytest.param({"folder": "out", "path": "{stem}_{sensor}.tif"}, {}, id="unknown-placeholder"),
    pytest.param({"folder": "out", "path": "{stem}.tif"}, {"colour": "red"}, id="unknown-key"),
])
def test_bad_templates_and_keys_are_refused_before_any_work(output, extra, tmp_path, scenes):
    inp = tmp_path / "in"
    inp.mkdir()
    for name in ("a", "b"):
        shutil.copy(scenes[name], inp / f"{name}.tif")
    output = {k: (v.replace("ABS", str(tmp_path / "elsewhere")) if isinstance(v, str) else v)
              for k, v in output.items()}
    cfg = write_config(tmp_path / "job.yaml", inputs=["in/*.tif"], output=output, **extra)
    before = snapshot(tmp_path)
    dirs = sorted(p for p in tmp_path.rglob("*") if p.is_dir())

    proc = sceneclass("run", cfg, cwd=tmp_path)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    msg = proc.stderr.strip()
    assert len(msg.splitlines()) == 1 and msg.startswith("sceneclass: error:"), msg
    assert "output" in msg or "colour" in msg
    assert snapshot(tmp_path) == before
    assert sorted(p for p in tmp_path.rglob("*") if p.is_dir()) == dirs, "a folder was created"

    with ComputeCounter() as counter, pytest.raises(ConfigError):
        run_batch(load_config(cfg))
    assert counter.computes == 0
    assert snapshot(tmp_path) == before


# ------------------------------------------------------------------------- logging
def test_json_log_format_and_log_file(tmp_path, scenes):
    cfg = write_config(tmp_path / "job.yaml", input=str(scenes["a"]), output={"path": "out/a.tif"})
    logfile = tmp_path / "logs" / "run.jsonl"
    logfile.parent.mkdir()
    proc = sceneclass("run", cfg, "--log-format", "json", "--log-file", logfile, "-v", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.splitlines()
    assert lines, "no log output"
    records = []
    for ln in lines:
        rec = json.loads(ln)  # every stderr line is one JSON object
        assert isinstance(rec, dict) and {"time", "level", "logger", "message"} <= rec.keys(), ln
        records.append(rec)
    assert any(r["message"] == f"wrote {tmp_path / 'out' / 'a.tif'}" for r in records)
    file_records = [json.loads(ln) for ln in logfile.read_text(encoding="utf-8").splitlines()]
    assert [r["message"] for r in file_records] == [r["message"] for r in records]


def test_json_log_format_with_a_failing_single_input(tmp_path):
    shutil.copy(data_path(CORRUPT), tmp_path / "corrupt.tif")
    cfg = write_config(tmp_path / "job.yaml", input="corrupt.tif", output={"path": "out/c.tif"})
    logfile = tmp_path / "run.jsonl"
    proc = sceneclass("run", cfg, "--log-format", "json", "--log-file", logfile, cwd=tmp_path)
    assert proc.returncode == 1
    records = [json.loads(ln) for ln in proc.stderr.splitlines()]  # every line is JSON
    assert any(r["level"] == "ERROR" and "corrupt.tif" in r["message"] for r in records)
    assert any("corrupt.tif" in json.loads(ln)["message"] and json.loads(ln)["level"] == "ERROR"
               for ln in logfile.read_text().splitlines())
