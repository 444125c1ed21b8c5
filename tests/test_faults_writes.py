"""Write faults end in one clear line and intact files: a full disk at every stage of a run
(real tmpfs), refused runs, an interrupted Zarr swap, and SIGINT/SIGTERM at several moments
of a real ``python -m pipeline run`` process.

The disk is filled for real: a tmpfs of 16 MiB is mounted (root only; skipped elsewhere) and
filled with ``fallocate``, either before the run or at a moment of it (when the run logs that
it starts assembling the COG, or that it wrote the raster or a side file).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
import rasterio
import yaml

from pipeline import cli
from pipeline.jobs.batch import run_batch
from pipeline.jobs.config import load_config
from pipeline.jobs.atomic import PARTIAL_TAG, commit, partial_path
from pipeline.testing.synth import make_scene

from _procs import partials, read_classes, sceneclass, start_sceneclass, wait_for
from conftest import data_path

B2 = "LC08_L1TP_224078_20200518_20200518_01_RT_B2.TIF"  # 2041 x 1860 uint16, 0 is fill
RGBN = "rgbn_suba.tif"  # 4 bands


# ---------------------------------------------------------------------- helpers
def sha(path: Path) -> str:
    if path.is_dir():
        h = hashlib.sha256()
        for p in sorted(path.rglob("*")):
            if p.is_file():
                h.update(str(p.relative_to(path)).encode() + b"\0" + p.read_bytes())
        return h.hexdigest()
    return hashlib.sha256(path.read_bytes()).hexdigest()


def shape_of(path: Path) -> tuple[int, int]:
    with rasterio.open(path) as src:
        return src.height, src.width


def checksums(folder: Path) -> dict[str, str]:
    """Every visible file or store in ``folder`` (not the lock) -> its checksum."""
    return {p.name: sha(p) for p in sorted(folder.iterdir()) if not p.name.startswith(".")}


def write_config(path: Path, **cfg) -> Path:
    data = {"nodata": 0, "classes": {"scheme": "equal_interval", "count": 10}, **cfg}
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def run_cli(capfd, *args) -> tuple[int, list[str], str]:
    """``sceneclass ARGS`` in this process: (exit code, stderr lines, stdout)."""
    capfd.readouterr()
    root, warn = logging.getLogger("sceneclass"), logging.getLogger("py.warnings")
    saved = root.handlers[:], root.level, root.propagate, warn.handlers[:]
    try:
        code = cli.main([str(a) for a in args])
    finally:  # the command's handlers write to this test's captured stderr: do not keep them
        root.handlers[:], root.level, root.propagate, warn.handlers[:] = saved
        logging.captureWarnings(False)
    out, err = capfd.readouterr()
    return code, err.splitlines(), out


def free_bytes(folder: Path) -> int:
    st = os.statvfs(folder)
    return st.f_bavail * st.f_frsize


def fill(mount: Path, leave: int) -> None:
    """Fill the tmpfs at ``mount`` until ``leave`` bytes are free (a real file of zeros)."""
    size = free_bytes(mount) - leave
    if size > 0:
        with open(mount / f"fill-{uuid.uuid4().hex[:6]}", "wb") as f:
            os.posix_fallocate(f.fileno(), 0, size)


def unfill(mount: Path) -> None:
    for p in mount.glob("fill-*"):
        p.unlink()


@pytest.fixture
def tmpfs(tmp_path):
    """A real 16 MiB tmpfs, unmounted afterwards."""
    mount = tmp_path / "tmpfs"
    mount.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mount)], capture_output=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


class FillWhen(logging.Handler):
    """Fills the tmpfs when a sceneclass logger writes a record containing ``text``: the disk
    becomes full at that moment of the run (between two of its writes)."""

    def __init__(self, logger: str, text: str, mount: Path, leave: int) -> None:
        super().__init__(logging.INFO)
        self.text, self.mount, self.leave, self.fired = text, mount, leave, False
        self.logger = logging.getLogger(logger)

    def emit(self, record):
        if not self.fired and self.text in record.getMessage():
            self.fired = True
            fill(self.mount, self.leave)

    def __enter__(self):
        self._saved = self.logger.level, self.logger.propagate
        self.logger.setLevel(logging.INFO)
        self.logger.propagate = False  # -q: the records go nowhere but here
        self.logger.addHandler(self)
        return self

    def __exit__(self, *exc):
        self.logger.removeHandler(self)
        self.logger.setLevel(self._saved[0])
        self.logger.propagate = self._saved[1]


# ------------------------------------------------------------- 1. disk full
# (stage, config overrides, how the disk is filled: leave N bytes before the run, or when a
#  logger says TEXT, leave N bytes)
COG_STAGES = [
    ("tiles", {}, (16 << 10, None, None)),
    ("file", {}, (20 << 10, "sceneclass.writers.cogstream", "writing the COG")),
    ("file-full", {}, (0, "sceneclass.writers.cogstream", "writing the COG")),
    ("legend", {}, (0, "sceneclass.writers.cog", "wrote ")),
    ("manifest", {"outputs": {"qml": True}}, (0, "sceneclass.products.extras", "wrote ")),
]
ZARR_STAGES = [
    ("store", {}, (40 << 10, None, None)),
    ("legend", {}, (0, "sceneclass.writers.zarr", "wrote ")),
]


def _disk_full_case(tmpfs, tmp_path, capfd, fmt, stage, extra, how):
    ext = "tif" if fmt == "cog" else "zarr"
    out_dir = tmpfs / "out"
    final = out_dir / f"classes.{ext}"
    cfg = write_config(tmp_path / "job.yaml", input=str(data_path(B2)), output={"path": str(final)},
                       processing={"chunk": 384}, **extra)
    code, err, _ = run_cli(capfd, "run", cfg, "-q")
    assert code == 0, err
    before = checksums(out_dir)
    assert {f"classes.{ext}", "classes.legend.json", "classes.manifest.json"} <= before.keys()
    inputs_before = sha(data_path(B2))

    leave, logger, text = how
    if logger is None:
        fill(tmpfs, leave)
        code, err, out = run_cli(capfd, "run", cfg, "--force", "-q")
    else:
        with FillWhen(logger, text, tmpfs, leave) as trigger:
            code, err, out = run_cli(capfd, "run", cfg, "--force", "-q")
        assert trigger.fired, f"the run never logged {text!r}"
    unfill(tmpfs)

    assert code == 4, (stage, err, out)
    assert len(err) == 1, err  # one line, nothing printed by GDAL or libtiff, no traceback
    assert err[0].startswith(f"sceneclass: error: {final}: "), err
    assert "No space left on device" in err[0], err
    assert "nothing was replaced" in err[0]
    after = checksums(out_dir)
    after.pop("classes.failed.json", None)  # the record of the failure, when the disk let it be written
    assert after == before, f"{stage}: files changed on a failed run"
    assert not partials(out_dir), partials(out_dir)
    assert sha(data_path(B2)) == inputs_before
    # the previous output still reads and is still up to date for its config
    assert read_classes(final).shape == shape_of(data_path(B2))
    code, err, out = run_cli(capfd, "run", cfg, "-q")
    assert code == 0 and out.startswith("skipped"), (err, out)
    return final, cfg


@pytest.mark.parametrize("stage,extra,how", COG_STAGES, ids=[s[0] for s in COG_STAGES])
def test_disk_full_cog_keeps_previous_output(stage, extra, how, tmpfs, tmp_path, capfd):
    _disk_full_case(tmpfs, tmp_path, capfd, "cog", stage, extra, how)


@pytest.mark.parametrize("stage,extra,how", ZARR_STAGES, ids=[s[0] for s in ZARR_STAGES])
def test_disk_full_zarr_keeps_previous_output(stage, extra, how, tmpfs, tmp_path, capfd):
    _disk_full_case(tmpfs, tmp_path, capfd, "zarr", stage, extra, how)


def test_disk_full_cli_process_and_recovery(tmpfs, tmp_path):
    """The issue's reproduction as a user runs it: a real process, a tmpfs filled before a
    --force rerun; then space comes back, the next run succeeds and drops the failure record."""
    final = tmpfs / "out" / "classes.tif"
    cfg = write_config(tmp_path / "job.yaml", input=str(data_path(B2)), output={"path": str(final)})
    assert sceneclass("run", cfg, "-q").returncode == 0
    before = checksums(final.parent)
    fill(tmpfs, 16 << 10)  # less than the compressed tiles need
    proc = sceneclass("run", cfg, "--force", "-q")
    assert proc.returncode == 4, proc.stderr
    assert proc.stderr.splitlines() == [proc.stderr.strip()] and "No space left on device" in proc.stderr
    record = json.loads((final.parent / "classes.failed.json").read_text())
    assert record["exit_code"] == 4 and "No space left on device" in record["error"]
    after = checksums(final.parent)
    after.pop("classes.failed.json")
    assert after == before and not partials(final.parent)
    unfill(tmpfs)
    proc = sceneclass("run", cfg, "--force", "-q")
    assert proc.returncode == 0, proc.stderr
    assert not (final.parent / "classes.failed.json").exists()
    assert json.loads((final.parent / "classes.manifest.json").read_text())["status"] == "done"


def test_truncated_cog_is_never_committed(tmp_path):
    """The check a COG passes before it replaces anything: a copy cut short fails it."""
    import rasterio.shutil

    from pipeline.errors import OutputError
    from pipeline.jobs.config import Output
    from pipeline.writers.cog import gdal_writing, verify_written

    src = data_path(RGBN)
    good = tmp_path / "good.tif"
    rasterio.shutil.copy(src, good, driver="COG", COMPRESS="DEFLATE", BLOCKSIZE=64)
    with rasterio.open(good) as cog:
        shape, bands = cog.shape, cog.count
    out = Output(path=str(good), blocksize=64, compression="deflate")
    verify_written(good, shape, bands, out)
    data = good.read_bytes()
    for cut in (len(data) // 2, len(data) - 100):
        bad = tmp_path / f"cut{cut}.tif"
        bad.write_bytes(data[:cut])
        with pytest.raises(OutputError, match=r"cut\d+\.tif: checking the written COG failed"):
            with gdal_writing(bad, "checking the written COG"):
                verify_written(bad, shape, bands, out)


# ------------------------------------------------------- 5. refused runs
def test_refused_run_changes_nothing(tmp_path, capfd):
    out_dir = tmp_path / "out"
    final = out_dir / "classes.tif"
    cfg = write_config(tmp_path / "job.yaml", input=str(data_path(RGBN)), output={"path": str(final)})
    code, err, _ = run_cli(capfd, "run", cfg, "-q")
    assert code == 0, err
    before = checksums(out_dir)
    for overrides, key in ((["--set", "band=5"], "band: "), (["--force", "--set", "output.overwrite=false"], "output.path: ")):
        code, err, _ = run_cli(capfd, "run", cfg, "-q", *overrides)
        assert code == 2, err
        assert len(err) == 1 and err[0].startswith(f"sceneclass: error: {key}"), err
        assert checksums(out_dir) == before, overrides  # no manifest rewritten, no failure record
        assert not partials(out_dir)
        # the original config is still up to date
        code, err, out = run_cli(capfd, "run", cfg, "-q")
        assert code == 0 and out.startswith("skipped"), (err, out)
    assert checksums(out_dir) == before


def damaged_tiles(src: Path, dst: Path) -> Path:
    """A copy of ``src`` as a tiled DEFLATE GeoTIFF whose header is sound but whose second tile
    holds garbage: it opens, and reading its pixels fails part-way through a run."""
    with rasterio.open(src) as s:
        profile = s.profile | {"driver": "GTiff", "tiled": True, "blockxsize": 64, "blockysize": 64,
                               "compress": "deflate", "count": 1}
        band = s.read(1)
    with rasterio.open(dst, "w", **profile) as d:
        d.write(band, 1)
    with rasterio.open(dst) as d:
        offset = int(d.get_tag_item("BLOCK_OFFSET_1_0", "TIFF", bidx=1))
        size = int(d.get_tag_item("BLOCK_SIZE_1_0", "TIFF", bidx=1))
    with open(dst, "r+b") as f:
        f.seek(offset)
        f.write(b"\xff" * size)
    return dst


def test_failed_run_keeps_the_manifest_and_records_elsewhere(tmp_path, capfd):
    """A run that fails after it started (an input whose tiles are damaged, at the same output)
    keeps the good output's manifest; the failure goes to NAME.failed.json, which the next good
    run removes."""
    out_dir = tmp_path / "out"
    final = out_dir / "classes.tif"
    cfg = write_config(tmp_path / "job.yaml", input=str(data_path(RGBN)), output={"path": str(final)})
    assert run_cli(capfd, "run", cfg, "-q")[0] == 0
    before = checksums(out_dir)
    bad = damaged_tiles(data_path(RGBN), tmp_path / "damaged.tif")
    code, err, _ = run_cli(capfd, "run", cfg, "-q", "--set", f"input={bad}")
    assert code == 1 and len(err) == 1 and "damaged.tif" in err[0], err
    after = checksums(out_dir)
    record = json.loads((out_dir / "classes.failed.json").read_text())
    assert record["status"] == "failed" and "damaged.tif" in record["error"]
    after.pop("classes.failed.json")
    assert after == before and not partials(out_dir)
    code, err, out = run_cli(capfd, "run", cfg, "-q")
    assert code == 0 and out.startswith("skipped"), (err, out)
    code, err, _ = run_cli(capfd, "run", cfg, "-q", "--force")
    assert code == 0 and not (out_dir / "classes.failed.json").exists()


# ------------------------------------------------------ 6. Zarr replacement
def test_zarr_commit_never_leaves_the_final_path_empty(tmp_path):
    """Replace a store 200 times while another thread watches its metadata file: it is
    always there (the swap is one atomic rename-exchange)."""
    final = tmp_path / "s.zarr"
    final.mkdir()
    (final / "zarr.json").write_text("0")
    stop, missing = threading.Event(), []

    def watch():
        while not stop.is_set():
            if not (final / "zarr.json").exists():
                missing.append(time.monotonic())

    t = threading.Thread(target=watch)
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)  # hand the GIL over often: quicker, and the watcher looks between renames
    t.start()
    try:
        for i in range(200):
            new = partial_path(final, make=None)
            new.mkdir()
            (new / "zarr.json").write_text(str(i + 1))
            commit(new, final)
    finally:
        stop.set()
        t.join()
        sys.setswitchinterval(interval)
    assert not missing, f"the store was missing {len(missing)} times"
    assert (final / "zarr.json").read_text() == "200"
    assert not partials(tmp_path)


def test_zarr_store_moved_aside_by_a_killed_swap_is_restored(tmp_path, capfd):
    """What a kill between the two renames of a swap leaves (where the rename-exchange is not
    available): the old store renamed aside, the new one complete under its temporary name,
    no store at the final path. The next run puts the old store back before judging, so it
    is up to date again and nothing is lost."""
    out_dir = tmp_path / "out"
    final = out_dir / "classes.zarr"
    cfg = write_config(tmp_path / "job.yaml", input=str(data_path(RGBN)), output={"path": str(final)})
    assert run_cli(capfd, "run", cfg, "-q")[0] == 0
    before = checksums(out_dir)
    new = partial_path(final, make=None)
    shutil.copytree(final, new)
    os.replace(final, partial_path(final, ".old", make=None))  # the first rename of the swap, then the kill
    assert not final.exists()

    code, err, out = run_cli(capfd, "run", cfg, "-v")
    assert code == 0, err
    assert out.startswith("skipped"), out
    assert any("restored" in ln and "classes.zarr" in ln for ln in err), err
    assert checksums(out_dir) == before
    assert not partials(out_dir)
    assert read_classes(final).shape == shape_of(data_path(RGBN))


# ------------------------------------------------------------ 7. signals
@pytest.fixture(scope="module")
def big_scene(tmp_path_factory) -> Path:
    return make_scene(tmp_path_factory.mktemp("sig") / "big.tif", size="2000x2000", seed=7)


def _moment(out_dir: Path, name: str):
    """A predicate: the run is at ``name`` (statistics / write / assembly / zarr)."""
    def at():
        ps = [p.name for p in partials(out_dir) if p.parent == out_dir]
        if name == "statistics":
            return any(p.endswith(".decoded") for p in ps) and not any(p.endswith(".tiles") for p in ps)
        if name == "write":  # the tasks spool their compressed tiles; the file is not begun
            return any(p.endswith(".tiles") for p in ps) and not any(p.endswith("partial.tif") for p in ps)
        if name == "assembly":
            return any(p.endswith("partial.tif") for p in ps)
        if name == "zarr":
            return any(p.endswith("sceneclass-partial") for p in ps) and any(
                (out_dir / p / "classes" / "c").exists() for p in ps if p.endswith("sceneclass-partial"))
        raise ValueError(name)
    return at


MOMENTS = ("statistics", "write", "assembly", "zarr")


@pytest.mark.parametrize("moment", MOMENTS)
def test_signal_cleans_up_and_exits(moment, big_scene, tmp_path):
    """SIGTERM, SIGINT, then SIGTERM followed at once by SIGINT (a second signal during the
    cleanup), each at the first sight of ``moment`` in a real run that replaces a previous
    output: exit 143/130 (of the signal handled first), one line, no temporary, previous
    files intact."""
    ext = "zarr" if moment == "zarr" else "tif"
    out_dir = tmp_path / "out"
    final = out_dir / f"classes.{ext}"
    output = {"path": str(final), "compression": "deflate", "level": 9} if ext == "tif" else {"path": str(final)}
    cfg = write_config(tmp_path / "job.yaml", input=str(big_scene), output=output,
                       processing={"chunk": 600, "keep_decoded_in": "disk", "reuse_decoded": "always"})
    assert run_batch(load_config(cfg)).exit_code == 0  # the previous output, made in this process
    before = checksums(out_dir)
    input_sum = sha(big_scene)
    hits = []
    for sigs in ((signal.SIGTERM,), (signal.SIGINT,), (signal.SIGTERM, signal.SIGINT)):
        proc = start_sceneclass("run", cfg, "-q", "--force", "--set", "classes.count=7")
        try:
            seen = wait_for(_moment(out_dir, moment), timeout=120, interval=0.002, proc=proc)
            if seen and proc.poll() is None:
                for sig in sigs:
                    os.kill(proc.pid, sig)
                    time.sleep(0.005)
            _, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
        if not seen or proc.returncode == 0:
            continue  # the run passed the moment before the signal came
        # two signals pending together are handled in signal-number order: the first handled wins
        sig = next((s for s in sigs if proc.returncode == 128 + s), sigs[0])
        hits.append(sigs)
        assert proc.returncode == 128 + sig, (sig.name, proc.returncode, err)
        assert err.splitlines() == [
            f"sceneclass: error: stopped by {sig.name}; temporaries removed, previous outputs unchanged"], err
        assert not partials(out_dir), partials(out_dir)
        assert checksums(out_dir) == before
        assert sha(big_scene) == input_sum
    assert len(hits) >= 2, f"the signals reached the run at {moment} only {len(hits)} of 3 times"


SIGNAL_AT_CREATION = r"""
import os, signal, sys
from pathlib import Path
from pipeline.jobs import atomic
from pipeline.jobs.interrupt import Interrupted, stop_on_signals

