"""Issue 13, items 8-15: every config, data and output fault ends in one clear line with the
documented exit code, nothing written; stored files are strict JSON; credentials never leave.

Every test runs the real command (a subprocess) on real GeoTIFFs written into tmp_path; the
output-folder faults use real tmpfs mounts (root), the URL test a real HTTP server on 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
import rasterio
import yaml
from rasterio.transform import from_origin

from _procs import child_env, expected_equal_interval, http_server, read_classes, sceneclass
from pipeline.errors import ConfigError
from pipeline.jobs.config import load_config, parse_override

PARTIAL = "sceneclass-partial"


# ----------------------------------------------------------------------------- helpers
def write_tif(path: Path, a: np.ndarray, nodata=None, block: int = 64) -> Path:
    tiled = dict(tiled=True, blockxsize=block, blockysize=block) if min(a.shape) >= block else {}
    with rasterio.open(path, "w", driver="GTiff", height=a.shape[0], width=a.shape[1], count=1, dtype=a.dtype,
                       crs="EPSG:32633", transform=from_origin(500000, 4000000 + a.shape[0], 1, 1),
                       nodata=nodata, **tiled) as dst:
        dst.write(a, 1)
    return path


@pytest.fixture
def u16(tmp_path) -> Path:
    """200 x 150 uint16, 64-pixel tiles (the processing chunk of 64 does not divide the scene)."""
    a = (np.arange(200 * 150, dtype=np.int64).reshape(200, 150) * 7919 % 1000).astype(np.uint16)
    return write_tif(tmp_path / "scene.tif", a)


def cfg_file(folder: Path, data: dict | str, name: str = "job.yaml") -> Path:
    path = folder / name
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data), encoding="utf-8")
    return path


def job(inp: Path | str, out: Path, **more) -> dict:
    return {"input": str(inp), "output": {"path": str(out), "blocksize": 64},
            "processing": {"chunk": 64}, "classes": {"count": 5}, **more}


def one_line(proc: subprocess.CompletedProcess, code: int) -> str:
    """Exit ``code``, no traceback, exactly one stderr line (the error); returns it."""
    assert proc.returncode == code, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr + proc.stdout, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("sceneclass: error: "), lines
    return lines[0]


def nothing_written(out: Path) -> None:
    """No output, legend or side file; a manifest, if any, records the failure (where a failure is
    recorded is issue 13 item 5's business, not these tests')."""
    assert not out.exists(), f"{out} exists after a refused run"
    for suffix in (".legend.json", ".qml", ".sld", ".report.html"):
        assert not out.with_name(out.stem + suffix).exists(), suffix
    manifest = out.with_name(out.stem + ".manifest.json")
    if manifest.exists():
        assert strict_json(manifest.read_text())["status"] != "done"
    if out.parent.exists():
        assert not [p for p in out.parent.rglob("*") if PARTIAL in p.name]


def strict_json(text: str):
    def refuse(name):
        raise ValueError(f"not JSON: {name}")

    return json.loads(text, parse_constant=refuse)


# ------------------------------------------------------------ 8. config is not UTF-8 text
def not_utf8(tmp_path: Path, u16: Path, kind: str, out: Path) -> Path:
    text = yaml.safe_dump(job(u16, out)) + "# café au lait, naïve\n"
    path = tmp_path / f"job-{kind}.yaml"
    if kind == "raster":
        return u16  # a raster passed as the config
    if kind == "binary":
        path.write_bytes(bytes(range(256)) * 8)
    else:
        path.write_bytes(text.encode(kind))
    return path


def test_config_not_utf8_is_one_line(tmp_path, u16):
    out = tmp_path / "out" / "c.tif"
    for cmd, kind in (("run", "latin-1"), ("validate", "raster")):
        path = not_utf8(tmp_path, u16, kind, out)
        line = one_line(sceneclass(cmd, path, cwd=tmp_path), 2)
        assert str(path) in line and "not a UTF-8 text file" in line, line
    nothing_written(out)


@pytest.mark.parametrize("kind", ["latin-1", "utf-16", "cp1252", "raster", "binary"])
def test_config_not_utf8_every_kind(tmp_path, u16, kind):
    path = not_utf8(tmp_path, u16, kind, tmp_path / "o.tif")
    with pytest.raises(ConfigError, match="not a UTF-8 text file") as err:
        load_config(path)
    assert str(err.value).startswith(str(path)) and "\n" not in str(err.value)


def test_config_with_utf8_bom_is_read(tmp_path, u16):
    path = tmp_path / "job.yaml"
    path.write_bytes(b"\xef\xbb\xbf" + yaml.safe_dump(job(u16, tmp_path / "o.tif")).encode())
    proc = sceneclass("validate", path, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["input"] == str(u16)


# ------------------------------------------------- 9. alias bombs and duplicate keys
BILLION_LAUGHS = textwrap.dedent("""\
    a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
    b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
    c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
    d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
    e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
    f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
    g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
    h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
    i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
    """)

MAPPING_BOMB = textwrap.dedent("""\
    x0: &x0 {k0: v, k1: v, k2: v, k3: v, k4: v, k5: v, k6: v, k7: v}
    x1: &x1 {k0: *x0, k1: *x0, k2: *x0, k3: *x0, k4: *x0, k5: *x0, k6: *x0, k7: *x0}
    x2: &x2 {k0: *x1, k1: *x1, k2: *x1, k3: *x1, k4: *x1, k5: *x1, k6: *x1, k7: *x1}
    x3: &x3 {k0: *x2, k1: *x2, k2: *x2, k3: *x2, k4: *x2, k5: *x2, k6: *x2, k7: *x2}
    x4: &x4 {k0: *x3, k1: *x3, k2: *x3, k3: *x3, k4: *x3, k5: *x3, k6: *x3, k7: *x3}
    x5: &x5 {k0: *x4, k1: *x4, k2: *x4, k3: *x4, k4: *x4, k5: *x4, k6: *x4, k7: *x4}
    x6: &x6 {k0: *x5, k1: *x5, k2: *x5, k3: *x5, k4: *x5, k5: *x5, k6: *x5, k7: *x5}
    x7: &x7 {k0: *x6, k1: *x6, k2: *x6, k3: *x6, k4: *x6, k5: *x6, k6: *x6, k7: *x6}
    x8: &x8 {k0: *x7, k1: *x7, k2: *x7, k3: *x7, k4: *x7, k5: *x7, k6: *x7, k7: *x7}
    """)


def _limited(*args, cwd: Path, gib: float = 2.0) -> subprocess.CompletedProcess:
    """The command with its data segment capped: an alias bomb that gets expanded dies."""
    code = ("import resource, sys; lim = int(%r * 2**30); resource.setrlimit(resource.RLIMIT_DATA, (lim, lim)); "
            "from pipeline.cli import main; sys.exit(main(sys.argv[1:]))" % gib)
    return subprocess.run([sys.executable, "-c", code, *map(str, args)], cwd=cwd, env=child_env(),
                          capture_output=True, text=True, timeout=120)


def bomb_config(tmp_path: Path, u16: Path, bomb: str, where: str, out: Path) -> Path:
    base = yaml.safe_dump(job(u16, out))
    if where == "inputs":  # under a key the config knows
        text = bomb + base.replace(f"input: {u16}", "inputs: *" + ("i" if bomb is BILLION_LAUGHS else "x8"))
    else:
        text = base + "lol:\n" + textwrap.indent(bomb, "  ")
    return cfg_file(tmp_path, text)


def test_alias_bomb_refused_before_expansion(tmp_path, u16):
    assert len(BILLION_LAUGHS.encode()) < 500
    out = tmp_path / "out" / "c.tif"
    path = bomb_config(tmp_path, u16, BILLION_LAUGHS, "unknown key", out)
    line = one_line(_limited("run", path, cwd=tmp_path), 2)  # capped memory: an expansion would die
    assert str(path) in line and "aliases" in line, line
    nothing_written(out)


@pytest.mark.parametrize("bomb", [BILLION_LAUGHS, MAPPING_BOMB], ids=["lists", "mappings"])
@pytest.mark.parametrize("where", ["unknown key", "inputs"])
def test_alias_bomb_every_shape(tmp_path, u16, bomb, where):
    import tracemalloc

    path = bomb_config(tmp_path, u16, bomb, where, tmp_path / "o.tif")
    tracemalloc.start()
    try:
        with pytest.raises(ConfigError, match="aliases"):
            load_config(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 20 << 20, peak  # refused on the composed graph, nothing expanded


def test_override_alias_bomb_is_not_expanded():
    """``--set`` values use the same loader: a bomb is not expanded (kept as the text given)."""
    levels = ["&l0 [x,x,x,x,x,x,x,x,x]"] + [f"&l{i} [{','.join([f'*l{i - 1}'] * 9)}]" for i in range(1, 9)]
    bomb = "[" + ", ".join(levels) + "]"
    key, value = parse_override(f"palette.colors={bomb}")
    assert value == bomb
    small = "[" + ", ".join(levels[:2]) + "]"  # 9 + 81 values: an ordinary use of aliases
    assert parse_override(f"palette.colors={small}")[1][1] == [["x"] * 9] * 9


def test_ordinary_aliases_and_merge_keys_still_work(tmp_path, u16):
    other = write_tif(tmp_path / "other.tif", np.ones((70, 80), np.uint16))
    path = cfg_file(tmp_path, textwrap.dedent(f"""\
        inputs:
          - &first {{path: {u16}, band: 1, nodata: 0}}
          - {{<<: *first, path: {other}}}
        palette: {{colors: ['#000000', '#ffffff'], interpolate: true}}
        output: {{path: "{tmp_path / 'out' / '{stem}.tif'}", blocksize: 64}}
        """))
    proc = sceneclass("validate", path, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    given = [{k: v for k, v in i.items() if v is not None} for i in json.loads(proc.stdout)["inputs"]]
    assert given == [{"path": str(u16), "band": 1, "nodata": 0.0}, {"path": str(other), "band": 1, "nodata": 0.0}]


@pytest.mark.parametrize("dup,key,line,first", [
    ("band: 1\nband: 2\n", "band", 4, 3),
    ("classes:\n  count: 4\n  count: 7\n", "count", 5, 4),
])
def test_duplicate_keys_refused(tmp_path, u16, dup, key, line, first):
    out = tmp_path / "out" / "c.tif"
    path = cfg_file(tmp_path, f"input: {u16}\noutput: {{path: {out}}}\n" + dup)
    msg = one_line(sceneclass("run", path, cwd=tmp_path), 2)
    assert f"{path} (line {line}): invalid YAML: duplicate key '{key}' (first given on line {first})" in msg, msg
    nothing_written(out)


# ------------------------------------------------------ 10. union errors name the real key
@pytest.mark.parametrize("patch,want", [
    ({"inputs": [{"path": "a.tif", "bnad": 2}]}, "inputs.0.bnad: unknown key"),
    ({"inputs": ["a.tif", {"path": "b.tif", "band": 0}]}, "inputs.1.band: Input should be greater than or equal to 1"),
    ({"inputs": [{"band": 2}]}, "inputs.0.path: required key is missing"),
    ({"inputs": ["a.tif", 5]}, "inputs.1: should be"),
    ({"inputs": [{"path": "a.tif", "nodata": {"value": 0}}]}, "inputs.0.nodata: should be"),
    ({"palette": {"colors": ["#000000", {"r": 1}]}}, "palette.colors.1: should be"),
    ({"palette": {"colors": [[1, "x", 3]]}}, "palette.colors.0.1: Input should be a valid integer"),
    ({"nodata": {"value": 0}}, "nodata: should be"),
    ({"classes": {"scheme": "quantile", "count": 5, "bnad": 1}}, "classes.bnad: unknown key"),
    ({"classes": {"scheme": "manual"}}, "classes.breaks: required key is missing"),
    ({"dask": {"scheduler": 5}}, "dask.scheduler: should be"),
])
def test_union_errors_name_the_key(tmp_path, u16, patch, want):
    data = job(u16, tmp_path / "out" / "c.tif")
    if "inputs" in patch:
        data.pop("input")
        data["output"]["path"] = str(tmp_path / "out" / "{stem}.tif")
    data.update(patch)
    path = cfg_file(tmp_path, data)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    line = str(err.value)
    assert line.startswith(f"{path}: {want}"), line
    for tag in (".str", "InputSpec", "list[int]", "literal[", "constrained", ".float", ".quantile", ".manual"):
        assert tag not in line, line


def test_union_error_on_the_command_line(tmp_path, u16):
    out = tmp_path / "out" / "c.tif"
    data = job(u16, out)
    data.pop("input")
    data["inputs"] = [{"path": str(u16), "bnad": 2}]
    path = cfg_file(tmp_path, data)
    assert one_line(sceneclass("run", path, cwd=tmp_path), 2) == f"sceneclass: error: {path}: inputs.0.bnad: unknown key"
    nothing_written(out)


# ------------------------------------------------------------------- 11. exit codes
def test_read_only_output_folder_is_an_output_error(tmp_path, u16, mount_tmpfs):
    ro = mount_tmpfs("ro", "ro,size=1m")
    for out in (ro / "c.tif", ro / "sub" / "c.tif"):
        line = one_line(sceneclass("run", cfg_file(tmp_path, job(u16, out)), cwd=tmp_path), 4)
        assert str(out.parent) in line and "Read-only file system" in line, line
        nothing_written(out)


def test_output_folder_behind_a_file_is_an_output_error(tmp_path, u16):
    (tmp_path / "afile").write_text("not a folder")
    out = tmp_path / "afile" / "c.tif"
    line = one_line(sceneclass("run", cfg_file(tmp_path, job(u16, out)), cwd=tmp_path), 4)
    assert str(tmp_path / "afile") in line and "not a folder" in line, line
    assert (tmp_path / "afile").read_text() == "not a folder"


def test_full_disk_writing_zarr_is_an_output_error(tmp_path, mount_tmpfs):
    full = mount_tmpfs("full", "size=64k")
    a = np.random.default_rng(1).integers(0, 60000, (600, 600)).astype(np.uint16)
    src = write_tif(tmp_path / "big.tif", a, block=256)
    out = full / "c.zarr"
    data = job(src, out, classes={"count": 200})
    proc = sceneclass("run", "-q", cfg_file(tmp_path, data), cwd=tmp_path)
    line = one_line(proc, 4)
    assert str(out) in line and "No space left on device" in line, line
    assert not out.exists()
    assert not [p for p in full.rglob("*") if PARTIAL in p.name]


@pytest.mark.parametrize("palette,key", [
    ({"colors": [], "interpolate": True}, "palette.colors"),
    ({"colors": ["#000000", "#12345"]}, "palette.colors.1"),
    ({"colors": ["#000000", [1, 2]]}, "palette.colors.1"),
    ({"name": "no-such-colormap"}, "palette.name"),
])
def test_late_config_errors_are_found_before_any_work(tmp_path, u16, palette, key):
    """Palette problems used to surface after the statistics pass (IndexError, a late ConfigError)."""
    out = tmp_path / "out" / "c.tif"
    path = cfg_file(tmp_path, job(u16, out, palette=palette))
    line = one_line(sceneclass("run", path, cwd=tmp_path), 2)
    assert f": {key}:" in line, line
    nothing_written(out)


def four_float32_values(tmp_path) -> tuple[Path, np.ndarray]:
    v = np.float32(1.0) + np.arange(4, dtype=np.float32) * np.spacing(np.float32(1.0))
    a = np.tile(np.repeat(v, 25), (130, 1)).astype(np.float32)
    return write_tif(tmp_path / "f4.tif", a), a


def test_impossible_classification_has_its_own_exit_code(tmp_path):
    src, a = four_float32_values(tmp_path)
    with pytest.raises(ValueError, match="Too many bins"):  # the fault, as numpy states it
        np.histogram_bin_edges(a, bins=5)
    out = tmp_path / "out" / "c.tif"
    line = one_line(sceneclass("run", "-q", cfg_file(tmp_path, job(src, out)), cwd=tmp_path), 5)
    assert "classes.count: 5 equal-interval classes" in line and "float32" in line, line
    nothing_written(out)
    # what the data allows is classified as numpy.histogram does
    ok = sceneclass("run", "-q", cfg_file(tmp_path, job(src, out, classes={"count": 3})), cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
    assert np.array_equal(read_classes(out), expected_equal_interval(src, 3, None))


def extreme_float64(tmp_path) -> Path:
    a = np.array([[-1e308, 1e308], [1.5e308, -1.7e308]] * 60, dtype=np.float64)
    a = np.tile(a, (1, 40))
    return write_tif(tmp_path / "f8.tif", a)


def fit_in_process(src: Path, classes: dict):
    from pipeline.core import fit
    from pipeline.jobs.config import RunConfig
    from pipeline.scene import open_scene

    cfg = RunConfig.model_validate({"input": str(src), "output": {"path": "x.tif"}, "classes": classes})
    return fit(open_scene(str(src), chunk=64), cfg.classes)


def test_scheme_that_overflows_float64_fails_clearly(tmp_path):
    src = extreme_float64(tmp_path)
    out = tmp_path / "out" / "c.tif"
    line = one_line(sceneclass("run", "-q", cfg_file(tmp_path, job(src, out, classes={"scheme": "std_mean"})),
                               cwd=tmp_path), 5)
    assert "classes.scheme: std_mean cannot classify this data" in line and "float64" in line, line
    nothing_written(out)


@pytest.mark.parametrize("scheme", ["std_mean", "box_plot", "head_tail_breaks", "natural_breaks"])
def test_every_scheme_that_overflows_float64_fails_clearly(tmp_path, scheme):
    from pipeline.errors import ClassificationError

    with pytest.raises(ClassificationError, match=f"classes.scheme: {scheme} cannot classify"):
        fit_in_process(extreme_float64(tmp_path), {"scheme": scheme})


def test_equal_interval_over_the_whole_float64_range_is_right(tmp_path):
    """Edges over a span wider than float64 (numpy's own linspace gives inf/NaN here)."""
    src = extreme_float64(tmp_path)
    out = tmp_path / "out" / "c.tif"
    proc = sceneclass("run", "-q", cfg_file(tmp_path, job(src, out, classes={"count": 4})), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    legend = strict_json(out.with_name("c.legend.json").read_text())
    strict_json(out.with_name("c.manifest.json").read_text())
    edges = np.array(legend["edges"], dtype=np.float64)
    assert np.allclose(edges / 1e307, [-17, -9, -1, 7, 15], rtol=1e-12)
    with rasterio.open(src) as f:
        a = f.read(1)
    want = np.clip(np.searchsorted(edges, a, side="right"), 1, len(edges) - 1)
    assert np.array_equal(read_classes(out), want)


@pytest.mark.parametrize("scheme", [{"scheme": "percentiles", "pct": [25, 50, 75, 100]},
                                    {"scheme": "quantile", "count": 4}])
def test_quantiles_over_the_whole_float64_range_are_right(tmp_path, scheme):
    """Quartiles of {-1.7, -1, 1, 1.5} x 1e308, a quarter of the pixels each (numpy.quantile of the
    values gives -inf for the median; of the values scaled by 1e-300 it is exact, the reference)."""
    src = extreme_float64(tmp_path)
    edges = fit_in_process(src, scheme).edges
    with rasterio.open(src) as f:
        a = f.read(1).ravel()
    with np.errstate(over="ignore", invalid="ignore"):
        assert not np.isfinite(np.quantile(a, 0.5))  # the fault a plain quantile has
    want = np.quantile(a * 1e-300, [0, 0.25, 0.5, 0.75, 1]) * 1e300
    assert np.isfinite(edges).all()
    assert np.allclose(edges, want, rtol=1e-12, atol=0)


def test_a_bug_says_so_and_vv_prints_the_traceback(tmp_path, u16):
    """An unexpected exception (injected into the real process's write pass) is a bug: exit 70."""
    out = tmp_path / "out" / "c.tif"
    path = cfg_file(tmp_path, job(u16, out))
    code = ("import sys; import pipeline.jobs.run as r\n"
            "def broken(*a, **k):\n    raise ZeroDivisionError('injected')\n"
            "r.write = broken\n"
            "from pipeline.cli import main; sys.exit(main(sys.argv[1:]))")
    run = lambda *extra: subprocess.run([sys.executable, "-c", code, "run", *extra, str(path)],  # noqa: E731
                                        cwd=tmp_path, env=child_env(), capture_output=True, text=True, timeout=120)
    line = one_line(run("-q"), 70)
    assert "bug" in line and "-vv" in line and str(u16) in line and str(out) in line, line
    assert "ZeroDivisionError: injected" in line
    nothing_written(out)
    loud = run("-vv")
    assert loud.returncode == 70
    assert "Traceback (most recent call last)" in loud.stderr and "in broken" in loud.stderr


# ------------------------------------------------------- 12. non-finite nodata on integers
@pytest.mark.parametrize("nodata", ["-.inf", ".nan", "70000.5"])
def test_nodata_that_cannot_occur_is_a_warning(tmp_path, u16, nodata):
    out = tmp_path / "out" / "c.tif"
    proc = sceneclass("run", cfg_file(tmp_path, job(u16, out)), "--set", f"nodata={nodata}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    if nodata != ".nan":
        assert "cannot occur in uint16 data" in proc.stderr, proc.stderr
    assert np.array_equal(read_classes(out), expected_equal_interval(u16, 5, None))
    assert strict_json(out.with_name("c.legend.json").read_text())["nodata"] is None


# --------------------------------------------------------- 13. validate checks what run can
VALIDATE_CASES = [
    ({"band": 5}, 2, "band: "),
    ({"output": {"path": "out/classes.png"}}, 2, "output.path: 'classes.png' does not name a cog output"),
    ({"output": {"path": "out/classes.tif", "format": "zarr"}}, 2, "output.path: 'classes.tif' does not name a zarr"),
    ({"output": {"path": "out/classes.zarr", "format": "cog"}}, 2, "output.path: 'classes.zarr' does not name a cog"),
    ({"output": {"path": "https://host/x.tif"}}, 2, "output.path: 'https://host/x.tif': https:// is read only"),
    ({"output": {"path": "foo://bucket/x.tif"}}, 2, "output.path: 'foo://bucket/x.tif': unknown scheme foo://"),
    ({"output": {"path": "/vsis3/bucket/x.tif"}}, 2, "output.path: '/vsis3/bucket/x.tif'"),
    ({"output": {"path": "{stem}.png", "folder": "out"}}, 2, "output.path: 'scene.png' does not name a cog"),
    ({"output": {"path": "x.tif", "folder": "http://host/out"}}, 2, "output.folder: 'http://host/out'"),
    ({"input": "missing.tif"}, 1, "missing.tif: input file not found"),
    ({"palette": {"colors": ["#000000", "#zzzzzz"], "interpolate": True}}, 2, "palette.colors.1: '#zzzzzz'"),
    ({"palette": {"name": "no-such-colormap"}}, 2, "palette.name: unknown colormap"),
    ({"scale": 0}, 2, "scale: "),
    ({"scale": -0.5}, 2, "scale: "),
    ({"outputs": {"quicklook": True}, "output": {"path": "out/scene.quicklook.tif"}}, 0, None),
]


def validate_case(tmp_path: Path, u16: Path, patch: dict) -> Path:
    data = job(u16, tmp_path / "out" / "c.tif")
    for k, v in patch.items():
        data[k] = {**data[k], **v} if isinstance(v, dict) and isinstance(data.get(k), dict) else v
    return cfg_file(tmp_path, data)


@pytest.mark.parametrize("patch,code,want", VALIDATE_CASES)
def test_validate_checks_everything_run_checks(tmp_path, u16, patch, code, want):
    """The checks ``validate`` runs (the plan and every job's preflight), in process."""
    from pipeline.errors import SceneclassError
    from pipeline.jobs.batch import check

    os.chdir(tmp_path)
    path = validate_case(tmp_path, u16, patch)
    if code == 0:
        assert [j.output for j in check(load_config(path))] == [tmp_path / "out" / "scene.quicklook.tif"]
        return
    with pytest.raises(SceneclassError) as err:
        check(load_config(path))
    assert err.value.exit_code == code and want in str(err.value), str(err.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["job.yaml", "scene.tif"]


@pytest.mark.parametrize("case", [0, 1, 4])
def test_validate_and_run_refuse_on_the_command_line(tmp_path, u16, case):
    patch, code, want = VALIDATE_CASES[case]
    path = validate_case(tmp_path, u16, patch)
    for cmd in ("validate", "run"):
        line = one_line(sceneclass(cmd, "-q", path, cwd=tmp_path), code)
        assert want in line, line
        if cmd == "validate" or case:  # (a run opens the input itself, once it holds the folder's lock)
            assert sorted(p.name for p in tmp_path.iterdir()) == ["job.yaml", "scene.tif"], list(tmp_path.iterdir())
    nothing_written(tmp_path / "out" / "c.tif")


def test_validate_finds_a_mask_on_another_grid_and_a_file_in_the_way(tmp_path, u16):
    """What run refuses from headers alone, validate refuses too: a QA mask raster on another
    grid (exit 2, naming both files) and an output folder that a file stands in (exit 4)."""
    qa = write_tif(tmp_path / "qa.tif", np.zeros((10, 10), np.uint16))
    data = job(u16, tmp_path / "out" / "c.tif")
    data["mask"] = {"path": str(qa), "bits": [3]}
    path = cfg_file(tmp_path, data)
    for cmd in ("validate", "run"):
        line = one_line(sceneclass(cmd, "-q", path, cwd=tmp_path), 2)
        assert "mask" in line and "qa.tif" in line and "scene.tif" in line, line
    (tmp_path / "blocked").write_text("a file, not a folder")
    data = job(u16, tmp_path / "blocked" / "sub" / "c.tif")
    path = cfg_file(tmp_path, data)
    for cmd in ("validate", "run"):
        line = one_line(sceneclass(cmd, "-q", path, cwd=tmp_path), 4)
        assert "blocked" in line, line
    assert (tmp_path / "blocked").read_text() == "a file, not a folder"


def test_validate_prints_the_resolved_config(tmp_path, u16):
    proc = sceneclass("validate", validate_case(tmp_path, u16, {}), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["output"]["path"] == str(tmp_path / "out" / "c.tif")


def test_validate_refuses_colliding_outputs(tmp_path, u16):
    (tmp_path / "b").mkdir()
    other = write_tif(tmp_path / "b" / "scene.tif", np.ones((80, 70), np.uint16))
    data = job(u16, tmp_path / "x.tif")
    data.pop("input")
    data["inputs"] = [str(u16), str(other)]
    data["output"] = {"path": str(tmp_path / "out" / "{stem}.tif")}
    line = one_line(sceneclass("validate", cfg_file(tmp_path, data), cwd=tmp_path), 2)
    assert "output.path" in line and "would both write" in line, line
    assert not (tmp_path / "out").exists()


# -------------------------------------------------------------- 14. strict JSON, open edges
@pytest.mark.parametrize("fmt", ["cog", "zarr"])
def test_infinite_manual_breaks_are_strict_json_nulls(tmp_path, u16, fmt):
    out = tmp_path / "out" / ("c.tif" if fmt == "cog" else "c.zarr")
    extras = {"qml": True, "sld": True, "gdal_color_file": True, "report": True} if fmt == "cog" else {}
    data = job(u16, out, classes={"scheme": "manual", "breaks": [float("-inf"), 100, 500, float("inf")]},
               outputs=extras)
    proc = sceneclass("run", cfg_file(tmp_path, data), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    legend = strict_json(out.with_name("c.legend.json").read_text())
    manifest = strict_json(out.with_name("c.manifest.json").read_text())
    assert legend["edges"] == [None, 100.0, 500.0, None] == manifest["edges"]
    assert [(c["lower"], c["upper"]) for c in legend["classes"]] == [(None, 100.0), (100.0, 500.0), (500.0, None)]
    with rasterio.open(u16) as f:
        a = f.read(1)
    want = np.searchsorted([100, 500], a, side="right") + 1  # [-inf,100) -> 1, [100,500) -> 2, [500,inf] -> 3
    assert np.array_equal(read_classes(out), want)
    assert [c["count"] for c in legend["classes"]] == [int((want == k).sum()) for k in (1, 2, 3)]
    if fmt == "zarr":
        meta = [p for p in out.rglob("*") if p.name in ("zarr.json", ".zattrs")]
        assert meta and all(strict_json(p.read_text()) is not None for p in meta)
        return
    labels = [c["label"] for c in legend["classes"]]
    assert labels == ["-inf to 100", "100 to 500", "500 to inf"]
    qml = ET.parse(out.with_name("c.qml")).getroot()
    assert [e.get("label") for e in qml.iter("paletteEntry")] == labels
    sld = ET.parse(out.with_name("c.sld")).getroot()
    assert [e.get("label") for e in sld.iter("{http://www.opengis.net/sld}ColorMapEntry")][1:] == labels
    report = out.with_name("c.report.html").read_text()
    assert "-inf, 100, 500, inf" in report and "NaN" not in report


def test_std_mean_never_writes_nan(tmp_path):
    """float64 values near the type's limits: std_mean used to write NaN edges with exit 0."""
    a = np.full((70, 90), 1.7e308)
    a[:, ::2] = 1.6e308
    src = write_tif(tmp_path / "near.tif", a)  # a narrow span, but sums overflow
    out = tmp_path / "out" / "c.tif"
    line = one_line(sceneclass("run", "-q", cfg_file(tmp_path, job(src, out, classes={"scheme": "std_mean"})),
                               cwd=tmp_path), 5)
    assert "std_mean" in line, line
    nothing_written(out)


# ------------------------------------------------------------ 15. credentials never leave
SECRETS = ("s3cretpassw0rd", "deadbeefsignature", "AKIAEXAMPLEKEY", "sastokensig")


def test_credentials_in_urls_are_never_shown_or_stored(tmp_path, u16):
    root = tmp_path / "srv"
    root.mkdir()
    (root / "scene.tif").write_bytes(u16.read_bytes())
    out = tmp_path / "out" / "c.tif"
    logfile = tmp_path / "run.log"
    everything = {k: True for k in ("quicklook", "histogram_plot", "legend_image", "qml", "sld", "gdal_color_file",
                                    "report")}
    seen = []
    with http_server(root) as (base, stats):
        hostport = base.removeprefix("http://")
        url = (f"http://alice:{SECRETS[0]}@{hostport}/scene.tif?X-Amz-Signature={SECRETS[1]}"
               f"&X-Amz-Credential={SECRETS[2]}%2F20260101&sig={SECRETS[3]}&band=1")
        path = cfg_file(tmp_path, job(url, out, outputs=everything))
        good = sceneclass("run", path, "--log-file", logfile, "-vv", cwd=tmp_path)
        assert good.returncode == 0, good.stderr
        assert stats.snapshot()["requests"] > 0
        seen.append(good)
        seen.append(sceneclass("validate", path, cwd=tmp_path))
        assert seen[-1].returncode == 0, seen[-1].stderr
        missing = cfg_file(tmp_path, job(url.replace("scene.tif", "gone.tif"), tmp_path / "out2" / "d.tif"), "m.yaml")
        bad = sceneclass("run", missing, "--log-file", logfile, cwd=tmp_path)
        assert bad.returncode == 1 and "gone.tif" in bad.stderr, bad.stderr
        seen.append(bad)
        batch = cfg_file(tmp_path, {**job(url, tmp_path / "x.tif"), "input": None, "inputs": [url, url.replace(
            "scene.tif", "gone.tif")], "output": {"path": str(tmp_path / "out3" / "{stem}.tif")}}, "b.yaml")
        seen.append(sceneclass("run", batch, "--log-file", logfile, "--log-format", "json", cwd=tmp_path))
        assert seen[-1].returncode == 1, seen[-1].stderr
    legend = strict_json(out.with_name("c.legend.json").read_text())
    assert legend["input"].startswith(f"http://{hostport}/scene.tif?") and "REDACTED" in legend["input"]
    written = [p for p in tmp_path.rglob("*") if p.is_file() and p.parent != root and p not in (path, missing, batch)]
    assert len(written) >= 12, written
    for secret in SECRETS:
        for p in written:
            assert secret.encode() not in p.read_bytes(), f"{secret} in {p}"
        for proc in seen:
            assert secret not in proc.stdout + proc.stderr, (secret, proc.stdout, proc.stderr)


@pytest.mark.parametrize("url,want", [
    ("http://alice:pw@h:8080/a/s.tif", "http://h:8080/a/s.tif"),
    ("https://h/s.tif?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AK%2F2026&X-Amz-Signature=ab12"
     "&X-Amz-Security-Token=tok", "https://h/s.tif?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=REDACTED"
     "&X-Amz-Signature=REDACTED&X-Amz-Security-Token=REDACTED"),
    ("https://acct.blob.core.windows.net/c/s.tif?sv=2022-11-02&se=2026-12-01&sp=r&sig=abc%3D",
     "https://acct.blob.core.windows.net/c/s.tif?sv=REDACTED&se=REDACTED&sp=REDACTED&sig=REDACTED"),
    ("/vsicurl/https://u:p@h/s.tif?token=t&band=2", "/vsicurl/https://h/s.tif?token=REDACTED&band=2"),
    ("https://h/s.tif?band=2", "https://h/s.tif?band=2"),
    ("/data/in/s.tif", "/data/in/s.tif"),
])
def test_redact(url, want):
    from pipeline.urls import redact, redact_text

    assert redact(url) == want
    assert redact_text(f"'{url}': not recognized as a raster.") == f"'{want}': not recognized as a raster."
