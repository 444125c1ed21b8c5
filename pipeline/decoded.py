"""Decode the input once: the statistics pass keeps every decoded chunk in a raw file beside the
output, and the write pass (and any extra statistics pass) reads it back instead of decoding
the compressed input again (or fetching it again over HTTP).

The raw file holds each chunk contiguously at a fixed offset, so tasks write and read it
without locks from any thread, process or cluster worker that sees the output folder, and a
re-run task writes the same bytes. It lives in the page cache for scenes that fit in RAM and
costs no resident memory; it is removed when the run ends.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
from pathlib import Path

import dask
import dask.array as da
import numpy as np
import rasterio

from .io import Scene, gdal_path, is_url

log = logging.getLogger(__name__)


def chunk_offsets(chunks: tuple[tuple[int, ...], tuple[int, ...]], itemsize: int) -> np.ndarray:
    """Byte offset of every chunk (C order of chunks, each chunk C-contiguous), shape (ny, nx)."""
    sizes = np.outer(chunks[0], chunks[1]).astype(np.int64) * itemsize
    return np.concatenate([[0], np.cumsum(sizes.ravel())[:-1]]).reshape(sizes.shape)


def write_raw(block: np.ndarray, path: str, offsets: np.ndarray, block_info=None) -> np.ndarray:
    """Block kernel: store a decoded chunk at its offset; returns a (1, 1) placeholder."""
    i, j = block_info[0]["chunk-location"]
    fd = os.open(path, os.O_WRONLY)
    try:
        os.pwrite(fd, np.ascontiguousarray(block).data, int(offsets[i, j]))
    finally:
        os.close(fd)
    return np.zeros((1, 1), np.int8)


def read_raw(path: str, offsets: np.ndarray, dtype: str, block_info=None) -> np.ndarray:
    """Block kernel: a decoded chunk back from the raw file."""
    info = block_info[None]
    i, j = info["chunk-location"]
    shape = info["chunk-shape"]
    return np.fromfile(path, dtype=dtype, count=shape[0] * shape[1], offset=int(offsets[i, j])).reshape(shape)


def worth_keeping(scene: Scene, folder: Path, setting: str) -> bool:
    """``auto``: keep decoded chunks when decoding costs (compressed or remote input) and the
    output folder has room for them (twice their size free)."""
    if setting != "auto":
        return setting == "always"
    raw = scene.dtype.itemsize * scene.shape[0] * scene.shape[1]
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return False
    if free < 2 * raw:
        log.info("not keeping decoded chunks: %d MiB free in %s", free >> 20, folder)
        return False
    if is_url(scene.path):
        return True
    with rasterio.open(gdal_path(scene.path)) as src:
        return src.compression is not None


@dataclasses.dataclass
class DecodedChunks:
    """The raw file of decoded chunks for one scene."""

    scene: Scene
    path: Path

    def __post_init__(self):
        x = self.scene.array
        self.offsets = chunk_offsets(x.chunks, x.dtype.itemsize)
        self.nbytes = int(x.dtype.itemsize * x.size)

    def create(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "wb") as f:
            f.truncate(self.nbytes)

    def store(self) -> da.Array:
        """Lazy: write every decoded chunk (compute it with the statistics pass)."""
        x = self.scene.array
        done = x.map_blocks(write_raw, str(self.path), dask.delayed(self.offsets, pure=True),
                            chunks=(1, 1), dtype=np.int8, meta=np.empty((0, 0), np.int8))
        return done.sum()

    def reader(self) -> Scene:
        """The same scene, read from the raw file."""
        x = self.scene.array
        arr = da.map_blocks(
            read_raw, str(self.path), dask.delayed(self.offsets, pure=True), x.dtype.str,
            chunks=x.chunks, dtype=x.dtype, meta=np.empty((0, 0), x.dtype),
            name=f"decoded-{dask.base.tokenize(str(self.path), x.name)}",
        )
        return dataclasses.replace(self.scene, array=arr)

    def remove(self) -> None:
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass
