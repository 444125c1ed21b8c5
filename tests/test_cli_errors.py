"""The real command line, as a subprocess: bad inputs and bad configs fail with one clear line,
leave nothing behind; edge cases that are not errors succeed."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
import yaml

from conftest import ALL_NODATA, CORRUPT, RGBN, data_path

PARTIAL = "sceneclass-partial"
LOG_LINE = re.compile(r"^\d\d:\d\d:\d\d (INFO|DEBUG) ")  # ordinary progress log records


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipeline", *args], capture_output=True, text=True,
                          timeout=180, cwd=cwd)


def cli_parallel(*arg_lists: list[str], cwd: Path) -> list[subprocess.CompletedProcess]:
    """Several independent invocations at once (each must use its own output folder)."""
    procs = [subprocess.Popen([sys.executable, "-m", "pipeline", *args], cwd=cwd, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for args in arg_lists]
    done = []
    for args, p in zip(arg_lists, procs):
        out, err = p.communicate(timeout=180)
        done.append(subprocess.CompletedProcess(p.args, p.returncode, out, err))
    return done


def write_cfg(folder: Path, data: dict | str, name: str = "job.yaml") -> Path:
    path = folder / name
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data), encoding="utf-8")
    return path


def error_line(proc: subprocess.CompletedProcess) -> str:
    """The one error line; every other stderr line must be an ordinary INFO log record."""
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("sceneclass: error")]
    assert len(errors) == 1, proc.stderr
    others = [ln for ln in lines if ln not in errors]
    assert all(LOG_LINE.match(ln) for ln in others), f"unexpected stderr lines: {others}"
    return errors[0]


def assert_nothing_written(out: Path) -> None:
    assert not out.exists(), f"{out} exists after a failed run"
    assert not out.with_name(out.stem + ".legend.json").exists()
    left = [p.name for p in out.parent.rglob("*") if PARTIAL in p.name]
    assert not left, f"temporaries left: {left}"


def good_cfg(out: Path, **extra) -> dict:
    return {"input": str(data_path(RGBN)), "band": 2, "output": {"path": str(out)}, **extra}


# ----------------------------------------------------------------------------- bad inputs
@pytest.mark.parametrize("case", ["corrupt", "missing"])
def test_bad_input_fails_with_one_line(tmp_path, case):
    src = str(data_path(CORRUPT)) if case == "corrupt" else str(tmp_path / "no_such_scene.tif")
    name = Path(src).name
    out = tmp_path / "out" / "classes.tif"
    out_q = tmp_path / "out_q" / "classes.tif"
    cfg = write_cfg(tmp_path, {"input": src, "output": {"path": str(out)}})
    cfg_q = write_cfg(tmp_path, {"input": src, "output": {"path": str(out_q)}}, name="job_q.yaml")

    # as is, and with -q (no progress logs: then stderr is exactly one line)
    proc, quiet = cli_parallel(["run", str(cfg)], ["run", "-q", str(cfg_q)], cwd=tmp_path)
    assert proc.returncode != 0
    line = error_line(proc)
    assert name in line
    assert_nothing_written(out)

    assert quiet.returncode == proc.returncode
    lines = quiet.stderr.strip().splitlines()
    assert len(lines) == 1 and name in lines[0], quiet.stderr
    assert "Traceback" not in quiet.stderr
    assert_nothing_written(out_q)


def test_all_nodata_succeeds_with_warning(tmp_path):
    out = tmp_path / "allnodata.tif"
    cfg = write_cfg(tmp_path, {"input": str(data_path(ALL_NODATA)), "output": {"path": str(out)}})
    proc = cli("run", str(cfg), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    warnings = [ln for ln in proc.stderr.splitlines() if "WARNING" in ln]
    assert any("no valid pixels" in ln for ln in warnings), proc.stderr
    with rasterio.open(out) as src, rasterio.open(data_path(ALL_NODATA)) as inp:
        assert src.shape == inp.shape
        assert not src.read(1).any()
        assert src.nodata == 0
    legend = json.loads(out.with_name("allnodata.legend.json").read_text())
    assert legend["valid_pixels"] == 0
    assert legend["nodata_pixels"] == out_pixels(out)
    assert not [p for p in tmp_path.rglob("*") if PARTIAL in p.name]


def out_pixels(path: Path) -> int:
    with rasterio.open(path) as src:
        return src.width * src.height


# ---------------------------------------------------------------------------- bad configs
CONFIG_ERRORS = {
    "unknown-key": ({"classes": {"scheme": "equal_interval", "count": 5, "colour": "red"}}, ["classes", "colour"]),
    "wrong-type": ({"classes": {"count": "many"}}, ["count"]),
    "wrong-type-with-scheme": ({"classes": {"scheme": "quantile", "count": "many"}}, ["classes", "count"]),
}


@pytest.mark.parametrize("case", list(CONFIG_ERRORS))
def test_bad_config_refused(tmp_path, case):
    extra, words = CONFIG_ERRORS[case]
    out = tmp_path / "classes.tif"
    cfg = write_cfg(tmp_path, good_cfg(out, **extra))
    proc = cli("run", str(cfg), cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    line = error_line(proc)
    assert len(proc.stderr.strip().splitlines()) == 1  # refused before any work or log output
    for w in words:
        assert w in line, f"{w!r} not named in: {line}"
    assert_nothing_written(out)


def test_python_yaml_tag_refused(tmp_path):
    out = tmp_path / "classes.tif"
    marker = tmp_path / "pwned"
    text = (f"input: {data_path(RGBN)}\n"
            f"classes: !!python/object/apply:os.system [\"echo pwned > {marker}\"]\n"
            f"output: {{path: {out}}}\n")
    cfg = write_cfg(tmp_path, text)
    proc = cli("run", str(cfg), cwd=tmp_path)
    assert proc.returncode == 2
    line = error_line(proc)
    assert len(proc.stderr.strip().splitlines()) == 1
    assert re.search(r"invalid|unsafe|not allowed", line, re.I) and "YAML" in line.upper(), line
    assert "pwned" not in proc.stdout
    assert not marker.exists(), "the YAML tag ran a command"
    assert_nothing_written(out)


def test_short_palette_refused_unless_interpolated(tmp_path):
    colours = ["#000000", "#111111", "#222222", "#333333", "#444444", "#555555", "#666666", "#777777"]
    bad_out = tmp_path / "short" / "classes.tif"
    out = tmp_path / "interpolated" / "classes.tif"
    bad = write_cfg(tmp_path, good_cfg(bad_out, classes={"scheme": "equal_interval", "count": 20},
                                       palette={"colors": colours}), name="short.yaml")
    cfg = write_cfg(tmp_path, good_cfg(out, classes={"scheme": "equal_interval", "count": 20},
                                       palette={"colors": colours, "interpolate": True}))
    refused, proc = cli_parallel(["run", str(bad)], ["run", str(cfg)], cwd=tmp_path)
    assert refused.returncode != 0
    line = error_line(refused)
    assert "palette.colors" in line
    assert_nothing_written(bad_out)

    assert proc.returncode == 0, proc.stderr
    legend = json.loads(out.with_name("classes.legend.json").read_text())
    assert legend["classes_requested"] == 20
    got = [c["color"] for c in legend["classes"]]
    assert got[0] == "#000000" and got[-1] == "#777777"
    assert len(set(got)) == 20  # interpolated, not repeated
    with rasterio.open(out) as src:
        cmap = src.colormap(1)
    assert ["#%02x%02x%02x" % cmap[k][:3] for k in range(1, 21)] == got


# ------------------------------------------------------------------------ overrides, validate
@pytest.mark.parametrize("with_classes", [True, False], ids=["classes-given", "classes-default"])
def test_set_override(tmp_path, with_classes):
    out = tmp_path / "classes.tif"
    extra = {"classes": {"scheme": "equal_interval", "count": 20}} if with_classes else {}
    cfg = write_cfg(tmp_path, good_cfg(out, **extra))
    proc = cli("run", str(cfg), "--set", "classes.count=5", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    legend = json.loads(out.with_name("classes.legend.json").read_text())
    assert legend["classes_requested"] == 5
    with rasterio.open(data_path(RGBN)) as src:
        band = src.read(2)
        nodata = src.nodata
    valid = band[band != nodata]
    counts, edges = np.histogram(valid, bins=5)
    assert legend["edges"] == edges.tolist()
    assert [c["count"] for c in legend["classes"]] == counts.tolist()
    with rasterio.open(out) as src:
        assert src.read(1).max() == 5


def test_validate_good_config(tmp_path):
    out = tmp_path / "classes.tif"
    cfg = write_cfg(tmp_path, good_cfg(out, classes={"scheme": "quantile", "count": 7}))
    proc = cli("validate", str(cfg), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    dumped = json.loads(proc.stdout)
    assert dumped["classes"] == {"scheme": "quantile", "count": 7, "labels": None,
                                 "fit": "each", "edges_from": None, "outside": "nodata"}
    assert dumped["band"] == 2
    assert not out.exists()  # validate reads no pixels and writes nothing

    bad = write_cfg(tmp_path, good_cfg(out, classes={"scheme": "quantile", "count": 0}), name="bad.yaml")
    proc = cli("validate", str(bad), cwd=tmp_path)
    assert proc.returncode == 2
    assert "classes" in error_line(proc) and "count" in error_line(proc)
