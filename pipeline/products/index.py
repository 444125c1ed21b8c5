"""The batch index: ``index.html`` in a batch's output folder, the page a person opens to see
what a batch made.

It holds the shared legend (when every finished scene has the same edges, colours and units)
or a note that the edges differ per scene, then one row per scene: a thumbnail of the
classified map, its valid / masked / nodata / outside pixel counts (from its legend), its status
(done, up to date, or failed with its error line), links to its own report, legend and
quicklook, and its output path. Thumbnails are small PNGs embedded as ``data:`` URIs, read from
each written output as the quicklook is (overviews / strided read), so the page needs no other
file to show them; every link is relative to the folder, so the folder can be copied or served
anywhere. No script, no external resource.
"""

from __future__ import annotations

import datetime as dt
import html
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

from ..errors import OutputError
from ..jobs.atomic import atomic_output, cause
from ..jobs.manifest import manifest_path, read_manifest
from ..urls import redact
from ..writers.legend import legend_path
from .extras import extra_paths

log = logging.getLogger(__name__.replace("pipeline", "sceneclass", 1))

#: the index's file name, in the batch's output folder
INDEX_NAME = "index.html"
#: longest side of a row's thumbnail, in pixels (at most ``outputs.quicklook_size``)
THUMBNAIL_SIZE = 256
#: a job's status -> the status shown
STATUS_TEXT = {"done": "done", "skipped": "up to date", "failed": "failed"}
#: the pixel counts of a row: legend key -> column heading
COUNTS = {"valid_pixels": "valid", "masked_pixels": "masked", "nodata_pixels": "nodata",
          "outside_pixels": "outside"}

