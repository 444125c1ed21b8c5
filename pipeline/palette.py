"""Class colours: explicit colours or a named colormap, as an (N+1, 4) uint8 RGBA table.

Row 0 is the nodata colour (transparent black); rows 1..N colour classes 1..N.
Named colormaps: viridis, magma, inferno, plasma, cividis and turbo are built in; any other
matplotlib colormap name works when matplotlib is installed.
"""

from __future__ import annotations

import json
import logging
import re
from functools import lru_cache
from importlib import resources

import numpy as np

from .jobs.config import Palette
from .errors import ConfigError

log = logging.getLogger(__name__.replace("pipeline", "sceneclass", 1))

DEFAULT_COLORMAP = "viridis"
_HEX = re.compile(r"^#?([0-9a-fA-F]{6})([0-9a-fA-F]{2})?$")


@lru_cache(maxsize=None)
def _builtin() -> dict[str, np.ndarray]:
    data = json.loads(resources.files(__package__).joinpath("colormaps.json").read_text())
    return {
        name: np.frombuffer(bytes.fromhex(hexes), dtype=np.uint8).reshape(256, 3)
        for name, hexes in data["colormaps"].items()
    }


def colormap_table(name: str) -> np.ndarray:
    """A 256-entry RGBA uint8 table for a named colormap."""
    builtin = _builtin()
    if name in builtin:
        rgb = builtin[name]
        return np.column_stack([rgb, np.full(256, 255, np.uint8)])
    try:
        import matplotlib
    except ImportError:
        raise ConfigError(
            f"palette.name: unknown colormap {name!r} (built in: {', '.join(sorted(builtin))}; "
            "install matplotlib for more)"
        ) from None
    if name not in matplotlib.colormaps:
        raise ConfigError(f"palette.name: unknown colormap {name!r}")
    cmap = matplotlib.colormaps[name].resampled(256)
    return (np.asarray(cmap(np.arange(256))) * 255).round().astype(np.uint8)


def parse_color(value, index: int) -> tuple[int, int, int, int]:
    """'#rrggbb', '#rrggbbaa', [r, g, b] or [r, g, b, a] -> RGBA."""
    where = f"palette.colors.{index}"
    if isinstance(value, str):
        m = _HEX.match(value.strip())
        if not m:
            raise ConfigError(f"{where}: {value!r} is not a hex colour like '#1a9850'")
        rgb = bytes.fromhex(m.group(1))
        return (*rgb, int(m.group(2), 16) if m.group(2) else 255)
    if len(value) not in (3, 4) or not all(0 <= int(c) <= 255 for c in value):
        raise ConfigError(f"{where}: {value!r} must be [r, g, b] or [r, g, b, a] in 0..255")
    return tuple(int(c) for c in value) + ((255,) if len(value) == 3 else ())


def sample(table: np.ndarray, n: int) -> np.ndarray:
    """``n`` evenly spaced entries of a 256-entry table, as matplotlib's ``cmap(linspace(0, 1, n))``."""
    idx = np.clip((np.linspace(0.0, 1.0, n) * len(table)).astype(int), 0, len(table) - 1)
    return table[idx]


def interpolate(colors: np.ndarray, n: int) -> np.ndarray:
    """``n`` colours linearly interpolated (in RGBA) along the given ones."""
    pos = np.linspace(0.0, 1.0, len(colors))
    at = np.linspace(0.0, 1.0, n)
    return np.column_stack([np.interp(at, pos, colors[:, c]) for c in range(4)]).round().astype(np.uint8)


def check_palette(cfg: Palette, n: int) -> None:
    """Refuse a palette that cannot colour ``n`` classes (before any pixel is read): a colour
    that does not parse, an unknown colormap name, too few colours.

    Raises
    ------
    ConfigError
        Naming ``palette.colors.I``, ``palette.name`` or ``palette.colors``.
    """
    for i, c in enumerate(cfg.colors or ()):
        parse_color(c, i)
    if cfg.name is not None:
        colormap_table(cfg.name)
    if cfg.colors is not None and len(cfg.colors) < n and not cfg.interpolate:
        raise ConfigError(
            f"palette.colors: {len(cfg.colors)} colours for {n} classes; give at least {n} "
            "or set palette.interpolate: true"
        )


def check_table_alpha(cfg: Palette) -> None:
    """A GeoTIFF colour table has no alpha: refuse translucent explicit colours for a paletted COG."""
    for i, c in enumerate(cfg.colors or ()):
        if parse_color(c, i)[3] != 255:
            raise ConfigError(
                f"palette.colors.{i}: {c!r} is translucent, but a GeoTIFF colour table stores no alpha; "
                "use output.mode: rgba, a Zarr output, or an opaque colour"
            )


def build_palette(cfg: Palette, n: int) -> np.ndarray:
    """The (n+1, 4) RGBA table for ``n`` classes; row 0 (nodata) is transparent."""
    check_palette(cfg, n)
    if cfg.colors is not None:
        given = np.array([parse_color(c, i) for i, c in enumerate(cfg.colors)], dtype=np.uint8)
        if len(given) > n and not cfg.interpolate:
            log.warning("palette.colors: %d colours for %d classes; using the first %d", len(given), n, n)
        colors = interpolate(given, n) if cfg.interpolate and len(given) != n else given[:n]
    else:
        colors = sample(colormap_table(cfg.name or DEFAULT_COLORMAP), n)
    if cfg.reverse:
        colors = colors[::-1]
    return np.vstack([np.zeros((1, 4), np.uint8), colors]).astype(np.uint8)


def to_hex(rgba) -> str:
    r, g, b, a = (int(c) for c in rgba)
    return f"#{r:02x}{g:02x}{b:02x}" + ("" if a == 255 else f"{a:02x}")
