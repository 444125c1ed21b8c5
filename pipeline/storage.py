"""Object storage: ``s3://``, ``gs://``, ``az://``/``abfs://`` and ``http(s)://`` (read only)
paths, the settings and credentials that reach them, and the few operations a run needs
(upload, read, list, remove, fingerprint).

Two libraries read and write object storage: GDAL through its virtual file systems
(``/vsis3/``, ``/vsigs/``, ``/vsiaz/``, ``/vsiadls/``, ``/vsicurl/``) for rasters, and fsspec
(s3fs for S3) for Zarr stores and side files. :class:`Access` holds the settings of the
``storage:`` config section with the credentials resolved once on the client (from the
environment or the named profile); it is a small picklable value that travels in the task
graph, so workers need no settings or credentials of their own. Its secrets never appear in
its ``repr``, and every secret is registered with :mod:`pipeline.urls` so that log lines and
error messages drop it.

Remote outputs are written beside a local *shadow folder* (a temporary folder in ``$TMPDIR``
that stands for a remote prefix, see :func:`mount`): the legend, the manifest and the side
files are written there as for a local output and uploaded when the run commits; a COG is
written there by the local writer and uploaded with a multipart upload (:func:`put_stream`),
so the object appears only complete. Zarr stores are written by the tasks straight to the
bucket (see :mod:`pipeline.writers.zarr`).
"""

from __future__ import annotations

import atexit
import dataclasses
import logging
import posixpath
import re
import shutil
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterable, Iterator

from .errors import ConfigError, OutputError
from .urls import redact, register_alias, register_secret

log = logging.getLogger(__name__.replace("pipeline", "sceneclass", 1))

#: URL scheme -> GDAL virtual file system prefix, for the object stores sceneclass reads and writes
GDAL_PREFIX = {"s3": "/vsis3/", "gs": "/vsigs/", "gcs": "/vsigs/", "az": "/vsiaz/", "abfs": "/vsiadls/",
               "abfss": "/vsiadls/"}
#: schemes that are read only (GDAL reads them by HTTP range requests)
READ_ONLY = ("http", "https")
#: fsspec protocol -> the package that implements it (named in the error when it is missing)
FSSPEC_PACKAGE = {"s3": "s3fs", "gs": "gcsfs", "gcs": "gcsfs", "az": "adlfs", "abfs": "adlfs", "abfss": "adlfs"}
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*)://")
#: attempts per S3 request when the AWS settings (``max_attempts``, ``AWS_MAX_ATTEMPTS``) name none
DEFAULT_MAX_ATTEMPTS = 3
#: part size of multipart uploads (S3 needs at least 5 MiB per part but the last)
PART_SIZE = 16 << 20


def scheme(path: str) -> str | None:
    """The lower-case URL scheme of ``path`` (``s3`` for ``s3://b/k``), or None for a local or
    GDAL (``/vsi...``) path."""
    m = _SCHEME.match(path) if isinstance(path, str) else None
    return m.group(1).lower() if m else None


def is_remote(path: str) -> bool:
    """True for an object-storage URL sceneclass can write (``s3://``, ``gs://``, ``az://``, ``abfs://``)."""
    return scheme(path) in GDAL_PREFIX


def gdal_path(path: str) -> str:
    """The GDAL path of ``path``: ``s3://b/k`` -> ``/vsis3/b/k`` (``gs`` -> ``/vsigs/``, ``az`` ->
    ``/vsiaz/``, ``abfs`` -> ``/vsiadls/``), ``http(s)://`` -> ``/vsicurl/http(s)://``; other paths unchanged."""
    s = scheme(path)
    if s in READ_ONLY:
        return "/vsicurl/" + path
    if s in GDAL_PREFIX:
        return GDAL_PREFIX[s] + path.split("://", 1)[1]
    return path


def check_output_url(path: str, key: str = "output.path") -> None:
    """Refuse an output URL sceneclass cannot write.

    Raises
    ------
    ValueError
        http(s) (read only) or an unknown scheme (the message names ``key``).
    """
    s = scheme(path)
    if s is None and "://" in path:
        raise ValueError(f"{redact(path)!r}: not a URL sceneclass can write (no valid scheme before ://); outputs go "
                         "to a local folder or to object storage (s3://, gs://, az://, abfs://)")
    if s is None:
        if path.startswith("/vsi"):
            raise ValueError(f"{path!r}: GDAL /vsi paths are not output locations; write s3://, gs://, az:// "
                             "or abfs:// URLs (or a local path)")
        return
    if s in READ_ONLY:
        raise ValueError(f"{redact(path)!r}: {s}:// is read only; outputs go to a local folder or to object "
                         "storage (s3://, gs://, az://, abfs://)")
    if s not in GDAL_PREFIX:
        raise ValueError(f"{redact(path)!r}: unknown scheme {s}://; outputs go to a local folder or to object "
                         "storage (s3://, gs://, az://, abfs://)")


