#!/usr/bin/env python
"""Write synthetic Landsat-like scenes (thin CLI over ``pipeline.testing.synth.make_scene``).

Example::

    python scripts/make_scene.py out/ --size 1x --size 4x --seed 0

writes ``out/scene_1x_s0.tif`` and ``out/scene_4x_s0.tif`` (existing files are
skipped unless ``--overwrite``); ``--dtype float32`` writes the float32 form
(``DN * 0.00341802 + 149.0``, NaN where DN is 0) as ``out/scene_1x_s0_float32.tif``.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

try:
    from pipeline.testing.synth import DTYPES, SIZES, make_scene, parse_size
except ModuleNotFoundError:  # running from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from pipeline.testing.synth import DTYPES, SIZES, make_scene, parse_size


def scene_name(size: str, seed: int, dtype: str = "uint16") -> str:
    """``scene_<size>_s<seed>.tif`` (uint16) or ``scene_<size>_s<seed>_<dtype>.tif``."""
    return f"scene_{size}_s{seed}" + ("" if dtype == "uint16" else f"_{dtype}") + ".tif"


def _size_arg(value: str) -> str:
    try:
        parse_size(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return value.strip().lower().replace(" ", "")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="Write deterministic synthetic Landsat-like uint16 GeoTIFF scenes "
        "as OUT_DIR/scene_<size>_s<seed>.tif.",
    )
    p.add_argument("out_dir", type=Path, metavar="OUT_DIR", help="output directory (created if missing)")
    p.add_argument(
        "--size",
        action="append",
        type=_size_arg,
        metavar="SIZE",
        help=f"scene size, repeatable: one of {', '.join(SIZES)}, an area factor of 1x "
        "such as 0.25x, or HxW such as 1000x1200 (default: 1x)",
    )
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument("--dtype", action="append", choices=DTYPES, metavar="DTYPE",
                   help="pixel type, repeatable: uint16 (DN) or float32 (DN * 0.00341802 + 149.0, "
                   "NaN where DN is 0) (default: uint16)")
    p.add_argument("--nodata-declared", action="store_true", help="declare 0 as nodata in the file")
    p.add_argument("--blocksize", type=int, default=512, help="tile size in pixels (default: 512)")
    p.add_argument("--compress", default="deflate", help="GTiff compression (default: deflate)")
    p.add_argument("--overwrite", action="store_true", help="replace existing files instead of skipping them")
    p.add_argument("-v", "--verbose", action="store_true", help="log progress")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    sizes = args.size or ["1x"]
    t_all = time.perf_counter()
    for size, dtype in [(s, d) for s in sizes for d in (args.dtype or ["uint16"])]:
        out = args.out_dir / scene_name(size, args.seed, dtype)
        if out.exists() and not args.overwrite:
            print(f"skip {out} (exists; use --overwrite to replace)")
            continue
        t0 = time.perf_counter()
        make_scene(
            out,
            size,
            args.seed,
            blocksize=args.blocksize,
            compress=args.compress,
            nodata_declared=args.nodata_declared,
            overwrite=True,
            dtype=dtype,
        )
        h, w = parse_size(size)
        print(f"wrote {out} ({h}x{w}) in {time.perf_counter() - t0:.1f} s")
    print(f"total elapsed {time.perf_counter() - t_all:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
