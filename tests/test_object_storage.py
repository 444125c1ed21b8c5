"""Object storage in and out, against a real S3-compatible server on 127.0.0.1 (moto's server):
inputs and outputs in a bucket, COG and Zarr, on threads and on a real dask scheduler with two
worker processes whose environment holds no credentials or endpoint; fingerprints of remote
inputs; incomplete stores; failed uploads; secrets kept out of every output; refused schemes."""

from __future__ import annotations

import json
import os
import signal

import numpy as np
import pytest
import rasterio
from rasterio.windows import Window

from _procs import dask_cluster, kill, sceneclass, start_sceneclass, wait_for
from conftest import B2, data_path

pytest.importorskip("s3fs")
moto_server = pytest.importorskip("moto.server")
boto3 = pytest.importorskip("boto3")

KEY = "AKIASCENECLASSTEST01"
SECRET = "sceneclass-Secret/Key+9f8e7d6c5b4a"  # must never appear in any output or log
REGION = "us-east-1"
BUCKET = "scenes"
COMMON = ("--set", "processing.chunk=192", "--set", "output.blocksize=64", "-v")


@pytest.fixture(scope="module")
def s3():
    """A moto S3 server on a free port of 127.0.0.1, a bucket, and a boto3 client for checks."""
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        endpoint = f"http://127.0.0.1:{server._server.server_address[1]}"
        client = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=KEY, aws_secret_access_key=SECRET,
                              region_name=REGION)
        client.create_bucket(Bucket=BUCKET)
        yield endpoint, client
    finally:
        server.stop()


def crop(path, x0=500, y0=600, w=650, h=610, delta=0):
    """A small tiled GeoTIFF cut from the real Landsat band (sizes that no chunk divides)."""
    with rasterio.open(data_path(B2)) as src:
        win = Window(x0, y0, w, h)
        data = src.read(1, window=win)
        profile = src.profile | {"width": w, "height": h, "transform": src.window_transform(win), "tiled": True,
                                 "blockxsize": 256, "blockysize": 256, "compress": "deflate"}
    with rasterio.open(path, "w", **profile) as dst:
        dst.write((data + delta).astype(data.dtype), 1)
    return path


def creds() -> dict:
    """The client's credentials: only the sceneclass process gets them, in its environment."""
    return {"AWS_ACCESS_KEY_ID": KEY, "AWS_SECRET_ACCESS_KEY": SECRET, "AWS_DEFAULT_REGION": REGION}


def endpoint_set(endpoint: str) -> tuple[str, ...]:
    return ("--set", f"storage.endpoint_url={endpoint}")


def keys(client, prefix: str) -> list[str]:
    out = client.list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("Contents", [])
    return sorted(o["Key"] for o in out)


def download(client, key: str, path):
    client.download_file(BUCKET, key, str(path))
    return path


def download_tree(client, prefix: str, folder):
    for k in keys(client, prefix + "/"):
        target = folder / k[len(prefix) + 1:]
        target.parent.mkdir(parents=True, exist_ok=True)
        client.download_file(BUCKET, k, str(target))
    return folder


def cog_levels(path) -> list[np.ndarray]:
    """The full-resolution pixels and those of every overview level."""
    with rasterio.open(path) as src:
        n = len(src.overviews(1))
        levels = [src.read()]
    for i in range(n):
        with rasterio.open(path, overview_level=i) as ov:
            levels.append(ov.read())
    return levels


def assert_same_cog(got, want):
    a, b = cog_levels(got), cog_levels(want)
    assert len(a) == len(b) > 1
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    with rasterio.open(got) as g, rasterio.open(want) as w:
        assert g.colormap(1) == w.colormap(1)
        assert g.transform == w.transform and g.crs == w.crs and g.nodata == w.nodata


def assert_same_zarr(got, want):
    import xarray as xr

    with xr.open_zarr(got) as g, xr.open_zarr(want) as w:
        np.testing.assert_array_equal(g["classes"].values, w["classes"].values)
        assert g.attrs["sceneclass_legend"]["edges"] == w.attrs["sceneclass_legend"]["edges"]


