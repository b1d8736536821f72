"""Type-check every edgeprune module that calls TensorRT against TensorRT's real Python API.

The API comes from ``tensorrt-stubs`` (the TensorRT 10 bindings' signatures; tools/setup.sh
installs it without its ``tensorrt`` dependency, which needs a GPU machine). Its generated stubs
have a few lines that are not valid Python (parameters named ``in``, a parameter without a
default after defaulted ones); those lines are repaired in a temporary copy (names renamed,
defaults dropped) so mypy can read the file. The number of repaired lines is printed and capped,
so a broken stub release is noticed instead of hidden.

    python3 tools/typecheck_tensorrt.py        # exit 0: no type errors

Exit codes: 0 clean, 1 type errors (mypy's output shown), 2 the stubs or mypy are missing.
"""

from __future__ import annotations

import ast
import importlib.util
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Every module that imports tensorrt (tests/test_typecheck.py checks the list is complete).
TENSORRT_MODULES = (
    "edgeprune/deploy/tensorrt_build.py",
    "edgeprune/deploy/tensorrt_engine.py",
    "edgeprune/deploy/tensorrt_int8.py",
    "edgeprune/latency/backends/tensorrt_backend.py",
    "edgeprune/latency/fingerprint.py",
)
MAX_REPAIRED_LINES = 20  # tensorrt-stubs 10.13.0.35.1 needs 5


def stub_files() -> tuple[Path, Path]:
    """The installed ``tensorrt`` and ``tensorrt_bindings`` stub folders."""
    found = []
    for name in ("tensorrt", "tensorrt_bindings"):
        spec = importlib.util.find_spec(name)
        locations = list(spec.submodule_search_locations or []) if spec else []
        stubs = [Path(p) for p in locations if (Path(p) / "__init__.pyi").is_file()]
        if not stubs:
            raise SystemExit(f"error: no {name} type stubs installed (pip install --no-deps tensorrt-stubs; tools/setup.sh does)")
        found.append(stubs[0])
    return found[0], found[1]


def repair_line(line: str) -> str:
    """A stub ``def`` line made parseable (unchanged when it already is)."""
    if not line.lstrip().startswith("def ") or _parses(line):
        return line
    fixed = re.sub(r"\bin:", "in_:", line)
    if not _parses(fixed):
        fixed = re.sub(r"\s*=\s*(None|\.\.\.|[\w.]+)(?=[,)])", "", fixed)
    return fixed


def _parses(line: str) -> bool:
    try:
        ast.parse(line.strip() + (" ..." if line.rstrip().endswith(":") else ""))
        return True
    except SyntaxError:
        return False


def repaired_stubs(dest: Path) -> int:
    """Copy the stubs into ``dest`` with unparseable lines repaired; returns how many were."""
    count = 0
    for src in stub_files():
        out = dest / src.name
        out.mkdir(parents=True)
        for pyi in src.glob("*.pyi"):
            lines = pyi.read_text().splitlines(keepends=True)
            fixed = [repair_line(ln) for ln in lines]
            count += sum(a != b for a, b in zip(lines, fixed))
            (out / pyi.name).write_text("".join(fixed))
    return count


def typecheck(paths: list[str]) -> tuple[int, str]:
    """mypy on ``paths`` against the (repaired) stubs: (repaired stub lines, mypy's output + exit)."""
    with tempfile.TemporaryDirectory(prefix="edgeprune-trt-stubs-") as tmp:
        repaired = repaired_stubs(Path(tmp))
        if repaired > MAX_REPAIRED_LINES:
            raise SystemExit(f"error: {repaired} broken stub lines (more than {MAX_REPAIRED_LINES}): check the tensorrt-stubs release")
        env = {**os.environ, "MYPYPATH": tmp}
        cmd = [sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml"), "--no-incremental", *paths]
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    return repaired, f"{proc.stdout}{proc.stderr}exit {proc.returncode}"


def main() -> int:
    if importlib.util.find_spec("mypy") is None:
        print("error: mypy is not installed (pip install -e '.[dev]')", file=sys.stderr)
        return 2
    repaired, output = typecheck(list(TENSORRT_MODULES))
    print(f"tensorrt-stubs: {repaired} unparseable stub line(s) repaired in a temporary copy")
    print(output)
    return 0 if output.endswith("exit 0") else 1


if __name__ == "__main__":
    sys.exit(main())
