"""A cluster without a shared filesystem, for real: 2 ``dask worker`` processes started in their
own mount namespace (``unshare -m``) with an empty tmpfs mounted over the client's output
folder, so they cannot see what the client has there.

- a COG to that folder works: the workers compress tiles, the client writes the file (pixels
  equal the threads run at every level, strict-valid); the decoded-chunk store is not kept
  there (said at -v) and the input is read twice;
- a Zarr to that folder fails before any pixel is read, exit 4, one line, nothing written;
- an input only the client can see fails fast naming it, exit 1;
- COG and Zarr outputs to S3 (a moto server on 127.0.0.1) work: the workers hold no credentials
  or endpoint (the config and the client carry them), and the objects equal the local threads
  run at every overview level.

Skipped where unshare/mount is not permitted (not root, no CAP_SYS_ADMIN).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import rasterio
import yaml
from rasterio.transform import from_origin

from pipeline.jobs.batch import run_batch
from pipeline.jobs.config import load_config

from _procs import can_hide, dask_cluster, finish, own_mount_namespace, partials, sceneclass, start_sceneclass
from test_cog_stream import assert_same_cog
from test_object_storage import (BUCKET, KEY, SECRET, assert_same_zarr, creds, download, download_tree, keys,
                                 no_secret, s3, store_complete)  # noqa: F401  (s3: the moto server fixture)


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("no_shared_fs")


@pytest.fixture(scope="module")
def hidden(work) -> Path:
    folder = work / "out"
    if not can_hide(folder):
        pytest.skip("unshare -m / mount -t tmpfs not permitted here (needs root)")
    return folder


@pytest.fixture(scope="module")
def source(work) -> Path:
    """A DEFLATE-compressed uint16 input (decoding costs, so the decoded chunks would be kept)."""
    rng = np.random.default_rng(5)
    h, w = 451, 533
    values = (np.kron(rng.random((30, 35)), np.ones((16, 16)))[:h, :w] * 900 + rng.random((h, w)) * 300 + 1)
    values[:4] = 0
    path = work / "in" / "scene.tif"
    path.parent.mkdir()
    with rasterio.open(path, "w", driver="GTiff", width=w, height=h, count=1, dtype="uint16", nodata=0,
                       crs="EPSG:32633", transform=from_origin(300000, 5000000, 30, 30), compress="deflate",
                       tiled=True) as dst:
        dst.write(values.astype("uint16"), 1)
    return path


@pytest.fixture(scope="module")
def cluster(work, hidden):
    with dask_cluster(work / "cluster", n_workers=2, worker_prefix=own_mount_namespace(hidden)) as c:
        yield c


def job(folder: Path, source: Path, output: Path, **extra) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    cfg = {"input": str(source), "classes": {"scheme": "equal_interval", "count": 7},
           "output": {"path": str(output), "blocksize": 64, "overview_resampling": "mode"},
           "processing": {"chunk": 150, "reuse_decoded": "always"}, **extra}
    path = folder / f"{output.stem}.yaml"
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return path


def test_workers_cannot_see_the_output_folder(cluster, hidden):
    probe = cluster.client()
    try:
        (hidden / "marker").write_text("client only")
        seen = probe.run(lambda p: Path(p).exists(), str(hidden / "marker"))
        assert list(seen.values()) == [False, False]
    finally:
        probe.close()
        (hidden / "marker").unlink()


def test_cog_to_a_folder_only_the_client_sees(work, hidden, source, cluster):
    ref_cfg = job(work / "ref", source, work / "ref" / "classes.tif")
    out = hidden / "classes.tif"
    cfg = job(work / "jobs", source, out)
    proc = start_sceneclass("run", cfg, "--scheduler", cluster.address, "-v", cwd=work)
    try:  # meanwhile the reference: threads, in this process, its own folder
        result = run_batch(load_config(ref_cfg, []))
    finally:
        proc = finish(proc)
    assert [j.status for j in result.jobs] == ["done"], [j.error for j in result.jobs]
    assert proc.returncode == 0, proc.stderr[-3000:] + cluster.log_tail()
    assert "not keeping decoded chunks: the dask workers cannot see" in proc.stderr
    assert_same_cog(out, work / "ref" / "classes.tif")
    assert partials(hidden) == []


def test_zarr_to_a_folder_only_the_client_sees(work, hidden, source, cluster):
    out = hidden / "zclasses.zarr"
    cfg = job(work / "jobs", source, out)
    proc = sceneclass("run", cfg, "--scheduler", cluster.address, cwd=work)
    assert proc.returncode == 4, proc.stderr[-3000:]
    lines = [ln for ln in proc.stderr.splitlines() if "do not share" in ln]
    assert len(lines) == 1 and str(hidden) in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr
    assert not out.exists() and partials(hidden) == []
    assert not (hidden / "zclasses.legend.json").exists()


def test_s3_outputs_from_workers_without_the_client_folder(work, hidden, source, cluster, s3):
    endpoint, client = s3
    with cluster.client() as c:  # neither credentials nor endpoint reach the workers but through the client
        envs = c.run(lambda: dict(os.environ))
    for env in envs.values():
        assert not {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL", "AWS_PROFILE"} & set(env)
        assert not [v for v in env.values() if KEY in v or SECRET in v or endpoint in v]
    (work / "s3got").mkdir()
    for name in ("classes.tif", "classes.zarr"):
        ref = work / "s3ref" / name
        out = f"s3://{BUCKET}/nofs/{name}"
        cfg = job(work / "s3jobs", source, work / "unused" / name, storage={"endpoint_url": endpoint})
        proc = start_sceneclass("run", cfg, "--set", f"output.path={out}", "--scheduler", cluster.address, "-v",
                                cwd=work, **creds())
        try:  # meanwhile the reference: threads, in this process, its own folder
            result = run_batch(load_config(job(work / "s3ref", source, ref), []))
        finally:
            proc = finish(proc)
        assert [j.status for j in result.jobs] == ["done"], [j.error for j in result.jobs]
        assert proc.returncode == 0, proc.stderr[-3000:] + cluster.log_tail()
        assert f"done       {out}" in proc.stdout, proc.stdout
        no_secret(proc.stdout, proc.stderr, cluster.log_tail(200))
        if name.endswith(".tif"):
            assert_same_cog(download(client, f"nofs/{name}", work / "s3got" / name), ref)
        else:
            store_complete(client, f"nofs/{name}")
            assert_same_zarr(download_tree(client, f"nofs/{name}", work / "s3got" / name), ref)
    assert not [k for k in keys(client, "nofs/") if "sceneclass-partial" in k]
    assert not (work / "unused").exists() and partials(hidden) == []


def test_input_only_the_client_sees(work, hidden, source, cluster):
    private = hidden / "private.tif"
    private.write_bytes(source.read_bytes())
    out = work / "res" / "classes.tif"
    cfg = job(work / "jobs", private, out)
    try:
        proc = sceneclass("run", cfg, "--scheduler", cluster.address, cwd=work)
    finally:
        private.unlink()
    assert proc.returncode == 1, proc.stderr[-3000:]
    lines = [ln for ln in proc.stderr.splitlines() if "do not share" in ln]
    assert len(lines) == 1 and "private.tif" in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr
    assert not out.exists()