# ------------------------------------------------------------------------- access
@dataclasses.dataclass(frozen=True)
class Access:
    """Settings and credentials for object storage: what the ``storage:`` config section says,
    with the credentials resolved on the client. Picklable; its secrets are left out of
    ``repr`` and registered for redaction.

    Attributes
    ----------
    endpoint_url : str or None
        An S3-compatible endpoint (``http://127.0.0.1:9000``); None: AWS.
    region : str or None
        The S3 region.
    anonymous : bool
        Unsigned requests (public buckets); no credentials are looked up.
    requester_pays : bool
        Send the requester-pays header.
    virtual_hosting : bool or None
        Virtual-hosted-style addressing (``bucket.host``); None: path style for a custom
        endpoint, virtual hosting for AWS.
    key, secret, token : str or None
        The access key id, secret access key and session token.
    max_attempts : int
        Attempts per request (botocore's ``max_attempts``, first try included): the AWS
        setting ``max_attempts`` of the profile or ``AWS_MAX_ATTEMPTS``, else 3.
    """

    endpoint_url: str | None = None
    region: str | None = None
    anonymous: bool = False
    requester_pays: bool = False
    virtual_hosting: bool | None = None
    key: str | None = dataclasses.field(default=None, repr=False)
    secret: str | None = dataclasses.field(default=None, repr=False)
    token: str | None = dataclasses.field(default=None, repr=False)
    max_attempts: int = DEFAULT_MAX_ATTEMPTS

    # ----------------------------------------------------------------- GDAL
    def gdal_options(self) -> dict:
        """GDAL config options for ``/vsis3/`` (no credentials: see :meth:`gdal_env`)."""
        opts = {}
        if self.endpoint_url:
            host = self.endpoint_url.split("://", 1)[-1].rstrip("/")
            opts["AWS_S3_ENDPOINT"] = host
            opts["AWS_HTTPS"] = "NO" if self.endpoint_url.lower().startswith("http://") else "YES"
        hosting = self.virtual_hosting if self.virtual_hosting is not None else not self.endpoint_url
        opts["AWS_VIRTUAL_HOSTING"] = "TRUE" if hosting else "FALSE"
        if self.region:
            opts["AWS_REGION"] = self.region
        if self.requester_pays:
            opts["AWS_REQUEST_PAYER"] = "requester"
        if self.anonymous:
            opts["AWS_NO_SIGN_REQUEST"] = "YES"
        return opts

    @contextmanager
    def gdal_env(self) -> Iterator[None]:
        """A ``rasterio.Env`` for this thread with the options and the credentials (rasterio
        takes credentials only through its ``AWSSession``)."""
        import rasterio

        creds = {}
        if not self.anonymous and self.key and self.secret:
            creds = {"AWS_ACCESS_KEY_ID": self.key, "AWS_SECRET_ACCESS_KEY": self.secret}
            if self.token:
                creds["AWS_SESSION_TOKEN"] = self.token
        with rasterio.Env(session=_credentials_session(creds), **self.gdal_options()):
            yield

    # --------------------------------------------------------------- fsspec
    def storage_options(self, protocol: str = "s3") -> dict:
        """fsspec keyword arguments for ``protocol`` (s3fs: endpoint, region, anon, keys)."""
        if protocol != "s3":
            return {}
        opts: dict = {"anon": self.anonymous, "requester_pays": self.requester_pays}
        client = {}
        if self.endpoint_url:
            client["endpoint_url"] = self.endpoint_url
        if self.region:
            client["region_name"] = self.region
        if client:
            opts["client_kwargs"] = client
        # fail within seconds on an unreachable endpoint (botocore's default retries take minutes)
        opts["config_kwargs"] = {"connect_timeout": 10,
                                 "retries": {"max_attempts": self.max_attempts, "mode": "standard"}}
        if self.virtual_hosting is not None:
            opts["config_kwargs"]["s3"] = {"addressing_style": "virtual" if self.virtual_hosting else "path"}
        if not self.anonymous and self.key:
            opts.update(key=self.key, secret=self.secret, token=self.token)
        return opts

    def filesystem(self, url: str):
        """The fsspec filesystem for ``url``'s scheme.

        Raises
        ------
        ConfigError
            The package that implements the scheme is not installed.
        """
        import fsspec

        protocol = scheme(url) or "file"
        try:
            return fsspec.filesystem(protocol, **self.storage_options(protocol))
        except ImportError:
            pkg = FSSPEC_PACKAGE.get(protocol, protocol)
            raise ConfigError(f"{redact(url)}: {protocol}:// needs the {pkg} package "
                              f"(pip install \"sceneclass[s3]\" for S3, or pip install {pkg})") from None


