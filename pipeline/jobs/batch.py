"""Batches: expand ``inputs`` (paths and globs) into one job per scene, skip what is up to date,
run the rest, record every outcome in a manifest. One bad scene does not stop the batch.

Safe to run every night from cron: outputs appear only when complete; temporaries of a
killed run are swept by the next; a second run writing into the same output folder, or a
folder inside or above it, exits at once while the first holds the lock
(:mod:`pipeline.jobs.lock`); an input that changes while its scene runs fails that scene.
"""

from __future__ import annotations

import datetime as dt
import gc
import glob
import logging
import os
import re
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from . import interrupt
from .atomic import Staging, output_errors, remove, sweep
from .collisions import check_collisions, read_paths
from .checksum import identity, lowest_priority
from .config import InputSpec, RunConfig, check_suffix
from .lock import LOCK_NAME, LockedError, folder_lock  # noqa: F401  (LockedError: re-exported)
from ..errors import BUG_EXIT_CODE, ConfigError, OutputError, SceneclassError, output_error  # noqa: F401
from ..scene import is_url
from .manifest import (
    Verdict, config_hash, failure_path, fingerprint, judge, manifest_path, output_fingerprint, versions,
    write_manifest,
)
from ..products.extras import requested_paths
from ..products.index import index_path
from ..urls import redact, redact_text
from ..writers.legend import legend_path

log = logging.getLogger(__name__.replace("pipeline", "sceneclass", 1))

_LANDSAT_DATE = re.compile(r"_(\d{4})(\d{2})(\d{2})_")


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
    index: Path | None = None  # the batch index written (outputs.report in a batch)
    index_error: str | None = None  # why it could not be written (exit code 4)

    @property
    def failed(self) -> list[Job]:
        return [j for j in self.jobs if j.status == "failed"]

    @property
    def exit_code(self) -> int:
        if self.index_error is not None:
            return OutputError.exit_code
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
    try:
        check_suffix(rel, cfg.output.resolved_format)
    except ValueError as e:
        raise ConfigError(f"{e} (for {redact(path)})") from None
    folder = output_folder(cfg).resolve()
    target = (folder / rel) if cfg.output.folder else Path(rel)
    resolved = target.resolve()
    if not resolved.is_relative_to(folder) or resolved == folder:
        raise ConfigError(f"output.path: {cfg.output.path!r} for {path} resolves to {resolved}, outside {folder}")
    return resolved


def plan(cfg: RunConfig) -> list[Job]:
    """One job per input, before any work starts: outputs rendered (inside the output folder),
    and every path the jobs write (outputs, legends, manifests, extras, the lock file) checked
    against every path they read (inputs and their sidecars) and against each other
    (:func:`pipeline.jobs.collisions.check_collisions`). Reads no pixels and writes nothing.

    Raises
    ------
    ConfigError
        An output escapes the folder, two jobs write one file, a written path is a read one,
        or no input matched.
    """
    jobs, owners = [], {}
    for path, spec in expand_inputs(cfg):
        update = {"input": path, "inputs": None}
        if spec is not None:
            update.update(spec.overrides())
        band = update.get("band", cfg.band)
        out = render_output(cfg, path, band)
        if out in owners:
            raise ConfigError(f"output.path: {redact(owners[out])} and {redact(path)} would both write {out}; "
                              "add {stem} to the template")
        owners[out] = path
        job_cfg = cfg.model_copy(update=update | {"output": cfg.output.model_copy(update={"path": str(out), "folder": None})})
        jobs.append(Job(job_cfg, out))
    if not jobs:
        raise ConfigError("inputs: no input matched")
    writes = [(run_folder(cfg, jobs) / LOCK_NAME, "the output folder's lock file", False)]
    if writes_index(cfg):
        writes.append((index_path(run_folder(cfg, jobs)), "the batch index", False))
    for job in jobs:
        writes += written_paths(job)
    check_collisions(writes, [r for job in jobs for r in read_paths(job.config.input)])
    return jobs


def writes_index(cfg: RunConfig) -> bool:
    """Does the run write the batch index (``index.html`` in the output folder)? A batch
    (``inputs:``) with ``outputs.report``."""
    return cfg.inputs is not None and cfg.outputs.report


def run_folder(cfg: RunConfig, jobs: list[Job]) -> Path:
    """The folder a run locks: the batch's output folder, or a single output's folder."""
    return output_folder(cfg).resolve() if cfg.inputs is not None else jobs[0].output.parent


def written_paths(job: Job) -> list[tuple[Path, str, bool]]:
    """Every path a job writes: (path, what it is, whether it is a folder replaced as a whole)."""
    out = job.output
    paths = [(out, f"output for {job.config.input}", job.config.output.resolved_format == "zarr")]
    paths.append((manifest_path(out), f"manifest of {out.name}", False))
    if job.config.output.legend:
        paths.append((legend_path(out), f"legend of {out.name}", False))
    paths += [(p, f"{key.replace('_', ' ')} of {out.name}", False)
              for key, p in requested_paths(out, job.config.outputs).items()]
    return paths


