"""Typed run configuration: YAML (safe loader only) -> pydantic models that forbid unknown keys.

Relative paths in a config file resolve against the config file's folder; paths given as
``--set`` overrides resolve against the current directory.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args

import yaml
from pydantic import (
    BaseModel, ConfigDict, Discriminator, Field, StringConstraints, Tag, ValidationError, field_validator,
    model_validator,
)

from ..errors import ConfigError

#: Config keys whose values are filesystem paths (or URLs).
PATH_KEYS = ("input", "output.path", "output.folder", "mask.path", "classes.edges_from")
#: Placeholders an output path template may use (see :mod:`pipeline.batch`).
TEMPLATE_FIELDS = ("stem", "name", "band", "scheme", "date")
#: placeholders that name one input (a mosaic's single output cannot use them)
PER_INPUT_FIELDS = ("stem", "name", "date")


SchedulerAddress = Annotated[str, StringConstraints(pattern=r"^(tcp|tls|ucx|inproc)://\S+$")]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Scheme(_Model):
    #: optional class labels, one per class (legend, style files, report); default: value ranges
    labels: list[str] | None = Field(None, min_length=1, max_length=254)
    #: each: every scene fits its own edges; together: one set of edges from all inputs of a batch
    fit: Literal["each", "together"] = "each"
    #: a legend JSON of an earlier run: its scheme, edges, colours, units and labels are reused
    edges_from: str | None = None
    #: valid pixels below the first edge or above the last: nodata (class 0) or clip (first/last class)
    outside: Literal["nodata", "clip"] = "nodata"

    @model_validator(mode="after")
    def _pinned_or_fitted(self) -> "_Scheme":
        if self.edges_from is not None:
            if self.fit == "together":
                raise ValueError("classes.edges_from: the edges come from the legend; "
                                 "classes.fit: together would fit them again (give one of the two)")
            if self.labels is not None:
                raise ValueError("classes.labels: with classes.edges_from the labels come from the legend")
            fitting = sorted(self.model_fields_set - {"scheme", "edges_from", "outside", "fit"})
            if fitting:
                raise ValueError(f"classes.edges_from: the scheme and its edges come from the legend; remove "
                                 f"classes.{', classes.'.join(fitting)}")
        return self


#: Landsat Collection 2 QA_PIXEL flag names (bits 0..7), see :data:`pipeline.scene.QA_PIXEL_FLAGS`
QaFlag = Literal["fill", "dilated_cloud", "cirrus", "cloud", "cloud_shadow", "snow", "clear", "water"]


class MaskSpec(_Model):
    """A second raster on the input's grid whose flagged pixels are left out: where any of
    ``bits`` (or the Landsat C2 QA_PIXEL ``flags``) is set, or where it equals one of ``values``."""

    path: str
    band: int = Field(1, ge=1)
    bits: list[Annotated[int, Field(ge=0, le=63)]] | None = Field(None, min_length=1)
    flags: list[QaFlag] | None = Field(None, min_length=1)
    values: list[float] | None = Field(None, min_length=1)

    @model_validator(mode="after")
    def _one_rule(self) -> "MaskSpec":
        given = [k for k in ("bits", "flags", "values") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of mask.bits, mask.flags or mask.values")
        return self

    def to_mask(self):
        """The :class:`pipeline.scene.MaskRaster` this describes."""
        from ..scene import QA_PIXEL_FLAGS, MaskRaster

        bits = self.bits or [QA_PIXEL_FLAGS[f] for f in (self.flags or [])]
        return MaskRaster(self.path, self.band, tuple(bits), tuple(self.values or ()))


Nodata = Union[float, Annotated[list[float], Field(min_length=1)], Literal["file", "none"]]
ScaleSetting = Union[float, Literal["file"]]


def _check_range(v):
    if v is not None and not v[0] <= v[1]:
        raise ValueError("must be [lo, hi] with lo <= hi")
    return v


class EqualInterval(_Scheme):
    """N equal-width classes over [min, max] of the valid pixels (numpy.histogram semantics)."""

    scheme: Literal["equal_interval"] = "equal_interval"
    count: int = Field(20, ge=1, le=254)


class Quantile(_Scheme):
    """N classes holding (about) equal numbers of pixels; edges are numpy.quantile (linear)."""

    scheme: Literal["quantile"] = "quantile"
    count: int = Field(..., ge=1, le=254)


class Manual(_Scheme):
    """User-given class edges: ``breaks`` are the N+1 edges, increasing; out-of-range pixels -> nodata."""

    scheme: Literal["manual"] = "manual"
    breaks: list[float] = Field(..., min_length=2, max_length=255)

    @field_validator("breaks")
    @classmethod
    def _increasing(cls, v: list[float]) -> list[float]:
        if any(not b > a for a, b in zip(v, v[1:])):
            raise ValueError("breaks must be strictly increasing")
        return v


def _strictly_increasing(v: list[float], what: str) -> list[float]:
    if any(not b > a for a, b in zip(v, v[1:])):
        raise ValueError(f"{what} must be strictly increasing")
    return v


class NaturalBreaks(_Scheme):
    """Fisher-Jenks optimal classes (least within-class sum of squares), like mapclassify.FisherJenks.

    8/16-bit data: exact, from the statistics pass's histogram. Other dtypes: optimal over a
    ``float_bins``-bin histogram between min and max (one extra pass); edges are bin edges.
    """

    scheme: Literal["natural_breaks"] = "natural_breaks"
    count: int = Field(5, ge=1, le=254)
    float_bins: int = Field(65536, ge=16, le=1 << 20)


class StdMean(_Scheme):
    """Edges at mean + multiples x standard deviation (ddof=1), like mapclassify.StdMean:
    len(multiples) + 1 classes, the first from the minimum, the last to the maximum."""

    scheme: Literal["std_mean"] = "std_mean"
    multiples: list[float] = Field([-2, -1, 1, 2], min_length=1, max_length=253)

    @field_validator("multiples")
    @classmethod
    def _increasing(cls, v: list[float]) -> list[float]:
        return _strictly_increasing(v, "multiples")

    @property
    def n_classes(self) -> int:
        return len(self.multiples) + 1


class HeadTailBreaks(_Scheme):
    """Head/tail breaks (Jiang 2013), like mapclassify.HeadTailBreaks: edges at the mean, then the
    mean of the values above it, ...; the class count comes from the data (at most max_classes)."""

    scheme: Literal["head_tail_breaks"] = "head_tail_breaks"
    max_classes: int | None = Field(None, ge=1, le=254)

    @property
    def n_classes(self) -> int:
        return self.max_classes or 254  # an upper bound: the fitted count is known after the fit


class Percentiles(_Scheme):
    """Classes ending at the given percentiles (numpy's linear method), like mapclassify.Percentiles;
    the last must be 100 (the maximum)."""

    scheme: Literal["percentiles"] = "percentiles"
    pct: list[float] = Field([1, 10, 50, 90, 99, 100], min_length=1, max_length=254)

    @field_validator("pct")
    @classmethod
    def _valid(cls, v: list[float]) -> list[float]:
        if not all(0 <= p <= 100 for p in v):
            raise ValueError("percentiles must be within 0..100")
        if v[-1] != 100:
            raise ValueError("the last percentile must be 100 (the last class ends at the maximum)")
        return _strictly_increasing(v, "pct")

    @property
    def n_classes(self) -> int:
        return len(self.pct)


class BoxPlot(_Scheme):
    """Six box-plot classes, like mapclassify.BoxPlot: low outliers, quartile 1..4 ranges inside
    the fences (q1 - hinge·IQR, q3 + hinge·IQR), high outliers."""

    scheme: Literal["box_plot"] = "box_plot"
    hinge: float = Field(1.5, gt=0)

    @property
    def n_classes(self) -> int:
        return 6


SCHEME_MODELS = (EqualInterval, Quantile, Manual, NaturalBreaks, StdMean, HeadTailBreaks, Percentiles, BoxPlot)
SCHEME_NAMES = tuple(get_args(m.model_fields["scheme"].annotation)[0] for m in SCHEME_MODELS)


def _scheme_of(value) -> str:
    """The union tag: a ``classes`` mapping without ``scheme`` is the default, equal_interval."""
    if isinstance(value, dict):
        return value.get("scheme", "equal_interval")
    return getattr(value, "scheme", "equal_interval")


Classes = Annotated[
    Union[tuple(Annotated[m, Tag(n)] for m, n in zip(SCHEME_MODELS, SCHEME_NAMES))],
    Discriminator(_scheme_of),
]


class Palette(_Model):
    """Class colours: explicit ``colors`` (hex or [r, g, b]) or a named colormap sampled to N classes."""

    colors: list[Union[str, list[int]]] | None = Field(None, min_length=1)
    name: str | None = None
    interpolate: bool = False
    reverse: bool = False

    @model_validator(mode="after")
    def _one_source(self) -> "Palette":
        if self.colors is not None and self.name is not None:
            raise ValueError("give either palette.colors or palette.name, not both")
        return self


class Output(_Model):
    path: str  # a path, or a template such as "{stem}_classes.tif" (see TEMPLATE_FIELDS)
    folder: str | None = None  # where outputs go; ``path`` is then relative to it
    format: Literal["cog", "zarr"] | None = None  # default: from the path's suffix
    mode: Literal["paletted", "rgb", "rgba"] = "paletted"
    compression: Literal["zstd", "deflate", "lzw", "none"] = "zstd"
    level: int | None = Field(None, ge=1, le=22)
    overviews: bool = True
    overview_resampling: Literal["nearest", "mode"] = "nearest"
    blocksize: int = Field(512, ge=64, le=4096)
    legend: bool = True
    overwrite: bool = True
    #: one output from all ``inputs`` on a grid covering them (gdalbuildvrt semantics)
    mosaic: bool = False
    #: where mosaic inputs overlap: the later input wins (gdalbuildvrt's order) or the earlier one
    mosaic_order: Literal["last_on_top", "first_on_top"] | None = None

    @model_validator(mode="after")
    def _mosaic_keys(self) -> "Output":
        if self.mosaic_order is not None and not self.mosaic:
            raise ValueError("output.mosaic_order: only applies with output.mosaic: true")
        if self.mosaic:
            import string

            per_input = sorted({f for _, f, _, _ in string.Formatter().parse(self.path)} & set(PER_INPUT_FIELDS))
            if per_input:
                raise ValueError(f"output.path: a mosaic is one output; {{{per_input[0]}}} names one input "
                                 "(use {band} or {scheme}, or a plain name)")
        return self

    @property
    def order(self) -> str:
        """The mosaic's stacking order (``last_on_top`` unless ``mosaic_order`` says otherwise)."""
        return self.mosaic_order or "last_on_top"

    @field_validator("path")
    @classmethod
    def _template(cls, v: str) -> str:
        import string

        try:
            fields = [f for _, f, spec, conv in string.Formatter().parse(v) if f is not None]
        except ValueError as e:
            raise ValueError(f"bad template {v!r}: {e}") from None
        for f in fields:
            if f not in TEMPLATE_FIELDS:
                raise ValueError(f"unknown placeholder {{{f}}}; use {', '.join('{%s}' % n for n in TEMPLATE_FIELDS)}")
        return v

    @model_validator(mode="after")
    def _inside_folder(self) -> "Output":
        if self.folder is not None:
            p = Path(self.path)
            if p.is_absolute() or ".." in p.parts:
                raise ValueError("output.path must be relative to output.folder, without '..'")
        return self

    @field_validator("blocksize")
    @classmethod
    def _multiple_of_16(cls, v: int) -> int:
        if v % 16:
            raise ValueError("must be a multiple of 16 (GeoTIFF tiles)")
        return v

    @field_validator("path", "folder")
    @classmethod
    def _writable(cls, v: str | None) -> str | None:
        if v is not None:
            from ..storage import check_output_url

            check_output_url(v)  # local, or object storage; http(s) and unknown schemes refused
        return v

    @model_validator(mode="after")
    def _suffix_matches_format(self) -> "Output":
        if "{" not in Path(self.path).name:  # a template's name is checked once rendered (batch.plan)
            check_suffix(self.path, self.resolved_format)
        return self

    @property
    def resolved_format(self) -> str:
        if self.format:
            return self.format
        return "zarr" if self.path.rstrip("/").lower().endswith(".zarr") else "cog"


#: file name suffixes each output format may be written under
FORMAT_SUFFIXES = {"cog": (".tif", ".tiff"), "zarr": (".zarr",)}


def check_suffix(path: str, fmt: str) -> None:
    """Refuse an output name whose suffix does not say what is written there.

    Parameters
    ----------
    path : str
        The output path (rendered, or a literal path from the config).
    fmt : {"cog", "zarr"}
        The output format.

    Raises
    ------
    ValueError
        The name does not end in one of ``FORMAT_SUFFIXES[fmt]`` (the message names output.path).
    """
    suffix = Path(path.rstrip("/")).suffix.lower()
    if suffix not in FORMAT_SUFFIXES[fmt]:
        raise ValueError(f"output.path: {Path(path).name!r} does not name a {fmt} output; "
                         f"its name must end in {' or '.join(FORMAT_SUFFIXES[fmt])}")


class Processing(_Model):
    chunk: int = Field(2048, ge=64, le=32768, description="processing tile edge, in pixels")
    gdal_cache_mb: int = Field(128, ge=8, le=65536)
    #: keep decoded chunks between the passes instead of decoding the input twice;
    #: auto: when the input is compressed or remote (and there is room)
    reuse_decoded: Literal["auto", "always", "never"] = "auto"
    #: where: memory (an anonymous memory file, Linux; every worker must run on this machine) or
    #: disk (a raw file beside the output); auto: memory for the local schedulers when the chunks
    #: take at most a quarter of the available memory, else disk
    keep_decoded_in: Literal["auto", "memory", "disk"] = "auto"


class Dask(_Model):
    """Where the passes run: local threads (default), processes, synchronous, a LocalCluster
    (``local``) or an existing dask.distributed cluster (``tcp://host:8786``)."""

    scheduler: Union[Literal["threads", "synchronous", "processes", "local"], SchedulerAddress] = "threads"
    workers: int | None = Field(None, ge=1, description="threads/processes: pool size; local: worker processes")
    threads_per_worker: int = Field(1, ge=1)
    memory_limit: str | None = Field("auto", description="local: per-worker memory limit, e.g. 4GiB")
    dashboard_address: str = ":8787"
    connect_timeout: float = Field(10.0, gt=0)
    pause_timeout: float = Field(10.0, gt=0, description="seconds a worker may stay paused while no task "
                                                         "finishes before the run stops")


class Storage(_Model):
    """How object storage (``s3://`` and S3-compatible stores) is reached, for reads and writes,
    by the client and every worker. Credentials come from the environment or ``profile`` (the
    AWS chain, resolved once on the client); they are never written in a config."""

    endpoint_url: str | None = Field(None, description="an S3-compatible endpoint, e.g. http://127.0.0.1:9000")
    region: str | None = None
    anonymous: bool = False  # unsigned requests (public buckets)
    profile: str | None = None  # a profile of ~/.aws/config and ~/.aws/credentials
    requester_pays: bool = False
    virtual_hosting: bool | None = None  # default: path style for endpoint_url, virtual hosting for AWS

    @field_validator("endpoint_url")
    @classmethod
    def _http(cls, v: str | None) -> str | None:
        if v is not None and not v.lower().startswith(("http://", "https://")):
            raise ValueError(f"{v!r}: an endpoint URL starts with http:// or https://")
        if v is not None and "@" in v.split("://", 1)[1].split("/", 1)[0]:
            raise ValueError("credentials do not belong in the endpoint URL; use the environment or storage.profile")
        return v

    def access(self):
        """The resolved :class:`pipeline.storage.Access` (credentials looked up now)."""
        from ..storage import resolve

        return resolve(self.endpoint_url, self.region, self.anonymous, self.profile, self.requester_pays,
                       self.virtual_hosting)


class InputSpec(_Model):
    """One entry of ``inputs`` with its own settings (per-input overrides)."""

    path: str
    band: int | None = Field(None, ge=1)
    nodata: Nodata | None = None
    valid_range: tuple[float, float] | None = None
    gdal_mask: bool | None = None
    mask: MaskSpec | None = None
    scale: ScaleSetting | None = None
    offset: ScaleSetting | None = None
    units: str | None = None

    @field_validator("valid_range")
    @classmethod
    def _range(cls, v):
        return _check_range(v)

    def overrides(self) -> dict:
        """The settings this entry gives (its path excluded)."""
        keys = ("band", "nodata", "valid_range", "gdal_mask", "mask", "scale", "offset", "units")
        return {k: getattr(self, k) for k in keys if getattr(self, k) is not None}


class BandSpec(InputSpec):
    """One named band of ``bands:`` (a file, or one band of a multi-band file) with its own pixel
    settings; a setting left out is the config's top-level one (``nodata``, ``valid_range``,
    ``gdal_mask``, ``mask``, ``scale``, ``offset``), and ``band`` is 1."""

    def settings(self, cfg: "RunConfig") -> dict:
        """Every pixel setting of this band: its own, else the top-level one of ``cfg``."""
        keys = ("nodata", "valid_range", "gdal_mask", "mask", "scale", "offset")
        out = {k: getattr(cfg, k) for k in keys} | self.overrides()
        out.setdefault("band", 1)
        out.setdefault("units", "file")
        return out


#: names of the spectral index presets (see :data:`pipeline.expression.INDICES`)
IndexName = Literal["ndvi", "ndwi", "mndwi", "nbr", "ndbi", "savi"]
#: top-level keys that make no sense with ``bands:`` (each band has its own path and band number)
NOT_WITH_BANDS = ("input", "inputs", "band")


class Outputs(_Model):
    """Extra files from the run, beside the output and named from it (all off by default)."""

    quicklook: bool = False  # NAME.quicklook.png (nodata transparent), read from the overviews
    quicklook_format: list[Literal["png", "jpeg"]] = Field(["png"], min_length=1)
    quicklook_size: int = Field(1024, ge=16, le=16384, description="longest side, in pixels")
    histogram_plot: bool = False  # NAME.histogram.png
    legend_image: bool = False  # NAME.legend.png
    qml: bool = False  # NAME.qml (QGIS loads it with the raster)
    sld: bool = False  # NAME.sld
    gdal_color_file: bool = False  # NAME.colors.txt (gdaldem color-relief -exact_color_entry)
    report: bool = False  # NAME.report.html (self-contained)

    @field_validator("quicklook_format", mode="before")
    @classmethod
    def _one_or_more(cls, v):
        return [v] if isinstance(v, str) else v


class RunConfig(_Model):
    """A job: one input (``input``) or a batch (``inputs``: paths and glob patterns) -> one
    classified output per input (+ legend and manifest)."""

    input: str | None = None
    inputs: list[Union[str, InputSpec]] | None = None
    #: named bands on one grid, combined by ``expression`` or ``index`` into the band classified
    bands: dict[str, BandSpec] | None = Field(None, min_length=1)
    #: band math on the names under ``bands`` (see :mod:`pipeline.expression`)
    expression: str | None = None
    #: a named spectral index preset (its band names must be under ``bands``)
    index: IndexName | None = None
    band: int = Field(1, ge=1)
    #: raw nodata value(s): the band's declared one (file), none, a number or a list of numbers
    nodata: Nodata = "file"
    #: inclusive [lo, hi] of valid raw values (before scale/offset); pixels outside are nodata
    valid_range: tuple[float, float] | None = None
    #: honour GDAL's mask for the band (internal/external .msk mask, alpha band)
    gdal_mask: bool = True
    mask: MaskSpec | None = None
    #: physical value = raw * scale + offset; file: the band's metadata (1 and 0 when absent)
    scale: ScaleSetting = "file"
    offset: ScaleSetting = "file"
    units: str = "file"
    classes: Classes = Field(default_factory=EqualInterval)
    palette: Palette = Field(default_factory=Palette)
    output: Output
    processing: Processing = Field(default_factory=Processing)
    dask: Dask = Field(default_factory=Dask)
    outputs: Outputs = Field(default_factory=Outputs)
    storage: Storage = Field(default_factory=Storage)

    @model_validator(mode="after")
    def _palette_for_open_count(self) -> "RunConfig":
        c, p = self.classes, self.palette
        if isinstance(c, HeadTailBreaks) and c.max_classes is None and p.colors is not None and not p.interpolate:
            raise ValueError(
                "classes.max_classes: head_tail_breaks finds its class count in the data; with explicit "
                "palette.colors set classes.max_classes (at most the number of colours) or palette.interpolate: true"
            )
        return self

    @field_validator("valid_range")
    @classmethod
    def _range(cls, v):
        return _check_range(v)

    @model_validator(mode="after")
    def _labels_per_class(self) -> "RunConfig":
        if self.classes.edges_from is not None:
            return self  # the class count comes from the legend
        labels = self.classes.labels
        if labels is not None and not isinstance(self.classes, HeadTailBreaks) and len(labels) != self.class_count:
            raise ValueError(f"classes.labels: {len(labels)} labels for {self.class_count} classes; give one per class")
        return self

    @field_validator("index", mode="before")
    @classmethod
    def _index_name(cls, v):
        return v.strip().lower() if isinstance(v, str) else v

    @model_validator(mode="after")
    def _one_input_key(self) -> "RunConfig":
        if self.bands is not None:
            given = [k for k in NOT_WITH_BANDS if k in self.model_fields_set and getattr(self, k) is not None]
            if given:
                raise ValueError(f"bands: cannot be combined with {', '.join(repr(k) for k in given)}; give each "
                                 "band's path (and band number) under bands")
            self.derivation()  # refuses a bad expression or index before anything is opened
            return self
        if self.expression is not None or self.index is not None:
            key = "expression" if self.expression is not None else "index"
            raise ValueError(f"{key}: needs 'bands:' naming the bands it uses (e.g. bands: {{nir: {{path: ...}}}})")
        if (self.input is None) == (self.inputs is None):
            raise ValueError("give exactly one of 'input' (one scene), 'inputs' (a list of paths/globs) "
                             "or 'bands' (with 'expression' or 'index')")
        if self.inputs is not None and not self.inputs:
            raise ValueError("inputs is empty")
        return self

    def derivation(self):
        """The checked expression of a ``bands:`` config.

        Returns
        -------
        pipeline.expression.Expression
            ``expression`` parsed against the band names, or the ``index`` preset's expression.

        Raises
        ------
        ValueError
            One line naming the key: ``expression:`` (not allowed, unknown band ...), ``index:``
            (a band the preset needs is not under ``bands``), ``bands:`` (a name that cannot be
            used), or neither/both of ``expression`` and ``index`` given.
        """
        from .. import expression as ex

        if (self.expression is None) == (self.index is None):
            raise ValueError("bands: give exactly one of 'expression' (band math on the band names) or "
                             "'index' (" + ", ".join(ex.INDICES) + ")")
        try:
            ex.check_band_names(self.bands)
            if self.index is not None:
                needs = ex.INDICES[self.index].bands
                missing = [n for n in needs if n not in self.bands]
                if missing:
                    raise ValueError(
                        f"index: {self.index} needs the band(s) {', '.join(needs)} under bands; missing "
                        f"{', '.join(missing)} (bands gives {', '.join(self.bands)})")
                return ex.index(self.index)
            return ex.parse(self.expression, set(self.bands))
        except ConfigError as e:
            raise ValueError(str(e)) from None

    @model_validator(mode="after")
    def _together_needs_a_batch(self) -> "RunConfig":
        if self.classes.fit == "together" and (self.inputs is None or self.output.mosaic):
            what = ("a mosaic (output.mosaic) is one output" if self.output.mosaic else
                    "band math (bands) is one output" if self.bands is not None else "input is one scene")
            raise ValueError(f"classes.fit: together shares one set of edges between the outputs of a batch "
                             f"(inputs:); {what} with one set of edges already (remove classes.fit)")
        return self

    @model_validator(mode="after")
    def _mosaic_inputs(self) -> "RunConfig":
        if not self.output.mosaic:
            return self
        if self.inputs is None:
            raise ValueError("output.mosaic: a mosaic is made of inputs (a list of paths/globs), not input")
        if self.mask is not None:
            raise ValueError("mask: a mask raster lies on one input's grid; output.mosaic does not take one "
                             "(mosaic the QA rasters separately or leave mask out)")
        for i, entry in enumerate(self.inputs):
            if isinstance(entry, InputSpec):
                other = sorted(set(entry.overrides()) - {"band"})
                if other:
                    raise ValueError(f"inputs.{i}.{other[0]}: per-input settings other than band do not apply in a "
                                     f"mosaic (output.mosaic); the top-level {other[0]} applies to every input")
        return self

    @property
    def members(self) -> list[tuple[str, int]]:
        """(path, band) of every entry of ``inputs`` (a planned mosaic job's inputs are paths, not globs)."""
        return [(e.path, e.band or self.band) if isinstance(e, InputSpec) else (e, self.band)
                for e in self.inputs or ()]

    @property
    def sources(self) -> tuple[str, ...]:
        """Every raster file a planned job reads pixels from (masks aside): the band files of
        ``bands`` (each once, in order), a mosaic's inputs, or ``input``; empty for a batch config."""
        if self.bands is not None:
            return tuple(dict.fromkeys(b.path for b in self.bands.values()))
        if self.output.mosaic:
            return tuple(p for p, _ in self.members)
        return (self.input,) if self.input is not None else ()

    @property
    def label(self) -> str:
        """What a planned job classifies, for logs and messages: ``input``, ``mosaic of N inputs``,
        or ``index NAME`` / ``expression TEXT`` for ``bands``."""
        if self.bands is not None:
            return f"index {self.index}" if self.index is not None else f"expression {self.expression.strip()}"
        if self.output.mosaic:
            from ..mosaic import label

            return label(len(self.members))
        return str(self.input)

    @property
    def class_count(self) -> int:
        """The number of classes (for head_tail_breaks an upper bound: the fit decides)."""
        c = self.classes
        if isinstance(c, Manual):
            return len(c.breaks) - 1
        return c.n_classes if hasattr(c, "n_classes") else c.count


def _is_url(s: str) -> bool:
    return "://" in s or s.startswith("/vsi")


def _resolve(value: str, base: Path) -> str:
    if _is_url(value):
        return value
    p = Path(os.path.expanduser(value))
    if "{" in value:  # a template: keep its '..' for batch.render_output to check once rendered
        return str(p if p.is_absolute() else base / p)
    return str(p if p.is_absolute() else (base / p).resolve())


def _get(d: dict, dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(d, dict) or part not in d:
            return None
        d = d[part]
    return d


def _set(d: dict, dotted: str, value: Any) -> None:
    *parents, last = dotted.split(".")
    for part in parents:
        nxt = d.get(part)
        if nxt is None:
            nxt = d[part] = {}
        if not isinstance(nxt, dict):
            raise ConfigError(f"--set {dotted}: '{part}' is not a section")
        d = nxt
    d[last] = value


def parse_override(text: str) -> tuple[str, Any]:
    """``key.path=value`` -> (key.path, YAML-parsed value)."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"--set {text!r}: expected key.path=value")
    try:
        value = load_yaml_text(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    if key in PATH_KEYS and isinstance(value, str):
        value = _resolve(value, Path.cwd())
    return key, value


#: a config file larger than this is not a config (a raster passed by mistake, say)
MAX_CONFIG_BYTES = 4 << 20
#: at most this many YAML nodes once every alias is expanded ("billion laughs" guard)
MAX_EXPANDED_NODES = 100_000


class SafeConfigLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing duplicate keys and documents whose aliases expand past
    :data:`MAX_EXPANDED_NODES` nodes (checked on the composed node graph, before any Python
    object is built, so an alias bomb costs no memory)."""

    def compose_document(self):
        node = super().compose_document()
        if node is not None:
            size = _expanded_size(node, {}, set())
            if size > MAX_EXPANDED_NODES:
                raise yaml.composer.ComposerError(
                    None, None, f"the document expands to more than {MAX_EXPANDED_NODES:,} values once its "
                    "aliases (*name) are expanded; refusing it", node.start_mark)
        return node

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen: dict = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge" or not isinstance(key_node, yaml.ScalarNode):
                    continue
                key = self.construct_object(key_node)
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {key!r} (first given on line {seen[key] + 1})",
                        key_node.start_mark)
                seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


def _expanded_size(node, memo: dict, active: set) -> int:
    """Nodes under ``node`` with every alias expanded (a shared node counts at each use)."""
    key = id(node)
    if key in memo:
        return memo[key]
    if key in active:  # a recursive alias: expands without end
        return MAX_EXPANDED_NODES + 1
    if isinstance(node, yaml.ScalarNode):
        return 1
    active.add(key)
    children = [c for pair in node.value for c in pair] if isinstance(node, yaml.MappingNode) else node.value
    total = 1
    for child in children:
        total += _expanded_size(child, memo, active)
        if total > MAX_EXPANDED_NODES:
            break
    active.discard(key)
    memo[key] = total
    return total


def load_yaml_text(text: str):
    """Parse YAML text with :class:`SafeConfigLoader` (raises yaml.YAMLError)."""
    loader = SafeConfigLoader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def read_yaml(path: Path) -> dict:
    """Read a YAML mapping with the safe loader; errors name the file."""
    try:
        size = path.stat().st_size
        if size > MAX_CONFIG_BYTES:
            raise ConfigError(f"{path}: not a config file ({size:,} bytes; a YAML config is text, "
                              f"at most {MAX_CONFIG_BYTES >> 20} MiB)")
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read config ({e.strerror})") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise ConfigError(f"{path} (line {line}): not a UTF-8 text file (byte 0x{raw[e.start]:02x} at offset "
                          f"{e.start}); a config is YAML text in UTF-8") from None
    try:
        data = load_yaml_text(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"{path}{where}: invalid YAML: {problem}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config must be a mapping of keys, got {type(data).__name__}")
    return data


_PRIMITIVE_TAGS = ("str", "int", "float", "bool", "none", "constrained-str", "constrained-int",
                   "constrained-float")
_KEY_IN_MESSAGE = re.compile(r"^([A-Za-z_]\w*(?:\.\w+)*): (.+)$", re.S)


def _member_fits(tag: str, value: Any) -> bool:
    """Does union member ``tag`` (pydantic's name for it) take values of ``value``'s type?"""
    t = tag.lower()
    primitive = t in _PRIMITIVE_TAGS or t.startswith(("list[", "tuple[", "set[", "dict[", "literal[", "function-"))
    if isinstance(value, dict):
        return not primitive or t.startswith("dict[")
    if isinstance(value, (list, tuple)):
        return t.startswith(("list[", "tuple[", "set["))
    quoted = t.startswith("literal[") and "'" in t  # a literal of strings (else of numbers)
    if isinstance(value, bool):
        return t == "bool" or (t.startswith("literal[") and not quoted)
    if isinstance(value, (int, float)):
        return t in ("int", "float", "constrained-int", "constrained-float") or (t.startswith("literal[") and not quoted)
    if isinstance(value, str):
        return t in ("str", "constrained-str") or quoted
    return value is None and t == "none"


def _split_loc(loc: tuple, etype: str, data: Any) -> tuple[list, list]:
    """A pydantic error location -> (the keys the user wrote, the union branches on the way:
    (keys up to the union, pydantic's name of the member, the value the union was given))."""
    keys, branches, cur = [], [], data
    for i, part in enumerate(loc):
        last = i == len(loc) - 1
        if isinstance(cur, dict) and part in cur:
            keys.append(part)
            cur = cur[part]
        elif isinstance(cur, (list, tuple)) and isinstance(part, int) and 0 <= part < len(cur):
            keys.append(part)
            cur = cur[part]
        elif isinstance(cur, dict) and last and etype in ("missing", "extra_forbidden"):
            keys.append(part)  # a key that is missing (or was given but is unknown)
        elif isinstance(part, str):  # a union member's name, not a key the user wrote
            branches.append((tuple(keys), part, cur))
        else:
            keys.append(part)
            cur = None
    return keys, branches


def _fitting(entries: list) -> list:
    """Drop the errors of union members that do not take the given value's type (shallowest
    union first), where some member does."""
    points = sorted({b[0] for _, _, branches in entries for b in branches}, key=len)
    for point in points:
        at = [(x, b) for x in entries for b in x[2] if b[0] == point]
        if not at:
            continue
        value = at[0][1][2]
        misfits = {id(x) for x, b in at if not _member_fits(b[1], value)}
        if len(misfits) < len(at):
            entries = [x for x in entries if id(x) not in misfits]
    return entries


def _describe(error: dict, keys: list) -> tuple[str, str]:
    loc = ".".join(str(k) for k in keys) or "(top level)"
    msg = error["msg"].removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        msg = "unknown key"
    elif error["type"] == "missing":
        msg = "required key is missing"
    elif error["type"] in ("model_type", "dict_type", "model_attributes_type"):
        msg = "Input should be a mapping of keys"
    elif error["type"] == "union_tag_invalid":
        loc += ".scheme"
        msg = f"unknown scheme {error['ctx']['tag']!r}; one of {error['ctx']['expected_tags']}"
    m = _KEY_IN_MESSAGE.match(msg)
    if m and (loc == "(top level)" or m.group(1).startswith(loc)):
        loc, msg = m.groups()  # a model check that names its own key
    return loc, msg


def _kind(value: Any) -> str:
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean", int: "a number",
            float: "a number", type(None): "nothing"}.get(type(value), type(value).__name__)


