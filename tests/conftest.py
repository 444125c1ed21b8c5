"""Shared fixtures: the real rasters in ../shared/data (or $SCENECLASS_TEST_DATA)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

DATA = Path(os.environ.get("SCENECLASS_TEST_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))

B10 = "LC08_L1TP_170061_20190215_20200829_02_T1_B10.TIF"  # float32, striped, no nodata
B2 = "LC08_L1TP_224078_20200518_20200518_01_RT_B2.TIF"  # uint16, 256 tiles, 0 fill undeclared
LE07 = "LE07_L2SP_225078_20110306_02_T1_B1.tif"  # float64, nodata 32768 and NaN
RGBN = "rgbn_suba.tif"  # 4-band uint8, nodata 0
ALL_NODATA = "all-nodata.tif"
CORRUPT = "corrupt.tif"


def pytest_configure(config):
    """Byte-compile the package once for the whole session: every CLI subprocess, dask worker and
    LocalCluster the tests start imports it, and where ``PYTHONDONTWRITEBYTECODE`` is set (as in
    the project's sandbox) each of them would compile its modules from source again (about 0.15 s
    of CPU a process). ``__pycache__`` is ignored by git; nothing else changes."""
    import compileall

    compileall.compile_dir(str(Path(__file__).resolve().parents[1] / "pipeline"), quiet=1)


def data_path(name: str) -> Path:
    path = DATA / name
    if not path.exists():
        pytest.skip(f"test raster {path} not available (set SCENECLASS_TEST_DATA)")
    return path


@pytest.fixture
def data():
    return data_path


@pytest.fixture
def mount_tmpfs(tmp_path):
    """Mount small tmpfs file systems, ``mount_tmpfs(name, options) -> Path`` under ``tmp_path``
    (root only; the test is skipped elsewhere); unmounted afterwards."""
    mounted = []

    def mount(name: str, options: str) -> Path:
        where = tmp_path / name
        where.mkdir()
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)], capture_output=True)
        if r.returncode:
            pytest.skip(f"cannot mount tmpfs: {r.stderr.decode(errors='replace').strip()}")
        mounted.append(where)
        return where

    yield mount
    for where in reversed(mounted):
        subprocess.run(["umount", "-l", str(where)], capture_output=True)
