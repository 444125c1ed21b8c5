"""The batch index (``outputs.report: true`` with ``inputs:``): ``index.html`` in the output folder.

Real crops of the uint16 Landsat band written into tmp_path, a damaged GeoTIFF named like a scene,
the CLI as a subprocess (exit codes, the error line) and ``run_batch`` in process (reruns). The page
is parsed with ``html.parser`` (well-formed, relative links that resolve, counts against numpy on
the crops and against each legend) and opened in headless Chromium where it is installed (every
image decoded, one row per scene, nothing fetched but the page itself).
"""

from __future__ import annotations

import base64
import html
import io
import json
import os
import re
import shutil
import subprocess
import uuid
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import numpy as np
import pytest
import rasterio
import yaml
from PIL import Image
from rasterio.windows import Window

from pipeline.errors import ConfigError
from pipeline.jobs.batch import check, plan, run_batch, writes_index
from pipeline.jobs.config import load_config

from _procs import PARTIAL, sceneclass
from conftest import B2, CORRUPT, data_path

#: crops of the B2 band: name -> (row, col, rows, cols); the first holds the scene's 0 fill
CROPS = {"LC08_crop_a": (0, 0, 230, 290), "LC08_crop_b": (900, 700, 250, 270)}
#: the damaged input: named like a scene, with characters HTML and URLs must escape
BROKEN = "LC08_<b2> & co"
VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


# ------------------------------------------------------------------------ fixtures
def write_crops(folder: Path, broken: bool = True) -> dict[str, np.ndarray]:
    """The crops as tiled GeoTIFFs in ``folder`` (and the damaged file); name -> pixels."""
    folder.mkdir(parents=True, exist_ok=True)
    pixels = {}
    with rasterio.open(data_path(B2)) as src:
        for name, (r, c, h, w) in CROPS.items():
            win = Window(c, r, w, h)
            data = src.read(1, window=win)
            prof = src.profile | {"width": w, "height": h, "transform": src.window_transform(win), "tiled": True,
                                  "blockxsize": 64, "blockysize": 64}
            with rasterio.open(folder / f"{name}.tif", "w", **prof) as dst:
                dst.write(data, 1)
            pixels[name] = data
    if broken:
        shutil.copy(data_path(CORRUPT), folder / f"{BROKEN}.tif")
    return pixels


def write_config(path: Path, **cfg) -> Path:
    data = {"inputs": ["in/*.tif"], "nodata": 0, "classes": {"scheme": "equal_interval", "count": 5},
            "processing": {"chunk": 100},
            "output": {"folder": "out", "path": "maps/{stem}_classes.tif", "blocksize": 128},
            "outputs": {"report": True}, **cfg}
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def batch(tmp_path_factory):
    """One CLI batch: two crops and the damaged file, report on, outputs in a subfolder."""
    root = tmp_path_factory.mktemp("batch")
    pixels = write_crops(root / "in")
    cfg = write_config(root / "job.yaml")
    proc = sceneclass("run", cfg, cwd=root)
    return root, pixels, proc


class Page(HTMLParser):
    """The index parsed: tags properly nested (void elements aside), every ``href`` and ``src``,
    and per scene row its cells' text by class, its error line and its thumbnails."""

    def __init__(self, text: str):
        super().__init__(convert_charrefs=True)
        self.stack: list[tuple[str, dict]] = []
        self.hrefs: list[str] = []
        self.srcs: list[str] = []
        self.tags: set[str] = set()
        self.rows: list[dict] = []
        self.text: list[str] = []
        self.feed(text)
        self.close()
        assert not self.stack, f"unclosed tags: {[t for t, _ in self.stack]}"

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.add(tag)
        if tag == "tr" and "scene" in (a.get("class") or "").split():
            self.rows.append({"status": a["data-status"], "cells": {}, "error": "", "imgs": [], "hrefs": []})
        if "href" in a:
            self.hrefs.append(a["href"])
            if self._in_row():
                self.rows[-1]["hrefs"].append(a["href"])
        if "src" in a:
            self.srcs.append(a["src"])
            if self._in_row():
                self.rows[-1]["imgs"].append(a["src"])
        if tag == "td" and self._in_row():
            a.setdefault("_text", "")
        if tag not in VOID:
            self.stack.append((tag, a))

    def handle_startendtag(self, tag, attrs):
        self.handle_starttag(tag, attrs)
        if tag not in VOID:
            self.stack.pop()

    def handle_endtag(self, tag):
        assert self.stack and self.stack[-1][0] == tag, f"</{tag}> closes {self.stack[-1:]}"
        t, a = self.stack.pop()
        if t == "td" and self._in_row():
            for cls in (a.get("class") or "l").split():
                self.rows[-1]["cells"][cls] = a["_text"].strip()
            if "title" in a:
                self.rows[-1]["input"] = a["title"]

    def handle_data(self, data):
        self.text.append(data)
        for t, a in reversed(self.stack):
            if t == "td" and self._in_row():
                a["_text"] += data
                break
        if any(t == "div" and a.get("class") == "err" for t, a in self.stack):
            self.rows[-1]["error"] += data

    def _in_row(self) -> bool:
        return any(t == "tr" for t, _ in self.stack) and bool(self.rows)


