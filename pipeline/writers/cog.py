"""Cloud-Optimized GeoTIFF writer: the output at a local path.

The dask tasks classify, colour and compress their tiles and overview tiles; this process
gathers the tile sizes, then writes the file front to back from the compressed bytes
(:mod:`pipeline.writers.cogstream`), on every scheduler: threads and processes (each task
spools its tiles to a file of its own beside the output) as well as distributed (the tiles wait
in the workers' memory; the workers need no disk shared with this process). Memory stays flat
whatever the scene's size: no task keeps a full-resolution chunk for another.

The COG is written under a temporary name and checked (:func:`verify_written`) before it is
renamed; any failure GDAL raises, signals or libtiff only prints while checking, or a failed
write (a full disk included), fails the run (:class:`~pipeline.errors.OutputError`) and
replaces nothing.
"""

from __future__ import annotations

import errno
import logging
import os
import sys
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

import dask.array as da
import numpy as np
import rasterio
from rasterio._err import CPLE_BaseError  # what rasterio raises for a GDAL failure (CPLE_*Error)
from rasterio.errors import RasterioError
from rasterio.windows import Window

from ..errors import OutputError
from ..jobs.atomic import atomic_output, cause, output_errors, partial_path, remove
from ..jobs.config import Output
from ..jobs.interrupt import deferred
from .cogstream import DEFAULT_LEVELS, distributed_client, write_cog_stream
from .tiles import overview_factors

log = logging.getLogger(__name__.replace("pipeline", "sceneclass", 1))


def cog_options(out: Output) -> dict:
    """The GDAL COG driver creation options equivalent to the configured output (for comparing
    with GDAL's own COG driver; sceneclass writes its COGs itself)."""
    opts = {
        "BLOCKSIZE": out.blocksize,
        "COMPRESS": out.compression.upper(),
        "NUM_THREADS": "ALL_CPUS",
        "BIGTIFF": "IF_SAFER",
        "OVERVIEWS": "AUTO" if out.overviews else "NONE",
        "OVERVIEW_RESAMPLING": out.overview_resampling.upper(),
    }
    level = out.level if out.level is not None else DEFAULT_LEVELS.get(out.compression)
    if level is not None and out.compression in DEFAULT_LEVELS:
        opts["LEVEL"] = level
    return opts


