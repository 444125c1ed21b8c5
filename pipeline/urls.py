"""Credentials never leave the process: URLs are redacted before they are shown or stored.

A URL may carry secrets in its user info (``http://user:password@host/...``) and in signing
query parameters (S3 presigned URLs, Azure SAS tokens, Google signed URLs, API keys).
:func:`redact` drops the user info and replaces the value of every such parameter with
``REDACTED``; :func:`redact_text` does it for every URL inside a message (GDAL's errors quote
the URL they failed on); :func:`redact_data` for every string in a JSON-like structure.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit, urlunsplit

REDACTED = "REDACTED"

#: query parameters that sign or authorise a request (compared case-insensitively)
SECRET_PARAMS = frozenset(p.lower() for p in (
    # AWS S3 presigned URLs (SigV4 and SigV2)
    "X-Amz-Signature", "X-Amz-Credential", "X-Amz-Security-Token", "AWSAccessKeyId", "Signature",
    # Google Cloud Storage signed URLs
    "X-Goog-Signature", "X-Goog-Credential", "GoogleAccessId",
    # Azure shared access signatures
    "sig", "se", "sp", "sv", "st", "spr", "srt", "ss", "skoid", "sktid", "skt", "ske", "sks", "skv",
    # generic tokens and keys
    "token", "access_token", "id_token", "refresh_token", "auth", "apikey", "api_key", "key",
    "password", "passwd", "secret", "client_secret", "code", "Expires", "Policy", "Key-Pair-Id",
))

#: a URL inside free text: scheme://, then anything up to whitespace or a quote/bracket
_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://[^\s'\"<>()\[\]{}]+")


def redact(url: str) -> str:
    """``url`` without user info and with signing query parameters replaced by ``REDACTED``.

    Parameters
    ----------
    url : str
        A URL, a GDAL path (``/vsicurl/https://...``) or a local path (returned unchanged).

    Returns
    -------
    str
        The same address with its secrets removed; local paths and URLs without secrets are
        returned as given.
    """
    if not isinstance(url, str) or "://" not in url:
        return url
    prefix, sep, rest = url.partition("://")
    head = ""
    m = re.match(r"^(.*?)([A-Za-z][A-Za-z0-9+.\-]*)$", prefix)  # /vsicurl/https -> /vsicurl/ + https
    if m:
        head, prefix = m.group(1), m.group(2)
    try:
        parts = urlsplit(prefix + sep + rest)
    except ValueError:
        return head + prefix + sep + "REDACTED-UNPARSABLE-URL"
    netloc = parts.netloc.rpartition("@")[2]
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(k.lower() in SECRET_PARAMS for k, _ in pairs):
            query = "&".join(
                f"{quote(k, safe='')}={REDACTED if k.lower() in SECRET_PARAMS else quote(v, safe='')}"
                for k, v in pairs)
    fragment = parts.fragment
    return head + urlunsplit((parts.scheme, netloc, parts.path, query, fragment))


#: secrets known to the process (storage credentials): replaced wherever they appear in text
_secrets: set[str] = set()
#: local folders that stand for remote prefixes (see :func:`pipeline.storage.mount`): shown as the prefix
_aliases: dict[str, str] = {}


def register_secret(value: str | None) -> None:
    """Have :func:`redact_text` replace ``value`` (a secret key, a token) wherever it appears."""
    if value and len(value) >= 4:
        _secrets.add(value)


def register_alias(local: str, remote: str) -> None:
    """Have :func:`redact_text` show paths under the local folder ``local`` as under ``remote``."""
    _aliases[local.rstrip("/")] = remote.rstrip("/")


def _known(text: str) -> str:
    for value in _secrets:
        if value in text:
            text = text.replace(value, REDACTED)
    for local, remote in _aliases.items():
        if local in text:
            text = text.replace(local, redact(remote))
    return text


def redact_text(text: str) -> str:
    """Every URL inside ``text`` redacted with :func:`redact`, every registered secret replaced
    and every shadow folder of a remote output shown as its URL (for log and error lines)."""
    if not isinstance(text, str):
        return text
    text = _known(text)
    if "://" not in text:
        return text
    def one(m: re.Match) -> str:
        url = m.group(0)
        core = url.rstrip(".,;:!?")  # sentence punctuation after a URL is not part of it
        return redact(core) + url[len(core):]

    return _URL_IN_TEXT.sub(one, text)


def redact_data(data: Any) -> Any:
    """A copy of a JSON-like structure (dicts, lists, strings) with every string redacted."""
    if isinstance(data, str):
        return redact_text(data)
    if isinstance(data, dict):
        return {k: redact_data(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [redact_data(v) for v in data]
    return data