def count(text: str) -> int:
    return int(text.replace(",", ""))


def legend_of(output: Path) -> dict:
    return json.loads(output.with_name(output.name[:-4] + ".legend.json").read_text(encoding="utf-8"))


def check_links(page: Page, folder: Path) -> None:
    """Every link is relative and names an existing file; every image is an embedded PNG."""
    for href in page.hrefs:
        parts = urlsplit(href)
        assert not parts.scheme and not parts.netloc and not href.startswith("/"), href
        assert (folder / unquote(parts.path)).exists(), f"{href} does not resolve in {folder}"
    for src in page.srcs:
        assert src.startswith("data:image/png;base64,"), src[:60]
    assert not page.tags & {"script", "link", "iframe", "object", "embed"}, page.tags


def thumbnail(src: str) -> np.ndarray:
    img = Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1])))
    img.load()
    return np.asarray(img.convert("RGBA"))


# ------------------------------------------------------------------ the first run
def test_index_lists_every_scene_with_its_status_counts_and_error(batch):
    root, pixels, proc = batch
    assert proc.returncode == 1, proc.stdout + proc.stderr  # one scene failed
    out = root / "out"
    index = out / "index.html"
    page = Page(index.read_text(encoding="utf-8"))
    assert len(page.rows) == 3
    rows = {Path(r["input"]).stem: r for r in page.rows}
    assert set(rows) == {*CROPS, BROKEN}

    for name, data in pixels.items():
        row = rows[name]
        assert row["status"] == "done" and row["cells"]["status"] == "done"
        output = out / "maps" / f"{name}_classes.tif"
        legend = legend_of(output)
        for key in ("valid_pixels", "masked_pixels", "nodata_pixels", "outside_pixels"):
            assert count(row["cells"][key]) == legend[key], (name, key)
        # and against numpy on the crop: 0 is nodata, every other value is in a fitted class
        assert count(row["cells"]["valid_pixels"]) == int((data != 0).sum())
        assert count(row["cells"]["nodata_pixels"]) == int((data == 0).sum())
        assert count(row["cells"]["outside_pixels"]) == 0
        # the thumbnail is this scene's map: transparent where the crop is fill
        (src,) = row["imgs"]
        rgba = thumbnail(src)
        assert 0 < max(rgba.shape[:2]) <= 256
        assert abs((rgba[..., 3] == 0).mean() - (data == 0).mean()) < 0.03, name
        assert f"maps/{name}_classes.report.html" in row["hrefs"]
        assert row["cells"]["output"] == f"maps/{name}_classes.tif" and row["cells"]["output"] in row["hrefs"]

    bad = rows[BROKEN]
    assert bad["status"] == "failed" and bad["imgs"] == []
    assert all(bad["cells"][k] == "\u2014" for k in ("valid_pixels", "masked_pixels", "nodata_pixels",
                                                     "outside_pixels"))
    failed_out = out / "maps" / f"{BROKEN}_classes.tif"
    line = re.search(rf"^failed\s+{re.escape(str(failed_out))}  \((.*)\)$", proc.stdout, re.M)
    assert line, proc.stdout
    assert bad["error"] == line.group(1)  # unescaped text == the CLI's error line
    assert "&amp;" in index.read_text(encoding="utf-8") and "&lt;b2&gt;" in index.read_text(encoding="utf-8")

    # edges differ per scene: no shared legend, a note saying so
    assert "edges differ per scene" in "".join(page.text)
    assert 'class="legend"' not in index.read_text(encoding="utf-8")
    assert f"index      {index}" in proc.stdout


