"""The piecewise block kernels equal their whole-array numpy forms (on blocks larger than one
piece, with ragged last pieces), with the compiled uint16 histogram and look-up and without
them, and the strided overview decimation equals GDAL's NEAREST pick by index arithmetic on
any chunk placement."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline import kernels
from pipeline.writers.cogtasks import decimated, owned
from pipeline.writers.tiles import nearest_sources, overview_factors


@pytest.fixture(params=["numpy", "compiled"])
def kernel_path(request, monkeypatch):
    """Run a test through numpy's kernels, then through the compiled ones (where built)."""
    if request.param == "numpy":
        monkeypatch.setattr(kernels, "_fastkernels", None)
    elif not kernels.compiled():
        pytest.skip("pipeline._engine._fastkernels is not built (no C compiler at install)")
    return request.param


@pytest.mark.parametrize("dtype", ["uint8", "int8", "uint16", "int16"])
def test_piecewise_histogram_and_lookup_equal_numpy(dtype, kernel_path):
    rng = np.random.default_rng(7)
    info = np.iinfo(dtype)
    block = rng.integers(info.min, info.max, (1031, 1117), endpoint=True).astype(dtype)  # 2.2 count pieces
    assert block.size > 2 * kernels.COUNT_PIECE and block.size % kernels.TAKE_PIECE
    u = block.view(kernels.LUT_DTYPES[dtype])
    length = 1 << (8 * block.itemsize)
    np.testing.assert_array_equal(kernels.bincount_block(block, length), np.bincount(u.ravel(), minlength=length))
    lut = rng.integers(0, 255, length).astype(np.uint8)
    np.testing.assert_array_equal(kernels.lookup_block(block, lut), lut[u])
    block.flat[-1], block.flat[0], block.flat[999] = info.max, info.max, info.min  # the table's last entry
    for nb in (2, 3, 4):  # a trailing band axis (colours: 3 bytes a pixel stored a word at a time)
        table = rng.integers(0, 255, (length, nb)).astype(np.uint8)
        np.testing.assert_array_equal(kernels.lookup_block(block, table), table[u])
        for tail in (block[:1, :2], block[-1:, -2:], block[-2:, -1:]):  # the last pixel of a block
            np.testing.assert_array_equal(kernels.lookup_block(tail, table), table[tail.view(u.dtype)])
    bands = table
    view = block[5:-3, 7:-2]  # not contiguous
    np.testing.assert_array_equal(kernels.lookup_block(view, lut), lut[view.view(u.dtype)])
    for value in (info.min, -1 if info.min < 0 else 1, info.max):  # uniform blocks take a short cut
        flat = np.full((37, 41), value, dtype)
        fu = flat.view(u.dtype)
        np.testing.assert_array_equal(kernels.bincount_block(flat, length), np.bincount(fu.ravel(), minlength=length))
        np.testing.assert_array_equal(kernels.lookup_block(flat, lut), lut[fu])
        np.testing.assert_array_equal(kernels.lookup_block(flat, bands), bands[fu])
        # fill costs no memory: a broadcast view, also of a broadcast (not stored) chunk
        view = np.broadcast_to(np.full((), value, dtype), (37, 41))
        assert kernels.lookup_block(view, lut).strides == (0, 0)
        np.testing.assert_array_equal(kernels.lookup_block(view, bands), bands[fu])
    assert kernels.bincount_block(np.zeros((0, 3), dtype), length).sum() == 0


@pytest.mark.parametrize("bands", [0, 3])
def test_lookup_into_a_given_buffer(kernel_path, bands):
    """``out`` receives the look-up (the same values as a fresh array); a wrong buffer is
    refused; a uniform block still gives its broadcast view and leaves ``out`` alone."""
    rng = np.random.default_rng(11)
    block = rng.integers(0, 65535, (517, 263), endpoint=True).astype(np.uint16)
    lut = rng.integers(0, 255, (65536, bands) if bands else 65536).astype(np.uint8)
    out = np.full(block.shape + lut.shape[1:], 7, np.uint8)
    got = kernels.lookup_block(block, lut, out=out)
    assert np.shares_memory(got, out)
    np.testing.assert_array_equal(out, lut[block])
    for bad in (out[:-1], out.astype(np.int16), np.asfortranarray(out)):
        with pytest.raises(ValueError, match="out must be"):
            kernels.lookup_block(block, lut, out=bad)
    out[...] = 7
    flat = np.full(block.shape, 5, np.uint16)
    assert kernels.lookup_block(flat, lut, out=out).strides[:2] == (0, 0)
    assert (out == 7).all()