final = Path(sys.argv[1]) / sys.argv[2]
make = sys.argv[3]
real = {"dir": os.mkdir, "file": os.open}


def then_signal(name):
    def created(*args, **kwargs):
        out = real[name](*args, **kwargs)
        if str(args[0]).endswith(".sceneclass-partial"):
            os.kill(os.getpid(), signal.SIGTERM)  # the signal lands the moment the temporary exists
        return out
    return created


setattr(os, {"dir": "mkdir", "file": "open"}[make], then_signal(make))
try:
    with stop_on_signals():
        with atomic.atomic_output(final, make=make) as tmp:
            raise SystemExit("the block was entered: the signal did not wait")
except Interrupted as e:
    sys.exit(e.exit_code)
"""


@pytest.mark.parametrize("make", ["file", "dir"])
def test_a_signal_as_a_temporary_is_created_leaves_nothing(make, tmp_path):
    """SIGTERM delivered right after the temporary is created, before anything holds its name:
    the signal waits until its owner does, which removes it; the output folder stays empty."""
    out = tmp_path / "out"
    out.mkdir()
    proc = subprocess.run([sys.executable, "-c", SIGNAL_AT_CREATION, str(out), "classes.zarr", make],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 143, proc.stderr
    assert list(out.iterdir()) == []


def test_remove_leftovers_takes_only_this_process_temporaries(tmp_path):
    """The stopped run's backstop removes the temporaries it made and still has, not committed
    outputs, not a replaced output moved aside, not another process's temporaries."""
    from pipeline.jobs.atomic import remove_leftovers

    final = tmp_path / "a.tif"
    kept = partial_path(final, ".tif")
    committed = partial_path(tmp_path / "b.tif", ".tif")
    commit(committed, tmp_path / "b.tif")
    folder = partial_path(final, ".tiles", make="dir")
    (folder / "0_0_0").write_bytes(b"tile")
    aside = partial_path(final, ".old", make=None)
    aside.write_bytes(b"old output")
    other = tmp_path / f".c.tif.0123abcd{PARTIAL_TAG}.tif"
    other.write_bytes(b"another run's")
    assert sorted(remove_leftovers()) == sorted([kept, folder])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["b.tif", aside.name, other.name])
    assert remove_leftovers() == []