_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
h1 { font-size: 1.4em; } h2 { font-size: 1.1em; margin-top: 1.6em; }
table { border-collapse: collapse; font-size: 0.9em; }
td, th { border: 1px solid #ccc; padding: 3px 8px; text-align: right; vertical-align: top; }
th { background: #f3f3f3; } td.l, th.l { text-align: left; }
.sw { display: inline-block; width: 28px; height: 14px; border: 1px solid #888; vertical-align: middle; }
img.thumb { border: 1px solid #ccc; max-width: 256px; max-height: 256px;
  background: repeating-conic-gradient(#eee 0% 25%, #fff 0% 50%) 50% / 16px 16px; }
tr[data-status="failed"] td { background: #fdecec; }
.err { color: #a00; font-family: monospace; white-space: pre-wrap; }
.note { color: #555; }
"""


@dataclass
class SceneRow:
    """What the index shows of one scene.

    Attributes
    ----------
    input : str
        The input path or URL (redacted).
    output : Path
        The output path (absolute).
    status : str
        ``done``, ``up to date`` or ``failed``.
    error : str or None
        A failed scene's one error line.
    legend : dict or None
        The scene's legend (``NAME.legend.json`` or the finished run's), or the counts and edges of
        its manifest when it has no legend file; None for a failed scene.
    thumbnail : bytes or None
        PNG bytes of the classified map (longest side at most :data:`THUMBNAIL_SIZE`).
    note : str or None
        Why the thumbnail or the counts are missing.
    links : dict of str to Path
        Existing files to link: ``report``, ``legend``, ``quicklook``.
    """

    input: str
    output: Path
    status: str
    error: str | None = None
    legend: dict | None = None
    thumbnail: bytes | None = None
    note: str | None = None
    links: dict[str, Path] = field(default_factory=dict)


def index_path(folder: Path) -> Path:
    """Where a batch writing into ``folder`` (its output folder) puts its index: ``folder/index.html``."""
    return Path(folder) / INDEX_NAME


# --------------------------------------------------------------------- gathering
def _scene_legend(job) -> dict | None:
    """The legend of a finished job: the run's own, else its legend file, else the manifest's
    edges and counts (``output.legend: false``)."""
    result = getattr(job, "result", None)
    if result is not None and getattr(result, "legend", None):
        return result.legend
    path = legend_path(job.output)
    if path.is_file():
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            log.warning("%s: cannot read the legend for the batch index (%s)", path, cause(e))
            return None
    data = read_manifest(manifest_path(job.output))
    if not data or data.get("counts") is None:
        return None
    return {"edges": data.get("edges"), "valid_pixels": sum(data["counts"]),
            "nodata_pixels": data.get("nodata_pixels")}


def _thumbnail(job, legend: dict, size: int) -> bytes:
    """A small PNG of the written output, coloured with the legend's palette."""
    from . import pictures
    from .styles import palette_from_legend

    cfg = job.config
    rgba = pictures.quicklook_rgba(job.output, cfg.output.resolved_format, cfg.output.mode,
                                   palette_from_legend(legend), size)
    return pictures.encode(rgba, "png")


def scene_row(job) -> SceneRow:
    """The index row of one job of a finished batch.

    Parameters
    ----------
    job : pipeline.jobs.batch.Job
        A job whose status is ``done``, ``skipped`` or ``failed``.

    Returns
    -------
    SceneRow
        Reads the legend from disk for an up-to-date scene and a thumbnail from every
        finished scene's output; a thumbnail that cannot be read is a note on the row (and a
        warning), not a failure of the batch.
    """
    row = SceneRow(input=redact(job.config.label), output=Path(job.output),
                   status=STATUS_TEXT.get(job.status, job.status), error=job.error)
    paths, o = extra_paths(job.output), job.config.outputs
    candidates = {"report": paths["report"]}  # only files this config makes: no stale file of an earlier one
    if job.config.output.legend:
        candidates["legend"] = legend_path(job.output)
    if o.quicklook:
        candidates["quicklook"] = paths[f"quicklook_{o.quicklook_format[0]}"]
    row.links = {k: p for k, p in candidates.items() if p.is_file()}
    if job.status == "failed":
        if job.output.exists():
            row.note = "the previous output is kept (links are to it)"
        return row
    row.legend = _scene_legend(job)
    if row.legend is None:
        row.note = "no legend or manifest to read the counts from"
    elif "classes" not in row.legend:
        row.note = "no thumbnail: the scene has no legend file (output.legend: false)"
    else:
        size = min(THUMBNAIL_SIZE, job.config.outputs.quicklook_size)
        try:
            row.thumbnail = _thumbnail(job, row.legend, size)
        except Exception as e:  # a picture on a page must not fail a batch whose outputs are fine
            row.note = f"no thumbnail: {type(e).__name__}: {cause(e)}"
            log.warning("%s: %s", job.output, row.note)
    return row


# ----------------------------------------------------------------------- the page
def _href(path: Path, folder: Path) -> str:
    """A relative URL from ``folder`` to ``path`` (percent-encoded, so no name reads as a scheme)."""
    rel = Path(os.path.relpath(path, folder)).as_posix()
    return html.escape(quote(rel, safe="/"), quote=True)


def _edge(v: float | None, upper: bool) -> str:
    return ("inf" if upper else "-inf") if v is None else f"{v:.6g}"


def _count(legend: dict | None, key: str) -> str:
    v = None if legend is None else legend.get(key)
    return "&mdash;" if v is None else f"{int(v):,}"


def shared_legend(rows: list[SceneRow]) -> tuple[dict | None, str]:
    """The legend every finished scene shares, and a sentence about it.

    Parameters
    ----------
    rows : list of SceneRow
        Every scene of the batch (failed ones are left out of the comparison).

    Returns
    -------
    (dict or None, str)
        The first finished scene's legend when every finished scene has a legend with the same
        edges, class colours and units (else None), and the note the page shows.
    """
    finished = [r for r in rows if r.status != "failed"]
    if not finished:
        return None, "No scene finished, so there is no legend to show."
    full = [r.legend for r in finished if r.legend is not None and "classes" in r.legend]
    if len(full) < len(finished):
        missing = len(finished) - len(full)
        return None, (f"{missing} scene(s) have no legend file (output.legend: false), so their edges cannot "
                      "be compared; each scene's own report shows its legend.")

    def key(leg: dict):
        return leg["edges"], [c["color"] for c in leg["classes"]], leg.get("units")

    if any(key(leg) != key(full[0]) for leg in full[1:]):
        return None, ("The class edges differ per scene (each scene's classes come from its own values): "
                      "a colour does not mean the same value in every map. Each scene's own report shows "
                      "its legend.")
    if any(leg.get("fit") == "together" for leg in full):
        return full[0], ("One set of edges, fitted on all the inputs together: a colour means the same value "
                         "in every map.")
    if len(full) == 1:
        return full[0], "The legend of the one finished scene."
    return full[0], "Every scene has the same edges and colours: a colour means the same value in every map."


def _legend_table(legend: dict) -> list[str]:
    e = html.escape
    units = legend.get("units")
    unit = f" ({e(units)})" if units else ""
    parts = ['<table class="legend">',
             f'<tr><th>id</th><th class="l">colour</th><th class="l">label</th><th>lower{unit}</th>'
             f"<th>upper{unit}</th></tr>"]
    for c in legend["classes"]:
        swatch = f'<span class="sw" style="background:{e(c["color"][:7])}"></span> {e(c["color"])}'
        parts.append(f'<tr><td>{int(c["id"])}</td><td class="l">{swatch}</td><td class="l">{e(str(c["label"]))}</td>'
                     f"<td>{_edge(c['lower'], False)}</td><td>{_edge(c['upper'], True)}</td></tr>")
    parts += ['<tr><td>0</td><td class="l">transparent</td><td class="l">nodata, masked, outside the edges</td>'
              "<td></td><td></td></tr>", "</table>"]
    if legend.get("scheme"):
        parts.append(f"<p class=\"note\">scheme: {e(str(legend['scheme']))}</p>")
    return parts


def _edges_text(legend: dict | None) -> str:
    if not legend or not legend.get("edges"):
        return ""
    edges = legend["edges"]
    return (f'<br><small class="note">{len(edges) - 1} classes, {_edge(edges[0], False)} to '
            f"{_edge(edges[-1], True)}</small>")


def _row_html(i: int, row: SceneRow, folder: Path, shared: bool) -> str:
    e = html.escape
    if row.thumbnail is not None:
        from .report import data_uri

        img = f'<img class="thumb" alt="{e(row.output.name)}" src="{data_uri(row.thumbnail)}">'
        if "quicklook" in row.links:
            img = f'<a href="{_href(row.links["quicklook"], folder)}">{img}</a>'
    else:
        img = ""
    status = e(row.status)
    if row.error:
        status += f'<div class="err">{e(row.error)}</div>'
    if row.note:
        status += f'<div class="note">{e(row.note)}</div>'
    links = " ".join(f'<a href="{_href(p, folder)}">{e(k)}</a>' for k, p in row.links.items())
    rel = f"<code>{e(Path(os.path.relpath(row.output, folder)).as_posix())}</code>"
    if row.status != "failed":
        rel = f'<a href="{_href(row.output, folder)}">{rel}</a>'
    scene = f"{e(Path(row.input.split('?', 1)[0]).name)}{'' if shared else _edges_text(row.legend)}"
    counts = "".join(f'<td class="n {k}">{_count(row.legend, k)}</td>' for k in COUNTS)
    return (f'<tr class="scene" data-status="{e(row.status)}"><td>{i}</td><td class="l map">{img}</td>'
            f'<td class="l scene" title="{e(row.input)}">{scene}</td><td class="l status">{status}</td>{counts}'
            f'<td class="l files">{links}</td><td class="l output">{rel}</td></tr>')


def index_html(rows: list[SceneRow], folder: Path, *, version: str = "") -> str:
    """The index page as a string.

    Parameters
    ----------
    rows : list of SceneRow
        One per scene, in the batch's order.
    folder : Path
        The folder the page is written in; every link is relative to it.
    version : str
        The sceneclass version, shown in the footer.

    Returns
    -------
    str
        A complete HTML5 document (UTF-8, no script, no external resource).
    """
    e = html.escape
    folder = Path(folder)
    legend, note = shared_legend(rows)
    tally = {s: sum(r.status == s for r in rows) for s in ("done", "up to date", "failed")}
    when = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        f"<title>sceneclass batch: {e(folder.name)}</title><style>{_CSS}</style></head><body>",
        f"<h1>sceneclass batch: {e(folder.name)}</h1>",
        f'<p class="summary">{len(rows)} scenes: {tally["done"]} done, {tally["up to date"]} up to date, '
        f'{tally["failed"]} failed (run of {when}).</p>',
        "<h2>Legend</h2>", f'<p class="note" id="legend-note">{e(note)}</p>',
    ]
    if legend is not None:
        parts += _legend_table(legend)
    parts += ["<h2>Scenes</h2>", '<table class="scenes">',
              '<thead><tr><th>#</th><th class="l">map</th><th class="l">scene</th><th class="l">status</th>'
              + "".join(f"<th>{h} pixels</th>" for h in COUNTS.values())
              + '<th class="l">files</th><th class="l">output</th></tr></thead>', "<tbody>"]
    parts += [_row_html(i, r, folder, legend is not None) for i, r in enumerate(rows, 1)]
    parts += ["</tbody></table>",
              '<p class="note">valid: pixels in a class; masked: removed by a mask; nodata: nodata values, '
              "NaN, outside the valid range; outside: valid values beyond the first or last edge.</p>",
              f'<p class="note">sceneclass {e(version)}</p>' if version else "", "</body></html>"]
    return "\n".join(p for p in parts if p) + "\n"


def write_index(folder: Path, jobs) -> Path:
    """Write ``folder/index.html`` for a finished batch, atomically (a temporary in ``folder``,
    renamed into place; a failed write leaves the previous index and no temporary). A folder at
    that path is refused, never replaced.

    Parameters
    ----------
    folder : Path
        The batch's output folder.
    jobs : list of pipeline.jobs.batch.Job
        Every job of the batch, each done, skipped (up to date) or failed.

    Returns
    -------
    Path
        The index's path.

    Raises
    ------
    OutputError
        The index cannot be written (exit code 4), naming it and the cause.
    """
    from .. import __version__

    path = index_path(folder)
    if path.is_dir() and not path.is_symlink():  # never replace what is not ours
        raise OutputError(f"{path}: cannot write the batch index: a folder is in the way")
    page = index_html([scene_row(j) for j in jobs], Path(folder), version=__version__)
    try:
        with atomic_output(path, ".html") as tmp:
            tmp.write_text(page, encoding="utf-8")
    except OSError as e:
        raise OutputError(f"{path}: cannot write the batch index ({cause(e)}); the previous one is unchanged") from None
    log.info("wrote %s", path)
    return path
