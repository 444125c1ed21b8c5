"""Batches: expand ``inputs`` (paths and globs) into one job per scene, skip what is up to date,
run the rest, record every outcome in a manifest. One bad scene does not stop the batch.

Safe to run every night from cron: outputs appear only when complete; temporaries of a
killed run are swept by the next; a second run of the same output folder exits at once
while the first holds the lock.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import gc
import glob
import logging
import os
import re
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from . import interrupt
from .atomic import Staging, output_errors, remove, sweep
from .checksum import lowest_priority
from .config import InputSpec, RunConfig
from ..errors import ConfigError, SceneclassError
from ..scene import is_url
from .manifest import (
    Verdict, config_hash, failure_path, fingerprint, judge, manifest_path, output_fingerprint, versions,
    write_manifest,
)
from ..writers.legend import legend_path

log = logging.getLogger(__name__.replace("pipeline", "sceneclass", 1))

LOCK_NAME = ".sceneclass.lock"
_LANDSAT_DATE = re.compile(r"_(\d{4})(\d{2})(\d{2})_")


class LockedError(SceneclassError):
    """Another run holds the output folder's lock."""

    exit_code = 3


@dataclass
class Job:
    config: RunConfig  # single input, concrete output path
    output: Path
    verdict: Verdict | None = None
    status: str = "pending"  # pending | skipped | done | failed
    error: str | None = None
    exit_code: int = 0
    seconds: float = 0.0
    result: object = None


@dataclass
class BatchResult:
    jobs: list[Job] = field(default_factory=list)

    @property
    def failed(self) -> list[Job]:
        return [j for j in self.jobs if j.status == "failed"]

    @property
    def exit_code(self) -> int:
        return 1 if self.failed else 0


# ------------------------------------------------------------------ expanding inputs
def expand_inputs(cfg: RunConfig) -> list[tuple[str, InputSpec | None]]:
    """Paths, URLs and glob matches (sorted, de-duplicated) with their per-input settings."""
    if cfg.input is not None:
        return [(cfg.input, None)]
    seen, out = set(), []
    for entry in cfg.inputs:
        spec = entry if isinstance(entry, InputSpec) else None
        pattern = entry.path if spec else entry
        if not is_url(pattern) and glob.has_magic(pattern):
            matches = sorted(glob.glob(pattern))
            if not matches:
                log.warning("inputs: %s matches no file", pattern)
        else:
            matches = [pattern]
        for m in matches:
            if m not in seen:
                seen.add(m)
                out.append((m, spec))
    return out


def scene_date(path: str) -> str:
    """Acquisition date from a Landsat product name (..._YYYYMMDD_...), else the file's mtime date."""
    m = _LANDSAT_DATE.search(Path(path).name)
    if m:
        return "-".join(m.groups())
    try:
        return dt.date.fromtimestamp(os.stat(path).st_mtime).isoformat()
    except OSError:
        return dt.date.today().isoformat()


def output_folder(cfg: RunConfig) -> Path:
    """The folder every output must stay inside: ``output.folder``, or the template's literal folder."""
    if cfg.output.folder:
        return Path(cfg.output.folder)
    return Path(cfg.output.path.split("{", 1)[0] + "x").parent


def render_output(cfg: RunConfig, path: str, band: int) -> Path:
    name = Path(path.split("?", 1)[0]).name
    fields = {"stem": Path(name).stem, "name": name, "band": band,
              "scheme": cfg.classes.scheme, "date": scene_date(path)}
    rel = cfg.output.path.format(**fields)
    folder = output_folder(cfg).resolve()
    target = (folder / rel) if cfg.output.folder else Path(rel)
    resolved = target.resolve()
    if not resolved.is_relative_to(folder) or resolved == folder:
        raise ConfigError(f"output.path: {cfg.output.path!r} for {path} resolves to {resolved}, outside {folder}")
    return resolved


def plan(cfg: RunConfig) -> list[Job]:
    """One job per input, outputs rendered and checked before any work starts."""
    jobs, owners = [], {}
    for path, spec in expand_inputs(cfg):
        update = {"input": path, "inputs": None}
        if spec is not None:
            if spec.band is not None:
                update["band"] = spec.band
            if spec.nodata is not None:
                update["nodata"] = spec.nodata
        band = update.get("band", cfg.band)
        out = render_output(cfg, path, band)
        if out in owners:
            raise ConfigError(f"output.path: {owners[out]} and {path} would both write {out}; add {{stem}} to the template")
        owners[out] = path
        job_cfg = cfg.model_copy(update=update | {"output": cfg.output.model_copy(update={"path": str(out), "folder": None})})
        jobs.append(Job(job_cfg, out))
    if not jobs:
        raise ConfigError("inputs: no input matched")
    return jobs


def side_files(job: Job) -> list[Path]:
    return [legend_path(job.output)] if job.config.output.legend else []