def test_index_is_well_formed_relative_and_works_when_copied(batch, tmp_path):
    root, _, _ = batch
    copy = tmp_path / "elsewhere" / "copied"
    shutil.copytree(root / "out", copy)
    page = Page((copy / "index.html").read_text(encoding="utf-8"))
    check_links(page, copy)
    text = (copy / "index.html").read_text(encoding="utf-8")
    assert not re.search(r'(?:href|src)="(?:[a-z]+:(?!image/png;base64,)|/)', text)  # data: PNGs, relative links
    assert not [u for u in page.hrefs + page.srcs if str(root) in unquote(u)]
    assert not [p for p in (root / "out").rglob("*") if PARTIAL in p.name]


# ------------------------------------------------------------------------ Chromium
WRAPPER = """<!DOCTYPE html>
<html><head><meta charset="utf-8"></head><body>
<img id="control" alt="a broken image, to prove a failed load is seen" src="data:image/png;base64,AAAA">
<pre id="result">pending</pre>
<iframe id="page" src="PAGE_URL" width="1400" height="900"></iframe>
<script>
window.addEventListener("load", function () {
  var out = document.getElementById("result");
  try {
    var d = document.getElementById("page").contentDocument;
    out.textContent = JSON.stringify({
      control: document.getElementById("control").naturalWidth,
      mode: d.compatMode,
      title: d.title,
      rows: Array.from(d.querySelectorAll("table.scenes tbody tr")).map(function (r) { return r.dataset.status; }),
      images: Array.from(d.images).map(function (i) {
        return {complete: i.complete, width: i.naturalWidth, height: i.naturalHeight, alt: i.alt}; }),
      resources: d.defaultView.performance.getEntriesByType("resource").map(function (e) { return e.name; })
    });
  } catch (e) { out.textContent = "error: " + e; }
});
</script></body></html>
"""


def chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        if shutil.which(name):
            return shutil.which(name)
    return None


def render(index: Path, work: Path) -> dict:
    """Open ``index`` in headless Chromium (inside a wrapper page that reads its DOM after every
    load); returns what the wrapper saw."""
    exe = chromium()
    if exe is None:
        pytest.skip("Chromium is not installed (Debian: apt-get install chromium)")
    wrapper = work / f"wrapper-{uuid.uuid4().hex[:6]}.html"
    wrapper.write_text(WRAPPER.replace("PAGE_URL", index.as_uri()), encoding="utf-8")
    cmd = [exe, "--headless", "--disable-gpu", "--no-first-run", "--disable-extensions",
           "--disable-background-networking", "--host-resolver-rules=MAP * ~NOTFOUND",
           "--allow-file-access-from-files", f"--user-data-dir={work / 'chromium-profile'}",
           "--virtual-time-budget=20000", "--dump-dom", wrapper.as_uri()]
    if os.geteuid() == 0:
        cmd.insert(1, "--no-sandbox")  # Chromium refuses to run as root with its sandbox
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    m = re.search(r'<pre id="result">(.*?)</pre>', proc.stdout, re.S)
    assert m, f"Chromium printed no result (exit {proc.returncode}): {proc.stderr[-2000:]}"
    text = html.unescape(m.group(1))
    assert text.startswith("{"), text
    return json.loads(text)


def test_index_renders_in_chromium_with_every_image_loaded(batch, tmp_path):
    root, _, _ = batch
    copy = tmp_path / "copied out"  # a copy elsewhere, with a space in its path
    shutil.copytree(root / "out", copy)
    seen = render(copy / "index.html", tmp_path)
    assert seen["control"] == 0, "the wrapper cannot tell a broken image from a loaded one"
    assert seen["mode"] == "CSS1Compat"  # standards mode: the doctype is right
    assert sorted(seen["rows"]) == ["done", "done", "failed"]  # one row per scene
    assert len(seen["images"]) == 2  # one thumbnail per finished scene
    for img in seen["images"]:
        assert img["complete"] and img["width"] > 0 and img["height"] > 0, img
    assert all(urlsplit(u).scheme in ("file", "data") for u in seen["resources"]), seen["resources"]


