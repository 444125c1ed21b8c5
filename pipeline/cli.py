"""The ``sceneclass`` command: parse arguments, set up logging, call the library."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from . import __version__

log = logging.getLogger("sceneclass")


DESCRIPTION = """\
Classify a satellite raster band into value classes (equal interval, quantile, natural breaks,
...) and write them, coloured, as a Cloud-Optimized GeoTIFF or Zarr store with a JSON legend.
Scenes larger than memory are read and written tile by tile."""

EXIT_CODES = """\
exit codes:
  0    done: every output is complete and correct
  1    an input could not be read (missing, damaged, unsupported)
  2    the config or the command line is wrong
  3    another run holds the output folder's lock
  4    an output could not be written
  5    the data cannot be classified as configured
  70   internal error (a bug: rerun with -vv and report the log)
  130  interrupted (SIGINT, Ctrl-C); 143: terminated (SIGTERM)"""

EPILOG = EXIT_CODES + """

examples:
  sceneclass demo                                   generate a Landsat-sized scene and classify it
  sceneclass classify B10.TIF b10_classes.tif --scheme quantile -k 10 --palette viridis
  sceneclass run job.yaml --set classes.count=10    classify as a YAML config says
  sceneclass COMMAND --help                         the options of one command"""

CLASSIFY_EPILOG = """\
The same run as `sceneclass run` with a config holding input, output.path, band, nodata,
classes and palette: the outputs, legend, manifest and exit codes are identical.

example:
  sceneclass classify LC08_B2.TIF b2_classes.tif --scheme quantile -k 10 --nodata 0

