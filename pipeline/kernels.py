"""Pure numpy block kernels: a block and parameters in, a block out. No dask here.

Class ids: 0 is nodata, 1..N are the classes. Class k holds ``edges[k-1] <= x < edges[k]``
(the last class also holds ``x == edges[N]``), compared in the dtype numpy.histogram uses
(``result_type(data, edges)``), so ids match ``numpy.histogram`` bin for bin.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

try:  # optional compiled kernels (pipeline/_engine/_fastkernels.c), built where a C compiler is
    from ._engine import _fastkernels
except ImportError:
    _fastkernels = None

#: dtypes classified through a full-range value -> class look-up table.
LUT_DTYPES = {"uint8": np.uint8, "int8": np.uint8, "uint16": np.uint16, "int16": np.uint16}


@dataclass(frozen=True)
class ValueRule:
    """What a raw pixel value means: which raw values are nodata and how raw values become
    physical values (``value = raw * scale + offset``, computed in float64 when not the identity).

    ``nodata``: raw values that are nodata (each representable in the data's dtype);
    ``valid_range``: inclusive (lo, hi) of valid raw values (others are nodata), or None.
    NaN and infinities are always nodata. ``scale`` must be positive (it keeps the value order).
    """

    nodata: tuple[float, ...] = ()
    valid_range: tuple[float, float] | None = None
    scale: float = 1.0
    offset: float = 0.0

    @property
    def scaled(self) -> bool:
        """True when physical values differ from raw values (they are then float64)."""
        return self.scale != 1.0 or self.offset != 0.0

    def value_dtype(self, dtype: np.dtype) -> np.dtype:
        """dtype of the physical values of ``dtype`` data."""
        dtype = np.dtype(dtype)
        return np.dtype(np.float64) if self.scaled else dtype

    def physical(self, raw: np.ndarray) -> np.ndarray:
        """Physical values of raw values: ``raw`` itself when unscaled, else float64
        ``raw * scale + offset``."""
        if not self.scaled:
            return raw
        return raw.astype(np.float64) * self.scale + self.offset

    def invalid(self, raw: np.ndarray) -> np.ndarray | None:
        """Boolean array, True where a raw value is nodata (a nodata value, outside the valid
        range, NaN or infinite); None when no value can be (integers without nodata rules)."""
        bad = None
        if raw.dtype.kind == "f":
            bad = ~np.isfinite(raw)
        for v in self.nodata:
            hit = raw == raw.dtype.type(v)
            bad = hit if bad is None else bad | hit
        if self.valid_range is not None:
            lo, hi = (np.float64(b) for b in self.valid_range)
            out = (raw < lo) | (raw > hi)
            bad = out if bad is None else bad | out
        return bad


def clean_block(block: np.ndarray, mask: np.ndarray | None = None, *, rule: ValueRule, out_dtype: str) -> np.ndarray:
    """Physical values of a raw block in ``out_dtype`` (a float dtype), NaN where the pixel is nodata
    by ``rule`` or where ``mask`` (boolean, same shape, True = invalid) is set; always a new array."""
    out = np.array(rule.physical(block), dtype=out_dtype, copy=True)
    bad = rule.invalid(block)
    if mask is not None:
        bad = mask if bad is None else bad | mask
    if bad is not None:
        out[bad] = np.nan
    return out


def classify_raw(raw: np.ndarray, edges: np.ndarray, rule: ValueRule, clip: bool = False) -> np.ndarray:
    """Class id (uint8) of raw values under ``rule``: their physical values classified by
    :func:`classify_values` (``clip`` as there), 0 where the raw value is nodata."""
    cls = classify_values(rule.physical(raw), edges, clip=clip)
    bad = rule.invalid(raw)
    if bad is not None:
        cls[bad] = 0
    return cls


def classify_values(values: np.ndarray, edges: np.ndarray, nodata: float | None = None,
                    clip: bool = False) -> np.ndarray:
    """Class id (uint8) of every value: searchsorted on the edges; NaN and nodata -> 0.

    Values below the first edge or above the last are 0 too, or, with ``clip``, in the first
    and the last class (``numpy.clip`` to [edges[0], edges[-1]], then classified).

    float32/float64 values go through the compiled kernel where it is built (no temporaries;
    not with ``clip``), else through numpy in pieces of :data:`CLASSIFY_PIECE` pixels (a whole
    chunk's float64 copy and int64 indices would take 16 bytes a pixel); the ids are the same
    either way."""
    one = broadcast_value(values)
    if one is not None:  # the fill around a footprint: one value's id, not a copy of the chunk
        return np.full(values.shape, classify_values(one, edges, nodata, clip)[0], np.uint8)
    e64 = _edges_for_compiled(edges) if float_kernel(values) and not clip else None
    if e64 is not None:
        flat = np.ascontiguousarray(values).reshape(-1)
        out = np.empty(flat.shape, np.uint8)
        _fastkernels.fclassify(flat, flat.itemsize, e64, nodata_of(flat.dtype, nodata), out)
        return out.reshape(values.shape)
    if values.dtype.kind != "f" or values.size <= CLASSIFY_PIECE:
        return _classify_numpy(values, edges, nodata, clip)
    flat = values.reshape(-1)
    out = np.empty(flat.shape, np.uint8)
    for i in range(0, flat.size, CLASSIFY_PIECE):
        out[i:i + CLASSIFY_PIECE] = _classify_numpy(flat[i:i + CLASSIFY_PIECE], edges, nodata, clip)
    return out.reshape(values.shape)


def _classify_numpy(values: np.ndarray, edges: np.ndarray, nodata: float | None, clip: bool = False) -> np.ndarray:
    n = len(edges) - 1
    dt = np.result_type(values.dtype, edges.dtype)
    v = values.astype(dt, copy=False)
    e = edges.astype(dt, copy=False)
    cls = np.searchsorted(e, v, side="right")
    cls[v == e[-1]] = n  # the last class is closed on the right
    if clip:
        cls[cls == 0] = 1  # below the first edge (NaN sorts last: never here)
        above = cls > n
        if v.dtype.kind == "f":
            above &= ~np.isnan(v)
        cls[above] = n
    cls[cls > n] = 0  # above the last edge, and NaN (sorts last)
    if nodata is not None:
        cls[values == np.asarray(nodata).astype(values.dtype)] = 0
    return cls.astype(np.uint8)


#: pixels per piece when numpy classifies float values (its temporaries stay in cache)
CLASSIFY_PIECE = 1 << 18


def broadcast_value(values: np.ndarray) -> np.ndarray | None:
    """The one pixel (shape (1,)) of a read-only broadcast of one value over a block (every
    stride 0: how a uniform decoded chunk is handed back), else None. The float kernels take
    that pixel instead of making the block contiguous, a chunk-sized copy of one value."""
    if values.size == 0 or any(s != 0 for s in values.strides):
        return None
    return values.reshape(-1)[:1].copy()


def float_kernel(values: np.ndarray) -> bool:
    """True when the compiled float kernels take ``values`` (float32/float64, native byte order)."""
    return _fastkernels is not None and values.dtype in (np.float32, np.float64) and values.dtype.isnative


def nodata_of(dtype: np.dtype, nodata: float | None) -> float | None:
    """The nodata value as the compiled float kernels compare it: cast to the pixels' dtype first
    (as numpy compares ``block != dtype.type(nodata)``)."""
    return None if nodata is None else float(np.dtype(dtype).type(nodata))


def float_scan(values: np.ndarray, nodata: float | None, top: np.ndarray | None = None) -> tuple[int, float, float]:
    """Compiled: (count, min, max) of the valid pixels (finite, not ``nodata``) of float values
    (:func:`float_kernel`), and with ``top`` (int64[65,536]) their top 16 order-preserving key
    bits counted into it. Without valid pixels: (0, inf, -inf)."""
    one = broadcast_value(values)
    if one is not None:  # counts scale exactly with the pixels
        part = None if top is None else np.zeros_like(top)
        count, lo, hi = _fastkernels.fscan(one, one.itemsize, nodata_of(one.dtype, nodata), part)
        if top is not None:
            top += part * values.size
        return count * values.size, lo, hi
    flat = np.ascontiguousarray(values).reshape(-1)
    return _fastkernels.fscan(flat, flat.itemsize, nodata_of(flat.dtype, nodata), top)


def float_key_hist(values: np.ndarray, nodata: float | None, shift: int, prefixes: np.ndarray,
                   counts: np.ndarray) -> None:
    """Compiled: add to ``counts`` (int64[len(prefixes) * 65,536]) the 16 key bits below
    ``shift + 16`` of the valid pixels whose key shifted right by ``shift + 16`` is in
    ``prefixes`` (sorted, not empty), at ``row * 65536 + digit``."""
    prefixes = np.ascontiguousarray(prefixes, dtype=np.uint64)
    one = broadcast_value(values)
    if one is not None:  # counts scale exactly with the pixels
        part = np.zeros_like(counts)
        _fastkernels.fkeyhist(one, one.itemsize, nodata_of(one.dtype, nodata), shift, prefixes, part)
        counts += part * values.size
        return
    flat = np.ascontiguousarray(values).reshape(-1)
    _fastkernels.fkeyhist(flat, flat.itemsize, nodata_of(flat.dtype, nodata), shift, prefixes, counts)


def float_binned(values: np.ndarray, nodata: float | None, edges: np.ndarray, counts: np.ndarray,
                 sums: np.ndarray) -> None:
    """Compiled: add to ``counts`` and ``sums`` (float64[bins]) the count and the float64 sum of
    the valid pixels in each of the uniform bins ``edges`` (float64[bins + 1]; bins as
    :func:`pipeline.stats.bin_index` finds them, values outside [edges[0], edges[-1]] left out),
    summed in pixel order."""
    e = np.ascontiguousarray(edges, dtype=np.float64)
    bins = e.size - 1
    scale = bins / (e[-1] - e[0]) if e[-1] != e[0] else 0.0
    one = broadcast_value(values)
    if one is not None:  # a broadcast of a value left out (nodata, NaN, outside) adds nothing
        c1, s1 = np.zeros_like(counts), np.zeros_like(sums)
        _fastkernels.fbinned(one, one.itemsize, nodata_of(one.dtype, nodata), e, scale, c1, s1)
        if not c1.any():
            return
    flat = np.ascontiguousarray(values).reshape(-1)  # else summed pixel by pixel, as always
    _fastkernels.fbinned(flat, flat.itemsize, nodata_of(flat.dtype, nodata), e, scale, counts, sums)


def _edges_for_compiled(edges: np.ndarray) -> np.ndarray | None:
    """The edges as float64 when the compiled classifier gives numpy's ids with them: float32 or
    float64 edges (exact in float64, where a float32 pixel compares as in float32), 2 to 256 of
    them, sorted, no NaN; None otherwise (numpy then classifies)."""
    e = np.asarray(edges)
    if e.dtype not in (np.float32, np.float64) or not 2 <= e.size <= 256:
        return None
    e = e.astype(np.float64)
    if np.isnan(e).any() or (np.diff(e) < 0).any():
        return None
    return np.ascontiguousarray(e)


def unsigned_view(block: np.ndarray) -> np.ndarray:
    """The block's bits as the same-width unsigned integer (an index into a value LUT)."""
    return block.view(LUT_DTYPES[block.dtype.name])


def value_lut(dtype: np.dtype, edges: np.ndarray, nodata: float | None | ValueRule = None,
              clip: bool = False) -> np.ndarray:
    """Class id for every possible value of an 8/16-bit dtype, indexed by its unsigned bit pattern.

    ``nodata``: one nodata value, or a :class:`ValueRule` (nodata values, valid range, scale and
    offset: each raw value is classified by its physical value). ``clip``: values outside the
    edges go to the first/last class instead of 0 (:func:`classify_values`)."""
    dtype = np.dtype(dtype)
    udt = LUT_DTYPES[dtype.name]
    values = np.arange(np.iinfo(udt).max + 1, dtype=udt).view(dtype)
    if isinstance(nodata, ValueRule):
        return classify_raw(values, edges, nodata, clip)
    return classify_values(values, edges, nodata, clip)


def outside_counts(values: np.ndarray, edges: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """[below, above]: how many valid ``values`` (NaN excluded) lie below ``edges[0]`` and above
    ``edges[-1]``, compared as :func:`classify_values` does; ``weights`` counts each value that
    many times (a histogram's counts). int64, shape (2,)."""
    dt = np.result_type(values.dtype, edges.dtype)
    v = values.astype(dt, copy=False)
    e = edges.astype(dt, copy=False)
    below, above = v < e[0], v > e[-1]
    if weights is None:
        return np.array([np.count_nonzero(below), np.count_nonzero(above)], np.int64)
    return np.array([int(weights[below].sum()), int(weights[above].sum())], np.int64)


#: pixels per call in the piecewise kernels below. A whole-chunk ``np.bincount`` or ``np.take``
#: on uint16 first copies the chunk into a fresh intp array (8 bytes a pixel, page-faulted in);
#: pieces keep that copy in cache: about 2x faster for the histogram, 1.8x for the look-up
#: (``python scripts/bench_kernels.py``). A bincount piece also zeroes and adds its whole
#: ``minlength`` output, hence larger pieces there.
COUNT_PIECE = 1 << 19
TAKE_PIECE = 1 << 18


#: pixels per axis of the sample :func:`uniform` looks at before reading the whole block
UNIFORM_SAMPLE = 8


def uniform(block: np.ndarray) -> bool:
    """True when every pixel of a (non-empty, integer) block has one value: the fill around a
    scene's footprint fills whole chunks. A strided sample of about 8 pixels per axis settles
    it for almost every other block; only a uniform sample costs the two whole-block SIMD
    reductions (about 1/20 of a look-up each time, three times per chunk otherwise)."""
    if block.size == 0:
        return False
    sample = block[tuple(slice(None, None, max(1, n // UNIFORM_SAMPLE)) for n in block.shape)]
    if sample.min() != sample.max():
        return False
    return block.min() == block.max()


def compiled() -> bool:
    """True when the compiled kernels (uint16 histogram and look-up, float kernels) are in use (else numpy's)."""
    return _fastkernels is not None


def lookup_block(block: np.ndarray, lut: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """``lut[value]`` for every pixel of an 8/16-bit block; ``lut`` may carry a trailing band axis.
    The result goes to ``out`` (C-contiguous, ``block.shape + lut.shape[1:]``, ``lut.dtype``) when
    given. A uniform block (the fill around a footprint) gives a read-only broadcast of its one
    entry instead, whatever ``out``."""
    if uniform(block):
        first = unsigned_view(block[(slice(0, 1),) * block.ndim].reshape(1))  # one pixel, never a copy of the block
        return np.broadcast_to(lut[first], block.shape + lut.shape[1:])  # read-only: no memory for fill
    flat = unsigned_view(np.ascontiguousarray(block)).reshape(-1)
    if out is None:
        out = np.empty(flat.shape + lut.shape[1:], lut.dtype)
    elif out.shape != block.shape + lut.shape[1:] or out.dtype != lut.dtype or not out.flags.c_contiguous:
        raise ValueError(f"lookup_block: out must be C-contiguous {lut.dtype} of shape {block.shape + lut.shape[1:]}")
    out = out.reshape(flat.shape + lut.shape[1:])
    if _fastkernels is not None and flat.dtype == np.uint16 and lut.shape == (65536,) and lut.dtype == np.uint8:
        _fastkernels.lut16(flat, np.ascontiguousarray(lut), out)  # 2.5x the pieces below (bench_kernels.py)
        return out.reshape(block.shape)
    if (_fastkernels is not None and flat.dtype in (np.uint8, np.uint16) and lut.ndim == 2
            and 2 <= lut.shape[1] <= 4 and lut.shape[0] == 1 << (8 * flat.itemsize) and lut.dtype == np.uint8):
        _fastkernels.lutn(flat, flat.itemsize, np.ascontiguousarray(lut), lut.shape[1], out)  # colours
        return out.reshape(block.shape + lut.shape[1:])
    # a table over every bit pattern cannot be indexed out of range: no bounds check, and
    # np.take writes straight into ``out`` (with mode="raise" it goes through a buffer)
    mode = "clip" if lut.shape[0] > np.iinfo(flat.dtype).max else "raise"
    for i in range(0, flat.size, TAKE_PIECE):
        np.take(lut, flat[i:i + TAKE_PIECE], axis=0, out=out[i:i + TAKE_PIECE], mode=mode)
    return out.reshape(block.shape + lut.shape[1:])


def lookup_masked(block: np.ndarray, mask: np.ndarray, lut: np.ndarray) -> np.ndarray:
    """Class ids of an 8/16-bit block through ``lut`` (:func:`lookup_block`), 0 where ``mask``
    (boolean, True = invalid) is set."""
    cls = lookup_block(block, lut)
    if mask.any():
        cls = np.array(cls)  # a uniform block's look-up is a read-only broadcast
        cls[mask] = 0
    return cls


def one_pixel(block: np.ndarray) -> bool:
    """True when ``block`` is one pixel broadcast over its rows and columns (stride 0 on its
    first two axes): how a uniform chunk is handed on (:func:`lookup_block`, the decoded-chunk
    store), so that fill takes no memory. Every such block is uniform."""
    return block.ndim >= 2 and block.strides[0] == 0 and block.strides[1] == 0


def copy_into(out: np.ndarray, block: np.ndarray) -> np.ndarray:
    """``out[...] = block`` and return ``out``; fast when ``block`` is a broadcast along its
    leading axes (a uniform chunk's look-up: strides 0, 0[, 1]).

    numpy copies such a broadcast element by element along its shortest contiguous run, the
    band axis of a colour block (3 or 4 bytes): about 40x the time of a real copy. Here the
    first row is made first and then copied into every other row, so each copy runs over a
    whole row.

    Parameters
    ----------
    out : ndarray
        Writable, of ``block``'s shape.
    block : ndarray
        The pixels, of any strides.
    """
    if block.ndim >= 2 and block.strides[0] == 0 and block.shape[0] > 0:
        copy_into(out[0], block[0])
        out[1:] = out[0]
    else:
        out[...] = block
    return out


def contiguous(block: np.ndarray) -> np.ndarray:
    """``np.ascontiguousarray(block)``, through :func:`copy_into` when ``block`` is a broadcast."""
    if block.flags.c_contiguous:
        return block
    return copy_into(np.empty(block.shape, block.dtype), block)


def to_band_first(block: np.ndarray) -> np.ndarray:
    """(y, x, band) -> (band, y, x), contiguous."""
    return np.ascontiguousarray(np.moveaxis(block, -1, 0))


def colorize_block(classes: np.ndarray, colors: np.ndarray) -> np.ndarray:
    """(y, x) class ids -> (band, y, x) uint8 colours; ``colors[0]`` is the nodata colour."""
    return to_band_first(lookup_block(classes, colors))


def bincount_block(block: np.ndarray, length: int) -> np.ndarray:
    """Counts of every unsigned bit pattern of an 8/16-bit block (or of small class ids), int64."""
    flat = np.ascontiguousarray(block).reshape(-1)
    if flat.dtype.kind == "i":
        flat = unsigned_view(flat)
    if uniform(flat):
        counts = np.zeros(max(length, int(flat[0]) + 1), np.int64)
        counts[flat[0]] = flat.size
        return counts
    if _fastkernels is not None and flat.dtype == np.uint8 and length == 256:
        counts = np.zeros(length, np.int64)
        _fastkernels.hist8(flat, counts)  # class ids: no int64 copy of the block
        return counts
    if _fastkernels is not None and flat.dtype == np.uint16 and length == 65536:
        counts = np.zeros(length, np.int64)
        _fastkernels.hist16(flat, counts)  # 3.1x the pieces below (bench_kernels.py)
        return counts
    counts = np.bincount(flat[:COUNT_PIECE], minlength=length)
    for i in range(COUNT_PIECE, flat.size, COUNT_PIECE):
        counts += np.bincount(flat[i:i + COUNT_PIECE], minlength=length)
    return counts