def store_complete(client, prefix: str) -> None:
    """Every chunk of every array of the store under ``prefix`` is an object."""
    listed = set(keys(client, prefix + "/"))
    group = json.loads(client.get_object(Bucket=BUCKET, Key=f"{prefix}/zarr.json")["Body"].read())
    arrays = group["consolidated_metadata"]["metadata"]
    assert arrays
    for name, meta in arrays.items():
        if meta["node_type"] != "array":
            continue
        shape, chunk = meta["shape"], meta["chunk_grid"]["configuration"]["chunk_shape"]
        grid = [-(-s // c) for s, c in zip(shape, chunk)] or []
        expected = {f"{prefix}/{name}/c" + "".join(f"/{i}" for i in idx) for idx in np.ndindex(*grid)}
        assert expected <= listed, sorted(expected - listed)[:5]


def no_secret(*texts) -> None:
    for t in texts:
        assert SECRET not in t and SECRET.replace("/", "%2F") not in t


@pytest.fixture(scope="module")
def reference(s3, tmp_path_factory):
    """The input crop, in the bucket at ``in/a.tif``, and the local runs' COG and Zarr of it
    (written by the local writers from the local file)."""
    _, client = s3
    folder = tmp_path_factory.mktemp("reference")
    src = crop(folder / "in.tif")
    client.upload_file(str(src), BUCKET, "in/a.tif")
    refs = {}
    for name in ("a.tif", "a.zarr"):
        refs[name] = folder / "local" / name
        r = sceneclass("classify", str(src), str(refs[name]), *COMMON)
        assert r.returncode == 0, r.stderr
    return src, refs


def test_cog_and_zarr_in_and_out_on_threads(s3, reference, tmp_path):
    endpoint, client = s3
    src, refs = reference
    for name in ("a.tif", "a.zarr"):
        out = f"s3://{BUCKET}/threads/{name}"
        r = sceneclass("classify", f"s3://{BUCKET}/in/a.tif", out, *COMMON, *endpoint_set(endpoint), **creds())
        assert r.returncode == 0, r.stderr
        assert f"done       {out}" in r.stdout
        no_secret(r.stdout, r.stderr)
        assert not (tmp_path / "s3:").exists()
        ref = refs[name]
        legend = json.loads(client.get_object(Bucket=BUCKET, Key="threads/a.legend.json")["Body"].read())
        assert legend["output"] == out
        want = json.loads(ref.with_name("a.legend.json").read_text())
        assert legend["edges"] == want["edges"] and legend["classes"] == want["classes"]
        manifest = json.loads(client.get_object(Bucket=BUCKET, Key="threads/a.manifest.json")["Body"].read())
        assert manifest["status"] == "done" and manifest["output"] == out
        assert manifest["input_fingerprint"]["etag"] and manifest["input_fingerprint"]["size"] == src.stat().st_size
        if name.endswith(".tif"):
            assert_same_cog(download(client, "threads/a.tif", tmp_path / "got.tif"), ref)
        else:
            store_complete(client, "threads/a.zarr")
            assert_same_zarr(download_tree(client, "threads/a.zarr", tmp_path / "got.zarr"), ref)
    assert not [k for k in keys(client, "threads/") if "sceneclass-partial" in k]


def test_cluster_workers_get_storage_from_the_client(s3, reference, tmp_path, monkeypatch):
    """Two ``dask worker`` processes started without any AWS setting read the input from the
    bucket and write the Zarr chunks to it: the config and the client carry endpoint and keys."""
    endpoint, client = s3
    for k in list(os.environ):
        if k.startswith("AWS_"):
            monkeypatch.delenv(k)
    src, refs = reference
    with dask_cluster(tmp_path / "cluster") as cluster:
        with cluster.client() as c:
            seen = c.run(lambda: sorted(k for k in os.environ if k.startswith("AWS_")))
        assert seen and all(v == [] for v in seen.values()), seen
        for name in ("a.tif", "a.zarr"):
            out = f"s3://{BUCKET}/cluster/{name}"
            r = sceneclass("classify", f"s3://{BUCKET}/in/a.tif", out, *COMMON, *endpoint_set(endpoint),
                           "--set", f"dask.scheduler={cluster.address}", **creds())
            assert r.returncode == 0, r.stderr + cluster.log_tail()
            no_secret(r.stdout, r.stderr, cluster.log_tail(200))
            if name.endswith(".tif"):
                assert_same_cog(download(client, "cluster/a.tif", tmp_path / "got.tif"), refs[name])
            else:
                store_complete(client, "cluster/a.zarr")
                assert_same_zarr(download_tree(client, "cluster/a.zarr", tmp_path / "got.zarr"), refs[name])


def batch_config(tmp_path, endpoint, inputs, prefix, name="{stem}.zarr") -> str:
    cfg = tmp_path / f"batch-{prefix}.yaml"
    cfg.write_text(json.dumps({
        "inputs": inputs, "output": {"folder": f"s3://{BUCKET}/{prefix}", "path": name, "blocksize": 64},
        "processing": {"chunk": 192}, "storage": {"endpoint_url": endpoint},
    }))
    return str(cfg)


def test_replaced_object_is_redone_by_a_batch(s3, tmp_path):
    endpoint, client = s3
    client.upload_file(str(crop(tmp_path / "v1.tif")), BUCKET, "in/r.tif")
    cfg = batch_config(tmp_path, endpoint, [f"s3://{BUCKET}/in/r.tif"], "redo", "{stem}.tif")
    first = sceneclass("run", cfg, **creds())
    assert first.returncode == 0 and "done" in first.stdout, first.stderr
    again = sceneclass("run", cfg, **creds())
    assert again.returncode == 0 and "skipped" in again.stdout, again.stdout + again.stderr
    assert "up to date (input unchanged (ETag" in again.stderr
    # same size, same name, other content: only the ETag tells
    client.upload_file(str(crop(tmp_path / "v2.tif", delta=7)), BUCKET, "in/r.tif")
    third = sceneclass("run", cfg, **creds())
    assert third.returncode == 0 and "done" in third.stdout, third.stdout
    assert "input changed" in third.stderr
    with rasterio.open(download(client, "redo/r.tif", tmp_path / "got.tif")) as got:
        assert got.read(1).any()


def test_interrupted_zarr_write_is_not_taken_as_complete(s3, tmp_path):
    endpoint, client = s3
    client.upload_file(str(crop(tmp_path / "in.tif")), BUCKET, "in/k.tif")
    cfg = batch_config(tmp_path, endpoint, [f"s3://{BUCKET}/in/k.tif"], "killed")
    proc = start_sceneclass("run", cfg, **creds())
    try:  # killed while the tasks write chunks to the staged prefix (a listing every 0.1 s: the moto
        # server runs in this process, and faster polls take its time from the run it serves)
        wait_for(lambda: any("sceneclass-partial" in k and "/c/" in k for k in keys(client, "killed/")), 120, 0.1,
                 proc=proc)
    finally:
        kill(proc, signal.SIGKILL)
    assert not [k for k in keys(client, "killed/k.zarr/")]  # nothing at the final prefix
    dry = sceneclass("run", cfg, "--dry-run", **creds())
    assert dry.returncode == 0 and "up to date" not in dry.stdout, dry.stdout
    done = sceneclass("run", cfg, **creds())
    assert done.returncode == 0, done.stderr
    assert not [k for k in keys(client, "killed/") if "sceneclass-partial" in k]  # swept
    store_complete(client, "killed/k.zarr")
    # a store that lost a chunk (a commit cut short, a deleted object) is redone, never skipped
    chunk = next(k for k in keys(client, "killed/k.zarr/classes/c/"))
    client.delete_object(Bucket=BUCKET, Key=chunk)
    again = sceneclass("run", cfg, **creds())
    assert again.returncode == 0 and "output missing or modified" in again.stderr, again.stderr
    assert chunk in keys(client, "killed/k.zarr/")
    store_complete(client, "killed/k.zarr")


def test_failed_upload_leaves_the_previous_object(s3, monkeypatch):
    from pipeline import storage
    from pipeline.errors import OutputError

    endpoint, client = s3
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    access = storage.resolve(endpoint_url=endpoint, region=REGION)
    old = b"previous object " * 1000
    client.put_object(Bucket=BUCKET, Key="up/x.tif", Body=old)

    def parts():
        yield os.urandom(6 << 20)  # a whole part is uploaded before the failure
        yield os.urandom(6 << 20)
        raise OSError(28, "No space left on device")

    with pytest.raises(OutputError, match="No space left"):
        storage.put_stream(f"s3://{BUCKET}/up/x.tif", parts(), access, part_size=5 << 20)
    assert client.get_object(Bucket=BUCKET, Key="up/x.tif")["Body"].read() == old
    assert not client.list_multipart_uploads(Bucket=BUCKET).get("Uploads")
    new = os.urandom(11 << 20)
    storage.put_stream(f"s3://{BUCKET}/up/x.tif", iter([new[: 6 << 20], new[6 << 20:]]), access, part_size=5 << 20)
    assert client.get_object(Bucket=BUCKET, Key="up/x.tif")["Body"].read() == new


def test_unreachable_storage_fails_with_one_line(s3, tmp_path):
    """Nothing listens at the endpoint: one line, the exit code, no secret. One attempt per
    request (``AWS_MAX_ATTEMPTS=1``): the retries would only wait longer for the same answer."""
    from _procs import free_port

    endpoint, client = s3
    src = crop(tmp_path / "in.tif", w=300, h=300)
    client.upload_file(str(src), BUCKET, "in/u.tif")
    dead = f"http://127.0.0.1:{free_port()}"
    log = tmp_path / "run.log"
    once = {"AWS_MAX_ATTEMPTS": "1"}
    r = sceneclass("classify", str(src), f"s3://{BUCKET}/u/out.tif", *endpoint_set(dead), "--log-file", str(log),
                   "-q", **creds(), **once)
    assert r.returncode == 4, r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert f"s3://{BUCKET}/u: cannot reach the output location" in r.stderr
    r2 = sceneclass("classify", f"s3://{BUCKET}/in/u.tif", str(tmp_path / "o.tif"), *endpoint_set(dead), "-q",
                    **creds(), **once)
    assert r2.returncode == 1, r2.stderr
    assert "Traceback" not in r2.stderr and len(r2.stderr.strip().splitlines()) == 1, r2.stderr
    assert f"s3://{BUCKET}/in/u.tif" in r2.stderr
    assert not (tmp_path / "o.tif").exists()
    no_secret(r.stdout, r.stderr, r2.stdout, r2.stderr, log.read_text())


def test_attempts_per_request_come_from_the_aws_settings(monkeypatch, tmp_path):
    """botocore's ``max_attempts`` (``AWS_MAX_ATTEMPTS`` or the profile's) sets the attempts
    of every S3 request, default 3; a value that is not a whole number >= 1 is refused."""
    from pipeline import storage
    from pipeline.errors import ConfigError

    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "config"))
    monkeypatch.delenv("AWS_MAX_ATTEMPTS", raising=False)

    def attempts(**kw):
        return storage.resolve(endpoint_url="http://127.0.0.1:9", **kw).storage_options()[
            "config_kwargs"]["retries"]["max_attempts"]

    assert attempts() == storage.DEFAULT_MAX_ATTEMPTS == 3
    (tmp_path / "config").write_text("[profile slow]\nmax_attempts = 7\n")
    assert attempts(profile="slow") == 7
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    assert attempts() == 1 and attempts(profile="slow") == 1
    access = storage.resolve(endpoint_url="http://127.0.0.1:9")
    assert pickle_roundtrip(access).max_attempts == 1  # the workers get the client's setting
    for bad in ("0", "x"):
        monkeypatch.setenv("AWS_MAX_ATTEMPTS", bad)
        with pytest.raises(ConfigError, match="max_attempts"):
            storage.resolve(endpoint_url="http://127.0.0.1:9")


