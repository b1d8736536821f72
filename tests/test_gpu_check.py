"""tools/gpu_check.sh: its CPU dry run (what CI can run) and its never-skip-silently rules."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
import gpu_check  # noqa: E402

GPU_STEPS = ["profile:mobilenet_v2", "profile:efficientnet_lite0", "adapt", "parity", "timing", "polygraphy", "int8_engine"]


def _run(tmp_path, *args):
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "HOME": str(tmp_path), "PYTHON": sys.executable}
    return subprocess.run(["bash", str(ROOT / "tools" / "gpu_check.sh"), "--out", str(tmp_path / "out"), *args],
                          capture_output=True, text=True, env=env, timeout=600)


@pytest.mark.skipif(gpu_check.gpu_present()[0], reason="a GPU is present: the dry run is for CPU machines")
def test_dry_run_on_cpu_writes_the_summary_and_marks_gpu_steps_not_run(tmp_path):
    proc = _run(tmp_path, "--dry-run")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    summary = json.loads((tmp_path / "out" / "gpu_check.json").read_text())
    steps = summary["steps"]
    assert summary["format"] == "edgeprune.gpu-check" and summary["dry_run"] and summary["passed"]
    assert list(steps) == ["environment", *GPU_STEPS[:2], "stream", *GPU_STEPS[2:]]
    assert all(steps[s]["status"] == "not run: no GPU" for s in GPU_STEPS)
    env = steps["environment"]
    assert env["status"] == "pass" and env["fingerprint"]["kind"] == "cpu" and "cpu_isa" in env["fingerprint"]
    assert env["libraries"]["torch"] and "CPUExecutionProvider" in env["onnxruntime_providers"]
    assert steps["stream"]["status"] == "pass" and steps["stream"]["images"] == {"stream": 24, "held_out": 8}
    assert "installing" not in proc.stderr  # a dry run installs nothing
    assert "[----] adapt: not run: no GPU" in proc.stdout


@pytest.mark.skipif(gpu_check.gpu_present()[0], reason="a GPU is present")
def test_without_a_gpu_the_real_run_fails_loudly(tmp_path):
    proc = _run(tmp_path, "--no-install")
    assert proc.returncode == 1
    assert "needs an NVIDIA GPU" in proc.stderr and "FAILED: profile:mobilenet_v2" in proc.stdout
    steps = json.loads((tmp_path / "out" / "gpu_check.json").read_text())["steps"]
    assert all(steps[s]["status"] == "fail" and "no CUDA GPU" in steps[s]["error"] for s in GPU_STEPS)


def test_a_failing_step_is_recorded_and_the_check_goes_on(tmp_path):
    check = gpu_check.Check(tmp_path, dry_run=False, has_gpu=True)
    check.step("broken", lambda: 1 / 0)
    check.step("fine", lambda: {"value": 3})
    summary = json.loads((tmp_path / "gpu_check.json").read_text())
    assert summary["steps"]["broken"]["status"] == "fail" and "ZeroDivisionError" in summary["steps"]["broken"]["error"]
    assert summary["steps"]["fine"] == {"status": "pass", "value": 3, "seconds": summary["steps"]["fine"]["seconds"]}
    assert summary["passed"] is False and check.failed() == ["broken"]