def check(cfg: RunConfig) -> list[Job]:
    """Everything a run checks without reading pixels, for every job of ``cfg``: the plan
    (outputs rendered, inside their folder, named for their format, not colliding), then per job
    :func:`pipeline.jobs.run.preflight` with the input's header (the file opens, the band exists).

    Parameters
    ----------
    cfg : RunConfig
        A validated config.

    Returns
    -------
    list of Job
        The planned jobs.

    Raises
    ------
    ConfigError, InputError
        The first problem found, naming the key or the file.
    """
    from .run import preflight

    jobs = plan(cfg)
    for job in jobs:
        preflight(job.config, header=True)
    return jobs


def side_files(job: Job) -> list[Path]:
    return [legend_path(job.output)] if job.config.output.legend else []


# ------------------------------------------------------------------------ running
def _failure(e: BaseException, job: Job) -> tuple[str, int]:
    """(one line, exit code) for an exception that ended ``job``'s run."""
    if isinstance(e, SceneclassError):
        return str(e), e.exit_code
    if isinstance(e, OSError):
        if e.filename is not None and str(e.filename) == job.config.input:
            return f"{job.config.input}: cannot read the input: {e.strerror or e}", 1
        err = output_error(e, job.output)
        return str(err), err.exit_code
    return (f"{job.config.input} -> {job.output}: internal error (a bug in sceneclass): {type(e).__name__}: {e}; "
            "rerun with -vv for the traceback and report it"), BUG_EXIT_CODE


def _record(job: Job, started: float, input_fp: dict | None) -> None:
    leg = job.result.legend if job.result is not None else None
    data = {
        "status": job.status,
        "error": job.error,
        "input": redact(job.config.input),
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
    its error to ``NAME.failed.json``. An input that changed while the job read it (passes or
    checksum) fails the job before anything is committed. SIGINT/SIGTERM (``KeyboardInterrupt``)
    propagate after the temporaries are removed."""
    from .run import input_changed, prepare, run

    started = time.time()
    known = job.verdict.input_fp if job.verdict else None
    # the input's checksum is read in a background thread while the passes run (hashlib
    # releases the GIL), at the lowest CPU priority: it takes the cycles the passes leave idle
    # and finishes at full speed after them if it must (the command starts it even earlier:
    # pipeline.jobs.checksum.start_for_config, and this thread then waits for that result)
    before = identity(job.config.input)  # the checksum and the passes must all see this file
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
            input_fp = _input_fp(known, pending)
            if before is not None and identity(job.config.input) != before:
                # replaced or rewritten while the checksum read it, after the passes' own check
                raise input_changed(job.config.input)
            job.status = "done"
            job.seconds = time.time() - started
            with output_errors(job.output):
                _record(job, started, input_fp)  # staged last: committed after everything else
        staging.commit()
        remove(failure_path(job.output))
    except Exception as e:  # one bad scene must not stop the batch
        stopped = interrupt.received()
        if stopped is not None:  # a signal cut into a library, which then failed: the signal it is
            raise interrupt.Interrupted(stopped) from None
        if before is not None and identity(job.config.input) != before:
            # replaced or rewritten while it was read: whatever the read made of it (a truncated
            # file reads as damaged), this is the error
            e = input_changed(job.config.input)
        _failed(job, e)
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


def _failed(job: Job, e: Exception) -> None:
    message, code = _failure(e, job)
    job.status, job.error, job.exit_code = "failed", redact_text(message), code
    if not isinstance(e, SceneclassError):
        log.debug("%s", job.error, exc_info=True)  # -vv: the traceback


def _input_fp(known: dict | None, pending) -> dict | None:
    try:
        return known or pending.result()
    except OSError:
        return None  # missing input: the run failed and said so


def _record_failure(job: Job, started: float, input_fp: dict | None) -> None:
    """The error of a failed run in ``NAME.failed.json`` (best effort: the disk may be full)."""
    data = {"status": "failed", "error": job.error, "exit_code": job.exit_code, "input": redact(job.config.input),
            "output": str(job.output), "config_hash": config_hash(job.config), "input_fingerprint": input_fp,
            "versions": versions(), "started": dt.datetime.fromtimestamp(started).isoformat(timespec="seconds"),
            "seconds": round(job.seconds, 3)}
    try:
        write_manifest(failure_path(job.output), data)
    except OSError as e:  # the error line says it all; an older record must not stand for this run
        remove(failure_path(job.output))
        log.info("%s: could not record the failure (%s)", failure_path(job.output), e.strerror or e)


def run_batch(cfg: RunConfig, *, force: bool = False, dry_run: bool = False) -> BatchResult:
    """Plan, check every job's config, lock the output folders, restore or sweep what
    interrupted runs left, judge each output, run what is not up to date; then, for a batch
    with ``outputs.report``, write the batch index (every time: it says what this run found)."""
    from .run import preflight

    jobs = plan(cfg)
    for job in jobs:  # config problems refuse the whole run before anything is locked or written
        preflight(job.config)
    folder = run_folder(cfg, jobs)
    if dry_run:
        _judge(jobs, force)
        return BatchResult(jobs)
    with folder_lock(folder, {j.output.parent for j in jobs}):
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
        result = BatchResult(jobs)
        if writes_index(cfg):
            _write_index(folder, result)
    return result


def _write_index(folder: Path, result: BatchResult) -> None:
    from ..products.index import write_index

    try:
        result.index = write_index(folder, result.jobs)
    except OutputError as e:  # the scenes are in place; the index is the run's one failure
        result.index_error = str(e)


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
