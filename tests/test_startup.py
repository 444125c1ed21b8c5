"""What a command-line run pays for before and besides its pixels: no credential lookup and no
boto3 for local files, dask.array without its derived docstrings (the same functions), and
settings given under ``storage:`` still checked up front. Real CLI processes on small rasters."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import rasterio
from affine import Affine

from _procs import child_env, read_classes, sceneclass

#: runs the CLI as ``sceneclass`` does (pipeline.cli.entry), then names the modules it imported
RUN_AND_LIST = """
import sys
from pipeline._engine.deferred import hide
hide()
from pipeline.cli import main
code = main(sys.argv[1:])
loaded = sorted(n for n in ("boto3", "botocore", "botocore.session") if sys.modules.get(n) is not None)
print("LOADED " + " ".join(loaded), file=sys.stderr)
sys.exit(code)
"""


def _scene(path, shape=(70, 90)):
    values = (np.arange(shape[0] * shape[1], dtype=np.uint32).reshape(shape) * 7 % 1000).astype(np.uint16)
    profile = {"driver": "GTiff", "width": shape[1], "height": shape[0], "count": 1, "dtype": "uint16",
               "crs": "EPSG:32633", "transform": Affine(30, 0, 500000, 0, -30, 4000000), "tiled": True,
               "blockxsize": 64, "blockysize": 64}
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(values, 1)
    return values


def _run(*args, cwd):
    return subprocess.run([sys.executable, "-c", RUN_AND_LIST, *args], cwd=cwd, env=child_env(),
                          capture_output=True, text=True, timeout=180)


def test_local_run_looks_up_no_credentials(tmp_path):
    """A batch of local files classifies without importing botocore or boto3 (their import and
    the credential chain cost about 0.3 s of every run, seconds where the instance-metadata
    lookup times out); the outputs are numpy's equal-interval classes."""
    scenes = {name: _scene(tmp_path / f"{name}.tif") for name in ("a", "b")}
    cfg = {"inputs": [str(tmp_path / "a.tif"), str(tmp_path / "b.tif")], "classes": {"scheme": "equal_interval",
           "count": 5}, "output": {"folder": str(tmp_path / "out"), "path": "{stem}.tif"},
           "processing": {"chunk": 64}}
    (tmp_path / "job.yaml").write_text(json.dumps(cfg))
    res = _run("run", "job.yaml", "--no-progress", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    loaded = [line.split()[1:] for line in res.stderr.splitlines() if line.startswith("LOADED")]
    assert loaded == [[]], res.stderr
    for name, values in scenes.items():
        edges = np.histogram_bin_edges(values, bins=5)
        want = np.clip(np.searchsorted(edges, values, side="right"), 1, 5).astype(np.uint8)
        np.testing.assert_array_equal(read_classes(tmp_path / "out" / f"{name}.tif"), want)


def test_storage_settings_are_checked_before_a_local_run(tmp_path):
    """Credentials are looked up lazily, but settings given under ``storage:`` are resolved at
    once: a profile that does not exist refuses even a run on local files (exit 2, one line
    naming the key), and nothing is written."""
    pytest.importorskip("botocore")
    _scene(tmp_path / "a.tif")
    cfg = {"input": str(tmp_path / "a.tif"), "output": {"path": str(tmp_path / "out" / "a.tif")},
           "storage": {"profile": "no-such-profile-here"}}
    (tmp_path / "job.yaml").write_text(json.dumps(cfg))
    res = sceneclass("run", "job.yaml", "--no-progress", cwd=tmp_path,
                     AWS_CONFIG_FILE=str(tmp_path / "none"), AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "none"))
    assert res.returncode == 2, res.stderr
    assert "storage.profile" in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "out").exists()