# ----------------------------------------------------------------------- reruns
def test_rerun_shared_legend_up_to_date_missing_stale_and_blocked_index(tmp_path):
    """Manual breaks: every scene has the same edges, so one legend is shown; reruns with every
    scene up to date rewrite the index (missing, stale); an index that cannot be put in place
    (a folder in the way) is exit 4 with no temporary left and every scene's output kept."""
    pixels = write_crops(tmp_path / "in", broken=False)
    breaks = [7000.0, 8500.0, 9500.0, 12000.0]
    cfg = load_config(write_config(tmp_path / "job.yaml", classes={"scheme": "manual", "breaks": breaks},
                                   output={"folder": str(tmp_path / "out"), "path": "{stem}.tif", "blocksize": 128},
                                   inputs=[str(tmp_path / "in" / "*.tif")]))
    out = tmp_path / "out"
    index = out / "index.html"

    def rows(expect: str) -> Page:
        page = Page(index.read_text(encoding="utf-8"))
        assert [r["status"] for r in page.rows] == [expect] * len(CROPS)
        for row in page.rows:
            name = Path(row["input"]).stem
            data, legend = pixels[name], legend_of(out / f"{name}.tif")
            inside = (data >= breaks[0]) & (data <= breaks[-1])
            want = {"valid_pixels": int(inside.sum()), "nodata_pixels": int((data == 0).sum()),
                    "outside_pixels": int(((data != 0) & ~inside).sum()), "masked_pixels": 0}
            for key, n in want.items():
                assert count(row["cells"][key]) == n == legend[key], (name, key)
            assert len(row["imgs"]) == 1 and thumbnail(row["imgs"][0]).shape[2] == 4
        check_links(page, out)
        return page

    first = run_batch(cfg)
    assert [j.status for j in first.jobs] == ["done", "done"] and first.exit_code == 0
    assert first.index == index
    page = rows("done")
    legend = legend_of(out / "LC08_crop_a.tif")
    assert "same edges and colours" in "".join(page.text)
    shown = re.findall(r'<span class="sw" style="background:(#[0-9a-f]{6})"></span>', index.read_text("utf-8"))
    assert shown == [c["color"][:7] for c in legend["classes"]]
    outputs = {p.name: p.stat().st_mtime_ns for p in out.glob("LC08*")}

    second = run_batch(cfg)
    assert [j.status for j in second.jobs] == ["skipped", "skipped"]
    rows("up to date")

    index.unlink()  # missing: written again
    run_batch(cfg)
    rows("up to date")

    index.write_text("<p>stale</p>", encoding="utf-8")  # stale: rewritten
    run_batch(cfg)
    rows("up to date")

    index.unlink()
    index.mkdir()  # a folder in the way: refused, never replaced
    (index / "keep.txt").write_text("not sceneclass's", encoding="utf-8")
    blocked = run_batch(cfg)
    assert blocked.exit_code == 4
    assert blocked.index_error == f"{index}: cannot write the batch index: a folder is in the way"
    assert [p.name for p in index.iterdir()] == ["keep.txt"]
    assert not [p for p in out.rglob("*") if PARTIAL in p.name], "a temporary of the index was left"
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("LC08*")} == outputs


PAGE = 4096