def test_scratch_buffers_are_per_thread_and_reused():
    """Same thread and name: the same memory (grown when a larger array is asked for);
    another name or another thread: other memory."""
    import threading

    from pipeline._engine.scratch import scratch

    a = scratch("t", (100, 30), np.uint16)
    assert a.shape == (100, 30) and a.dtype == np.uint16 and a.flags.c_contiguous
    b = scratch("t", (20, 7), np.uint8)
    assert np.shares_memory(a, b) and b.ctypes.data == a.ctypes.data
    assert not np.shares_memory(a, scratch("u", (100, 30), np.uint16))
    big = scratch("t", (300, 30), np.uint16)
    assert big.shape == (300, 30) and not np.shares_memory(a, big)
    assert scratch("t", (100, 30), np.uint16).ctypes.data == big.ctypes.data
    other = []
    thread = threading.Thread(target=lambda: other.append(scratch("t", (100, 30), np.uint16)))
    thread.start()
    thread.join()
    assert not np.shares_memory(other[0], big)
    assert scratch("t", (0, 4), np.float64).size == 0


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 300), st.integers(1, 300), st.integers(1, 5), st.data())
def test_decimated_chunks_make_the_whole_overview(height, width, levels, data):
    """Every chunk of a random chunking owns the overview pixels whose source pixel it holds;
    together their decimations give the whole overview, each pixel exactly once."""
    full = np.arange(height * width, dtype=np.int64).reshape(height, width)
    factors = [2 ** k for k in range(1, levels + 1)]
    src_y, src_x = nearest_sources(height, factors)[-1], nearest_sources(width, factors)[-1]
    ys = sorted(set(data.draw(st.lists(st.integers(1, height - 1), max_size=4)) if height > 1 else []))
    xs = sorted(set(data.draw(st.lists(st.integers(1, width - 1), max_size=4)) if width > 1 else []))
    got = np.full((src_y.size, src_x.size), -1, np.int64)
    for y0, y1 in zip([0, *ys], [*ys, height]):
        for x0, x1 in zip([0, *xs], [*xs, width]):
            (i0, i1), (j0, j1) = owned(src_y, y0, y1 - y0), owned(src_x, x0, x1 - x0)
            px = decimated(full[y0:y1, x0:x1], src_y[i0:i1] - y0, src_x[j0:j1] - x0)
            assert px.flags.c_contiguous and px.shape == (i1 - i0, j1 - j0)
            assert (got[i0:i1, j0:j1] == -1).all(), "two chunks gave one pixel"
            got[i0:i1, j0:j1] = px
    np.testing.assert_array_equal(got, full[np.ix_(src_y, src_x)])


@pytest.mark.parametrize("height,width", [(677, 775), (1000, 1000), (129, 5000), (4099, 131), (1025, 1537)])
def test_nearest_sources_are_gdal_cog_nearest(tmp_path, height, width):
    """The full-resolution pixel each overview pixel samples is the one GDAL's COG driver picks
    with OVERVIEW_RESAMPLING=NEAREST (pixel ids through a real COG, every level)."""
    import rasterio
    import rasterio.shutil

    ids = np.arange(height * width, dtype=np.int32).reshape(height, width)
    plain, cog = tmp_path / "ids.tif", tmp_path / "ids.cog.tif"
    with rasterio.open(plain, "w", driver="GTiff", width=width, height=height, count=1, dtype="int32",
                       crs="EPSG:3857", transform=rasterio.transform.from_origin(0, 0, 1, 1)) as dst:
        dst.write(ids, 1)
    rasterio.shutil.copy(plain, cog, driver="COG", BLOCKSIZE=128, OVERVIEW_RESAMPLING="NEAREST")
    factors = overview_factors((height, width), 128)
    with rasterio.open(cog) as src:
        assert len(src.overviews(1)) == len(factors) > 0
    rows, cols = nearest_sources(height, factors), nearest_sources(width, factors)
    for level in range(len(factors)):
        with rasterio.open(cog, overview_level=level) as ov:
            got = ov.read(1)
        np.testing.assert_array_equal(got, ids[np.ix_(rows[level], cols[level])])


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


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 5000), st.integers(0, 65535), st.integers(1, 65536), st.booleans(), st.data())
def test_compiled_kernels_equal_numpy(n, low, spread, writable, data):
    """Any length (not only multiples of the four interleaved tables), narrow value ranges
    (runs of equal values land in every table), read-only input buffers (memory-mapped chunks)."""
    if not kernels.compiled():
        pytest.skip("pipeline._engine._fastkernels is not built (no C compiler at install)")
    from pipeline._engine import _fastkernels

    seed = data.draw(st.integers(0, 2**32 - 1))
    values = (low + np.random.default_rng(seed).integers(0, spread, n)) % 65536
    values = values.astype(np.uint16)
    values.setflags(write=writable)
    counts = np.full(65536, 3, np.int64)  # hist16 adds to what is there
    _fastkernels.hist16(values, counts)
    np.testing.assert_array_equal(counts, np.bincount(values, minlength=65536) + 3)
    lut = np.random.default_rng(seed + 1).integers(0, 256, 65536).astype(np.uint8)
    out = np.empty(n, np.uint8)
    _fastkernels.lut16(values, lut, out)
    np.testing.assert_array_equal(out, lut[values])


