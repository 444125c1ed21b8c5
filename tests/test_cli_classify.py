"""The one-line ``sceneclass classify`` form equals ``sceneclass run`` with the equivalent YAML
(outputs, legend, manifest, exit codes), and the command's help is written for users."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import yaml

from _procs import read_classes, read_legend, sceneclass, sceneclass_all
from conftest import B2, data_path

#: manifest fields that name the run, not its result
RUN_FIELDS = {"output", "started", "finished", "seconds", "duration_s", "config", "config_hash", "time"}


def _manifest(output: Path) -> dict:
    data = json.loads(output.with_name(output.stem + ".manifest.json").read_text())
    fp = data.pop("output_fingerprint")
    return {**{k: v for k, v in data.items() if k not in RUN_FIELDS and "time" not in k}, "size": fp["size"]}


def test_classify_equals_run_with_the_same_yaml(tmp_path):
    src = str(data_path(B2))
    one, two = tmp_path / "one", tmp_path / "two"
    cfg = {"input": src, "band": 1, "nodata": 0, "classes": {"scheme": "quantile", "count": 7},
           "palette": {"name": "magma"}, "output": {"path": str(two / "b2.tif"), "blocksize": 128},
           "processing": {"chunk": 200}}
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(cfg))
    res, ref = sceneclass_all(  # two folders: the runs are independent
        ("classify", src, one / "b2.tif", "--scheme", "quantile", "-k", "7", "--palette", "magma",
         "--nodata", "0", "--band", "1", "--set", "output.blocksize=128", "--set", "processing.chunk=200"),
        ("run", tmp_path / "job.yaml"))
    assert res.returncode == 0, res.stderr
    assert ref.returncode == 0, ref.stderr
    assert res.stdout.replace(str(one), "X") == ref.stdout.replace(str(two), "X")  # "done  X/b2.tif"
    assert np.array_equal(read_classes(one / "b2.tif"), read_classes(two / "b2.tif"))
    assert read_legend(one / "b2.tif") == read_legend(two / "b2.tif")
    assert sorted(p.name for p in one.iterdir()) == sorted(p.name for p in two.iterdir())
    a, b = _manifest(one / "b2.tif"), _manifest(two / "b2.tif")
    assert a.keys() == b.keys() and a == b
    # the same classes as numpy's quantiles of the valid pixels
    import rasterio

    with rasterio.open(src) as f:
        v = f.read(1)
    assert read_legend(one / "b2.tif")["edges"] == np.quantile(v[v != 0], np.linspace(0, 1, 8)).tolist()
    # up to date the second time, as run says
    again = sceneclass("classify", src, one / "b2.tif", "--scheme", "quantile", "-k", "7", "--palette", "magma",
                       "--nodata", "0", "--set", "output.blocksize=128", "--set", "processing.chunk=200")
    assert again.returncode == 0 and again.stdout.startswith("skipped"), again.stdout


def test_classify_errors_have_run_exit_codes(tmp_path):
    src = str(data_path(B2))
    cases = [  # (classify arguments, the equivalent config, exit code, message part)
        (["--scheme", "quantile", "-k", "300"], {"classes": {"scheme": "quantile", "count": 300}}, 2,
         "less than or equal to 254"),
        (["--band", "3"], {"band": 3}, 2, "has 1 band(s), band 3 was asked for"),
        (["--scheme", "manual"], {"classes": {"scheme": "manual"}}, 2, "breaks: required key is missing"),
    ]
    calls, outs = [], [tmp_path / f"out{i}" / "o.tif" for i in range(2 * len(cases) + 2)]  # at once: own folders
    for i, (args, extra, _, _) in enumerate(cases):
        (tmp_path / f"job{i}.yaml").write_text(yaml.safe_dump({"input": src, "output": {"path": str(outs[2 * i + 1])},
                                                                **extra}))
        calls += [("classify", src, outs[2 * i], *args), ("run", tmp_path / f"job{i}.yaml")]
    calls += [("classify", tmp_path / "missing.tif", outs[-2]),
              ("classify", src, outs[-1], "--scheme", "manual", "--breaks", "1,x")]
    done = sceneclass_all(*calls)
    for i, (args, extra, code, part) in enumerate(cases):
        res, ref = done[2 * i], done[2 * i + 1]
        assert res.returncode == ref.returncode == code, (args, res.stderr, ref.stderr)
        assert part in res.stderr and part in ref.stderr, res.stderr
        assert res.stderr.count("error:") == 1 and "Traceback" not in res.stderr, res.stderr
    res = done[-2]
    assert res.returncode == 1 and "missing.tif: input file not found" in res.stderr
    res = done[-1]
    assert res.returncode == 2 and "--breaks" in res.stderr
    assert not [o for o in outs if o.exists()]


def test_help_is_written_for_users():
    res = sceneclass("--help")
    assert res.returncode == 0
    out = res.stdout
    assert "The ``sceneclass`` command" not in out and "Classify a satellite raster band" in out
    for code in ("0 ", "1 ", "2 ", "3 ", "4 ", "5 ", "70 ", "130 "):
        assert f"\n  {code}" in out, code
    assert "143" in out and "examples:" in out and "sceneclass classify" in out
    subs = {command: r.stdout for command, r in zip(
        ("run", "classify", "validate", "demo"),
        sceneclass_all(*((command, "--help") for command in ("run", "classify", "validate", "demo"))))}
    for sub in subs.values():
        assert "exit codes:" in sub and "-v, --verbose" in sub
    validate = subs["validate"]
    assert "YAML config file to check" in validate and "override a config value" in validate
    assert "random seed" in subs["demo"]


def test_global_options_before_the_command(tmp_path):
    src = str(data_path(B2))
    cfg = tmp_path / "job.yaml"
    cfg.write_text(yaml.safe_dump({"input": src, "nodata": 0, "output": {"path": str(tmp_path / "o.tif")}}))
    verbose = sceneclass("-v", "--log-format", "json", "validate", cfg)
    assert verbose.returncode == 0 and json.loads(verbose.stdout)["nodata"] == 0
    quiet = sceneclass("-q", "run", cfg)
    assert quiet.returncode == 0 and " INFO " not in quiet.stderr
    loud = sceneclass("-v", "run", cfg, "--force")
    assert loud.returncode == 0 and " INFO " in loud.stderr
    log = tmp_path / "log.txt"
    assert sceneclass("--log-file", log, "run", cfg, "--force").returncode == 0 and "wrote" in log.read_text()


def test_progress_bars_name_the_passes(tmp_path):
    res = sceneclass("classify", data_path(B2), tmp_path / "o.tif", "--progress", "--set", "processing.chunk=512")
    assert res.returncode == 0, res.stderr
    finished = [line.split(":")[0] for line in res.stderr.replace("\r", "\n").splitlines() if "100%|" in line]
    assert finished == ["statistics", "classify+write"], res.stderr
