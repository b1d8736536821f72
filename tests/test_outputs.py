import os
import subprocess
import sys

import pytest

from edgeprune.errors import OutputError
from edgeprune.outputs import AtomicOutputDir, OutputLock


def test_publish_on_success_only(tmp_path):
    target = tmp_path / "out"
    with AtomicOutputDir(target) as tmp:
        (tmp / "a.txt").write_text("new")
        assert not target.exists()
    assert (target / "a.txt").read_text() == "new"
    with pytest.raises(RuntimeError):
        with AtomicOutputDir(target, force=True) as tmp:
            (tmp / "a.txt").write_text("half")
            raise RuntimeError("boom")
    assert (target / "a.txt").read_text() == "new"  # earlier output intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no temp or lock left


def test_refusals(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputError, match="is a file"):
        AtomicOutputDir(tmp_path / "file").__enter__()
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(OutputError, match="not empty"):
        AtomicOutputDir(tmp_path / "full").__enter__()
    with AtomicOutputDir(tmp_path / "full", force=True) as tmp:
        (tmp / "y").write_text("y")
    assert sorted(os.listdir(tmp_path / "full")) == ["y"]


def test_second_writer_refused_and_stale_lock_cleared(tmp_path):
    target = tmp_path / "out"
    with AtomicOutputDir(target):
        with pytest.raises(OutputError, match="another edgeprune run"):
            AtomicOutputDir(target).__enter__()
    # A lock left by a killed process: its pid no longer exists.
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    lock = OutputLock(target)
    import socket

    lock.path.write_text(f"{proc.pid} {socket.gethostname()}\n")
    with AtomicOutputDir(target) as tmp:
        (tmp / "ok").write_text("1")
    assert (target / "ok").exists() and not lock.path.exists()
