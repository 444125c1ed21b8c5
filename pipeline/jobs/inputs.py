"""Open a job's input as one lazy scene: a band of one file, a derived band (``bands:`` and an
expression), or a mosaic (``output.mosaic``), with every pixel setting of the config."""

from __future__ import annotations

from .config import RunConfig
from ..errors import ConfigError
from ..scene import Scene, open_scene


def open_input(cfg: RunConfig) -> Scene:
    """Open the job's input band lazily with every pixel setting of the config (nodata, valid
    range, GDAL mask, QA mask raster, scale/offset, units); reads headers only. A mosaic job
    (``output.mosaic``) opens its inputs as one scene (:func:`pipeline.mosaic.open_mosaic`).

    Raises
    ------
    ConfigError, InputError
        A missing band, a mask raster on another grid, a scale that is not positive, a file
        that cannot be read (naming the key or the file).
    """
    if cfg.bands is not None:
        return open_derived(cfg)
    if cfg.output.mosaic:
        from ..mosaic import open_mosaic, plan_mosaic

        return open_mosaic(plan_mosaic(cfg.members, cfg.output.order), cfg.nodata, cfg.processing.chunk,
                           cfg.output.blocksize, valid_range=cfg.valid_range, gdal_mask=cfg.gdal_mask,
                           scale=cfg.scale, offset=cfg.offset, units=cfg.units)
    return open_scene(cfg.input, cfg.band, cfg.nodata, cfg.processing.chunk, cfg.output.blocksize,
                      valid_range=cfg.valid_range, gdal_mask=cfg.gdal_mask,
                      mask=cfg.mask.to_mask() if cfg.mask is not None else None,
                      scale=cfg.scale, offset=cfg.offset, units=cfg.units)


def open_derived(cfg: RunConfig) -> Scene:
    """Open every band under ``cfg.bands`` with its own pixel settings and combine them lazily by
    ``cfg.expression`` or ``cfg.index`` (:func:`pipeline.derived.derive`); reads headers only.

    Raises
    ------
    ConfigError, InputError
        A band file or band number that cannot be opened, bands on different grids (naming them).
    """
    from ..derived import derive

    scenes = {}
    for name, spec in cfg.bands.items():
        s = spec.settings(cfg)
        try:
            scenes[name] = open_scene(spec.path, s["band"], s["nodata"], cfg.processing.chunk, cfg.output.blocksize,
                                      valid_range=s["valid_range"], gdal_mask=s["gdal_mask"],
                                      mask=s["mask"].to_mask() if s["mask"] is not None else None,
                                      scale=s["scale"], offset=s["offset"], units=s["units"])
        except ConfigError as e:  # e.g. "band: x.tif has 3 band(s)": say which named band
            raise ConfigError(f"bands.{name}.{e}") from None
    units = None if cfg.units == "file" else cfg.units
    return derive(scenes, cfg.derivation(), units=units, index=cfg.index)
