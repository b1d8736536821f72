"""The TensorRT modules type-check against TensorRT's real Python API (tensorrt-stubs), 0 errors."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
import typecheck_tensorrt as tc  # noqa: E402


def test_every_module_that_calls_tensorrt_is_checked():
    calling = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "edgeprune").rglob("*.py")
                     if re.search(r"^\s*import tensorrt\b|^\s*from tensorrt\b", p.read_text(), re.M))
    assert calling and calling == sorted(tc.TENSORRT_MODULES)


def test_tensorrt_modules_have_no_type_errors_and_wrong_calls_are_caught(tmp_path):
    probe = tmp_path / "probe_trt.py"  # TensorRT 8 style calls, gone in 10, and a missing argument
    probe.write_text(
        "import tensorrt as trt\n\n\n"
        "def build(path: str) -> None:\n"
        "    builder = trt.Builder(trt.Logger(trt.Logger.ERROR))\n"
        "    network = builder.create_network(0)\n"
        "    config = builder.create_builder_config()\n"
        "    config.max_workspace_size = 1 << 30\n"
        "    builder.build_engine(network, config)\n"
        "    config.set_timing_cache(config.create_timing_cache(b''))\n"
    )
    repaired, output = tc.typecheck([*tc.TENSORRT_MODULES, str(probe)])  # one mypy run: ~10 s
    assert 0 < repaired <= tc.MAX_REPAIRED_LINES
    errors = [ln for ln in output.splitlines() if ": error:" in ln]
    assert errors and all(ln.startswith(str(probe)) for ln in errors), output  # 0 errors in edgeprune's modules
    assert '"IBuilderConfig" has no attribute "max_workspace_size"' in output, output
    assert '"Builder" has no attribute "build_engine"' in output, output
    assert 'Missing positional argument "ignore_mismatch"' in output, output
    assert f"{len(tc.TENSORRT_MODULES) + 1} source files" in output


@pytest.mark.parametrize("line, fixed", [
    ("    def f(self, in: list[int], out: int) -> int:\n", "    def f(self, in_: list[int], out: int) -> int:\n"),
    ("    def g(self, a: int = None, b: int) -> None:\n", "    def g(self, a: int, b: int) -> None:\n"),
    ("    def ok(self, a: int = None) -> None:\n", "    def ok(self, a: int = None) -> None:\n"),
])
def test_stub_line_repair(line, fixed):
    assert tc.repair_line(line) == fixed