def _credentials_session(creds: dict):
    """A rasterio session that hands GDAL the given credential options (rasterio takes
    ``AWS_SECRET_ACCESS_KEY`` only from a session; its own ``AWSSession`` needs boto3)."""
    from rasterio.session import Session

    class Credentials(Session):
        def get_credential_options(self):
            return dict(creds)

        @classmethod
        def hascreds(cls, config):
            return True

    return Credentials()


def resolve(endpoint_url: str | None = None, region: str | None = None, anonymous: bool = False,
            profile: str | None = None, requester_pays: bool = False,
            virtual_hosting: bool | None = None) -> Access:
    """The :class:`Access` of the ``storage:`` settings, with the credentials botocore finds
    for ``profile`` (or the default chain: environment, shared files, instance roles) now,
    on the client, and the attempts per request its settings name (``max_attempts``).

    Raises
    ------
    ConfigError
        ``profile`` names a profile that does not exist, or ``max_attempts`` is not a whole
        number of at least 1.
    """
    key = secret = token = None
    max_attempts = DEFAULT_MAX_ATTEMPTS
    if not anonymous:
        try:
            import botocore.session
            from botocore.exceptions import ProfileNotFound
        except ImportError:  # no S3 support installed: GDAL's own lookup applies
            botocore = None
        if botocore is not None:
            try:
                creds = botocore.session.Session(profile=profile).get_credentials()
            except ProfileNotFound:
                raise ConfigError(f"storage.profile: no profile {profile!r} in the AWS config files") from None
            if creds is not None:
                frozen = creds.get_frozen_credentials()
                key, secret, token = frozen.access_key, frozen.secret_key, frozen.token
            config = botocore.session.Session(profile=profile)
            if region is None:
                region = config.get_config_variable("region")
            try:
                named = config.get_config_variable("max_attempts")
                max_attempts = DEFAULT_MAX_ATTEMPTS if named is None else int(named)
            except ValueError:
                raise ConfigError("max_attempts (AWS_MAX_ATTEMPTS or the AWS profile): not a whole number") from None
            if max_attempts < 1:
                raise ConfigError(f"max_attempts (AWS_MAX_ATTEMPTS or the AWS profile): {max_attempts}; "
                                  "at least 1 (the first try)")
    for value in (secret, token):
        register_secret(value)
    return Access(endpoint_url, region, anonymous, requester_pays, virtual_hosting, key, secret, token,
                  max_attempts=max_attempts)


_active: "Access | Callable[[], Access] | None" = None
_active_lock = threading.Lock()


def activate(access: "Access | Callable[[], Access] | None") -> None:
    """Make ``access`` the client's settings for the run (fingerprints, manifests, uploads).

    Parameters
    ----------
    access : Access, callable or None
        The settings; or a function that resolves them (called once, by the first
        :func:`current`: a run that touches no object storage never looks credentials up,
        which costs botocore's import and its credential chain, a few tenths of a second,
        and botocore's timeout where the instance-metadata endpoint does not answer);
        None: from the environment.
    """
    global _active
    with _active_lock:
        _active = access


def current() -> Access:
    """The client's active :class:`Access` (settings from the environment when none was activated).

    Raises
    ------
    ConfigError
        The activated settings name a profile that does not exist (see :func:`resolve`).
    """
    global _active
    with _active_lock:
        if _active is None:
            _active = resolve()
        elif not isinstance(_active, Access):  # activated lazily: resolve it now, once
            _active = _active()
        return _active


def access_for(path: str) -> Access | None:
    """The :class:`Access` the tasks reading ``path`` carry: the active one for object-storage
    URLs, None for local paths and plain HTTP."""
    return current() if is_remote(path) else None


@contextmanager
def gdal_env(access: Access | None) -> Iterator[None]:
    """``access.gdal_env()``, or nothing for None."""
    if access is None:
        yield
    else:
        with access.gdal_env():
            yield


# --------------------------------------------------------------- shadow folders
@dataclasses.dataclass(frozen=True)
class Mount:
    local: Path
    remote: str  # a prefix URL, no trailing slash


_mounts: dict[str, Mount] = {}