""" + EXIT_CODES


def _common_options() -> argparse.ArgumentParser:
    """Options accepted before or after the command (``sceneclass -v run x.yaml``)."""
    common = argparse.ArgumentParser(add_help=False, argument_default=argparse.SUPPRESS)
    common.add_argument("-v", "--verbose", action="count", help="more log output (-vv for debug)")
    common.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    common.add_argument("--progress", action=argparse.BooleanOptionalAction,
                        help="progress bars on stderr (default: when stderr is a terminal)")
    common.add_argument("--log-file", metavar="PATH", help="also append log records to this file")
    common.add_argument("--log-format", choices=("text", "json"),
                        help="json: one JSON object per log record (for schedulers); default text")
    return common


#: defaults of the common options (filled in after parsing: a subcommand's own defaults would
#: otherwise overwrite what was given before the command)
COMMON_DEFAULTS = {"verbose": 0, "quiet": False, "progress": None, "log_file": None, "log_format": "text"}


def _parser() -> argparse.ArgumentParser:
    fmt = argparse.RawDescriptionHelpFormatter
    common = _common_options()
    p = argparse.ArgumentParser(prog="sceneclass", description=DESCRIPTION, epilog=EPILOG,
                                formatter_class=fmt, parents=[common])
    p.add_argument("--version", action="version", version=f"sceneclass {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add_set(parser: argparse.ArgumentParser, help: str) -> None:
        parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY.PATH=VALUE",
                            help=help)

    def add(name: str, help: str, description: str, epilog: str = EXIT_CODES) -> argparse.ArgumentParser:
        return sub.add_parser(name, parents=[common], help=help, description=description, epilog=epilog,
                              formatter_class=fmt)

    run = add("run", "classify one scene or a batch as a YAML config says",
              "Classify the scene(s) a YAML config names. Outputs appear only when complete; outputs\n"
              "whose manifest says they are up to date are skipped (see --force).")
    run.add_argument("config", help="YAML config file (input or inputs, output.path, classes, palette, ...)")
    add_set(run, "override a config value, e.g. --set classes.count=10 (repeatable)")
    run.add_argument("--force", action="store_true", help="redo outputs even when their manifest says up to date")
    run.add_argument("--dry-run", action="store_true", help="list what would be done and why; touch nothing")
    run.add_argument("--scheduler", metavar="NAME|ADDRESS",
                     help="dask scheduler: threads, processes, synchronous, local or tcp://host:8786 "
                          "(same as --set dask.scheduler=...)")

    cls = add("classify", "classify one raster band without a config file",
              "Classify band --band of IN into OUT (.tif: a COG, .zarr: a Zarr store) with a legend beside it.",
              CLASSIFY_EPILOG)
    cls.add_argument("input", metavar="IN", help="input raster (a path, or an s3://, gs://, az://, abfs:// or http(s):// URL)")
    cls.add_argument("output", metavar="OUT", help="output path or s3:// (gs://, az://, abfs://) URL: NAME.tif (COG) or NAME.zarr")
    cls.add_argument("--scheme", default="equal_interval", metavar="NAME",
                     help="equal_interval (default), quantile, natural_breaks, manual, std_mean, "
                          "head_tail_breaks, percentiles or box_plot")
    cls.add_argument("-k", "--count", type=int, metavar="N",
                     help="number of classes (equal_interval, quantile, natural_breaks; default 20 / 5)")
    cls.add_argument("--breaks", type=_numbers, metavar="E0,E1,...", help="manual: the class edges, increasing")
    cls.add_argument("--multiples", type=_numbers, metavar="M,...",
                     help="std_mean: edges at mean + M x standard deviation (default -2,-1,1,2)")
    cls.add_argument("--pct", type=_numbers, metavar="P,...",
                     help="percentiles: where the classes end, the last 100 (default 1,10,50,90,99,100)")
    cls.add_argument("--hinge", type=float, help="box_plot: fences at this many IQRs (default 1.5)")
    cls.add_argument("--max-classes", type=int, metavar="N", help="head_tail_breaks: at most N classes")
    cls.add_argument("--palette", metavar="NAME", help="colormap: viridis (default), magma, inferno, plasma, "
                                                       "cividis, turbo or any matplotlib name")
    cls.add_argument("--nodata", metavar="VALUE",
                     help="the value that marks missing pixels: a number, 'file' (default: what the file "
                          "declares) or 'none'")
    cls.add_argument("--band", type=int, default=1, metavar="N", help="band to classify, 1-based (default 1)")
    add_set(cls, "any other config value, e.g. --set output.mode=rgba (repeatable)")
    cls.add_argument("--force", action="store_true", help="redo the output even when its manifest says up to date")

    val = add("validate", "check a config without reading pixels",
              "Validate a YAML config (and --set overrides) and print it with every default filled in.\n"
              "Reads no pixels; exit code 2 and one line naming the key when it is wrong.")
    val.add_argument("config", help="YAML config file to check")
    add_set(val, "override a config value before checking (repeatable)")

    demo = add("demo", "generate a Landsat-sized scene and classify it (the built-in default job)",
               "Generate a synthetic Landsat-like uint16 scene (once) and classify it into 20 equal-interval\n"
               "classes coloured with viridis, as a paletted COG with a legend.")
    demo.add_argument("--out", default="sceneclass-demo", help="folder for the scene and outputs (default sceneclass-demo)")
    demo.add_argument("--size", default="1x", help="scene size: 1x (7931 x 7811 pixels, a Landsat band), 4x, 16x, 0.25x or HxW")
    demo.add_argument("--seed", type=int, default=0,
                      help="random seed of the generated scene (same seed, same scene; default 0)")
    add_set(demo, "override a value of the default job, e.g. --set classes.count=10 (repeatable)")
    return p


def _numbers(text: str) -> list[float]:
    """``"1,2.5,3"`` -> [1.0, 2.5, 3.0] (for --breaks, --multiples, --pct)."""
    try:
        return [float(v) for v in text.replace(" ", "").split(",") if v]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of numbers") from None


def classify_config(args):
    """The RunConfig that ``sceneclass classify`` stands for (paths resolve against the current folder)."""
    from pathlib import Path

    from .errors import ConfigError
    from .jobs.config import build_config, parse_override

    classes = {"scheme": args.scheme}
    for key in ("count", "breaks", "multiples", "pct", "hinge", "max_classes"):
        if getattr(args, key) is not None:
            classes[key] = getattr(args, key)
    data = {"input": args.input, "band": args.band, "classes": classes, "output": {"path": args.output}}
    if args.nodata is not None:
        data["nodata"] = parse_override(f"nodata={args.nodata}")[1]
    if args.palette is not None:
        data["palette"] = {"name": args.palette}
    try:
        return build_config(data, base_dir=Path.cwd(), source="classify", overrides=args.overrides)
    except ConfigError as e:  # name the option the user typed: "classes.count" -> "--count"
        raise ConfigError(_option_names(str(e))) from None


#: config keys the classify command sets from its options
CLASSIFY_OPTIONS = {"classes.scheme": "--scheme", "classes.count": "-k/--count", "classes.breaks": "--breaks",
                    "classes.multiples": "--multiples", "classes.pct": "--pct", "classes.hinge": "--hinge",
                    "classes.max_classes": "--max-classes", "palette.name": "--palette", "nodata": "--nodata",
                    "band": "--band", "input": "IN", "output.path": "OUT"}


def _option_names(message: str) -> str:
    """``classify: classes.count: ...`` -> ``classify: -k/--count: ...``."""
    source, _, rest = message.partition(": ")
    key, sep, text = rest.partition(": ")
    return f"{source}: {CLASSIFY_OPTIONS.get(key, key)}{sep}{text}" if sep else message


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message (and exception, if any)."""

    def format(self, record: logging.LogRecord) -> str:
        import json

        data = {"time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"), "level": record.levelname,
                "logger": record.name, "message": record.getMessage()}
        if record.exc_info or record.exc_text:
            data["exception"] = record.exc_text or self.formatException(record.exc_info)
        return json.dumps(data)