# --------------------------------------------------------------------------- lock
@contextmanager
def folder_lock(folder: Path) -> Iterator[None]:
    """An exclusive, non-blocking lock on the output folder (released if the process dies)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
            raise LockedError(f"{folder}: another sceneclass run is using this output folder ({holder}); not starting") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} since {dt.datetime.now().isoformat(timespec='seconds')}\n".encode(), 0)
        yield
    finally:
        os.close(fd)


# ------------------------------------------------------------------------ running
def _record(job: Job, started: float, input_fp: dict | None) -> None:
    leg = job.result.legend if job.result is not None else None
    data = {
        "status": job.status,
        "error": job.error,
        "input": job.config.input,
        "output": str(job.output),
        "config_hash": config_hash(job.config),
        "input_fingerprint": input_fp,
        "output_fingerprint": output_fingerprint(job.output) if job.status == "done" else None,
        "versions": versions(),
        "started": dt.datetime.fromtimestamp(started).isoformat(timespec="seconds"),
        "seconds": round(job.seconds, 3),
    }
    if leg:
        data.update(scheme=leg["scheme"], edges=leg["edges"],
                    counts=[c["count"] for c in leg["classes"]], nodata_pixels=leg["nodata_pixels"])
    write_manifest(manifest_path(job.output), data)


def run_job(job: Job, log_errors: bool = True) -> None:
    """Run one job and record it: on success the output, legend, side files and manifest are
    put in place together (the manifest last); a run refused before writing changes nothing;
    a failed run removes its temporaries, keeps the previous output and manifest, and writes
    its error to ``NAME.failed.json``. SIGINT/SIGTERM (``KeyboardInterrupt``) propagate after
    the temporaries are removed."""
    from .run import prepare, run

    started = time.time()
    known = job.verdict.input_fp if job.verdict else None
    # the input's checksum is read in a background thread while the passes run (hashlib
    # releases the GIL), at the lowest CPU priority: it takes the cycles the passes leave idle
    # and finishes at full speed after them if it must (the command starts it even earlier:
    # pipeline.checksum.start_for_config, and this thread then waits for that result)
    pool = ThreadPoolExecutor(1, thread_name_prefix="sceneclass-checksum", initializer=lowest_priority)
    pending = None if known else pool.submit(fingerprint, job.config.input)
    pool.shutdown(wait=False)
    refused = True
    staging = Staging()
    try:
        prepared = prepare(job.config)
        refused = False
        with staging.active():
            job.result = run(job.config, prepared)
            job.status = "done"
            input_fp = _input_fp(known, pending)
            job.seconds = time.time() - started
            with output_errors(job.output):
                _record(job, started, input_fp)  # staged last: committed after everything else
        staging.commit()
        remove(failure_path(job.output))
    except Exception as e:  # one bad scene must not stop the batch
        stopped = interrupt.received()
        if stopped is not None:  # a signal cut into a library, which then failed: the signal it is
            raise interrupt.Interrupted(stopped) from None
        if isinstance(e, SceneclassError):
            job.status, job.error, job.exit_code = "failed", str(e), e.exit_code
        else:
            job.status, job.error, job.exit_code = "failed", f"{job.config.input}: {type(e).__name__}: {e}", 1
            log.debug("%s", job.error, exc_info=True)
    finally:
        staging.discard()
    if job.status != "failed":
        return
    # the failure's traceback held the tasks' frames in reference cycles (their chunk buffers,
    # the mapped decoded chunks): free them now, not whenever the collector next runs
    gc.collect()
    if log_errors:
        log.error("%s", job.error)
    if not refused:
        job.seconds = time.time() - started
        _record_failure(job, started, _input_fp(known, pending))


def _input_fp(known: dict | None, pending) -> dict | None:
    try:
        return known or pending.result()
    except OSError:
        return None  # missing input: the run failed and said so


def _record_failure(job: Job, started: float, input_fp: dict | None) -> None:
    """The error of a failed run in ``NAME.failed.json`` (best effort: the disk may be full)."""
    data = {"status": "failed", "error": job.error, "exit_code": job.exit_code, "input": job.config.input,
            "output": str(job.output), "config_hash": config_hash(job.config), "input_fingerprint": input_fp,
            "versions": versions(), "started": dt.datetime.fromtimestamp(started).isoformat(timespec="seconds"),
            "seconds": round(job.seconds, 3)}
    try:
        write_manifest(failure_path(job.output), data)
    except OSError as e:  # the error line says it all; an older record must not stand for this run
        remove(failure_path(job.output))
        log.info("%s: could not record the failure (%s)", failure_path(job.output), e.strerror or e)


def run_batch(cfg: RunConfig, *, force: bool = False, dry_run: bool = False) -> BatchResult:
    """Plan, lock the output folder, restore or sweep what interrupted runs left, judge each
    output, run what is not up to date."""
    jobs = plan(cfg)
    folder = output_folder(cfg).resolve() if cfg.inputs is not None else jobs[0].output.parent
    if dry_run:
        _judge(jobs, force)
        return BatchResult(jobs)
    with folder_lock(folder):
        for gone in sweep_all({j.output.parent for j in jobs}):
            log.info("removed a temporary left by an interrupted run: %s", gone)
        _judge(jobs, force)
        for job in jobs:
            if job.verdict.status == "up to date":
                job.status = "skipped"
                log.info("%s: up to date (%s)", job.output, job.verdict.reason)
                if job.verdict.input_fp:  # touched but unchanged: remember the new mtime
                    _refresh_fingerprint(job)
                continue
            log.info("%s: %s (%s)", job.output, job.verdict.status, job.verdict.reason)
            run_job(job, log_errors=cfg.inputs is not None)
    return BatchResult(jobs)


def _judge(jobs: list[Job], force: bool) -> None:
    for job in jobs:
        job.verdict = Verdict("forced", "--force") if force else judge(job.config, job.output, side_files(job))


def sweep_all(folders) -> list[Path]:
    return [p for f in folders if f.is_dir() for p in sweep(f)]


def _refresh_fingerprint(job: Job) -> None:
    from .manifest import read_manifest

    path = manifest_path(job.output)
    data = read_manifest(path) or {}
    data["input_fingerprint"] = job.verdict.input_fp
    write_manifest(path, data)
