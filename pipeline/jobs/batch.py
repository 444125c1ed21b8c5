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
from .. import storage
from .atomic import PARTIAL_TAG, Staging, output_errors, remove, sweep
from .collisions import check_collisions, read_paths
from .checksum import lowest_priority
from .config import InputSpec, RunConfig, check_suffix
from .lock import LOCK_NAME, LockedError, folder_lock  # noqa: F401  (LockedError: re-exported)
from ..errors import BUG_EXIT_CODE, ConfigError, OutputError, SceneclassError, output_error  # noqa: F401
from ..scene import is_url
from .manifest import (
    Verdict, config_hash, failure_path, input_fingerprint, judge, manifest_path, output_fingerprint, versions,
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
    mosaic: object = None  # the grid of a mosaic job (pipeline.mosaic.Mosaic), from the inputs' headers


@dataclass
class BatchResult:
    jobs: list[Job] = field(default_factory=list)
    shared: object = None  # SharedEdges of ``classes.fit: together`` (None: each scene its own)
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
    """The folder every output must stay inside: ``output.folder``, or the template's literal
    folder; for object storage, the local shadow folder that stands for that prefix
    (:func:`pipeline.storage.mount`)."""
    if cfg.output.folder:
        folder = cfg.output.folder
        return storage.mount(folder) if storage.is_remote(folder) else Path(folder)
    literal = cfg.output.path.split("{", 1)[0] + "x"
    if storage.is_remote(literal):
        return storage.mount(storage.url_parent(literal))
    return Path(literal).parent


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
    if cfg.output.folder:
        target = folder / rel
    elif storage.is_remote(rel):  # under the shadow folder of the template's literal prefix
        prefix = storage.remote_of(folder)
        if not rel.startswith(prefix + "/"):
            raise ConfigError(f"output.path: {cfg.output.path!r} for {path} leaves {redact(prefix)}")
        target = folder / rel[len(prefix) + 1:]
    else:
        target = Path(rel)
    resolved = target.resolve()
    if not resolved.is_relative_to(folder) or resolved == folder:
        raise ConfigError(f"output.path: {cfg.output.path!r} for {path} resolves to {storage.display(resolved)}, "
                          f"outside {storage.display(folder)}")
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
    if cfg.bands is not None:  # one derived band: one job reading every band file
        first = next(iter(cfg.bands.values()))
        out = render_output(cfg, first.path, first.band or 1)
        jobs = [Job(cfg.model_copy(update={"output": cfg.output.model_copy(update={"path": str(out), "folder": None})}),
                    out)]
        _check_plan(cfg, jobs)
        return jobs
    jobs, owners = ([mosaic_job(cfg)] if cfg.output.mosaic else []), {}
    for path, spec in ([] if cfg.output.mosaic else expand_inputs(cfg)):
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
    _check_plan(cfg, jobs)
    return jobs


def _check_plan(cfg: RunConfig, jobs: list[Job]) -> None:
    """No written path is a read one (every file a job reads: its input or band files, and
    their sidecars) or another written one."""
    writes = [(run_folder(cfg, jobs) / LOCK_NAME, "the output folder's lock file", False)]
    if writes_index(cfg):
        writes.append((index_path(run_folder(cfg, jobs)), "the batch index", False))
    for job in jobs:
        writes += written_paths(job)
    check_collisions(writes, [r for job in jobs for path in job.config.sources for r in read_paths(path)])


def mosaic_job(cfg: RunConfig) -> Job:
    """The one job of a mosaic: every input (globs expanded, in the order given) on one grid,
    laid out from their headers (:func:`pipeline.mosaic.plan_mosaic`); no pixel is read.

    Raises
    ------
    ConfigError
        No input matched, or an input's CRS, resolution, pixel grid, data type or pixel
        settings (nodata, scale/offset, units) differ.
    InputError
        An input is missing or unreadable.
    """
    from ..mosaic import label, open_mosaic, plan_mosaic

    entries = expand_inputs(cfg)
    if not entries:
        raise ConfigError("inputs: no input matched")
    inputs = [InputSpec(path=p, band=spec.band) if spec is not None and spec.band is not None else p
              for p, spec in entries]
    job_cfg = cfg.model_copy(update={"inputs": inputs})
    grid = plan_mosaic(job_cfg.members, cfg.output.order)
    # the pixel settings every input must agree on (nodata, scale/offset, units), from the headers
    open_mosaic(grid, cfg.nodata, cfg.processing.chunk, cfg.output.blocksize, valid_range=cfg.valid_range,
                gdal_mask=cfg.gdal_mask, scale=cfg.scale, offset=cfg.offset, units=cfg.units)
    out = render_output(cfg, label(len(inputs)), cfg.band)
    job_cfg = job_cfg.model_copy(update={"output": cfg.output.model_copy(update={"path": str(out), "folder": None})})
    return Job(job_cfg, out, mosaic=grid)


def writes_index(cfg: RunConfig) -> bool:
    """Does the run write the batch index (``index.html`` in the output folder)? A batch
    (``inputs:``, not a mosaic: that is one output with its own report) with ``outputs.report``."""
    return cfg.inputs is not None and not cfg.output.mosaic and cfg.outputs.report


def run_folder(cfg: RunConfig, jobs: list[Job]) -> Path:
    """The folder a run locks: the batch's output folder, or a single output's folder."""
    return output_folder(cfg).resolve() if cfg.inputs is not None else jobs[0].output.parent


def written_paths(job: Job) -> list[tuple[Path, str, bool]]:
    """Every path a job writes: (path, what it is, whether it is a folder replaced as a whole)."""
    out = job.output
    paths = [(out, f"output for {job.config.label}", job.config.output.resolved_format == "zarr")]
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

    storage.activate(cfg.storage.access())
    jobs = plan(cfg)
    for job in jobs:
        preflight(job.config, header=True)
    for prefix in sorted({storage.remote_of(j.output.parent) for j in jobs} - {None}):
        storage.check_reachable(prefix)
    return jobs


def side_files(job: Job) -> list[Path]:
    return [legend_path(job.output)] if job.config.output.legend else []


# ------------------------------------------------------------------------ running
def _failure(e: BaseException, job: Job) -> tuple[str, int]:
    """(one line, exit code) for an exception that ended ``job``'s run."""
    if isinstance(e, SceneclassError):
        return str(e), e.exit_code
    if isinstance(e, OSError):
        if e.filename is not None and str(e.filename) in job.config.sources:
            return f"{e.filename}: cannot read the input: {e.strerror or e}", 1
        err = output_error(e, job.output)
        return str(err), err.exit_code
    return (f"{job.config.label} -> {job.output}: internal error (a bug in sceneclass): {type(e).__name__}: {e}; "
            "rerun with -vv for the traceback and report it"), BUG_EXIT_CODE


def _record(job: Job, started: float, input_fp: dict | None) -> None:
    leg = job.result.legend if job.result is not None else None
    data = {
        "status": job.status,
        "error": job.error,
        "input": redact(job.config.label),
        **_inputs(job),
        "output": storage.display(job.output),
        "config_hash": config_hash(job.config),
        "input_fingerprint": input_fp,
        "output_fingerprint": output_fingerprint(job.output) if job.status == "done" else None,
        "versions": versions(),
        "started": dt.datetime.fromtimestamp(started).isoformat(timespec="seconds"),
        "seconds": round(job.seconds, 3),
    }
    if leg:
        data.update(scheme=leg["scheme"], edges=leg["edges"],
                    counts=[c["count"] for c in leg["classes"]], nodata_pixels=leg["nodata_pixels"],
                    outside_pixels=leg["outside_pixels"])
        for key in ("fit", "fitted_on", "edges_from"):  # the edges depend on these inputs / that legend
            if key in leg:
                data[key] = leg[key]
    write_manifest(manifest_path(job.output), data)


def _inputs(job: Job) -> dict:
    """A mosaic's inputs for its manifest (``inputs``); nothing for one input."""
    return {"inputs": [redact(p) for p in job.config.sources]} if job.config.output.mosaic else {}


def run_job(job: Job, log_errors: bool = True, shared=None) -> None:
    """Run one job and record it: on success the output, legend, side files and manifest are
    put in place together (the manifest last); a run refused before writing changes nothing;
    a failed run removes its temporaries, keeps the previous output and manifest, and writes
    its error to ``NAME.failed.json``. An input that changed while the job read it (passes or
    checksum) fails the job before anything is committed. SIGINT/SIGTERM (``KeyboardInterrupt``)
    propagate after the temporaries are removed. ``shared``: the batch's shared edges
    (:class:`pipeline.jobs.shared.SharedEdges`), passed to :func:`pipeline.jobs.run.run`."""
    from .run import changed_source, identities, input_changed, prepare, run

    started = time.time()
    known = job.verdict.input_fp if job.verdict else None
    # the input's checksum is read in a background thread while the passes run (hashlib
    # releases the GIL), at the lowest CPU priority: it takes the cycles the passes leave idle
    # and finishes at full speed after them if it must (the command starts it even earlier:
    # pipeline.jobs.checksum.start_for_config, and this thread then waits for that result)
    before = identities(job.config)  # the checksum and the passes must all see these files
    pool = ThreadPoolExecutor(1, thread_name_prefix="sceneclass-checksum", initializer=lowest_priority)
    pending = None if known else pool.submit(input_fingerprint, job.config)
    pool.shutdown(wait=False)
    refused = True
    staging = Staging()
    remote = storage.remote_of(job.output)
    try:
        prepared = prepare(job.config)
        refused = False
        with staging.active():
            job.result = run(job.config, prepared, shared=shared)
            input_fp = _input_fp(known, pending)
            changed = changed_source(before)
            if changed is not None:
                # replaced or rewritten while the checksum read it, after the passes' own check
                raise input_changed(changed)
            job.status = "done"
            job.seconds = time.time() - started
            if remote is None:
                with output_errors(job.output):
                    _record(job, started, input_fp)  # staged last: committed after everything else
        staging.commit()
        if remote is not None:  # the manifest records the uploaded objects' fingerprints: after them
            with output_errors(job.output):
                _record(job, started, input_fp)
            storage.remove(storage.remote_of(failure_path(job.output)))
        remove(failure_path(job.output))
    except Exception as e:  # one bad scene must not stop the batch
        stopped = interrupt.received()
        if stopped is not None:  # a signal cut into a library, which then failed: the signal it is
            raise interrupt.Interrupted(stopped) from None
        changed = changed_source(before)
        if changed is not None:
            # replaced or rewritten while it was read: whatever the read made of it (a truncated
            # file reads as damaged), this is the error
            e = input_changed(changed)
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
    data = {"status": "failed", "error": job.error, "exit_code": job.exit_code, "input": redact(job.config.label),
            **_inputs(job), "output": storage.display(job.output), "config_hash": config_hash(job.config), "input_fingerprint": input_fp,
            "versions": versions(), "started": dt.datetime.fromtimestamp(started).isoformat(timespec="seconds"),
            "seconds": round(job.seconds, 3)}
    try:
        write_manifest(failure_path(job.output), data)
    except (OSError, OutputError) as e:  # the error line says it all; an older record must not stand for this run
        remove(failure_path(job.output))
        log.info("%s: could not record the failure (%s)", failure_path(job.output), getattr(e, "strerror", None) or e)


def run_batch(cfg: RunConfig, *, force: bool = False, dry_run: bool = False) -> BatchResult:
    """Plan, check every job's config, lock the output folders, restore or sweep what
    interrupted runs left, judge each output, run what is not up to date; then, for a batch
    with ``outputs.report``, write the batch index (every time: it says what this run found).

    Outputs in object storage are not locked: two runs writing into one prefix at the same
    time are not protected from each other."""
    activate_storage(cfg)
    try:
        return _run_batch(cfg, force, dry_run)
    finally:
        storage.unmount_all()


def activate_storage(cfg: RunConfig) -> None:
    """Make ``cfg.storage`` the run's object-storage settings (:func:`pipeline.storage.activate`).
    Credentials are looked up when the run first touches object storage (its checks do, before
    anything is locked or written), so that a run on local files never pays for the lookup;
    settings given in the config are resolved at once, so a profile that does not exist
    refuses the run whatever it reads."""
    if cfg.storage.model_fields_set:
        storage.activate(cfg.storage.access())
    else:
        storage.activate(cfg.storage.access)


def _run_batch(cfg: RunConfig, force: bool, dry_run: bool) -> BatchResult:
    from .run import preflight

    jobs = plan(cfg)
    for job in jobs:  # config problems refuse the whole run before anything is locked or written
        preflight(job.config)
    for prefix in sorted({storage.remote_of(j.output.parent) for j in jobs} - {None}):
        storage.check_reachable(prefix)  # one line within seconds, before any manifest is looked for
    if cfg.classes.edges_from is not None and not dry_run:  # a foreign legend refuses the whole batch
        from .shared import check_pinned, load_legend, open_all

        pinned = load_legend(cfg.classes.edges_from)
        for scene in open_all([j.config for j in jobs]):
            check_pinned(pinned, scene)
    folder = run_folder(cfg, jobs)
    together = cfg.classes.fit == "together"
    if dry_run:
        _judge(jobs, force, together)
        return BatchResult(jobs)
    shared = None
    with folder_lock(folder, {j.output.parent for j in jobs}):
        for gone in sweep_all({j.output.parent for j in jobs}):
            log.info("removed a temporary left by an interrupted run: %s", gone)
        _judge(jobs, force, together)
        if together and any(j.verdict.status != "up to date" for j in jobs):
            from .shared import fit_together

            shared = fit_together([j.config for j in jobs])
        for job in jobs:
            if job.verdict.status == "up to date":
                job.status = "skipped"
                log.info("%s: up to date (%s)", job.output, job.verdict.reason)
                if job.verdict.input_fp:  # touched but unchanged: remember the new mtime
                    _refresh_fingerprint(job)
                continue
            log.info("%s: %s (%s)", job.output, job.verdict.status, job.verdict.reason)
            run_job(job, log_errors=cfg.inputs is not None, shared=shared)
        result = BatchResult(jobs, shared)
        if writes_index(cfg):
            _write_index(folder, result)
    return result


def _write_index(folder: Path, result: BatchResult) -> None:
    from ..products.index import write_index

    try:
        result.index = write_index(folder, result.jobs)
    except OutputError as e:  # the scenes are in place; the index is the run's one failure
        result.index_error = str(e)


def _judge(jobs: list[Job], force: bool, together: bool = False) -> None:
    for job in jobs:
        job.verdict = Verdict("forced", "--force") if force else judge(job.config, job.output, side_files(job))
    if together and not force:
        judge_together(jobs)


#: verdict reasons that mean the input itself is new or changed (not only its output)
_INPUT_REASONS = ("no manifest", "input changed")


def judge_together(jobs: list[Job]) -> None:
    """Edges fitted on all inputs depend on every one of them: when the set of inputs differs
    from the one each manifest records (an input added or removed), or any input is new or
    changed, every output is redone (each verdict says why); otherwise each keeps its own."""
    from .manifest import read_manifest

    inputs = [redact(j.config.input) for j in jobs]
    recorded = [(read_manifest(manifest_path(j.output)) or {}).get("fitted_on") for j in jobs]
    known = {p for r in recorded if r for p in r}
    added = sum(p not in known for p in inputs)
    removed = len(known - set(inputs))
    changed = sum(j.verdict.status != "up to date" and j.verdict.reason in _INPUT_REASONS
                  and inputs[i] in known for i, j in enumerate(jobs))
    stale = sum(r is not None and r != inputs for r in recorded)
    if not (added or removed or changed or stale) or (not known and all(j.verdict.status == "new" for j in jobs)):
        return  # nothing changed, or a first run (everything is new anyway)
    parts = [f"{n} {what}" for n, what in ((added, "added"), (removed, "removed"), (changed, "changed")) if n]
    why = (f"edges are fitted on all {len(jobs)} inputs: {', '.join(parts) or 'the set of inputs changed'}, "
           f"all {len(jobs)} are redone")
    log.info("%s", why)
    for job in jobs:
        if job.verdict.status == "up to date":
            job.verdict = Verdict("changed", why, job.verdict.input_fp)
        else:
            job.verdict = Verdict(job.verdict.status, f"{job.verdict.reason}; {why}", job.verdict.input_fp)


def sweep_all(folders) -> list[Path]:
    """:func:`pipeline.jobs.atomic.sweep` of each folder; for a remote output's folder, the
    temporaries (staged Zarr stores) killed runs left under its prefix."""
    gone = []
    for f in folders:
        url = storage.remote_of(f)
        if url is not None:
            gone += storage.sweep_remote(url, PARTIAL_TAG)
        elif f.is_dir():
            gone += sweep(f)
    return gone


def _refresh_fingerprint(job: Job) -> None:
    from .manifest import read_manifest

    path = manifest_path(job.output)
    data = read_manifest(path) or {}
    data["input_fingerprint"] = job.verdict.input_fp
    write_manifest(path, data)
