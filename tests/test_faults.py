"""Faults on the field path: SIGINT/SIGTERM mid-run, two runs on one output, stale locks, disk full
while exporting, a non-finite loss, an ONNX export failure, a noisy latency profile.

CLI cases run ``edgeprune`` as a separate process (see test_cli_errors.py for how); the signal
tests use genuine ``python -m edgeprune.cli`` and ``edgeprune`` processes. Disk-full and
export-failure cases patch one function in-process and call the Python API / ``cli.main()``.
"""

from __future__ import annotations

import errno
import hashlib
import json
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import edgeprune.cli
import edgeprune.deploy.onnx_export
import edgeprune.pipeline.adapt
from edgeprune.errors import ExportError, OutputError
from edgeprune.latency.profiles import load_profile
from edgeprune.pipeline.adapt import adapt

from test_cli_errors import adapt_args, assert_error, get_runner, leftovers, ok, profile_variant, shared_setup

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
# rich draws live progress (with the stage names) although stderr is a file; read when the console
# is created, so only in a real new process (real=...), not in a forked one
LIVE = {"TTY_COMPATIBLE": "1"}


@pytest.fixture(scope="session")
def S(tmp_path_factory):
    return shared_setup(tmp_path_factory)


@pytest.fixture(scope="session")
def cli(tmp_path_factory):
    runner = get_runner(tmp_path_factory)
    yield runner
    runner.close()


def digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="session")
def earlier(S, cli, tmp_path_factory):
    """The output of an earlier successful run (copied per test as hard links)."""
    out = tmp_path_factory.mktemp("earlier") / "out"
    ok(cli(*adapt_args(S, S["stream"], out)))
    return out


def earlier_copy(earlier: Path, dest: Path) -> dict[str, str]:
    shutil.copytree(earlier, dest, copy_function=lambda src, dst: Path(dst).hardlink_to(src))
    return digest(dest)


def wait_for(pred, run, timeout=120.0, what=""):
    deadline = time.monotonic() + timeout
    while not pred():
        if run.popen is not None and run.popen.poll() is not None or run.popen is None and run.files["rc"].exists():
            pytest.fail(f"the run ended before {what}:\n{ANSI.sub('', run.stderr())[-2000:]}")
        if time.monotonic() > deadline:
            pytest.fail(f"no {what} after {timeout} s:\n{ANSI.sub('', run.stderr())[-2000:]}")
        time.sleep(0.1)


def assert_interrupted(res, signalled_at: float) -> None:
    assert res.rc == 130, res
    assert time.monotonic() - signalled_at < 15, "did not stop promptly"
    err = ANSI.sub("", res.err)
    assert "Traceback" not in err, res
    lines = [ln for ln in err.splitlines() if ln.startswith(("interrupted:", "error:", "internal error:"))]
    assert lines == ["interrupted: stopped; no partial output was left and earlier output is intact"], res


# ====================================================================== (1) SIGINT / SIGTERM
@pytest.mark.parametrize("sig, how", [(signal.SIGINT, "script"), (signal.SIGTERM, "module")], ids=["SIGINT", "SIGTERM"])
def test_interrupt_mid_distillation_leaves_nothing_partial(S, cli, earlier, tmp_path, sig, how):
    out = tmp_path / "out"
    before = earlier_copy(earlier, out)
    scratch = tmp_path / "tmp"  # TMPDIR of the run: pseudo-label spill files, ONNX scratch
    scratch.mkdir()
    run = cli.start(*adapt_args(S, S["stream"], out, "--force", "--steps", "1000000"),
                    env={**LIVE, "TMPDIR": str(scratch)}, real=how)
    wait_for(lambda: "distillation" in run.stderr(), run, what="distillation progress")
    # (2) a second run on the same output while the first one works: refused at once by the lock
    second = cli(*adapt_args(S, S["stream"], out, "--force"))
    assert_error(second, 6, "another edgeprune run is writing to", str(out), "wait for it to finish")
    t = time.monotonic()
    run.signal(sig)
    assert_interrupted(run.wait(60), t)
    assert digest(out) == before, "the earlier output changed"
    assert leftovers(out) == [], "temp folder or lock left behind"
    assert list(scratch.iterdir()) == []


def test_interrupt_profile_keeps_the_old_profile(S, cli, tmp_path):
    target = tmp_path / "p.json"
    shutil.copy(S["profile"], target)
    before = target.read_bytes()
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    run = cli.start("profile", "-m", "resnet18", "--backend", "torch", "--resolution", "32", "--budget", "300", "-o", target,
                    env={**LIVE, "TMPDIR": str(scratch)}, real="module")
    wait_for(lambda: "timing variants" in run.stderr(), run, what="profiling progress")
    time.sleep(0.5)
    t = time.monotonic()
    run.signal(signal.SIGINT)
    assert_interrupted(run.wait(60), t)
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.json", "tmp"]  # no p.json.*.tmp
    assert list(scratch.iterdir()) == []


# ====================================================================== (2) locks
def test_stale_lock_of_a_killed_run_is_cleared(S, cli, tmp_path):
    dead = subprocess.Popen(["true"])
    dead.wait()
    out = tmp_path / "out"
    lock = tmp_path / ".out.lock"
    lock.write_text(f"{dead.pid} {socket.gethostname()}\n")
    ok(cli(*adapt_args(S, S["stream"], out)))
    assert (out / "report.json").is_file() and not lock.exists() and leftovers(out) == []


