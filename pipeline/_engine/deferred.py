"""Keep optional heavy imports, and import-time work a run never uses, out of a command-line run.

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

``dask.array`` also builds about 300 docstrings from numpy's at import time
(``dask.utils.derived_from``: about 0.2 s of CPU), which a command-line run never shows:
:func:`import_dask_array` imports it without them.
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


def import_dask_array() -> None:
    """Import ``dask.array`` keeping each function's own docstring instead of deriving it from
    numpy's (the functions are the same; only ``help()`` text differs). A method numpy lacks
    still gets dask's ``NotImplementedError`` stand-in. Does nothing when ``dask.array`` is
    already imported."""
    if "dask.array" in sys.modules:
        return
    import dask.utils

    derive = dask.utils.derived_from

    def own_docstring(original_klass, *args, **kwargs):
        def wrapper(method):
            if hasattr(original_klass, getattr(method, "__name__", "")):
                return method
            return derive(original_klass, *args, **kwargs)(method)  # dask's stand-in that raises

        return wrapper

    dask.utils.derived_from = own_docstring
    try:
        import dask.array  # noqa: F401
    finally:
        dask.utils.derived_from = derive
        for module in list(sys.modules.values()):  # the modules that imported the name get dask's back
            if getattr(module, "derived_from", None) is own_docstring:
                module.derived_from = derive
