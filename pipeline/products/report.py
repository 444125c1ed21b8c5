"""One self-contained HTML report per run: quicklook, histogram plot, legend table, settings.

Images are embedded as base64 ``data:`` URIs, so the single file can be mailed or archived.
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

from ..urls import redact, redact_data

_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; max-width: 1100px; }
h1 { font-size: 1.4em; } h2 { font-size: 1.1em; margin-top: 1.6em; }
table { border-collapse: collapse; font-size: 0.9em; }
td, th { border: 1px solid #ccc; padding: 3px 8px; text-align: right; }
th { background: #f3f3f3; } td.l, th.l { text-align: left; }
.sw { display: inline-block; width: 28px; height: 14px; border: 1px solid #888; vertical-align: middle; }
img.ql { max-width: 100%; border: 1px solid #ccc;
  background: repeating-conic-gradient(#eee 0% 25%, #fff 0% 50%) 50% / 16px 16px; }
pre { background: #f7f7f7; padding: 1em; overflow-x: auto; font-size: 0.85em; }
"""


def data_uri(png: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64," + base64.b64encode(png).decode("ascii")


def _edge(v: float | None, upper: bool) -> str:
    """A legend edge for the table: null (an open end) as -inf / inf."""
    return ("inf" if upper else "-inf") if v is None else f"{v:.6g}"


def _row(*cells, left=()) -> str:
    return "<tr>" + "".join(
        f'<td class="l">{c}</td>' if i in left else f"<td>{c}</td>" for i, c in enumerate(cells)) + "</tr>"


def report_html(legend: dict, settings: dict, *, quicklook: bytes | None, histogram: bytes | None,
                histogram_source: str | None, files: dict[str, Path]) -> str:
    """The report page as a string."""
    e = html.escape
    name = Path(legend["output"]).name
    facts = [
        ("input", redact(legend["input"])), ("band", legend["band"]), ("dtype", legend["dtype"]),
        ("shape (rows x cols)", " x ".join(str(v) for v in legend["shape"])), ("CRS", legend["crs"]),
        ("nodata", legend.get("nodata_values", legend["nodata"])), ("valid range", legend.get("valid_range")),
        ("mask", "; ".join(legend.get("mask") or []) or "none"),
        ("value", f"raw x {legend.get('scale', 1.0)!r} + {legend.get('offset', 0.0)!r} {legend.get('units') or ''}"),
        ("min / max", f"{legend['min']} / {legend['max']}"),
        ("valid pixels", f"{legend['valid_pixels']:,}"), ("nodata pixels", f"{legend['nodata_pixels']:,}"),
        ("masked pixels", f"{legend.get('masked_pixels', 0):,}"),
        ("outside the edges", f"{legend.get('outside_pixels', 0):,}"),
        ("scheme", legend["scheme"]),
        ("classes", f"{len(legend['classes'])} ({legend.get('classes_effective', '?')} holding pixels)"),
        ("empty classes", ", ".join(str(i) for i in legend["empty_classes"]) or "none"),
        ("edges", ", ".join(_edge(v, i > 0) for i, v in enumerate(legend["edges"]))),
        ("sceneclass", legend["sceneclass_version"]),
    ]
    if legend.get("bands"):  # a derived band: its expression and the bands it reads
        facts[1:2] = [("expression", legend.get("expression")),
                      ("bands", "; ".join(f"{n} = {redact(b['path'])} band {b['band']}"
                                          for n, b in legend["bands"].items()))]
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        f"<title>sceneclass report: {e(name)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{e(name)}</h1>",
        f"<p>{e(legend['scheme'])} classification of <code>{e(redact(str(legend['input'])))}</code> "
        + (f"band {legend['band']}.</p>" if not legend.get("bands") else "</p>"),
    ]
    if quicklook is not None:
        parts += ["<h2>Quicklook</h2>",
                  f'<img class="ql" alt="quicklook of {e(name)}" src="{data_uri(quicklook)}">']
    if histogram is not None:
        parts += ["<h2>Histogram</h2>", f'<img alt="histogram" src="{data_uri(histogram)}">',
                  f"<p><small>{e(histogram_source or '')}</small></p>"]
    parts += ["<h2>Legend</h2>", "<table>",
              '<tr><th>id</th><th class="l">colour</th><th class="l">label</th><th>lower</th>'
              "<th>upper</th><th>pixels</th><th>%</th></tr>"]
    for c in legend["classes"]:
        swatch = f'<span class="sw" style="background:{e(c["color"][:7])}"></span> {e(c["color"])}'
        parts.append(_row(c["id"], swatch, e(c["label"]), _edge(c["lower"], False), _edge(c["upper"], True),
                          f"{c['count']:,}", f"{c['percent']:.3f}", left=(1, 2)))
    parts.append(_row(0, "transparent", "nodata", "", "", f"{legend['nodata_class']['count']:,}", "",
                      left=(1, 2)))
    parts += ["</table>", "<h2>Run</h2>", "<table>"]
    parts += [_row(e(k), e(str(v)), left=(0, 1)) for k, v in facts]
    parts += ["</table>"]
    if files:
        parts += ["<h2>Files</h2>", "<ul>"] + [f"<li>{e(k)}: <code>{e(str(p))}</code></li>" for k, p in files.items()]
        parts += ["</ul>"]
    settings = redact_data(settings)
    parts += ["<h2>Settings</h2>", f"<pre>{e(json.dumps(settings, indent=2, default=str))}</pre>",
              "</body></html>"]
    return "\n".join(parts) + "\n"
