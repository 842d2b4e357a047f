"""Atomic writes: readers never see a torn file, and files get the permissions a plain open() gives."""

from __future__ import annotations

import os
import stat

import pytest

from jmipose.fileio import atomic_write_bytes, atomic_write_json


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture
def umask():
    """Set the process umask for one test (restored afterwards)."""
    previous = os.umask(0o022)
    os.umask(previous)
    yield lambda value: os.umask(value)
    os.umask(previous)


@pytest.mark.parametrize("mask", [0o022, 0o002, 0o077, 0o027])
def test_new_files_get_the_mode_open_gives(tmp_path, umask, mask):
    umask(mask)
    plain = tmp_path / "plain.json"
    with open(plain, "w") as handle:
        handle.write("{}")
    atomic_write_json(tmp_path / "atomic.json", {"a": 1})
    assert _mode(tmp_path / "atomic.json") == _mode(plain) == 0o666 & ~mask
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []   # no temporary left


def test_replacing_a_file_keeps_its_mode(tmp_path, umask):
    umask(0o022)
    target = tmp_path / "results.json"
    target.write_text("old")
    os.chmod(target, 0o640)
    atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"new" and _mode(target) == 0o640
    # and what plain open() does to an existing file's mode, for the record
    with open(target, "w") as handle:
        handle.write("x")
    assert _mode(target) == 0o640


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "x.json"
    target.write_text('{"old": true}')
    with pytest.raises(TypeError):
        atomic_write_json(target, {"bad": object()})   # not JSON: fails before anything is written
    with pytest.raises(TypeError):
        atomic_write_bytes(target, "not bytes")        # fails while writing the temporary file
    assert target.read_text() == '{"old": true}'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.json"]
