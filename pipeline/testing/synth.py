"""Deterministic, memory-bounded generator of realistic Landsat-like scenes.

The scenes imitate a single band of a USGS Landsat 8 Level-1 product:

* single-band ``uint16`` GeoTIFF on a north-up 30 m UTM grid, tiled and
  DEFLATE-compressed with horizontal differencing (``PREDICTOR=2``);
* a scene footprint that is a rectangle rotated by ~12 degrees (like a WRS-2
  path/row footprint inside its north-up grid) surrounded by ``0`` fill
  (about 30 % of the pixels); ``0`` is *not* declared as nodata unless asked;
* inside the footprint, DN values of a plausible Level-1 band: a smooth,
  bimodal land field (~8000..14000), darker water bodies (~6600..7200),
  bright clouds (~20000..60000, occasionally saturating at 65535) and a little
  per-pixel noise.

Every field is a pure function of the *global* pixel coordinates and the seed
(lattice value noise whose lattice values come from an integer hash, and a
hash-based per-pixel noise), evaluated with element-wise float32 operations
only.  Hence the pixels do not depend on the window/tile decomposition or the
write order (tiles are seamless and any blocksize gives identical pixels), and
the same ``(size, seed)`` always produces bit-identical pixels.

Memory is bounded by one strip of ``blocksize`` rows (plus a few
``blocksize x blocksize`` float32 work arrays and GDAL's block cache); nothing
scales with the full scene except a couple of ``int64`` vectors of length
*height* that describe the footprint.
"""

from __future__ import annotations

import logging
import math
import os
import re
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from numbers import Integral
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from rasterio.windows import Window

__all__ = ["SIZES", "FLOAT_SCALE", "FLOAT_OFFSET", "DTYPES", "parse_size", "make_scene", "footprint_columns",
           "to_float32"]

log = logging.getLogger(__name__.replace("pipeline", "sceneclass", 1))

#: Named scene sizes as ``(height, width)``; ``"1x"`` is a real Landsat 8 band.
SIZES: dict[str, tuple[int, int]] = {
    "1x": (7931, 7811),
    "4x": (15862, 15622),
    "16x": (31724, 31244),
}

PIXEL_SIZE = 30.0
#: Upper-left corner of the grid (UTM easting / northing, metres).
ORIGIN = (300_000.0, 4_500_000.0)
#: Rotation of the footprint rectangle inside the north-up grid (degrees).
FOOTPRINT_ANGLE_DEG = 12.0
#: Fraction of fill (0) pixels aimed at.
TARGET_FILL = 0.30
#: Largest fill fraction accepted for the maximal inscribed rectangle before
#: the rotation angle is reduced (only matters for very elongated grids).
_MAX_FILL = 0.32

#: The float32 form of a scene: ``DN * FLOAT_SCALE + FLOAT_OFFSET`` (a scaled Level-2-like product,
#: in float32 arithmetic), NaN where DN is 0 (the fill).
FLOAT_SCALE = 0.00341802
FLOAT_OFFSET = 149.0
#: The pixel types :func:`make_scene` writes.
DTYPES = ("uint16", "float32")

GDAL_CACHEMAX_MB = 128
_MAX_SIDE = 2**31 - 1

_M32 = 0xFFFFFFFF
_M64 = 0xFFFFFFFFFFFFFFFF

_FACTOR_RE = re.compile(r"^(\d+(?:\.\d*)?|\.\d+)x$", re.IGNORECASE)
_HXW_RE = re.compile(r"^(\d+)\s*x\s*(\d+)$", re.IGNORECASE)


# ---------------------------------------------------------------------------
# size parsing
# ---------------------------------------------------------------------------
def _check_dims(h: int, w: int, src: object) -> tuple[int, int]:
    if not (1 <= h <= _MAX_SIDE and 1 <= w <= _MAX_SIDE):
        raise ValueError(
            f"invalid scene size {src!r}: height and width must be integers in "
            f"[1, {_MAX_SIDE}], got {h}x{w}"
        )
    return int(h), int(w)