def _redact_record(record: logging.LogRecord) -> bool:
    """Logging filter: credentials in URLs never reach a log line (message, arguments, traceback)."""
    from .urls import redact_text

    text = record.getMessage()
    clean = redact_text(text)
    if clean != text:
        record.msg, record.args = clean, None
    if record.exc_info and record.exc_info[1] is not None:
        trace = logging.Formatter().formatException(record.exc_info)
        if redact_text(trace) != trace:
            record.exc_text, record.exc_info = redact_text(trace), None
    return True


def _setup_logging(args) -> None:
    level = logging.WARNING if args.quiet else (logging.DEBUG if args.verbose > 1 else logging.INFO)
    fmt = (JsonFormatter() if args.log_format == "json"
           else logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
    handlers = [logging.StreamHandler(sys.stderr)]
    if args.log_file:
        handlers.append(logging.FileHandler(args.log_file, encoding="utf-8"))
    for h in handlers:
        h.setFormatter(fmt)
        h.addFilter(_redact_record)
    root = logging.getLogger("sceneclass")
    root.handlers[:] = handlers
    root.setLevel(level)
    root.propagate = False
    logging.captureWarnings(True)
    logging.getLogger("py.warnings").handlers[:] = handlers


def _report(batch, dry_run: bool) -> None:
    """What happened to each output, on stdout (object-storage outputs by their URL)."""
    from .urls import redact_text

    for job in batch.jobs:
        job.output = redact_text(str(job.output))  # a remote output's shadow folder shows as its URL
        if dry_run:
            print(f"{job.verdict.status:<10} {job.output}  ({job.verdict.reason})")
            if job.mosaic is not None:
                _show_mosaic(job.mosaic.describe())
        elif job.status == "failed":
            print(f"failed     {job.output}  ({job.error})")
        else:
            print(f"{job.status:<10} {job.output}")
    shared = getattr(batch, "shared", None)
    if shared is not None and not dry_run:
        import numpy as np

        print(f"shared edges ({shared.scheme}, fitted together on {len(shared.fitted_on)} inputs): "
              f"{np.array2string(shared.edges, precision=6, max_line_width=1 << 20)}")
    if len(batch.jobs) > 1 and not dry_run:
        counts = {s: sum(j.status == s for j in batch.jobs) for s in ("done", "skipped", "failed")}
        print(f"{counts['done']} done, {counts['skipped']} up to date, {counts['failed']} failed")
    if batch.index is not None:
        print(f"index      {batch.index}")


def _show_mosaic(grid: dict) -> None:
    """A mosaic's grid and inputs under its dry-run line."""
    from .urls import redact

    left, bottom, right, top = grid["bounds"]
    print(f"           mosaic of {len(grid['inputs'])} inputs, {grid['order'].replace('_', ' ')}: "
          f"{grid['width']} x {grid['height']} pixels {grid['dtype']}, "
          f"bounds {left:.12g} {bottom:.12g} {right:.12g} {top:.12g} ({grid['crs'] or 'no CRS'})")
    for path in grid["inputs"]:
        print(f"             {redact(path)}")


def _fail(args, message: str, code: int) -> int:
    """One error line: JSON on stderr in json mode, else plain; always into --log-file too."""
    from .urls import redact_text

    message = redact_text(message)
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
    for key, value in COMMON_DEFAULTS.items():  # common options given neither before nor after the command
        if not hasattr(args, key):
            setattr(args, key, value)
    _setup_logging(args)
    from ._engine.allocator import return_large_blocks
    from .jobs.interrupt import Interrupted, stop_on_signals

    return_large_blocks()  # resident memory follows the chunks in flight (see pipeline._engine.allocator)

    try:
        with stop_on_signals(exiting=True):  # SIGINT and SIGTERM stop the run through its cleanup (exit 130 / 143)
            return _main(args)
    except Interrupted as e:  # arrived after the run's own handling
        return _interrupted(args, e.signum, e.exit_code)


def _interrupted(args, signum: int, code: int) -> int:
    import signal

    from .jobs.atomic import remove_leftovers

    for p in remove_leftovers():  # the backstop: the run's own cleanup removes them as a rule
        log.debug("removed the temporary %s", p)
    name = signal.Signals(signum).name
    return _fail(args, f"stopped by {name}; temporaries removed, previous outputs unchanged", code)


def _main(args) -> int:
    from .errors import BUG_EXIT_CODE, OutputError, SceneclassError
    from .jobs.interrupt import Interrupted, received

    progress = sys.stderr.isatty() if args.progress is None else args.progress
    if args.command == "run" and not args.dry_run:  # (classify: the batch starts the checksum)
        from .jobs.checksum import start_for_config

        start_for_config(args.config, args.overrides)  # hashes the input while the libraries import
    try:
        from .jobs.config import load_config

        if args.command == "validate":
            import json

            cfg = load_config(args.config, args.overrides)  # a config error exits before the heavy imports

            from .jobs.batch import check
            from .urls import redact_data

            jobs = check(cfg)
            shown = cfg.model_dump(mode="json")
            if cfg.output.mosaic:  # the grid the inputs make, and the inputs the globs matched
                shown["mosaic"] = jobs[0].mosaic.describe()
            print(json.dumps(redact_data(shown), indent=2))
            return 0
        from contextlib import nullcontext

        if args.command == "demo":
            from .jobs.demo import demo_config

            cfg = demo_config(args.out, args.size, args.seed, args.overrides)
        elif args.command == "classify":
            cfg = classify_config(args)
        else:
            overrides = list(args.overrides)
            if args.scheduler:
                overrides.append(f"dask.scheduler={args.scheduler}")
            cfg = load_config(args.config, overrides)
        # (after the config: one that is refused exits before dask, xarray and GDAL are imported)
        from .jobs.batch import run_batch
        from .jobs.progress import progress_bars

        force, dry_run = getattr(args, "force", False), getattr(args, "dry_run", False)
        with progress_bars() if progress else nullcontext():
            batch = run_batch(cfg, force=force, dry_run=dry_run)
        if (cfg.inputs is None or cfg.output.mosaic) and batch.failed:  # one job: its error is the message
            return _fail(args, batch.failed[0].error, batch.failed[0].exit_code)
        _report(batch, dry_run)
        if batch.index_error is not None:  # the scenes are listed above; the index is what failed
            return _fail(args, batch.index_error, batch.exit_code)
        if args.command == "demo" and not batch.failed and not args.quiet:
            from .jobs.demo import summary

            print(summary(cfg))
        return batch.exit_code
    except SceneclassError as e:
        if received() is not None:  # a signal cut into the run before this error
            return _interrupted(args, received(), 128 + received())
        return _fail(args, str(e), e.exit_code)
    except Interrupted as e:
        return _interrupted(args, e.signum, e.exit_code)
    except KeyboardInterrupt:  # raised by other code than our handler
        return _interrupted(args, 2, 130)
    except OSError as e:  # outside a job: the output folder, its lock, temporaries, manifests
        if received() is not None:
            return _interrupted(args, received(), 128 + received())
        where = e.filename or "output"
        return _fail(args, f"{where}: cannot write: {e.strerror or e}", OutputError.exit_code)
    except Exception as e:
        if received() is not None:  # a library failed because a signal cut into it
            return _interrupted(args, received(), 128 + received())
        log.debug("internal error", exc_info=True)  # -vv: the traceback
        return _fail(args, f"internal error (a bug in sceneclass): {type(e).__name__}: {e}; "
                           "rerun with -vv for the traceback and report it", BUG_EXIT_CODE)


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
