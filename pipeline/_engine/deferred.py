"""Keep optional heavy imports out of a command-line run until something needs them.

When they are installed, ``dask.array`` imports xarray (with pandas) and scipy at import time
(about 0.7 s together, a quarter of a Landsat-band run) although a COG run uses neither, and
``dask`` imports jinja2 for its notebook HTML reprs (``dask.widgets``, about 0.05 s), which a
run never shows (a distributed dashboard needs it: the scheduler allows it first). rasterio
imports boto3 (with botocore, about 0.25 s) for its own ``AWSSession``, which sceneclass never
uses: it hands GDAL the credentials of :mod:`pipeline.storage` itself (``s3://`` paths reach
rasterio as ``/vsis3/`` paths), and looks them up with botocore only when a run touches
object storage.
The CLI hides them while dask loads (:func:`hide`); code that needs one calls :func:`allow`
first. Library users importing ``pipeline`` themselves are not affected.
"""

from __future__ import annotations

import sys

DEFERRED = ("xarray", "scipy", "jinja2", "boto3")


def hide() -> None:
    """Make ``import xarray``/``scipy``/``jinja2``/``boto3`` fail (as if absent) until :func:`allow`."""
    for name in DEFERRED:
        sys.modules.setdefault(name, None)


def allow(*names: str) -> None:
    """Undo :func:`hide` for ``names`` (all by default), so they import normally."""
    for name in names or DEFERRED:
        if name in sys.modules and sys.modules[name] is None:
            del sys.modules[name]

