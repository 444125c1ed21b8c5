"""A Cloud-Optimized GeoTIFF from compressed tiles, written front to back.

The layout is the one GDAL's COG driver writes: the TIFF header, GDAL's "ghost" structural
metadata (``LAYOUT=IFDS_BEFORE_DATA``, ``BLOCK_ORDER=ROW_MAJOR``, a 4-byte size before each tile
and its last 4 bytes repeated after it), every IFD (full resolution first, then the overviews
from large to small) with its tag values, then the tile data from the smallest overview to full
resolution, each level row by row. Every offset is computed from the tile sizes before the first
byte is written, so the file goes out in one sequential stream (no seek): to a local file, or to
any writable binary object (an upload).

The non-structural tags (photometric, colour table, extra samples, sample format, nodata,
GeoTIFF georeferencing keys, GCPs, RPCs) are copied from a one-pixel GeoTIFF GDAL writes for the
same profile in memory, so GDAL itself encodes the CRS.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import BinaryIO, Callable, Iterable

import numpy as np
import rasterio
from rasterio.enums import ColorInterp

#: bytes per value of each TIFF field type
TYPE_SIZES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8, 13: 4, 16: 8, 17: 8, 18: 8}
SHORT, LONG, LONG8 = 3, 4, 16

#: tags the writer sets itself (structure), never copied from the template
STRUCTURE = {254, 256, 257, 259, 273, 278, 279, 317, 322, 323, 324, 325}
#: template tags an overview IFD repeats (as GDAL's COG driver does)
OVERVIEW_TAGS = {258, 262, 277, 284, 320, 338, 339, 42113}

GHOST = ("LAYOUT=IFDS_BEFORE_DATA\nBLOCK_ORDER=ROW_MAJOR\nBLOCK_LEADER=SIZE_AS_UINT4\n"
         "BLOCK_TRAILER=LAST_4_BYTES_REPEATED\nKNOWN_INCOMPATIBLE_EDITION=NO\n ")


@dataclass(frozen=True)
class Tag:
    """One TIFF field: code, field type and its values already encoded (little-endian)."""

    code: int
    type: int
    count: int
    data: bytes


@dataclass(frozen=True)
class LevelLayout:
    """One image of the COG: size in pixels and the byte size of every compressed tile
    (tile rows x tile columns)."""

    width: int
    height: int
    sizes: np.ndarray  # (tiles_y, tiles_x) int64


def _parse_ifd(buf: bytes) -> dict[int, Tag]:
    """The first IFD of a little-endian classic TIFF or BigTIFF in ``buf``, tag by tag."""
    if buf[:2] != b"II":
        raise ValueError("template is not a little-endian TIFF")
    big = struct.unpack_from("<H", buf, 2)[0] == 43
    if big:
        (ifd,) = struct.unpack_from("<Q", buf, 8)
        (n,), entry, inline = struct.unpack_from("<Q", buf, ifd), 20, 8
        pos = ifd + 8
    else:
        (ifd,) = struct.unpack_from("<I", buf, 4)
        (n,), entry, inline = struct.unpack_from("<H", buf, ifd), 12, 4
        pos = ifd + 2
    tags = {}
    for i in range(n):
        p = pos + i * entry
        code, typ = struct.unpack_from("<HH", buf, p)
        count = struct.unpack_from("<Q" if big else "<I", buf, p + 4)[0]
        size = count * TYPE_SIZES.get(typ, 1)
        vp = p + (12 if big else 8)
        if size <= inline:
            data = buf[vp:vp + size]
        else:
            off = struct.unpack_from("<Q" if big else "<I", buf, vp)[0]
            data = buf[off:off + size]
        tags[code] = Tag(code, typ, count, bytes(data))
    return tags


def template_tags(*, bands: int, palette: np.ndarray | None, crs=None, transform=None, gcps=None,
                  gcps_crs=None, rpcs=None, nodata: float | None = None) -> dict[int, Tag]:
    """The tags GDAL writes for a GeoTIFF of this profile (a one-pixel file in memory).

    Parameters
    ----------
    bands : int
        1 (paletted class ids), 3 (RGB) or 4 (RGBA, unassociated alpha).
    palette : ndarray, uint8, (n, 4), optional
        The colour table of a paletted file.
    crs, transform : optional
        CRS and affine geotransform; or ``gcps`` and ``gcps_crs``; ``rpcs`` (rasterio RPC).
    nodata : float, optional
        The nodata value (GDAL_NODATA).

    Returns
    -------
    dict of int to Tag
        Every tag of the template's IFD.
    """
    if gcps:
        georef = {"gcps": gcps, "crs": gcps_crs}
    elif crs is not None or (transform is not None and not transform.is_identity):
        georef = {"crs": crs, "transform": transform}
    else:
        georef = {}
    if rpcs is not None:
        georef["rpcs"] = rpcs
    profile = {"driver": "GTiff", "width": 1, "height": 1, "count": bands, "dtype": "uint8", **georef,
               "nodata": nodata, "interleave": "pixel"}
    if bands >= 3:
        profile["photometric"] = "RGB"
    with rasterio.MemoryFile(ext=".tif") as mem:
        with mem.open(**profile) as dst:
            if bands == 1 and palette is not None:
                dst.write_colormap(1, {i: tuple(int(c) for c in rgba) for i, rgba in enumerate(palette)})
            elif bands == 4:
                dst.colorinterp = [ColorInterp.red, ColorInterp.green, ColorInterp.blue, ColorInterp.alpha]
        data = mem.read()
    return _parse_ifd(data)


def _entry(tag: Tag, big: bool, external: int | None) -> bytes:
    head = struct.pack("<HHQ" if big else "<HHI", tag.code, tag.type, tag.count)
    inline = 8 if big else 4
    if external is None:
        return head + tag.data.ljust(inline, b"\0")
    return head + struct.pack("<Q" if big else "<I", external)


def _long(code: int, values, big: bool) -> Tag:
    values = np.asarray(values, dtype=np.int64).reshape(-1)
    if big:
        return Tag(code, LONG8, values.size, values.astype("<u8").tobytes())
    return Tag(code, LONG, values.size, values.astype("<u4").tobytes())


def _short(code: int, value: int) -> Tag:
    return Tag(code, SHORT, 1, struct.pack("<H", value))


def _ifd_size(tags: list[Tag], big: bool) -> int:
    """Bytes of an IFD and its out-of-line values (each value even-aligned)."""
    inline = 8 if big else 4
    size = (8 + 20 * len(tags) + 8) if big else (2 + 12 * len(tags) + 4)
    for t in tags:
        if len(t.data) > inline:
            size += len(t.data) + (len(t.data) & 1)
    return size


def _ifd_bytes(tags: list[Tag], big: bool, at: int, next_ifd: int) -> bytes:
    inline = 8 if big else 4
    tags = sorted(tags, key=lambda t: t.code)
    head = (8 + 20 * len(tags) + 8) if big else (2 + 12 * len(tags) + 4)
    extra, entries, pos = [], [], at + head
    for t in tags:
        if len(t.data) > inline:
            entries.append(_entry(t, big, pos))
            data = t.data + (b"\0" if len(t.data) & 1 else b"")
            extra.append(data)
            pos += len(data)
        else:
            entries.append(_entry(t, big, None))
    count = struct.pack("<Q" if big else "<H", len(tags))
    nxt = struct.pack("<Q" if big else "<I", next_ifd)
    return count + b"".join(entries) + nxt + b"".join(extra)


def choose_bigtiff(levels: list[LevelLayout], bands: int, tile: int) -> bool:
    """BigTIFF when the file could pass 4 GiB: when the uncompressed tiles of every level pass
    4.2 GB (the bound GDAL's ``BIGTIFF=IF_NEEDED`` uses for uncompressed files, so the
    choice does not depend on how well the tiles compress), or when the compressed tiles
    themselves come within 64 MiB of 4 GiB."""
    uncompressed = sum(-(-lv.height // tile) * -(-lv.width // tile) * tile * tile * bands for lv in levels)
    stored = sum(int(lv.sizes.sum()) + 8 * lv.sizes.size for lv in levels)
    return uncompressed > 4_200_000_000 or stored + 64 * 1024 * 1024 > 0xFFFFFFFF


def layout(levels: list[LevelLayout], template: dict[int, Tag], blocksize: int, compression: int,
           big: bool) -> tuple[bytes, list[np.ndarray]]:
    """The bytes before the tile data (header, ghost metadata, IFDs) and every tile's offset.

    Returns
    -------
    (bytes, list of ndarray)
        The head of the file; per level, the (tiles_y, tiles_x) int64 offsets of the tiles'
        data (each preceded by its 4-byte size, followed by its last 4 bytes).
    """
    ghost = f"GDAL_STRUCTURAL_METADATA_SIZE={len(GHOST):06d} bytes\n{GHOST}".encode()
    start = (16 if big else 8) + len(ghost)
    main_extra = [t for c, t in template.items() if c not in STRUCTURE]
    ovr_extra = [t for c, t in template.items() if c in OVERVIEW_TAGS]

    def tags_of(i: int, lv: LevelLayout, offsets) -> list[Tag]:
        tags = [_long(256, [lv.width], False), _long(257, [lv.height], False),
                _short(259, compression), _short(322, blocksize), _short(323, blocksize),
                _long(324, offsets, big), _long(325, lv.sizes, big)]
        if compression != 1:
            tags.append(_short(317, 1))
        if i:
            tags.append(_long(254, [1], False))
        return tags + (ovr_extra if i else main_extra)

    dummy = [np.zeros(lv.sizes.shape, np.int64) for lv in levels]
    sizes = [_ifd_size(tags_of(i, lv, dummy[i]), big) for i, lv in enumerate(levels)]
    ifd_at = np.cumsum([start] + sizes)
    data_at = int(ifd_at[-1])
    offsets: list[np.ndarray] = [None] * len(levels)  # type: ignore[list-item]
    pos = data_at
    for i in reversed(range(len(levels))):  # smallest overview first, full resolution last
        flat = levels[i].sizes.reshape(-1).astype(np.int64)
        steps = flat + 8  # leader + data + trailer
        offs = pos + 4 + np.concatenate([[0], np.cumsum(steps)[:-1]])
        offsets[i] = offs.reshape(levels[i].sizes.shape)
        pos += int(steps.sum())
    head = [(b"II+\0" + struct.pack("<HHQ", 8, 0, int(ifd_at[0]))) if big
            else (b"II*\0" + struct.pack("<I", int(ifd_at[0]))), ghost]
    for i, lv in enumerate(levels):
        nxt = int(ifd_at[i + 1]) if i + 1 < len(levels) else 0
        head.append(_ifd_bytes(tags_of(i, lv, offsets[i]), big, int(ifd_at[i]), nxt))
    out = b"".join(head)
    assert len(out) == data_at, (len(out), data_at)
    return out, offsets


def write_tiff(fileobj: BinaryIO, levels: list[LevelLayout], template: dict[int, Tag], blocksize: int,
                     compression: int, tile_rows: Callable[[int], Iterable[list[bytes]]],
                     bigtiff: bool | None = None, bands: int = 1) -> int:
    """Write a COG to ``fileobj`` front to back (``write`` calls only, never a seek).

    Parameters
    ----------
    fileobj : binary file object
        Anything with ``write(bytes)``: a file opened ``wb``, a socket, a multipart upload.
    levels : list of LevelLayout
        Full resolution, then the overviews (large to small), with every tile's compressed size.
    template : dict of int to Tag
        Tags from :func:`template_tags` (colour table, nodata, georeferencing, ...).
    blocksize : int
        Tile width and height in pixels.
    compression : int
        TIFF Compression code of the tiles (1 none, 5 LZW, 8 deflate, 50000 zstd).
    tile_rows : callable
        ``tile_rows(level)`` yields the level's tiles row by row (each row a list of bytes, left
        to right), exactly the sizes in ``levels``; called for the smallest overview first.
    bigtiff : bool, optional
        Force BigTIFF or classic TIFF (default: :func:`choose_bigtiff`).
    bands : int
        Samples per pixel (for the BigTIFF rule).

    Returns
    -------
    int
        Bytes written.

    Raises
    ------
    ValueError
        A tile's size differs from the one announced in ``levels``.
    """
    big = choose_bigtiff(levels, bands, blocksize) if bigtiff is None else bigtiff
    head, _ = layout(levels, template, blocksize, compression, big)
    fileobj.write(head)
    written = len(head)
    for i in reversed(range(len(levels))):
        want = levels[i].sizes
        r = -1
        for r, row in enumerate(tile_rows(i)):
            if len(row) != want.shape[1]:
                raise ValueError(f"level {i} tile row {r}: {len(row)} tiles, expected {want.shape[1]}")
            parts = []
            for c, data in enumerate(row):
                if len(data) != want[r, c]:
                    raise ValueError(f"level {i} tile ({r}, {c}): {len(data)} bytes, expected {want[r, c]}")
                parts += [struct.pack("<I", len(data)), data, bytes(data[-4:]).rjust(4, b"\0")]
            chunk = b"".join(parts)
            fileobj.write(chunk)
            written += len(chunk)
        if r + 1 != want.shape[0]:
            raise ValueError(f"level {i}: {r + 1} tile rows, expected {want.shape[0]}")
    return written