def parse_size(size: str | tuple[int, int]) -> tuple[int, int]:
    """Return ``(height, width)`` for a size specification.

    Accepted forms:

    * a named size from :data:`SIZES` (``"1x"``, ``"4x"``, ``"16x"``);
    * a scale factor of the ``"1x"`` scene such as ``"0.1x"`` or ``"2x"``.  The
      factor scales the *area* (pixel count), so each side is scaled by its
      square root: ``"4x"`` doubles both sides;
    * explicit ``"HxW"`` such as ``"1000x1200"`` (height first);
    * a ``(height, width)`` tuple (or list) of positive integers.

    Raises :class:`ValueError` (with the offending value in the message) for
    anything else.
    """
    if isinstance(size, (tuple, list)):
        if len(size) != 2 or not all(
            isinstance(v, Integral) and not isinstance(v, bool) for v in size
        ):
            raise ValueError(
                f"invalid scene size {size!r}: a tuple must be (height, width) "
                "with two positive integers"
            )
        return _check_dims(int(size[0]), int(size[1]), size)
    if not isinstance(size, str):
        raise ValueError(
            f"invalid scene size {size!r}: expected a string like '1x', '0.25x', "
            "'1000x1200' or a (height, width) tuple"
        )
    s = size.strip()
    key = s.lower()
    if key in SIZES:
        return SIZES[key]
    m = _HXW_RE.match(s)
    if m:
        return _check_dims(int(m.group(1)), int(m.group(2)), size)
    m = _FACTOR_RE.match(s)
    if m:
        factor = float(m.group(1))
        if not factor > 0:
            raise ValueError(f"invalid scene size {size!r}: the scale factor must be > 0")
        side = math.sqrt(factor)
        h0, w0 = SIZES["1x"]
        h, w = round(h0 * side), round(w0 * side)
        if h < 1 or w < 1:
            raise ValueError(
                f"invalid scene size {size!r}: scale factor too small "
                f"(gives {h}x{w} pixels)"
            )
        return _check_dims(h, w, size)
    raise ValueError(
        f"invalid scene size {size!r}: expected one of {sorted(SIZES)}, a scale "
        "factor of '1x' such as '0.25x' (area factor), 'HxW' such as '1000x1200', "
        "or a (height, width) tuple"
    )


# ---------------------------------------------------------------------------
# footprint geometry
# ---------------------------------------------------------------------------
def _footprint_geometry(height: int, width: int) -> tuple[float, float, float]:
    """Return ``(angle_rad, half_a, half_b)`` of the centred rotated rectangle.

    ``a`` runs along the rotated x axis, ``b`` along the rotated y axis.  The
    rectangle is the largest one of the given angle that fits in the grid,
    shrunk (uniformly) so that the fill fraction is :data:`TARGET_FILL` when the
    largest one leaves less fill than that.  For very elongated grids, where
    a 12 degree rectangle would leave too much fill, the angle is reduced.
    """
    H, W = float(height), float(width)
    deg = FOOTPRINT_ANGLE_DEG
    while True:
        th = math.radians(deg)
        c, s = math.cos(th), math.sin(th)
        det = c * c - s * s
        a = (W * c - H * s) / det
        b = (H * c - W * s) / det
        if a > 0 and b > 0:
            fill_max = 1.0 - a * b / (H * W)
            if fill_max <= _MAX_FILL:
                break
        if deg <= 0:  # pragma: no cover - deg == 0 always breaks above
            break
        deg = max(0.0, deg - 0.5)
    if fill_max < TARGET_FILL:
        k = math.sqrt((1.0 - TARGET_FILL) * H * W / (a * b))
        a, b = a * k, b * k
    return th, a / 2.0, b / 2.0


