"""The piecewise block kernels equal their whole-array numpy forms (on blocks larger than one
piece, with ragged last pieces), and the strided overview decimation equals GDAL's NEAREST
pick by index arithmetic on any chunk placement."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline import kernels
from pipeline.writers.cog import decimate


@pytest.mark.parametrize("dtype", ["uint8", "int8", "uint16", "int16"])
def test_piecewise_histogram_and_lookup_equal_numpy(dtype):
    rng = np.random.default_rng(7)
    info = np.iinfo(dtype)
    block = rng.integers(info.min, info.max, (1031, 1117), endpoint=True).astype(dtype)  # 2.2 count pieces
    assert block.size > 2 * kernels.COUNT_PIECE and block.size % kernels.TAKE_PIECE
    u = block.view(kernels.LUT_DTYPES[dtype])
    length = 1 << (8 * block.itemsize)
    np.testing.assert_array_equal(kernels.bincount_block(block, length), np.bincount(u.ravel(), minlength=length))
    lut = rng.integers(0, 255, length).astype(np.uint8)
    np.testing.assert_array_equal(kernels.lookup_block(block, lut), lut[u])
    bands = rng.integers(0, 255, (length, 4)).astype(np.uint8)  # a trailing band axis
    np.testing.assert_array_equal(kernels.lookup_block(block, bands), bands[u])
    view = block[5:-3, 7:-2]  # not contiguous
    np.testing.assert_array_equal(kernels.lookup_block(view, lut), lut[view.view(u.dtype)])
    for value in (info.min, -1 if info.min < 0 else 1, info.max):  # uniform blocks take a short cut
        flat = np.full((37, 41), value, dtype)
        fu = flat.view(u.dtype)
        np.testing.assert_array_equal(kernels.bincount_block(flat, length), np.bincount(fu.ravel(), minlength=length))
        np.testing.assert_array_equal(kernels.lookup_block(flat, lut), lut[fu])
        np.testing.assert_array_equal(kernels.lookup_block(flat, bands), bands[fu])
    assert kernels.bincount_block(np.zeros((0, 3), dtype), length).sum() == 0


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 300), st.integers(1, 300), st.sampled_from([2, 4, 8, 16]), st.data())
def test_decimate_picks_gdal_nearest_pixels(height, width, factor, data):
    """Every chunk of a random chunking owns the overview pixels whose source pixel it holds;
    together they give ``full[i*f + f//2]`` (clamped to the last row/column)."""
    full = np.arange(height * width, dtype=np.int64).reshape(height, width)
    ys = sorted(set(data.draw(st.lists(st.integers(1, height - 1), max_size=4)) if height > 1 else []))
    xs = sorted(set(data.draw(st.lists(st.integers(1, width - 1), max_size=4)) if width > 1 else []))
    oh, ow = max(1, height // factor), max(1, width // factor)
    got = np.full((oh, ow), -1, np.int64)
    for y0, y1 in zip([0, *ys], [*ys, height]):
        for x0, x1 in zip([0, *xs], [*xs, width]):
            part = decimate(full[y0:y1, x0:x1], y0, x0, (height, width), factor)
            if part is None:
                continue
            oy, ox, px = part
            assert (got[oy:oy + px.shape[0], ox:ox + px.shape[1]] == -1).all(), "two chunks wrote one pixel"
            got[oy:oy + px.shape[0], ox:ox + px.shape[1]] = px
    rows = np.minimum(np.arange(oh) * factor + factor // 2, height - 1)
    cols = np.minimum(np.arange(ow) * factor + factor // 2, width - 1)
    np.testing.assert_array_equal(got, full[np.ix_(rows, cols)])


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 90), st.integers(1, 90), st.integers(-2, 2), st.data())
def test_uniform_equals_min_max(height, width, offset, data):
    """The sampled short cut never changes the answer: a block of one value is uniform, and
    one pixel of another value anywhere (on or off the sampled grid) makes it not; strided
    views and a band axis too."""
    block = np.full((height, width), 1000, np.uint16)
    if offset:
        y, x = data.draw(st.integers(0, height - 1)), data.draw(st.integers(0, width - 1))
        block[y, x] = 1000 + offset
    assert kernels.uniform(block) == (block.min() == block.max())
    view = np.repeat(block, 2, axis=1)[:, ::2]  # strided, same pixels
    assert kernels.uniform(view) == kernels.uniform(block)
    bands = np.stack([block, block], axis=-1)
    assert kernels.uniform(bands) == kernels.uniform(block)
    assert not kernels.uniform(np.zeros((0, 3), np.uint16))
