"""The git revision a run is made from, and the rule that published results come from a clean tree."""

from __future__ import annotations

import platform
import subprocess
from pathlib import Path

import torch

from edgeprune.errors import UsageError

from .config import PUBLISHED, ROOT, BenchConfig

# What the harness itself (re)writes in its output folder: not part of the code state it measures.
OWN_OUTPUTS = ("results.json", "results.md", "accuracy_vs_ls.png", "pf_time.png")


def _git(*args: str, root: Path = ROOT) -> str | None:
    try:
        proc = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return proc.stdout if proc.returncode == 0 else None


def git_state(out: Path, root: Path = ROOT) -> dict:
    """{commit, dirty, dirty_paths}: uncommitted changes anywhere in the tree except this harness's
    own outputs in ``out``. No git (or not a checkout): commit None and dirty None (unknown)."""
    commit = _git("rev-parse", "HEAD", root=root)
    status = _git("status", "--porcelain", "--untracked-files=all", root=root)
    if commit is None or status is None:
        return {"commit": None, "dirty": None, "dirty_paths": []}
    own = set()
    out = Path(out).resolve()
    for name in OWN_OUTPUTS:
        try:
            own.add(str((out / name).relative_to(root.resolve())))
        except ValueError:
            pass  # output folder outside the tree
    paths = [line[3:].split(" -> ")[-1].strip('"') for line in status.splitlines() if line.strip()]
    dirty = [p for p in paths if p not in own]
    return {"commit": commit.strip(), "dirty": bool(dirty), "dirty_paths": dirty[:20]}


def is_published(out: Path) -> bool:
    out, pub = Path(out).resolve(), PUBLISHED.resolve()
    return out == pub or pub in out.parents


def check_publishable(cfg: BenchConfig, state: dict) -> dict:
    """Refuse to publish from a tree whose code is not committed, unless ``--allow-dirty``.

    Returns the provenance record for results.json."""
    published = is_published(cfg.out)
    record = {**state, "published": published, "allow_dirty": cfg.allow_dirty}
    if published and state["dirty"] is not False and not cfg.allow_dirty:
        what = ("uncommitted changes: " + ", ".join(state["dirty_paths"][:5])) if state["dirty"] else "no git revision"
        raise UsageError(f"refusing to publish benchmark results to {cfg.out} from a tree with {what}; commit first, "
                         "write elsewhere with --out, or pass --allow-dirty (recorded in the results)")
    return record


def environment() -> dict:
    return {"torch": torch.__version__, "python": platform.python_version(), "threads": 1,
            "machine": platform.processor() or platform.machine()}