def footprint_columns(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the half-open column interval ``[start, stop)`` of the footprint.

    A pixel ``(row, col)`` is inside the footprint iff its centre lies in the
    rotated rectangle, i.e. iff ``start[row] <= col < stop[row]``.  Rows that
    do not meet the footprint have ``start == stop``.  Both arrays are
    ``int64`` of length *height* (the only per-scene arrays the generator
    keeps).
    """
    th, A, B = _footprint_geometry(height, width)
    c, s = math.cos(th), math.sin(th)
    cx, cy = width / 2.0, height / 2.0
    dy = np.arange(height, dtype=np.float64) + (0.5 - cy)
    # |u| <= A with u = dx*c + dy*s   (c > 0)
    lo = (-A - dy * s) / c
    hi = (A - dy * s) / c
    # |v| <= B with v = -dx*s + dy*c
    if s > 0:
        lo = np.maximum(lo, (dy * c - B) / s)
        hi = np.minimum(hi, (dy * c + B) / s)
    else:
        outside = np.abs(dy) > B
        lo = np.where(outside, np.inf, lo)
        hi = np.where(outside, -np.inf, hi)
    # pixel centre x = col + 0.5 = cx + dx
    with np.errstate(invalid="ignore"):
        start = np.ceil(lo + (cx - 0.5))
        stop = np.floor(hi + (cx - 0.5)) + 1.0
    start = np.clip(np.nan_to_num(start, nan=width, posinf=width, neginf=0), 0, width)
    stop = np.clip(np.nan_to_num(stop, nan=0, posinf=width, neginf=0), 0, width)
    start = start.astype(np.int64)
    stop = np.maximum(stop.astype(np.int64), start)
    return start, stop


# ---------------------------------------------------------------------------
# hashing / noise primitives (all pure functions of global coordinates)
# ---------------------------------------------------------------------------
def _splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & _M64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _M64
    return x ^ (x >> 31)


def _fmix32(h: np.ndarray) -> np.ndarray:
    """MurmurHash3 finaliser, in place on a uint32 array."""
    h ^= h >> 16
    h *= np.uint32(0x85EBCA6B)
    h ^= h >> 13
    h *= np.uint32(0xC2B2AE35)
    h ^= h >> 16
    return h


def _hash_1d(idx: np.ndarray, mult: int, key: int) -> np.ndarray:
    """Well mixed uint32 hash of integer indices (vector)."""
    h = (idx.astype(np.int64) & _M32).astype(np.uint32)
    h *= np.uint32(mult)
    h ^= np.uint32(key & _M32)
    return _fmix32(h)


def _lattice(ii: np.ndarray, jj: np.ndarray, key: int) -> np.ndarray:
    """Lattice values in [-1, 1) (float32) for lattice rows ii and columns jj."""
    hr = _hash_1d(ii, 0x8DA6B343, key)
    hc = _hash_1d(jj, 0xD8163841, key >> 32)
    h = hr[:, None] + hc[None, :]
    _fmix32(h)
    return (h.astype(np.float64) * (2.0 / 2**32) - 1.0).astype(np.float32)


@dataclass(frozen=True)
class _Octave:
    spacing: int
    amp: float
    key: int
    oy: int
    ox: int


def _make_field(seed: int, field_id: int, spacings: Sequence[int], persistence: float) -> tuple[_Octave, ...]:
    """fBm value-noise field: one octave per lattice spacing (pixels).

    Amplitudes decay by *persistence* per halving of the spacing and are
    normalised so that their squares sum to one.
    """
    state = _splitmix64((seed & _M64) ^ _splitmix64(0xC0FFEE + field_id))
    amps = [persistence**k for k in range(len(spacings))]
    norm = math.sqrt(sum(a * a for a in amps))
    octaves = []
    for k, (S, amp) in enumerate(zip(spacings, amps)):
        k64 = _splitmix64(state + k)
        k2 = _splitmix64(k64)
        # random lattice offsets (a different area of the infinite field per seed)
        octaves.append(_Octave(int(S), amp / norm, k64, int(k2 & 0xFFFFF), int((k2 >> 20) & 0xFFFFF)))
    return tuple(octaves)


def _axis_interp(pos: np.ndarray, spacing: int, offset: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For global pixel positions: lattice cell (absolute), local cell index, smoothstep weight."""
    p = pos + offset
    cell = p // spacing
    t = (p - cell * spacing).astype(np.float64) * (1.0 / spacing)
    t = (t * t * (3.0 - 2.0 * t)).astype(np.float32)
    return cell, cell - cell[0], t


def _eval_field(octaves: Sequence[_Octave], rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Evaluate a value-noise field on the grid ``rows x cols`` (global, ascending).

    Only element-wise float32 operations are used, in a fixed order, so each
    pixel's value is independent of the window it is computed in.
    """
    out = None
    tmp = None
    for o in octaves:
        icell, il, sy = _axis_interp(rows, o.spacing, o.oy)
        jcell, jl, sx = _axis_interp(cols, o.spacing, o.ox)
        ni, nj = int(il[-1]) + 2, int(jl[-1]) + 2
        G = _lattice(np.arange(icell[0], icell[0] + ni), np.arange(jcell[0], jcell[0] + nj), o.key)
        G *= np.float32(o.amp)
        # interpolate along x on the (few) lattice rows, then along y
        g0 = G[:, jl]
        gx = G[:, jl + 1]
        gx -= g0
        gx *= sx
        gx += g0                      # (ni, w): lattice rows at full x resolution
        d = gx[1:] - gx[:-1]          # (ni-1, w)
        if out is None:
            out = np.take(gx, il, axis=0)
            tmp = np.empty_like(out)
        else:
            np.take(gx, il, axis=0, out=tmp)
            out += tmp
        np.take(d, il, axis=0, out=tmp)
        tmp *= sy[:, None]
        out += tmp
    return out


def _pixel_noise(rows: np.ndarray, cols: np.ndarray, key: int) -> np.ndarray:
    """Triangular per-pixel noise in (-1, 1) (float32), a hash of (row, col)."""
    hr = _hash_1d(rows, 0x9E3779B1, key)
    hc = _hash_1d(cols, 0x85EBCA77, key >> 32)
    h = hr[:, None] ^ hc[None, :]
    h *= np.uint32(0x2C1B3C6D)
    h ^= h >> 15
    h *= np.uint32(0x297A2D39)
    h ^= h >> 16
    n = (h & np.uint32(0xFFFF)).astype(np.float32)
    h >>= 16
    n += h
    n -= np.float32(65535.0)
    n *= np.float32(1.0 / 65536.0)
    return n


# ---------------------------------------------------------------------------
# scene model
# ---------------------------------------------------------------------------
@dataclass(frozen=True)
class _SceneModel:
    land: tuple[_Octave, ...]
    water: tuple[_Octave, ...]
    cloud: tuple[_Octave, ...]
    noise_key: int
    land_mean: float = 0.0
    land_std: float = 0.4
    water_threshold: float = 0.5
    water_std: float = 0.4
    cloud_threshold: float = 0.5
    cloud_std: float = 0.4


_LAND_SPACINGS = (2048, 1024, 512, 256, 128, 64, 32, 16, 8)
_WATER_SPACINGS = (1024, 512, 256, 128, 64, 32, 16)
_CLOUD_SPACINGS = (1024, 512, 256, 128, 64, 32, 16, 8)

_NOISE_DN = 120.0          # half-width of the triangular per-pixel noise
_CALIB_SAMPLES = 256       # calibration sample grid is ~256 x 256 points


def _scene_model(seed: int, height: int, width: int, start: np.ndarray, stop: np.ndarray) -> _SceneModel:
    """Fields for *seed*, with thresholds calibrated on a coarse sample of the scene.

    Water and cloud cover are drawn per seed (8-16 % water, 4-16 % cloud of the
    footprint) and turned into thresholds with quantiles of the fields over a
    ~256 x 256 sample grid, so every scene shows all three populations whatever
    its size (the thresholds, not the fields, depend on the size).
    """
    seed = int(seed)
    land = _make_field(seed, 1, _LAND_SPACINGS, 0.72)
    water = _make_field(seed, 2, _WATER_SPACINGS, 0.55)
    cloud = _make_field(seed, 3, _CLOUD_SPACINGS, 0.66)
    k = _splitmix64(_splitmix64(seed & _M64) + 5)
    water_frac = 0.08 + 0.08 * ((k & 0xFFFF) / 0xFFFF)
    cloud_frac = 0.04 + 0.12 * (((k >> 16) & 0xFFFF) / 0xFFFF)

    # coarse, size-relative sample grid (evaluated in row chunks: bounded memory)
    rs = np.unique(((np.arange(_CALIB_SAMPLES) + 0.5) * (height / _CALIB_SAMPLES)).astype(np.int64))
    cs = np.unique(((np.arange(_CALIB_SAMPLES) + 0.5) * (width / _CALIB_SAMPLES)).astype(np.int64))
    Ls, Ws, Cs = [], [], []
    for i in range(0, rs.size, 16):
        rows = rs[i : i + 16]
        inside = (cs[None, :] >= start[rows, None]) & (cs[None, :] < stop[rows, None])
        if not inside.any():
            continue
        Ls.append(_eval_field(land, rows, cs)[inside])
        Ws.append(_eval_field(water, rows, cs)[inside])
        Cs.append(_eval_field(cloud, rows, cs)[inside])
    if Ls:
        Lv, Wv, Cv = (np.concatenate(v).astype(np.float64) for v in (Ls, Ws, Cs))
    else:  # degenerate tiny grid: fall back on the nominal statistics
        Lv = Wv = Cv = np.array([-0.4, 0.0, 0.4])
    return _SceneModel(
        land=land,
        water=water,
        cloud=cloud,
        noise_key=_splitmix64(_splitmix64(seed & _M64) + 4),
        land_mean=float(Lv.mean()),
        land_std=max(float(Lv.std()), 1e-3),
        water_threshold=float(np.quantile(Wv, 1.0 - water_frac)),
        water_std=max(float(Wv.std()), 1e-3),
        cloud_threshold=float(np.quantile(Cv, 1.0 - cloud_frac)),
        cloud_std=max(float(Cv.std()), 1e-3),
    )


def _render(model: _SceneModel, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """DN values (uint16, all >= 1) of the footprint interior on ``rows x cols``."""
    f32 = np.float32
    L = _eval_field(model.land, rows, cols)

    # land: a bimodal (vegetation / bare soil) mapping of the land field
    t = L - f32(model.land_mean)
    t *= f32(1.0 / (4.0 * model.land_std))
    t += f32(0.5)
    np.clip(t, 0.0, 1.0, out=t)
    t = t * t * (f32(3.0) - f32(2.0) * t)   # smoothstep -> pushes mass to both ends
    val = t * f32(5600.0)
    val += f32(8300.0)

    # water: threshold on an independent field, with a 1-2 pixel soft shoreline
    Wf = _eval_field(model.water, rows, cols)
    Wf -= f32(model.water_threshold)
    Wf *= f32(1.0 / (0.03 * model.water_std))
    np.clip(Wf, 0.0, 1.0, out=Wf)           # water alpha
    if Wf.any():
        water_dn = t * f32(500.0)
        water_dn += f32(6700.0)
        water_dn -= val
        water_dn *= Wf
        val += water_dn
    del Wf

    # clouds: opacity ramps up over ~0.2 std above the threshold, brightness
    # keeps growing and saturates at 65535 for the thickest parts
    C = _eval_field(model.cloud, rows, cols)
    C -= f32(model.cloud_threshold)
    if (C > 0).any():
        alpha = C * f32(1.0 / (0.2 * model.cloud_std))
        np.clip(alpha, 0.0, 1.0, out=alpha)
        bright = np.maximum(C, f32(0.0))
        bright *= f32(36000.0 / model.cloud_std)
        bright += f32(21000.0)
        bright -= val
        bright *= alpha
        val += bright
    del C

    n = _pixel_noise(rows, cols, model.noise_key)
    n *= f32(_NOISE_DN)
    val += n
    val += f32(0.5)
    np.clip(val, 1.0, 65535.0, out=val)
    return val.astype(np.uint16)


# ---------------------------------------------------------------------------
# writer
# ---------------------------------------------------------------------------
def to_float32(dn: np.ndarray) -> np.ndarray:
    """The float32 form of uint16 DNs: ``dn * FLOAT_SCALE + FLOAT_OFFSET`` in float32 arithmetic,
    NaN where ``dn`` is 0.

    Parameters
    ----------
    dn : numpy.ndarray of uint16, any shape
        Digital numbers (0 = fill).

    Returns
    -------
    numpy.ndarray of float32, the shape of ``dn``
    """
    out = dn.astype(np.float32)
    out *= np.float32(FLOAT_SCALE)
    out += np.float32(FLOAT_OFFSET)
    out[dn == 0] = np.nan
    return out


def _creation_profile(height, width, blocksize, compress, nodata_declared, crs, dtype="uint16"):
    profile = {
        "driver": "GTiff",
        "height": height,
        "width": width,
        "count": 1,
        "dtype": dtype,
        "crs": crs,
        "transform": Affine(PIXEL_SIZE, 0.0, ORIGIN[0], 0.0, -PIXEL_SIZE, ORIGIN[1]),
        "tiled": True,
        "blockxsize": blocksize,
        "blockysize": blocksize,
        "interleave": "band",
        "BIGTIFF": "IF_SAFER",
        "NUM_THREADS": "ALL_CPUS",
    }
    comp = (compress or "none").lower()
    if comp != "none":
        profile["compress"] = comp
        if comp in {"deflate", "lzw", "zstd", "lzma"}:
            profile["predictor"] = 3 if dtype == "float32" else 2
    if nodata_declared:
        profile["nodata"] = float("nan") if dtype == "float32" else 0
    return profile


def make_scene(
    path: str | os.PathLike,
    size: str | tuple[int, int] = "1x",
    seed: int = 0,
    *,
    blocksize: int = 512,
    compress: str | None = "deflate",
    nodata_declared: bool = False,
    crs: str = "EPSG:32633",
    overwrite: bool = True,
    workers: int | None = None,
    dtype: str = "uint16",
) -> Path:
    """Write a synthetic Landsat-like single-band scene to *path* and return it.

    See the module docstring for what the scene looks like.  The output is a
    tiled (``blocksize`` x ``blocksize``) uint16 GeoTIFF on a 30 m grid with
    upper-left corner :data:`ORIGIN` in *crs*.  ``0`` marks the fill around the
    rotated footprint; it is declared as nodata only if *nodata_declared*.

    The file is produced as ``.<name>.partial`` beside *path* and renamed into
    place once complete.  With ``overwrite=False`` an existing *path* raises
    :class:`FileExistsError`.  *workers* threads render the tiles (default:
    the number of CPUs, at most 8); the pixels do not depend on it.

    With ``dtype="float32"`` the same scene is written in its float32 form (:func:`to_float32`:
    ``DN * FLOAT_SCALE + FLOAT_OFFSET``, NaN where DN is 0, NaN declared as nodata only if
    *nodata_declared*), with the floating-point predictor (``PREDICTOR=3``) when compressed;
    the conversion is done strip by strip, so memory stays bounded.
    """
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
    path = Path(path)
    height, width = parse_size(size)
    if isinstance(seed, bool) or not isinstance(seed, Integral):
        raise ValueError(f"seed must be an integer, got {seed!r}")
    if not isinstance(blocksize, Integral) or blocksize < 16 or blocksize % 16:
        raise ValueError(f"blocksize must be a positive multiple of 16, got {blocksize!r}")
    blocksize = int(blocksize)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists (pass overwrite=True to replace it)")
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")

    start, stop = footprint_columns(height, width)
    model = _scene_model(int(seed), height, width, start, stop)
    fill = 1.0 - float((stop - start).sum()) / (height * width)
    log.info(
        "make_scene %s: %dx%d (h x w), seed=%d, blocksize=%d, compress=%s, fill=%.4f",
        path, height, width, seed, blocksize, compress, fill,
    )

    profile = _creation_profile(height, width, blocksize, compress, nodata_declared, crs, dtype)
    convert = to_float32 if dtype == "float32" else (lambda dn: dn)
    n_workers = max(1, int(workers) if workers else min(8, os.cpu_count() or 1))
    t0 = time.perf_counter()
    strip_rows = min(blocksize, height)
    # two strip buffers: tiles of the next strip are rendered (numpy releases
    # the GIL) while the current one is handed to GDAL / compressed
    bufs = [np.zeros((strip_rows, width), dtype=np.uint16) for _ in range(2)]
    all_cols = np.arange(width, dtype=np.int64)
    strips = list(range(0, height, blocksize))

    def submit(pool, k):
        r0 = strips[k]
        r1 = min(r0 + blocksize, height)
        buf = bufs[k % 2][: r1 - r0]
        buf.fill(0)
        s_rows, e_rows = start[r0:r1], stop[r0:r1]
        return [
            pool.submit(_render_tile, model, buf, r0, c0, min(c0 + blocksize, width), s_rows, e_rows, all_cols)
            for c0 in range(0, width, blocksize)
        ]

    try:
        with (
            rasterio.Env(GDAL_CACHEMAX=GDAL_CACHEMAX_MB, GDAL_NUM_THREADS="ALL_CPUS"),
            rasterio.open(partial, "w", **profile) as dst,
            ThreadPoolExecutor(max_workers=n_workers, thread_name_prefix="synth") as pool,
        ):
            dst.update_tags(
                SYNTH_GENERATOR="pipeline.synth",
                SYNTH_SEED=str(int(seed)),
                SYNTH_SIZE=f"{height}x{width}",
                **({"SYNTH_DTYPE": dtype, "SYNTH_SCALE": repr(FLOAT_SCALE), "SYNTH_OFFSET": repr(FLOAT_OFFSET)}
                   if dtype != "uint16" else {}),
            )
            pending = submit(pool, 0)
            for k, r0 in enumerate(strips):
                for fut in pending:
                    fut.result()
                pending = submit(pool, k + 1) if k + 1 < len(strips) else []
                h = min(r0 + blocksize, height) - r0
                dst.write(convert(bufs[k % 2][:h]), 1, window=Window(0, r0, width, h))
        os.replace(partial, path)
    except BaseException:
        try:
            partial.unlink()
        except FileNotFoundError:
            pass
        raise
    log.info("make_scene %s: written in %.2f s", path, time.perf_counter() - t0)
    return path


def _render_tile(model, buf, r0, c0, c1, s_rows, e_rows, all_cols) -> None:
    """Render the part of tile columns [c0, c1) of the strip starting at r0."""
    lo = np.maximum(s_rows, c0)
    hi = np.minimum(e_rows, c1)
    live = np.nonzero(hi > lo)[0]
    if live.size == 0:
        return  # tile entirely outside the footprint: stays 0
    ra, rb = int(live[0]), int(live[-1]) + 1
    ca, cb = int(lo[ra:rb].min()), int(hi[ra:rb].max())
    rows = np.arange(r0 + ra, r0 + rb, dtype=np.int64)
    cols = all_cols[ca:cb]
    vals = _render(model, rows, cols)
    inside = (cols[None, :] >= s_rows[ra:rb, None]) & (cols[None, :] < e_rows[ra:rb, None])
    vals *= inside  # 0 outside the footprint
    buf[ra:rb, ca:cb] = vals