# ====================================================================== (3) disk full
@pytest.mark.parametrize("where", ["manifest", "onnx"])
def test_disk_full_while_exporting(S, earlier, tmp_path, monkeypatch, where):
    out = tmp_path / "out"
    before = earlier_copy(earlier, out)

    def no_space(path):
        Path(path).write_bytes(b"half an artifact")  # what a full disk leaves: a partial file
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    if where == "manifest":
        monkeypatch.setattr(torch, "save", lambda obj, f, *a, **k: no_space(f))
    else:
        tried = []
        monkeypatch.setitem(edgeprune.deploy.onnx_export._EXPORTERS, "legacy", lambda m, x, tmp, *a: no_space(tmp))
        monkeypatch.setitem(edgeprune.deploy.onnx_export._EXPORTERS, "dynamo", lambda *a: tried.append(1))
    with pytest.raises(OutputError) as info:
        adapt(S["stream"], out, model="resnet18", weights=S["weights"], profile=S["profile"], blocks=2, prune_images=4,
              finetune_images=8, steps=1, batch=4, measure_latency=False, force=True)
    msg = str(info.value)
    assert f"could not write the output {out}: No space left on device" in msg
    assert "free some disk space" in msg and "the earlier output there is intact" in msg
    assert digest(out) == before
    assert leftovers(out) == []
    if where == "onnx":
        assert not tried, "a full disk is not an exporter problem: the other exporter must not run"


def test_disk_full_while_saving_a_profile_keeps_the_old_one(S, tmp_path, monkeypatch):
    from edgeprune.latency.profiles import save_profile

    target = tmp_path / "p.json"
    shutil.copy(S["profile"], target)
    before = target.read_bytes()

    def no_space(src, dst):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("edgeprune.latency.profiles.os.replace", no_space)
    with pytest.raises(OutputError, match=f"cannot write the profile {target}: No space left on device"):
        save_profile(S["profile_dict"], target)
    assert target.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["p.json"]


# ====================================================================== (4) non-finite loss
def test_nonfinite_loss_stops_distillation_and_the_run_completes(S, cli, tmp_path):
    # lr 1e30: the first update overflows whatever blocks the (measured, so varying) profile removes;
    # at 1e6 the loss sometimes only reached ~1e18 in 6 steps and the test failed
    out = tmp_path / "out"
    res = ok(cli(*adapt_args(S, S["stream"], out, "--lr", "1e30", "--steps", "6")))
    assert "warning: non-finite loss: distillation stopped" in res.err
    report = json.loads((out / "report.json").read_text())
    assert report["distillation"]["stopped_nonfinite"] is True
    assert report["distillation"]["steps"] < 6
    assert any("non-finite loss" in w for w in report["warnings"])


# ====================================================================== (5) ONNX export failure
def test_onnx_export_failure_publishes_manifest_and_report(S, tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"

    def broken(*a, **k):
        raise ExportError("simulated exporter crash", "report it")

    raised = []
    real_adapt = edgeprune.pipeline.adapt.run_adapt  # what the CLI calls

    def spy(*a, **k):
        try:
            return real_adapt(*a, **k)
        except BaseException as exc:
            raised.append(exc)
            raise

    monkeypatch.setattr(edgeprune.deploy.onnx_export, "export_onnx", broken)
    monkeypatch.setattr(edgeprune.pipeline.adapt, "run_adapt", spy)
    monkeypatch.setattr(sys, "argv", ["edgeprune", *map(str, adapt_args(S, S["stream"], out))])
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        with pytest.raises(SystemExit) as info:
            edgeprune.cli.main()
    finally:
        for s, h in handlers.items():
            signal.signal(s, h)
    err = capsys.readouterr().err
    assert info.value.code == 8 and "Traceback" not in err, err
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "ONNX export failed: simulated exporter crash" in lines[0], err
    assert f"manifest and report saved in {out}" in lines[0]
    assert len(raised) == 1 and isinstance(raised[0], ExportError)
    assert sorted(p.name for p in out.iterdir()) == [".edgeprune-output.json", "model.pt", "report.json", "report.md"]
    report = json.loads((out / "report.json").read_text())
    assert report["errors"] == ["ONNX export failed: simulated exporter crash (report it)"]
    assert report["artifacts"] == ["model.pt"]
    assert leftovers(out) == []


# ====================================================================== (6) noisy profile
def test_noisy_profile_warns_and_profile_can_remeasure(S, cli, tmp_path):
    def noisy(p):
        p["base"]["cv"] = 0.6
        for b in p["blocks"]:
            b["cv"] = 0.9
        p["warnings"] = []

    prof = profile_variant(S, tmp_path / "p.json", noisy)
    out = tmp_path / "out"
    res = ok(cli(*adapt_args(S, S["stream"], out, profile=prof)))
    assert "warning: the latency profile's timings are noisy" in res.err and "re-run `edgeprune profile`" in res.err
    report = json.loads((out / "report.json").read_text())
    assert any("timings are noisy" in w and "worst" in w for w in report["warnings"])
    # re-measure: `edgeprune profile` replaces the file atomically
    res = ok(cli("profile", "-m", "resnet18", "--backend", "torch", "--resolution", "32", "--budget", "0.3", "-o", prof))
    fresh = load_profile(prof)
    assert fresh["base"]["cv"] != 0.6 and all(b["cv"] != 0.9 for b in fresh["blocks"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "p.json"]