def format_validation_error(err: ValidationError, source: str, data: Any = None) -> str:
    """One line naming the first offending key, e.g. ``cfg.yaml: classes.count: ...``.

    Union alternatives are resolved against the value the user gave (``data``, the validated
    input): a mapping is reported against the model member (``inputs.0.bnad: unknown key``), a
    string against the string members, and so on; when no member takes the value's type, the
    line lists what the key accepts.
    """
    entries = _fitting([(e, *_split_loc(tuple(e["loc"]), e["type"], data)) for e in err.errors()])
    first, keys, branches = entries[0]
    point = branches[-1][0] if branches else None
    if point is None or len(keys) > len(point):  # not a union, or an error inside the member
        loc, msg = _describe(first, keys)
    else:  # the union itself refused the value
        here = [x for x in entries if x[2] and x[2][-1][0] == point and len(x[1]) == len(point)]
        value = branches[-1][2]
        loc = _describe(first, list(point))[0]
        said = dict.fromkeys(_describe(x[0], x[1])[1] for x in here)
        if any(_member_fits(x[2][-1][1], value) for x in here):
            msg = "; or ".join(said)
        else:
            msg = f"should be {' or '.join(m.removeprefix('Input should be ') for m in said)}, not {_kind(value)}"
    groups = {(tuple(b[0][0]) if b else tuple(k)) for _, k, b in entries}
    more = len(groups) - 1
    tail = f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
    if loc == "(top level)" and msg.split(":", 1)[0].replace(".", "").replace("_", "").isalpha():
        return f"{source}: {msg}{tail}"  # a whole-config check whose message names its key
    return f"{source}: {loc}: {msg}{tail}"


