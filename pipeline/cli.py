"""The ``sceneclass`` command: parse arguments, set up logging, call the library."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from . import __version__

log = logging.getLogger("sceneclass")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sceneclass", description=__doc__.splitlines()[0])
    p.add_argument("--version", action="version", version=f"sceneclass {__version__}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    common.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    common.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                        help="progress bars on stderr (default: when stderr is a terminal)")
    common.add_argument("--log-file", metavar="PATH", help="also append log records to this file")
    common.add_argument("--log-format", choices=("text", "json"), default="text",
                        help="json: one JSON object per log record (for schedulers)")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", parents=[common], help="classify a scene as a YAML config says")
    run.add_argument("config", help="YAML config file")
    run.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY.PATH=VALUE",
                     help="override a config value, e.g. --set classes.count=10 (repeatable)")
    run.add_argument("--force", action="store_true", help="redo outputs even when their manifest says up to date")
    run.add_argument("--dry-run", action="store_true", help="list what would be done and why; touch nothing")
    run.add_argument("--scheduler", metavar="NAME|ADDRESS",
                     help="dask scheduler: threads, processes, synchronous, local or tcp://host:8786 "
                          "(same as --set dask.scheduler=...)")

    val = sub.add_parser("validate", parents=[common], help="check a config without reading pixels")
    val.add_argument("config")
    val.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY.PATH=VALUE")

    demo = sub.add_parser("demo", parents=[common],
                          help="generate a Landsat-sized scene and classify it (the built-in default job)")
    demo.add_argument("--out", default="sceneclass-demo", help="folder for the scene and outputs")
    demo.add_argument("--size", default="1x", help="scene size: 1x (7811 x 7931), 4x, 16x or HxW")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY.PATH=VALUE")
    return p


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message (and exception, if any)."""

    def format(self, record: logging.LogRecord) -> str:
        import json

        data = {"time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"), "level": record.levelname,
                "logger": record.name, "message": record.getMessage()}
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        return json.dumps(data)


def _setup_logging(args) -> None:
    level = logging.WARNING if args.quiet else (logging.DEBUG if args.verbose > 1 else logging.INFO)
    fmt = (JsonFormatter() if args.log_format == "json"
           else logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
    handlers = [logging.StreamHandler(sys.stderr)]
    if args.log_file:
        handlers.append(logging.FileHandler(args.log_file, encoding="utf-8"))
    for h in handlers:
        h.setFormatter(fmt)
    root = logging.getLogger("sceneclass")
    root.handlers[:] = handlers
    root.setLevel(level)
    root.propagate = False
    logging.captureWarnings(True)
    logging.getLogger("py.warnings").handlers[:] = handlers


def _report(batch, dry_run: bool) -> None:
    """What happened to each output, on stdout."""
    for job in batch.jobs:
        if dry_run:
            print(f"{job.verdict.status:<10} {job.output}  ({job.verdict.reason})")
        elif job.status == "failed":
            print(f"failed     {job.output}  ({job.error})")
        else:
            print(f"{job.status:<10} {job.output}")
    if len(batch.jobs) > 1 and not dry_run:
        counts = {s: sum(j.status == s for j in batch.jobs) for s in ("done", "skipped", "failed")}
        print(f"{counts['done']} done, {counts['skipped']} up to date, {counts['failed']} failed")


def _fail(args, message: str, code: int) -> int:
    """One error line: JSON on stderr in json mode, else plain; always into --log-file too."""
    if args.log_format == "json":
        log.error("%s", message)
        return code
    print(f"sceneclass: error: {message}", file=sys.stderr)
    if args.log_file:
        with open(args.log_file, "a", encoding="utf-8") as f:
            f.write(f"sceneclass: error: {message}\n")
    return code


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    _setup_logging(args)
    from .jobs.interrupt import Interrupted, stop_on_signals

    try:
        with stop_on_signals():  # SIGINT and SIGTERM stop the run through its cleanup (exit 130 / 143)
            return _main(args)
    except Interrupted as e:  # arrived after the run's own handling
        return _interrupted(args, e.signum, e.exit_code)


def _interrupted(args, signum: int, code: int) -> int:
    import signal

    name = signal.Signals(signum).name
    return _fail(args, f"stopped by {name}; temporaries removed, previous outputs unchanged", code)


def _main(args) -> int:
    from .errors import SceneclassError
    from .jobs.interrupt import Interrupted, received

    progress = sys.stderr.isatty() if args.progress is None else args.progress
    if args.command == "run" and not args.dry_run:
        from .jobs.checksum import start_for_config

        start_for_config(args.config, args.overrides)  # hashes the input while the libraries import
    try:
        from .jobs.config import load_config

        if args.command == "validate":
            cfg = load_config(args.config, args.overrides)
            print(cfg.model_dump_json(indent=2))
            return 0
        from contextlib import nullcontext

        from .jobs.batch import run_batch
        from .jobs.progress import TqdmProgress

        if args.command == "demo":
            from .jobs.demo import demo_config

            cfg = demo_config(args.out, args.size, args.seed, args.overrides)
        else:
            overrides = list(args.overrides)
            if args.scheduler:
                overrides.append(f"dask.scheduler={args.scheduler}")
            cfg = load_config(args.config, overrides)
        force, dry_run = getattr(args, "force", False), getattr(args, "dry_run", False)
        with TqdmProgress() if progress else nullcontext():
            batch = run_batch(cfg, force=force, dry_run=dry_run)
        if cfg.input is not None and batch.failed:  # a single scene: its error is the message
            return _fail(args, batch.failed[0].error, batch.failed[0].exit_code)
        _report(batch, dry_run)
        return batch.exit_code
    except SceneclassError as e:
        if received() is not None:  # a signal cut into the run before this error
            return _interrupted(args, received(), 128 + received())
        return _fail(args, str(e), e.exit_code)
    except Interrupted as e:
        return _interrupted(args, e.signum, e.exit_code)
    except KeyboardInterrupt:  # raised by other code than our handler
        return _interrupted(args, 2, 130)


def entry() -> None:
    """Console entry point: run, flush, and leave without the interpreter's slow teardown
    (every file is closed and every pool shut down by then; atexit hooks have nothing to do)."""
    from ._engine.deferred import hide

    hide()  # dask.array would import xarray and scipy (0.7 s) that a COG run does not use
    code = main()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