# --------------------------------------------------------------------- the writer
class GdalFailures(logging.Handler):
    """Collects the failures GDAL signals in this thread while it runs (rasterio logs each
    CE_Failure as "GDAL signalled an error" at INFO and lets the call return)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if isinstance(record.msg, str) and record.msg.startswith("GDAL signalled an error") and record.args:
            self.messages.append(str(record.args[-1]))

    def __enter__(self) -> "GdalFailures":
        logger = logging.getLogger("rasterio._env")
        self._level = logger.level
        logger.addHandler(self)
        if logger.getEffectiveLevel() > logging.INFO:
            logger.setLevel(logging.INFO)
        return self

    def __exit__(self, *exc) -> None:
        logger = logging.getLogger("rasterio._env")
        logger.removeHandler(self)
        logger.setLevel(self._level)


def _disk_full(folder: Path, need: int) -> OSError | None:
    """The error reserving ``need`` bytes in ``folder`` gives (``No space left on device``), if any."""
    probe = partial_path(folder / "space", ".probe", make=None)
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as e:
        return e
    try:
        os.posix_fallocate(fd, 0, max(need, 1 << 20))
    except OSError as e:
        return None if e.errno in (errno.EOPNOTSUPP, errno.EINVAL) else e
    finally:
        os.close(fd)
        remove(probe)
    return None


@contextmanager
def _stderr_lines() -> Iterator[list[str]]:
    """Capture what C libraries print on file descriptor 2 inside (libtiff reports some write
    failures there and nowhere else); yields the list the lines are collected in."""
    lines: list[str] = []
    sys.stderr.flush()
    read_fd, write_fd = os.pipe()
    saved = os.dup(2)
    chunks: list[bytes] = []
    drain = threading.Thread(target=lambda: chunks.extend(iter(lambda: os.read(read_fd, 65536), b"")),
                             name="sceneclass-stderr", daemon=True)
    drain.start()
    os.dup2(write_fd, 2)
    os.close(write_fd)
    try:
        yield lines
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        drain.join()
        os.close(read_fd)
        lines.extend(b"".join(chunks).decode(errors="replace").splitlines())


def _is_failure(line: str) -> bool:
    low = line.lower()
    return "warning" not in low and (line.startswith("ERROR") or "error" in low or "no space" in low)


@contextmanager
def gdal_writing(final: Path, what: str, need: int = 0) -> Iterator[None]:
    """GDAL writes inside: a failure GDAL raises, signals and returns from, or libtiff only
    prints, becomes one :class:`OutputError` naming ``final`` and the cause (``No space left
    on device`` when the folder cannot hold ``need`` more bytes).

    Raises
    ------
    OutputError
        When anything inside failed (GDAL's and rasterio's errors, ``OSError`` and
        ``ValueError``; other exceptions pass).
    """
    problems: list[str] = []
    with GdalFailures() as failures, _stderr_lines() as printed:
        try:
            yield
        except (OSError, ValueError, RasterioError, CPLE_BaseError) as e:
            problems.append(cause(e))
    failed = [ln for ln in printed if _is_failure(ln)]
    for line in printed:
        (log.debug if line in failed else log.warning)("GDAL: %s", line)
    problems += failures.messages + failed
    if problems:
        full = _disk_full(final.parent, need)
        reason = full.strerror if full is not None and full.strerror else problems[0]
        raise OutputError(f"{final}: {what} failed ({reason}); nothing was replaced")


def write_cog(classes: da.Array, scene, palette: np.ndarray, out: Output, final: Path, bands: int = 0,
              count: bool = True, staged: Callable[[], None] | None = None,
              lut: np.ndarray | None = None) -> np.ndarray:
    """Write class ids (``bands=0``: paletted) or their colours (3: RGB, 4: RGBA) as a COG at
    ``final``, on any scheduler: the tasks compress the tiles, this process writes the file
    under a temporary name (:func:`pipeline.writers.cogstream.write_cog_stream`), checks it
    (:func:`verify_written`) and puts it in place.

    Parameters
    ----------
    classes, scene, palette, out, bands, count, staged, lut
        As for :func:`pipeline.writers.cogstream.write_cog_stream`.
    final : Path
        The output path (a local path of this process; the workers need not see it).

    Returns
    -------
    ndarray, int64, (256,)
        Pixels per class id (zeros when ``count`` is false).

    Raises
    ------
    OutputError
        The file could not be written or does not read back; nothing was replaced.
    """
    final.parent.mkdir(parents=True, exist_ok=True)

    @contextmanager
    def destination() -> Iterator[_Destination]:
        with atomic_output(final, ".tif") as tmp:
            with output_errors(final), open(tmp, "wb") as f:
                yield _Destination(f, final)
            with gdal_writing(final, "checking the written COG"):
                verify_written(tmp, scene.shape, bands or 1, out)

    spool = None
    try:
        if distributed_client() is None:
            with output_errors(final), deferred():  # a signal waits until ``spool`` is set
                spool = partial_path(final, ".tiles", make="dir")
        counts = write_cog_stream(classes, scene, palette, out, destination, bands, count, staged, lut, spool=spool)
    finally:
        if spool is not None:
            remove(spool)
    log.info("wrote %s", final)
    return counts


class _Destination:
    """A file being written; a failed write becomes an :class:`OutputError` naming the output."""

    def __init__(self, f, final: Path) -> None:
        self._f, self._final = f, final

    def write(self, data) -> int:
        try:
            return self._f.write(data)
        except OSError as e:
            raise OutputError(f"{self._final}: cannot write the output ({cause(e)}); nothing was replaced") from None


def verify_written(path: Path, shape: tuple[int, int], bands: int, out: Output) -> None:
    """Check a written COG before it replaces anything: GDAL opens it with the expected size,
    bands, tile size and overview count, and the last tile of every level decodes.

    Raises
    ------
    OSError
        (rasterio's ``RasterioIOError``) when the file cannot be opened or a tile not read.
    ValueError
        When the file is readable but not what was written.
    """
    want_overviews = len(overview_factors(shape, out.blocksize)) if out.overviews else 0
    with rasterio.open(path) as cog:
        if (cog.height, cog.width, cog.count) != (*shape, bands):
            raise ValueError(f"the written file is {cog.width}x{cog.height}x{cog.count}, "
                             f"not {shape[1]}x{shape[0]}x{bands}")
        if cog.block_shapes[0] != (out.blocksize, out.blocksize) or len(cog.overviews(1)) != want_overviews:
            raise ValueError("its tiles or overviews are not the ones written")
    for level in [None, *range(want_overviews)]:
        with rasterio.open(path, overview_level=level) as ov:
            by, bx = ov.block_shapes[0]
            c0, r0 = (ov.width - 1) // bx * bx, (ov.height - 1) // by * by
            ov.read(window=Window(c0, r0, ov.width - c0, ov.height - r0))