def build_config(data: dict, *, base_dir: Path, source: str, overrides: list[str] = ()) -> RunConfig:
    """Resolve relative paths, apply ``--set`` overrides and validate into a :class:`RunConfig`."""
    data = _deepcopy(data)
    for key in PATH_KEYS:
        value = _get(data, key)
        if key == "output.path" and _get(data, "output.folder") is not None:
            continue  # relative to output.folder, resolved per input
        if isinstance(value, str):
            _set(data, key, _resolve(value, base_dir))
    if isinstance(data.get("bands"), dict):
        data["bands"] = {
            name: _resolved_entry(b, base_dir) if isinstance(b, dict) else b for name, b in data["bands"].items()
        }
    if isinstance(data.get("inputs"), list):
        data["inputs"] = [
            _resolve(i, base_dir) if isinstance(i, str)
            else dict(i, path=_resolve(i["path"], base_dir)) if isinstance(i, dict) and isinstance(i.get("path"), str)
            else i
            for i in data["inputs"]
        ]
        for i in data["inputs"]:
            if isinstance(i, dict) and isinstance(i.get("mask"), dict) and isinstance(i["mask"].get("path"), str):
                i["mask"] = dict(i["mask"], path=_resolve(i["mask"]["path"], base_dir))
    for text in overrides:
        key, value = parse_override(text)
        _set(data, key, value)
    try:
        return RunConfig.model_validate(data)
    except ValidationError as e:
        raise ConfigError(format_validation_error(e, source, data)) from None


def _resolved_entry(entry: dict, base: Path) -> dict:
    """A ``bands`` entry with its path and mask path resolved against ``base``."""
    entry = dict(entry)
    if isinstance(entry.get("path"), str):
        entry["path"] = _resolve(entry["path"], base)
    if isinstance(entry.get("mask"), dict) and isinstance(entry["mask"].get("path"), str):
        entry["mask"] = dict(entry["mask"], path=_resolve(entry["mask"]["path"], base))
    return entry


def load_config(path: str | os.PathLike, overrides: list[str] = ()) -> RunConfig:
    """Load and validate a YAML config file (safe loader, unknown keys refused)."""
    path = Path(path)
    data = read_yaml(path)
    return build_config(data, base_dir=path.resolve().parent, source=str(path), overrides=overrides)


def _deepcopy(d: Any) -> Any:
    if isinstance(d, dict):
        return {k: _deepcopy(v) for k, v in d.items()}
    if isinstance(d, list):
        return [_deepcopy(v) for v in d]
    return d
