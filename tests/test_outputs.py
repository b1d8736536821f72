import os
import subprocess
import sys

import pytest

from edgeprune.deploy.outputs import OUTPUT_MARKER, AtomicOutputDir, OutputLock, atomic_path, atomic_write
from edgeprune.errors import OutputError


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
    with pytest.raises(OutputError, match="not written by edgeprune"):  # --force never deletes a user's folder
        AtomicOutputDir(tmp_path / "full", force=True).__enter__()
    assert os.listdir(tmp_path / "full") == ["x"]


def test_force_replaces_only_edgeprune_output(tmp_path):
    target = tmp_path / "out"
    with AtomicOutputDir(target) as tmp:
        (tmp / "sub").mkdir()
        (tmp / "sub" / "a.txt").write_text("1")
    assert sorted(os.listdir(target)) == [OUTPUT_MARKER, "sub"]
    with AtomicOutputDir(target, force=True) as tmp:  # edgeprune's own folder: replaced
        (tmp / "b.txt").write_text("2")
    assert sorted(os.listdir(target)) == [OUTPUT_MARKER, "b.txt"]
    (target / "notes.txt").write_text("the user's")  # a user's file added to it: refused, kept
    with pytest.raises(OutputError, match="files edgeprune did not write: notes.txt"):
        AtomicOutputDir(target, force=True).__enter__()
    (target / OUTPUT_MARKER).write_text("{not json")  # a damaged marker proves nothing
    with pytest.raises(OutputError, match="not written by edgeprune"):
        AtomicOutputDir(target, force=True).__enter__()
    assert (target / "notes.txt").read_text() == "the user's"


def test_files_appearing_during_the_run_block_the_publish(tmp_path):
    target = tmp_path / "out"
    with AtomicOutputDir(target) as tmp:
        (tmp / "a").write_text("1")
    with pytest.raises(OutputError, match="did not write: late.txt"):
        with AtomicOutputDir(target, force=True) as tmp:
            (tmp / "a").write_text("2")
            (target / "late.txt").write_text("user")
    assert (target / "a").read_text() == "1" and (target / "late.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no temp folder or lock left


def test_atomic_file_writes(tmp_path):
    path = tmp_path / "d" / "f.json"
    atomic_write(path, "one")
    assert path.read_text() == "one" and oct(path.stat().st_mode & 0o777) != oct(0o600)
    with pytest.raises(RuntimeError):
        with atomic_path(path) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash")
    assert path.read_text() == "one" and os.listdir(path.parent) == ["f.json"]


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
    with AtomicOutputDir(target, force=True) as tmp:
        (tmp / "ok").write_text("1")
    assert (target / "ok").exists() and not lock.path.exists()


def test_demo_refuses_a_workdir_it_did_not_make_before_any_work(tmp_path, monkeypatch):
    import edgeprune.research.train_source as train_source
    from edgeprune.pipeline.demo import DEMO_MARKER, run_demo

    monkeypatch.setattr(train_source, "train_source", lambda *a, **k: pytest.fail("the demo started work"))
    data = tmp_path / "data"
    data.mkdir()
    (data / "profile.json").write_text("the user's")  # the demo would overwrite this file
    with pytest.raises(OutputError, match="not made by the demo"):
        run_demo(data)
    assert os.listdir(data) == ["profile.json"] and (data / "profile.json").read_text() == "the user's"
    (data / DEMO_MARKER).write_text("")  # an earlier demo's folder whose adapted/ someone else filled
    (data / "adapted").mkdir()
    (data / "adapted" / "notes.txt").write_text("x")
    with pytest.raises(OutputError, match="--force refused"):
        run_demo(data)
    assert (data / "adapted" / "notes.txt").read_text() == "x"