def test_full_disk_keeps_the_previous_index(tmp_path, mount_tmpfs, monkeypatch):
    """A real full tmpfs: the rerun cannot write the index; exit 4, one line naming it, the previous
    index byte for byte, no temporary."""
    out = mount_tmpfs("out", "size=4m")
    write_crops(tmp_path / "in", broken=False)
    cfg = write_config(tmp_path / "job.yaml", inputs=["in/LC08_crop_b.tif"],
                       output={"folder": str(out), "path": "{stem}.tif", "blocksize": 128})
    monkeypatch.chdir(tmp_path)  # the config's relative paths, in process
    assert run_batch(load_config(cfg)).exit_code == 0
    before = (out / "index.html").read_bytes()
    assert len(before) > PAGE
    st = os.statvfs(out)
    with open(out / "fill", "wb") as f:  # leave less than the index needs (tmpfs allocates pages)
        os.posix_fallocate(f.fileno(), 0, st.f_bavail * st.f_frsize - PAGE)
    proc = sceneclass("run", cfg, cwd=tmp_path)
    assert proc.returncode == 4, proc.stdout + proc.stderr
    errors = [l for l in proc.stderr.splitlines() if l.startswith("sceneclass: error:")]
    assert len(errors) == 1 and str(out / "index.html") in errors[0] and "No space left" in errors[0], proc.stderr
    assert proc.stdout.startswith("skipped ")  # the scene was up to date and is listed
    assert (out / "index.html").read_bytes() == before
    assert not [p for p in out.rglob("*") if PARTIAL in p.name]


# ------------------------------------------------------------------ refused plans
def test_input_named_like_the_index_is_refused(tmp_path):
    """``run`` refuses before any work (``validate`` and ``--dry-run`` plan the same way: see below)."""
    write_crops(tmp_path / "in", broken=False)
    out = tmp_path / "out"
    out.mkdir()
    planted = out / "index.html"
    shutil.copy(tmp_path / "in" / "LC08_crop_b.tif", planted)  # a real GeoTIFF named like the index
    before = planted.read_bytes()
    cfg = write_config(tmp_path / "job.yaml", inputs=["in/*.tif", "out/index.html"])
    proc = sceneclass("run", cfg, cwd=tmp_path)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    errors = [l for l in proc.stderr.splitlines() if l.strip()]
    assert len(errors) == 1 and errors[0].startswith("sceneclass: error: output.path:"), proc.stderr
    assert f"{planted} (the batch index) would overwrite {planted} (input)" in errors[0], errors[0]
    assert planted.read_bytes() == before
    assert sorted(p.name for p in out.iterdir()) == ["index.html"]  # nothing written


def test_only_a_batch_with_the_report_writes_an_index(tmp_path):
    write_crops(tmp_path / "in", broken=False)
    (tmp_path / "out").mkdir()
    shutil.copy(tmp_path / "in" / "LC08_crop_b.tif", tmp_path / "out" / "index.html")
    batch_cfg = load_config(write_config(tmp_path / "a.yaml", inputs=["in/*.tif", "out/index.html"],
                                         outputs={"report": False}))
    assert not writes_index(batch_cfg)
    plan(batch_cfg)  # no index, no collision
    single = load_config(write_config(tmp_path / "b.yaml", inputs=None, input="out/index.html",
                                      output={"path": "out/x.tif"}))
    assert single.outputs.report and not writes_index(single)
    plan(single)
    refused = load_config(write_config(tmp_path / "c.yaml", inputs=["in/*.tif", "out/index.html"]))
    for how in (check, lambda c: run_batch(c, dry_run=True)):  # validate, --dry-run
        with pytest.raises(ConfigError, match="the batch index"):
            how(refused)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["index.html"]


def test_a_folder_named_like_a_side_file_is_never_replaced(tmp_path):
    """Of the kind of the index's folder in the way: a user's folder at a side file's path (here
    the legend) fails the scene with an output error; the folder and its file stay."""
    write_crops(tmp_path / "in", broken=False)
    theirs = tmp_path / "out" / "LC08_crop_b.legend.json"
    theirs.mkdir(parents=True)
    (theirs / "keep.txt").write_text("not sceneclass's", encoding="utf-8")
    cfg = load_config(write_config(tmp_path / "job.yaml", inputs=None, input=str(tmp_path / "in" / "LC08_crop_b.tif"),
                                   output={"path": str(tmp_path / "out" / "LC08_crop_b.tif")},
                                   outputs={"report": False}))
    (job,) = run_batch(cfg).jobs
    assert job.status == "failed" and job.exit_code == 4, job.error
    assert job.error == f"{theirs}: cannot put the output in place (a folder is in the way)"
    assert [p.name for p in theirs.iterdir()] == ["keep.txt"]
    assert not [p for p in (tmp_path / "out").rglob("*") if PARTIAL in p.name]
