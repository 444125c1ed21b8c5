"""Do the dask workers see the client's files? Checked before any pixel is read.

Most clusters have no shared filesystem: a path on the client may not exist on the workers, or
be another file there. On a distributed scheduler one small function runs on every worker
(``Client.run``) and reports, for each local path the run needs:

- an **input** file: it must exist on the worker with the same size and modification time as on
  the client;
- a **folder** the workers write into or read from (a Zarr output's folder, the decoded-chunk
  store's folder): a token file the client writes there (random content, removed afterwards)
  must be readable by the worker with the same content.

URLs (http, s3, ...) are not local paths and are not probed.
"""

from __future__ import annotations

import logging
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from .atomic import partial_path, remove

log = logging.getLogger(__name__.replace("pipeline", "sceneclass", 1))


def _file_id(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns


def _token(path: str) -> str | None:
    try:
        with open(path, encoding="ascii") as f:
            return f.read()
    except (OSError, ValueError):
        return None


def look(files: dict[str, tuple[int, int] | None], tokens: dict[str, str]) -> list[str]:
    """Run on a worker: the paths it does not see as the client does.

    Parameters
    ----------
    files : dict
        Input path -> (size, mtime_ns) on the client.
    tokens : dict
        Token file path -> its content.

    Returns
    -------
    list of str
        The input paths and token paths that differ or are missing here.
    """
    missing = [p for p, ident in files.items() if _file_id(p) != ident]
    missing += [p for p, content in tokens.items() if _token(p) != content]
    return missing


@dataclass
class Visibility:
    """What the workers failed to see: input paths, and folders (name -> worker names)."""

    inputs: dict[str, list[str]] = field(default_factory=dict)
    folders: dict[str, list[str]] = field(default_factory=dict)

    def sees(self, folder: Path) -> bool:
        return str(folder) not in self.folders


def probe(client, inputs: list[str], folders: list[Path]) -> Visibility:
    """Check on every worker of ``client`` that ``inputs`` and ``folders`` are the client's.

    Parameters
    ----------
    client : distributed.Client
        The run's client.
    inputs : list of str
        Local input files (URLs are skipped).
    folders : list of Path
        Existing local folders the workers must share (a token file is written in each, then removed).

    Returns
    -------
    Visibility
        The paths some worker does not see as the client does, with the workers' names.
    """
    from ..scene import is_url

    files = {str(Path(p).absolute()): _file_id(p) for p in inputs if p and not is_url(p)}
    tokens: dict[str, str] = {}
    made: dict[str, Path] = {}
    try:
        for folder in folders:
            try:
                token = partial_path(Path(folder) / "workers", ".probe")
                content = secrets.token_hex(16)
                token.write_text(content, encoding="ascii")
            except OSError:
                continue  # the run reports a folder it cannot write to itself
            tokens[str(token)] = content
            made[str(token)] = Path(folder)
        results = client.run(look, files, tokens) if files or tokens else {}
    finally:
        for token in made:
            remove(Path(token))
    seen = Visibility()
    info = client.scheduler_info().get("workers", {})
    for worker, missing in results.items():
        name = str(info.get(worker, {}).get("name", worker))
        for p in missing:
            if p in made:
                seen.folders.setdefault(str(made[p]), []).append(name)
            else:
                seen.inputs.setdefault(p, []).append(name)
    return seen


def not_shared(path, workers: list[str]) -> str:
    """The one line saying the workers do not share ``path``."""
    some = ", ".join(sorted(workers)[:3]) + (" ..." if len(workers) > 3 else "")
    return (f"{path}: the dask workers do not share this path with the client (not visible on {some}); "
            "use a filesystem every worker mounts at the same path, or object storage")
