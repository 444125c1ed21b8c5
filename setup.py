"""Build the optional compiled kernels (pipeline/_engine/_fastkernels.c). Everything else is in
pyproject.toml. ``optional=True``: without a C compiler the install still succeeds and
sceneclass uses its numpy kernels instead (``pipeline.kernels.compiled()`` says which; so does
``sceneclass run -vv``)."""

from setuptools import Extension, setup

setup(ext_modules=[Extension("pipeline._engine._fastkernels", ["pipeline/_engine/_fastkernels.c"], optional=True,
                             extra_compile_args=["-O3"])])
