"""The input's checksum for the manifest: read without a memory map (checked against hashlib
over the file's bytes), started early by the command and reused only while the file is
unchanged (size, time, inode), with relative paths resolved as the config resolves them."""

from __future__ import annotations

import hashlib
import mmap
import os

import pytest

from pipeline.jobs import checksum
from pipeline.jobs.config import load_config


@pytest.fixture(autouse=True)
def _fresh_registry(monkeypatch):
    monkeypatch.setattr(checksum, "_started", {})


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _counting(monkeypatch) -> list[str]:
    """Record every whole-file hash (the real one still runs)."""
    calls: list[str] = []
    real = checksum._hashed

    def counted(path):
        calls.append(path)
        return real(path)

    monkeypatch.setattr(checksum, "_hashed", counted)
    return calls


@pytest.mark.parametrize("size", [0, 1, mmap.PAGESIZE - 1, mmap.PAGESIZE, mmap.PAGESIZE + 1, (1 << 18) + 5])
def test_file_checksum_matches_hashlib(size, tmp_path):
    data = os.urandom(size)
    path = tmp_path / "scene.tif"
    path.write_bytes(data)
    assert checksum.file_checksum(str(path)) == _sha(data)


def test_a_started_checksum_is_used_once(tmp_path, monkeypatch):
    calls = _counting(monkeypatch)
    data = os.urandom(50_000)
    path = tmp_path / "scene.tif"
    path.write_bytes(data)
    checksum.start(str(path))
    checksum.start(str(path))  # started once per file
    assert checksum.checksum(str(path)) == _sha(data)
    assert len(calls) == 1
    assert checksum.checksum(str(path)) == _sha(data)  # a later request hashes again
    assert len(calls) == 2


def test_a_file_changed_after_the_start_is_hashed_again(tmp_path, monkeypatch):
    calls = _counting(monkeypatch)
    path = tmp_path / "scene.tif"
    path.write_bytes(b"old content")
    checksum.start(str(path))
    checksum._started[os.path.realpath(path)][1].result()  # the early hash is done
    path.write_bytes(b"new content, another size")
    assert checksum.checksum(str(path)) == _sha(b"new content, another size")
    assert len(calls) == 2


def test_a_file_replaced_with_the_same_size_and_time_is_hashed_again(tmp_path, monkeypatch):
    """An atomic replacement that keeps size and mtime (cp -p; mv) is a new inode: hashed again."""
    calls = _counting(monkeypatch)
    path, new = tmp_path / "scene.tif", tmp_path / "new.tif"
    path.write_bytes(b"old content")
    checksum.start(str(path))
    checksum._started[os.path.realpath(path)][1].result()
    new.write_bytes(b"new content")
    st = os.stat(path)
    os.utime(new, ns=(st.st_atime_ns, st.st_mtime_ns))
    os.replace(new, path)
    assert checksum.checksum(str(path)) == _sha(b"new content")
    assert len(calls) == 2


def test_start_for_config_resolves_the_input_as_the_config_does(tmp_path, monkeypatch):
    (tmp_path / "jobs").mkdir()
    (tmp_path / "data").mkdir()
    scene = tmp_path / "data" / "scene.tif"
    scene.write_bytes(b"pixels")
    other = tmp_path / "other.tif"
    other.write_bytes(b"other pixels")
    cfg = tmp_path / "jobs" / "job.yaml"
    cfg.write_text("input: ../data/scene.tif\noutput: {path: out.tif}\n")
    checksum.start_for_config(str(cfg))
    assert list(checksum._started) == [os.path.realpath(load_config(cfg).input)] == [os.path.realpath(scene)]

    monkeypatch.setattr(checksum, "_started", {})
    monkeypatch.chdir(tmp_path)
    checksum.start_for_config(str(cfg), ["classes.count=5", "input=other.tif"])
    assert list(checksum._started) == [os.path.realpath(load_config(cfg, ["input=other.tif"]).input)]
    assert checksum.checksum(str(other)) == _sha(b"other pixels")


@pytest.mark.parametrize("text", ["input: https://example.com/scene.tif\n", "inputs: ['*.tif']\n",
                                  "input: missing.tif\n", "[not, a, mapping]\n", "input: [unclosed\n"])
def test_start_for_config_starts_nothing_it_cannot_hash(text, tmp_path):
    cfg = tmp_path / "job.yaml"
    cfg.write_text(text)
    checksum.start_for_config(str(cfg))
    checksum.start_for_config(str(tmp_path / "no-such-config.yaml"))
    assert checksum._started == {}