def pickle_roundtrip(obj):
    import pickle

    return pickle.loads(pickle.dumps(obj))


def test_secret_never_written(s3, tmp_path):
    """A batch to the bucket with every side file, at -vv: the secret key is in no object,
    no local file, no log line."""
    endpoint, client = s3
    client.upload_file(str(crop(tmp_path / "in.tif", w=300, h=280)), BUCKET, "in/s.tif")
    cfg = tmp_path / "s.yaml"
    cfg.write_text(json.dumps({
        "inputs": [f"s3://{BUCKET}/in/s.tif"], "output": {"folder": f"s3://{BUCKET}/secret", "path": "{stem}.tif",
                                                           "blocksize": 64},
        "outputs": {"report": True, "qml": True, "quicklook": True}, "storage": {"endpoint_url": endpoint},
    }))
    log = tmp_path / "log.jsonl"
    r = sceneclass("run", str(cfg), "-vv", "--log-file", str(log), "--log-format", "json", **creds())
    assert r.returncode == 0, r.stderr
    written = keys(client, "secret/")
    assert {"secret/s.tif", "secret/s.manifest.json", "secret/s.legend.json", "secret/s.report.html",
            "secret/s.qml"} <= set(written), written
    blobs = [client.get_object(Bucket=BUCKET, Key=k)["Body"].read() for k in written]
    assert not any(SECRET.encode() in b for b in blobs)
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    no_secret(r.stdout, r.stderr, *(p.read_bytes().decode("latin-1") for p in files))
    v = sceneclass("validate", str(cfg), **creds())
    assert v.returncode == 0, v.stderr
    no_secret(v.stdout, v.stderr)