def test_compiled_kernels_refuse_wrong_buffers():
    if not kernels.compiled():
        pytest.skip("pipeline._engine._fastkernels is not built (no C compiler at install)")
    from pipeline._engine import _fastkernels

    values = np.arange(10, dtype=np.uint16)
    with pytest.raises(ValueError, match="counts int64"):
        _fastkernels.hist16(values, np.zeros(65535, np.int64))
    with pytest.raises(TypeError):  # a read-only output
        _fastkernels.hist16(values, np.zeros(65536, np.int64).tobytes())
    with pytest.raises(ValueError, match="lut uint8"):
        _fastkernels.lut16(values, np.zeros(256, np.uint8), np.empty(10, np.uint8))
    with pytest.raises(ValueError, match="out uint8"):
        _fastkernels.lut16(values, np.zeros(65536, np.uint8), np.empty(9, np.uint8))
    with pytest.raises(ValueError, match="not C-contiguous"):
        _fastkernels.lut16(values[::2], np.zeros(65536, np.uint8), np.empty(5, np.uint8))


def _floats(dtype: str, rng, n: int, nodata) -> np.ndarray:
    """Values with every kind of pixel the float kernels treat apart: NaN, infinities, both
    zeros, the nodata value, runs of one value (edges fall on them), tiny and huge magnitudes."""
    v = np.concatenate([rng.normal(180, 12, n), np.round(rng.normal(0, 3, n), 1), rng.normal(0, 1e-30, n // 8),
                        rng.normal(0, 1e30, n // 8)]).astype(dtype)
    for value, share in ((np.nan, 0.05), (np.inf, 0.01), (-np.inf, 0.01), (0.0, 0.02), (-0.0, 0.02)):
        v[rng.random(v.size) < share] = value
    if nodata is not None:
        v[rng.random(v.size) < 0.05] = nodata
    return v[: v.size // 97 * 97].reshape(-1, 97)[:, :89]  # not contiguous


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("nodata", [None, -9999.0, 0.0, float("nan")])
def test_float_kernels_equal_numpy(dtype, nodata, kernel_path):
    """The float kernels (compiled where built, else numpy in pieces) against whole-array numpy:
    class ids (edges of both float widths, repeated, on data values, NaN and nodata pixels), the
    count/min/max and top key histogram, the refine histogram below given key prefixes, and the
    binned counts and sums natural_breaks uses."""
    from pipeline import stats

    rng = np.random.default_rng(3)
    block = _floats(dtype, rng, 40_000, nodata)
    flat = block.ravel()
    ok = np.isfinite(flat)
    if nodata is not None:
        ok &= flat != np.dtype(dtype).type(nodata)
    valid = flat[ok]
    for edt in ("float32", "float64"):
        for k in (1, 10, 200):
            e = np.sort(rng.choice(valid, k + 1)).astype(edt)
            e[k // 2] = e[k // 2 - 1] if k > 1 else e[0]  # a repeated edge
            dt = np.result_type(block.dtype, e.dtype)
            ref = np.searchsorted(e.astype(dt), block.astype(dt), side="right")
            ref[block.astype(dt) == e.astype(dt)[-1]] = k
            ref[ref > k] = 0
            if nodata is not None:
                ref[block == np.dtype(dtype).type(nodata)] = 0
            np.testing.assert_array_equal(kernels.classify_values(block, e, nodata), ref)
    row = stats.block_summary_top(block, nodata)[0, 0]
    assert row[0] == valid.size and row[1] == valid.min() and row[2] == valid.max()
    keys = stats.to_key(valid)
    bits = keys.dtype.itemsize * 8
    top = np.bincount((keys >> keys.dtype.type(bits - 16)).astype(np.int64), minlength=1 << 16)
    np.testing.assert_array_equal(row[3:], top)
    for shift in range(0, bits - 16, 16):
        prefixes = np.unique(rng.choice(keys >> keys.dtype.type(shift + 16), 4))
        got = stats.block_key_hist(block, nodata, prefixes, shift)[0, 0].reshape(prefixes.size, 1 << 16)
        for r, p in enumerate(prefixes):
            mine = keys[(keys >> keys.dtype.type(shift + 16)) == p]
            digits = ((mine >> keys.dtype.type(shift)) & keys.dtype.type(0xFFFF)).astype(np.int64)
            np.testing.assert_array_equal(got[r], np.bincount(digits, minlength=1 << 16))
    inner = valid[(valid > -1e3) & (valid < 1e3)].astype(np.float64)
    edges = np.linspace(inner.min(), inner.max(), 1001)
    got = stats.block_binned(block, nodata, edges)[0, 0]
    counts, _ = np.histogram(inner, edges)
    sums, _ = np.histogram(inner, edges, weights=inner)
    np.testing.assert_array_equal(got[:1000], counts)
    np.testing.assert_allclose(got[1000:], sums, rtol=1e-9, atol=1e-9)
    ids = rng.integers(0, 256, (301, 257)).astype(np.uint8)
    np.testing.assert_array_equal(kernels.bincount_block(ids, 256), np.bincount(ids.ravel(), minlength=256))


@pytest.mark.parametrize("run", [1, 3, 8, 50, 4000])
def test_class_id_counts_with_runs_equal_numpy(kernel_path, run):
    """Class ids come in regions: runs of equal ids (whole 8-byte words of one id and words
    split between ids), any length, any alignment, against numpy's bincount."""
    rng = np.random.default_rng(run)
    ids = np.repeat(rng.integers(0, 256, 40000 // run + 2, dtype=np.uint8), run)
    for n in (0, 1, 7, 8, 9, 1023, 30001):
        for offset in (0, 3):
            block = ids[offset:offset + n]
            np.testing.assert_array_equal(kernels.bincount_block(block, 256), np.bincount(block, minlength=256))
    block = ids[:60 * 491].reshape(60, 491)  # 2-D, ragged rows
    np.testing.assert_array_equal(kernels.bincount_block(block, 256), np.bincount(block.ravel(), minlength=256))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("value", [np.nan, -9999.0, 151.25, 1e30])
def test_float_kernels_take_a_broadcast_block_as_its_copy(dtype, value):
    """A uniform decoded chunk comes back as a broadcast of one value (no memory); every float
    kernel gives what it gives on the same pixels as a real array (counts, sums, ids)."""
    from pipeline import stats

    shape = (203, 157)
    view = np.broadcast_to(np.full((), value, dtype=dtype), shape)
    real = np.full(shape, value, dtype=dtype)
    edges = np.array([-1e31, 140.0, 151.25, 160.0, 1e31])
    for nodata in (None, -9999.0):
        assert np.array_equal(kernels.classify_values(view, edges, nodata), kernels.classify_values(real, edges, nodata))
        assert np.array_equal(stats.block_summary(view, nodata), stats.block_summary(real, nodata))
        assert np.array_equal(stats.block_summary_top(view, nodata), stats.block_summary_top(real, nodata))
        assert np.array_equal(stats.block_binned(view, nodata, edges), stats.block_binned(real, nodata, edges))
        top = stats.block_key_hist(real, nodata, np.empty(0, np.uint64), 48)
        assert np.array_equal(stats.block_key_hist(view, nodata, np.empty(0, np.uint64), 48), top)
        key = stats.to_key(real.reshape(-1)[:1])
        shift = 8 * key.dtype.itemsize - 32
        prefixes = np.unique(key >> key.dtype.type(shift + 16)).astype(np.uint64)
        assert np.array_equal(stats.block_key_hist(view, nodata, prefixes, shift),
                              stats.block_key_hist(real, nodata, prefixes, shift))


@pytest.mark.parametrize("shape", [(37, 53), (37, 53, 3), (37, 53, 4), (1, 5, 3), (0, 4, 3)])
def test_copy_into_takes_a_broadcast_as_its_copy(shape):
    """A uniform chunk's look-up is a read-only broadcast of one pixel (strides 0, 0[, 1]); the
    fast copy of it, of a row-only broadcast, and of a plain strided view give the same pixels
    as numpy's copy."""
    rng = np.random.default_rng(7)
    pixel = rng.integers(1, 255, shape[2:], dtype=np.uint8)
    row = rng.integers(0, 255, shape[1:], dtype=np.uint8)
    for block in (np.broadcast_to(pixel, shape), np.broadcast_to(row, shape),
                  rng.integers(0, 255, (shape[0], shape[1] * 2) + shape[2:], dtype=np.uint8)[:, ::2]):
        out = np.full(shape, 9, np.uint8)
        assert kernels.copy_into(out, block) is out
        assert np.array_equal(out, np.array(block))
        got = kernels.contiguous(block)
        assert got.flags.c_contiguous and np.array_equal(got, np.array(block))
        if len(shape) == 3:
            want = np.moveaxis(np.array(block), -1, 0)
            got = kernels.to_band_first(block)
            assert got.flags.c_contiguous and np.array_equal(got, want)


@pytest.mark.parametrize("compression", ["zstd", "deflate", "lzw", "none"])
@pytest.mark.parametrize("bands", [(), (3,), (4,)])
def test_encode_chunk_of_a_broadcast_equals_its_copy(compression, bands):
    """A uniform chunk's tiles (each tile shape compressed once, bytes reused) are the tiles of
    the same pixels as a real array, edge tiles padded with zeros included."""
    from pipeline.writers.tiles import encode_chunk

    pixel = np.array([17, 200, 3, 255][: bands[0]] if bands else 17, np.uint8)
    view = np.broadcast_to(pixel, (150, 203) + bands)
    level = {"zstd": 3, "deflate": 6}.get(compression)
    got = encode_chunk(view, 64, compression, level)
    want = encode_chunk(np.array(view), 64, compression, level)
    assert [[bytes(t) for t in r] for r in got] == [[bytes(t) for t in r] for r in want]
    assert len(got) == 3 and len(got[0]) == 4


@pytest.mark.parametrize("bands", [(), (3,)])
def test_decimated_of_a_broadcast_is_its_copy_decimated(bands):
    """A uniform chunk (a broadcast of one value, as the decoded-chunk store hands fill back)
    decimates to a broadcast of the same pixels, with or without a scratch buffer, without
    numpy's copy of the whole chunk first."""
    pixel = np.array([9, 250, 3][: bands[0]] if bands else 40000, np.uint16)
    view = np.broadcast_to(pixel, (301, 257) + bands)
    rows, cols = np.array([0, 7, 100, 300]), np.array([3, 4, 256])
    want = np.array(view)[np.ix_(rows, cols)]
    for buffer in (None, "test-decimated"):
        got = decimated(view, rows, cols, buffer)
        assert got.shape == want.shape and np.array_equal(got, want)
        assert got.strides[:2] == (0, 0)  # still a broadcast: no chunk-sized copy was made
    assert decimated(view, rows[:0], cols).shape == (0, 3) + bands


@pytest.mark.parametrize("bands", [(), (3,)])
@pytest.mark.parametrize("value", [0, 5])
def test_windowed_mode_of_a_broadcast_is_its_copy_mode(bands, value):
    """A uniform chunk's level-1 ``mode`` pixels (windows of 2 and 3 pixels, nodata 0 for class
    ids) are those of the same pixels as a real array."""
    from pipeline.writers.cogtasks import windowed_mode

    pixel = np.array([value, 200, 3][: bands[0]] if bands else value, np.uint8)
    view = np.broadcast_to(pixel, (97, 131) + bands)
    ys, xs = np.arange(0, 96, 2), np.arange(0, 129, 2)
    ye, xe = ys + 2, np.minimum(xs + 3, 131)
    nodata = None if bands else 0
    want = windowed_mode(np.array(view), ys, ye, xs, xe, nodata)
    got = windowed_mode(view, ys, ye, xs, xe, nodata)
    assert got.flags.c_contiguous and got.dtype == want.dtype and np.array_equal(got, want)


def test_histogram_tables_kept_between_calls_start_from_zero(kernel_path):
    """The compiled uint16 histogram keeps its count tables per thread from one call to the
    next: consecutive blocks in one thread, and blocks in other threads at the same time, each
    count only their own pixels (odd sizes, so the last few pixels take the tail loop)."""
    import threading

    rng = np.random.default_rng(5)
    blocks = [rng.integers(0, 65535, n, endpoint=True).astype(np.uint16) for n in (100003, 7, 65541)]
    blocks.append(np.repeat(np.arange(9000, 9100, dtype=np.uint16), 777))  # runs of equal values
    errors = []

    def count_all():
        for b in blocks * 2:
            if not np.array_equal(kernels.bincount_block(b, 65536), np.bincount(b, minlength=65536)):
                errors.append(b.size)

    threads = [threading.Thread(target=count_all) for _ in range(3)]
    for t in threads:
        t.start()
    count_all()
    for t in threads:
        t.join()
    assert errors == []
