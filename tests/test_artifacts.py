"""mgkit.artifacts: atomic writes, temp names that carry the writer, stale temp cleanup, umask modes."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from mgkit import artifacts
from mgkit.artifacts import atomic_path, current_umask, remove_stale_tmp, write_text_atomic
from mgkit.errors import MgkitError, UsageError


def _dead_pid() -> int:
    """The PID of a child that has exited and been reaped."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _tmp_name(target: str, pid: int, host: str = artifacts._HOST, rand: str = "ab_c12xy") -> str:
    return f".{target}.{host}.{pid}.{rand}.tmp"


def test_temp_name_carries_host_and_pid(tmp_path):
    with atomic_path(tmp_path / "x.json") as tmp:
        assert tmp.parent == tmp_path
        assert tmp.name.startswith(f".x.json.{artifacts._HOST}.{os.getpid()}.") and tmp.name.endswith(".tmp")
        tmp.write_text("1")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.json"]


def test_stale_temp_of_dead_writer_removed_live_ones_kept(tmp_path):
    dead = _dead_pid()
    stale = tmp_path / _tmp_name("last.pt", dead)
    mine = tmp_path / _tmp_name("last.pt", os.getpid())  # a live writer (this process)
    parent = tmp_path / _tmp_name("last.pt", os.getppid())
    elsewhere = tmp_path / _tmp_name("last.pt", dead, host="otherhost")  # other host: its PIDs are not ours
    other_target = tmp_path / _tmp_name("best.pt", dead)
    foreign = tmp_path / ".last.pt.notapid.tmp"
    for p in (stale, mine, parent, elsewhere, other_target, foreign):
        p.write_text("partial")
    write_text_atomic(tmp_path / "last.pt", "done")
    left = {p.name for p in tmp_path.iterdir()}
    assert stale.name not in left
    assert {mine.name, parent.name, elsewhere.name, other_target.name, foreign.name, "last.pt"} == left
    assert remove_stale_tmp(tmp_path / "best.pt") == [other_target]


@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_written_file_respects_umask(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        assert current_umask() == umask
        write_text_atomic(tmp_path / "a.txt", "x")
        with atomic_path(tmp_path / "b.bin") as tmp:  # a writer that replaces the temp file keeps the mode too
            tmp.unlink()
            os.close(os.open(tmp, os.O_CREAT | os.O_WRONLY, 0o600))
    finally:
        os.umask(old)
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == mode
    assert (tmp_path / "b.bin").stat().st_mode & 0o777 == mode


def test_failure_removes_temp_and_keeps_old_file(tmp_path):
    target = tmp_path / "a.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("new")
            raise RuntimeError("boom")
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_unwritable_folder_is_one_line(tmp_path, monkeypatch):
    def denied(*a, **k):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "mkstemp", denied)
    with pytest.raises(MgkitError, match=f"cannot write in {tmp_path}: permission denied"):
        write_text_atomic(tmp_path / "a.txt", "x")


def test_directory_or_file_in_the_way(tmp_path):
    (tmp_path / "d").mkdir()
    with pytest.raises(UsageError, match="is a directory"):
        write_text_atomic(tmp_path / "d", "x")
    (tmp_path / "f").write_text("x")
    with pytest.raises(UsageError, match="is a file, not a folder"):
        write_text_atomic(tmp_path / "f" / "a.txt", "x")
    with pytest.raises(UsageError, match="a part of this path is a file"):
        write_text_atomic(tmp_path / "f" / "sub" / "a.txt", "x")
    assert not list(Path(tmp_path).glob(".*.tmp"))