@pytest.mark.parametrize("out,why", [
    ("foo://bucket/x.tif", "unknown scheme"),
    ("https://example.org/x.tif", "read only"),
    ("/vsis3/bucket/x.tif", "not output locations"),
])
def test_unwritable_output_urls_are_refused(tmp_path, out, why):
    src = crop(tmp_path / "in.tif", w=200, h=200)
    r = sceneclass("classify", str(src), out, cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    assert why in r.stderr and "Traceback" not in r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.tif"]


def test_access_keeps_secrets_out_of_repr_and_pickles(monkeypatch):
    import pickle

    from pipeline import storage
    from pipeline.urls import redact_text

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    access = storage.resolve(endpoint_url="http://127.0.0.1:9", region=REGION)
    assert access.secret == SECRET and SECRET not in repr(access)
    assert pickle.loads(pickle.dumps(access)) == access
    assert SECRET not in redact_text(f"failed with key {SECRET} at s3://b/k")
    assert access.gdal_options() == {"AWS_S3_ENDPOINT": "127.0.0.1:9", "AWS_HTTPS": "NO",
                                     "AWS_VIRTUAL_HOSTING": "FALSE", "AWS_REGION": REGION}
    assert storage.gdal_path("s3://b/k.tif") == "/vsis3/b/k.tif"
    assert storage.gdal_path("gs://b/k.tif") == "/vsigs/b/k.tif"
    assert storage.gdal_path("az://c/k.tif") == "/vsiaz/c/k.tif"
    assert storage.gdal_path("abfs://c/k.tif") == "/vsiadls/c/k.tif"
    assert storage.gdal_path("https://h/k.tif") == "/vsicurl/https://h/k.tif"


def test_replaced_http_input_is_redone(tmp_path):
    """An HTTP input is fingerprinted by what its server sends (here the size): a replaced
    file is redone by a batch, an unchanged one skipped."""
    from _procs import http_server

    served = tmp_path / "www"
    served.mkdir()
    crop(served / "h.tif", w=300, h=260)
    out = tmp_path / "out"
    with http_server(served) as (base, _stats):
        cfg = tmp_path / "h.yaml"
        cfg.write_text(json.dumps({"inputs": [f"{base}/h.tif"], "output": {"folder": str(out), "path": "{stem}.tif",
                                                                           "blocksize": 64}}))
        first = sceneclass("run", str(cfg))
        assert first.returncode == 0, first.stderr
        manifest = json.loads((out / "h.manifest.json").read_text())
        assert manifest["input_fingerprint"]["size"] == (served / "h.tif").stat().st_size
        again = sceneclass("run", str(cfg))
        assert again.returncode == 0 and "skipped" in again.stdout, again.stdout + again.stderr
        crop(served / "h.tif", w=300, h=270)
        third = sceneclass("run", str(cfg))
        assert third.returncode == 0 and "done" in third.stdout and "input changed" in third.stderr, third.stderr
        with rasterio.open(out / "h.tif") as got:
            assert got.height == 270
