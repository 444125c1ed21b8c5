"""The ``sceneclass`` command: parse arguments, set up logging, call the library."""

from __future__ import annotations

import argparse
import logging
import sys

from . import __version__

log = logging.getLogger("pipeline")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sceneclass", description=__doc__.splitlines()[0])
    p.add_argument("--version", action="version", version=f"sceneclass {__version__}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    common.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    common.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                        help="progress bars on stderr (default: when stderr is a terminal)")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", parents=[common], help="classify a scene as a YAML config says")
    run.add_argument("config", help="YAML config file")
    run.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY.PATH=VALUE",
                     help="override a config value, e.g. --set classes.count=10 (repeatable)")
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


def _setup_logging(verbose: int, quiet: bool) -> None:
    level = logging.WARNING if quiet else (logging.DEBUG if verbose > 1 else logging.INFO)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
    root = logging.getLogger("pipeline")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False
    logging.captureWarnings(True)


def _summary(result) -> str:
    leg = result.legend
    lines = [f"{result.output}  ({leg['scheme']}, {leg['classes_requested']} classes, "
             f"{leg['valid_pixels']} valid pixels)"]
    if result.legend_path:
        lines.append(f"{result.legend_path}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    _setup_logging(args.verbose, args.quiet)
    from .errors import SceneclassError

    progress = sys.stderr.isatty() if args.progress is None else args.progress
    try:
        if args.command == "validate":
            from .config import load_config

            cfg = load_config(args.config, args.overrides)
            print(cfg.model_dump_json(indent=2))
            return 0
        from contextlib import nullcontext

        from .progress import TqdmProgress
        from .run import run

        if args.command == "demo":
            from .demo import demo_config

            cfg = demo_config(args.out, args.size, args.seed, args.overrides)
        else:
            from .config import load_config

            overrides = list(args.overrides)
            if args.scheduler:
                overrides.append(f"dask.scheduler={args.scheduler}")
            cfg = load_config(args.config, overrides)
        with TqdmProgress() if progress else nullcontext():
            result = run(cfg)
        print(_summary(result))
        return 0
    except SceneclassError as e:
        print(f"sceneclass: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("sceneclass: interrupted", file=sys.stderr)
        return 130