def mount(remote: str) -> Path:
    """The local shadow folder that stands for the remote prefix ``remote`` (made once per
    prefix, in ``$TMPDIR``, removed by :func:`unmount_all`). Files written under it go to the
    same relative path under ``remote`` when they are committed."""
    remote = remote.rstrip("/")
    with _active_lock:
        m = _mounts.get(remote)
        if m is None:
            if not _mounts:
                atexit.register(unmount_all)
            local = Path(tempfile.mkdtemp(prefix="sceneclass-remote-")).resolve()
            m = _mounts[remote] = Mount(local, remote)
            register_alias(str(local), remote)
    return m.local


def remote_of(path) -> str | None:
    """The remote URL a path under a shadow folder stands for, else None."""
    p = Path(path)
    for m in list(_mounts.values()):
        if p == m.local or p.is_relative_to(m.local):
            rel = p.relative_to(m.local).as_posix()
            return m.remote if rel == "." else f"{m.remote}/{rel}"
    return None


def display(path) -> str:
    """How a path is shown: the remote URL (redacted) for a path under a shadow folder."""
    url = remote_of(path)
    return redact(url) if url is not None else str(path)


def unmount_all() -> None:
    """Remove every shadow folder (what they held was uploaded or is no longer needed)."""
    with _active_lock:
        mounts = list(_mounts.values())
        _mounts.clear()
    for m in mounts:
        shutil.rmtree(m.local, ignore_errors=True)


def url_parent(url: str) -> str:
    """``s3://b/p/x.tif`` -> ``s3://b/p``."""
    head, _, rest = url.partition("://")
    return f"{head}://{posixpath.dirname(rest.rstrip('/'))}"


def url_name(url: str) -> str:
    return posixpath.basename(url.rstrip("/"))


# ---------------------------------------------------------------- operations
def _fs_path(url: str) -> str:
    return url.split("://", 1)[1]


def put_stream(dest_url: str, data, access: Access | None = None, part_size: int = PART_SIZE) -> None:
    """Upload ``data`` to ``dest_url`` sequentially, as a multipart upload: the object appears
    (or replaces the previous one) only when the upload completes; a failure aborts the upload
    and leaves the previous object unchanged.

    Parameters
    ----------
    dest_url : str
        ``s3://bucket/key`` (or another fsspec URL whose files commit on close).
    data : binary file object, or iterable of bytes
        Read to its end (``read(part_size)``) or iterated in order.
    access : Access, optional
        Settings and credentials (default: the active ones).
    part_size : int
        Bytes per upload part (at least 5 MiB for S3).

    Raises
    ------
    OutputError
        The upload failed (naming ``dest_url`` and the cause).
    """
    access = access or current()
    fs = access.filesystem(dest_url)
    chunks: Iterable[bytes]
    if hasattr(data, "read"):
        chunks = iter(lambda: data.read(part_size), b"")
    else:
        chunks = data
    try:
        f = fs.open(_fs_path(dest_url), "wb", block_size=part_size)
    except Exception as e:  # noqa: BLE001 - any client error is an output problem
        raise _upload_error(dest_url, e) from None
    try:
        for chunk in chunks:
            f.write(chunk)
    except BaseException as e:
        _discard(f)
        if isinstance(e, Exception) and not isinstance(e, OutputError):
            raise _upload_error(dest_url, e) from None
        raise
    try:
        f.close()  # completes the multipart upload: the object appears now
    except Exception as e:  # noqa: BLE001
        _discard(f)
        raise _upload_error(dest_url, e) from None


def _discard(f) -> None:
    """Abort an upload (fsspec files commit on close, even on error: never close a failed one)."""
    try:
        f.discard()
    except Exception:  # noqa: BLE001 - the upload failed anyway; an unfinished part expires
        pass
    f.closed = True  # nothing is committed when the file object is collected


def put_file(path: Path, dest_url: str, access: Access | None = None) -> None:
    """Upload a local file with :func:`put_stream` (multipart; the object appears only complete)."""
    with open(path, "rb") as f:
        put_stream(dest_url, f, access)


def _upload_error(url: str, e: BaseException) -> OutputError:
    return OutputError(f"{redact(url)}: cannot write to object storage ({reason(e)}); nothing was replaced")


def reason(e: BaseException) -> str:
    """One line saying why a storage request failed (no traceback, no secret)."""
    from .urls import redact_text

    text = (e.strerror if isinstance(e, OSError) and e.strerror else str(e)).strip().splitlines()
    return redact_text(text[0] if text else type(e).__name__)


def read_text(url: str) -> str | None:
    """The text of a small object, or None when it is missing or unreadable."""
    try:
        fs = current().filesystem(url)
        return fs.cat_file(_fs_path(url)).decode("utf-8")
    except (OSError, ValueError, ConfigError):
        return None
    except Exception:  # noqa: BLE001 - client errors (no such bucket, denied) read as missing
        return None


def exists(url: str) -> bool:
    try:
        return current().filesystem(url).exists(_fs_path(url))
    except Exception:  # noqa: BLE001
        return False


def remove(url: str, recursive: bool = False) -> None:
    """Remove an object (or every object under a prefix); nothing when missing."""
    fs = current().filesystem(url)
    try:
        fs.rm(_fs_path(url), recursive=recursive)
    except FileNotFoundError:
        pass
    fs.invalidate_cache()


def check_reachable(url: str) -> None:
    """Fail fast when the bucket of an output URL cannot be reached or listed.

    Raises
    ------
    OutputError
        Naming the URL and why.
    """
    fs = current().filesystem(url)
    bucket = _fs_path(url).split("/", 1)[0]
    try:
        if hasattr(fs, "call_s3"):  # one request (s3fs's info tries several)
            fs.call_s3("head_bucket", Bucket=bucket)
        else:
            fs.info(bucket)
    except FileNotFoundError:
        raise OutputError(f"{redact(url)}: cannot write: bucket {bucket} does not exist") from None
    except Exception as e:  # noqa: BLE001
        raise OutputError(f"{redact(url)}: cannot reach the output location ({reason(e)})") from None


# -------------------------------------------------------------- fingerprints
def _info_fingerprint(info: dict) -> dict:
    fp = {}
    etag = info.get("ETag") or info.get("etag") or info.get("md5Hash")
    if etag:
        fp["etag"] = str(etag).strip('"')
    if info.get("size") is not None:
        fp["size"] = int(info["size"])
    modified = info.get("LastModified") or info.get("last_modified") or info.get("updated") or info.get("mtime")
    if modified is not None:
        fp["last_modified"] = modified.isoformat() if hasattr(modified, "isoformat") else str(modified)
    return fp


def http_fingerprint(url: str) -> dict:
    """ETag, Last-Modified and size of an HTTP(S) resource, from one HEAD request.

    Raises
    ------
    OSError
        The request failed.
    """
    import urllib.error
    import urllib.request

    req = urllib.request.Request(url, method="HEAD")
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            headers = r.headers
    except urllib.error.HTTPError as e:
        raise OSError(f"HTTP {e.code}") from None
    except (urllib.error.URLError, ValueError) as e:
        raise OSError(str(getattr(e, "reason", e))) from None
    fp = {}
    if headers.get("ETag"):
        fp["etag"] = headers["ETag"].strip('"')
    if headers.get("Last-Modified"):
        fp["last_modified"] = headers["Last-Modified"]
    if headers.get("Content-Length"):
        fp["size"] = int(headers["Content-Length"])
    return fp


def remote_fingerprint(url: str) -> dict:
    """What tells whether a remote input changed: ETag, last modification and size.

    Raises
    ------
    OSError
        The object cannot be looked up.
    """
    if scheme(url) in READ_ONLY:
        return http_fingerprint(url)
    fs = current().filesystem(url)
    fs.invalidate_cache()
    try:
        info = fs.info(_fs_path(url))
    except OSError:
        raise
    except Exception as e:  # noqa: BLE001 - client errors (endpoint unreachable, denied) as OSError
        raise OSError(reason(e)) from None
    return _info_fingerprint(info)


def remote_identity(url: str) -> tuple | None:
    """:func:`remote_fingerprint` as a comparable tuple, or None when the lookup fails."""
    if scheme(url) not in READ_ONLY and not is_remote(url):
        return None
    try:
        fp = remote_fingerprint(url)
    except (OSError, ConfigError):
        return None
    return tuple(sorted(fp.items())) or None


def file_fingerprint(url: str) -> dict | None:
    """ETag and size of an output object, or None when it is missing."""
    try:
        return remote_fingerprint(url)
    except OSError:
        return None


def sweep_remote(prefix: str, tag: str) -> list[str]:
    """Remove what killed runs left under ``prefix`` (names containing ``tag``); returns them."""
    fs = current().filesystem(prefix)
    try:
        names = [n for n in fs.ls(_fs_path(prefix), detail=False, refresh=True) if tag in posixpath.basename(n)]
    except FileNotFoundError:
        return []
    except Exception:  # noqa: BLE001 - an unreachable prefix fails the run later, with its own line
        return []
    proto = scheme(prefix)
    gone = []
    for n in names:
        try:
            fs.rm(n, recursive=True)
            gone.append(f"{proto}://{n}")
        except FileNotFoundError:
            pass
    fs.invalidate_cache()
    return gone

