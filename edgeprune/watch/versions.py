"""The deploy folder: numbered versions, the ``current`` pointer, pruning, rollback, clean-up.

Layout (README "edgeprune watch")::

    DEPLOY/
      .edgeprune-watch.json   marks the folder as a watch deploy folder (model, images)
      current.json            the pointer: {"version": n, "path": "versions/n", "promoted": [...]}
      current -> versions/n   the same pointer as a symlink, for shell readers
      versions/<n>/           complete, immutable: adapt's artifacts + watch.json + reference.pt
      history.jsonl           every decision
      state.json, window.pt   the watcher's memory of the stream (window.py)
      building.json           only while a candidate is being built (crash evidence)

A version folder is written by ``AtomicOutputDir`` (hidden temporary sibling, renamed into place
when complete) and only then pointed to; ``current.json`` is replaced by an atomic rename, the
symlink by renaming a new link over it. A reader that opens ``current.json`` (or goes through the
``current`` link) always finds a complete version. ``--keep N`` prunes the oldest versions
beyond N, never the current one. ``recover`` (every start, under the watcher's lock) removes what
a killed run left: temporary folders and files, adapt's output locks, and complete versions that
were never promoted.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from ..deploy.outputs import OUTPUT_MARKER, atomic_write
from ..errors import OutputError, UsageError
from .reference import RECORD_NAME, REFERENCE_NAME

DEPLOY_MARKER, DEPLOY_FORMAT = ".edgeprune-watch.json", "edgeprune.watch-deploy"
CURRENT_NAME, CURRENT_LINK, CURRENT_FORMAT = "current.json", "current", "edgeprune.watch-current"
VERSIONS, BUILDING = "versions", "building.json"
VERSION_FILES = ("model.pt", "report.json", RECORD_NAME, REFERENCE_NAME, OUTPUT_MARKER)


@dataclass
class Current:
    version: int
    path: Path  # the version folder
    promoted: list[int]  # every version ever promoted that may still exist


class DeployFolder:
    def __init__(self, root: str | os.PathLike):
        self.root = Path(root).absolute()
        self.versions = self.root / VERSIONS

    # -------------------------------------------------------------- the folder itself
    def open(self, model: str, images: Path) -> None:
        """Create the folder, or check that it is a watch deploy folder for ``model``."""
        if self.root.exists() and not self.root.is_dir():
            raise OutputError(f"--deploy {self.root} is a file, not a folder", "pass a folder for the deployed versions")
        marker = self.root / DEPLOY_MARKER
        if self.root.is_dir() and any(self.root.iterdir()) and not marker.exists():
            raise OutputError(f"--deploy {self.root} is not empty and was not made by edgeprune watch (no {DEPLOY_MARKER})",
                              "pass a new or empty folder; watch never writes into or deletes from other folders")
        if marker.exists():
            recorded = self.marker().get("model")
            if recorded != model:
                raise UsageError(f"--deploy {self.root} holds versions of {recorded}, not {model}",
                                 "pass the same --model, or another --deploy")
            return
        try:
            self.versions.mkdir(parents=True, exist_ok=True)
            atomic_write(marker, json.dumps({"format": DEPLOY_FORMAT, "version": 1, "model": model,
                                             "images": str(images)}, indent=1) + "\n")
        except OSError as exc:
            raise OutputError(f"cannot create the deploy folder {self.root}: {exc.strerror}") from None

    def marker(self) -> dict:
        try:
            data = json.loads((self.root / DEPLOY_MARKER).read_text())
        except (OSError, ValueError):
            data = {}
        if data.get("format") != DEPLOY_FORMAT:
            raise OutputError(f"{self.root} is not an edgeprune watch deploy folder (no valid {DEPLOY_MARKER})")
        return data

    # -------------------------------------------------------------- versions and the pointer
    def version_dir(self, n: int) -> Path:
        return self.versions / str(n)

    def complete_versions(self) -> list[int]:
        if not self.versions.is_dir():
            return []
        found = [int(p.name) for p in self.versions.iterdir() if p.name.isdigit() and p.is_dir()]
        return sorted(n for n in found if all((self.version_dir(n) / f).is_file() for f in VERSION_FILES))

    def current(self) -> Current | None:
        """The version ``current.json`` points to (None before the first promotion)."""
        path = self.root / CURRENT_NAME
        if not path.exists():
            return None
        try:
            data = json.loads(path.read_text())
            n = int(data["version"])
            promoted = [int(v) for v in data.get("promoted", [n])]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise OutputError(f"{path} is unreadable ({exc})", "restore it, or roll back with --rollback") from None
        return Current(n, self.version_dir(n), promoted)

    def next_number(self) -> int:
        cur = self.current()
        used = self.complete_versions() + (cur.promoted if cur else [])
        return max(used, default=0) + 1

    def point_to(self, n: int, promoted: list[int]) -> None:
        """Atomically make version ``n`` current (JSON first: it is the authority; then the link)."""
        if n not in self.complete_versions():
            raise OutputError(f"version {n} is not complete in {self.versions}; current is unchanged")
        alive = set(self.complete_versions())
        record = {"format": CURRENT_FORMAT, "version": n, "path": f"{VERSIONS}/{n}", "model": f"{VERSIONS}/{n}/model.pt",
                  "onnx": f"{VERSIONS}/{n}/model.onnx", "promoted": sorted({v for v in promoted if v in alive} | {n}),
                  "updated": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        atomic_write(self.root / CURRENT_NAME, json.dumps(record, indent=1) + "\n")
        self.sync_link()

    def sync_link(self) -> None:
        cur = self.current()
        if cur is None:
            return
        tmp = self.root / f".{CURRENT_LINK}.{os.getpid()}.tmp"
        try:
            tmp.unlink(missing_ok=True)
            os.symlink(f"{VERSIONS}/{cur.version}", tmp)
            os.replace(tmp, self.root / CURRENT_LINK)
        except OSError:  # no symlinks on this file system (FAT...): current.json alone is the pointer
            tmp.unlink(missing_ok=True)

    def rollback(self) -> tuple[int, int]:
        """Point ``current`` at the newest complete promoted version older than it: (from, to)."""
        cur = self.current()
        if cur is None:
            raise UsageError(f"nothing is deployed in {self.root} yet: no version to roll back from")
        older = [n for n in self.complete_versions() if n < cur.version and n in cur.promoted]
        if not older:
            raise UsageError(f"version {cur.version} is the oldest version kept in {self.versions}: nothing to roll back to",
                             "a larger --keep keeps more versions")
        self.point_to(older[-1], cur.promoted)
        return cur.version, older[-1]

    def prune(self, keep: int) -> list[int]:
        """Remove the oldest complete versions beyond ``keep`` (never the current one)."""
        cur = self.current()
        kept = self.complete_versions()
        doomed = [n for n in kept[:-keep] if cur is None or n != cur.version] if len(kept) > keep else []
        for n in doomed:
            _remove(self.version_dir(n))
        if doomed and cur is not None:
            self.point_to(cur.version, cur.promoted)  # the same version; the pruned ones leave its list
        return doomed

    # -------------------------------------------------------------- after a crash
    def recover(self) -> dict:
        """Remove what an interrupted or killed run left (module docstring): {"removed": [...], "building": ...}."""
        cur = self.current()
        promoted = set(cur.promoted) if cur else set()
        removed = []
        for p in sorted(self.versions.iterdir()) if self.versions.is_dir() else []:
            if p.name.isdigit() and int(p.name) in promoted and int(p.name) in self.complete_versions():
                continue
            _remove(p)
            removed.append(f"{VERSIONS}/{p.name}")
        for p in self.root.glob(".*.tmp"):  # atomic_write's and the link's temporary files
            _remove(p)
            removed.append(p.name)
        building = self.root / BUILDING
        interrupted = None
        if building.exists():
            try:
                interrupted = json.loads(building.read_text())
            except (OSError, ValueError):
                interrupted = {"version": None}
            building.unlink(missing_ok=True)
        if cur is not None and _link_target(self.root / CURRENT_LINK) != f"{VERSIONS}/{cur.version}":
            self.sync_link()
        return {"removed": removed, "interrupted": interrupted}

    def mark_building(self, n: int) -> None:
        atomic_write(self.root / BUILDING, json.dumps({"version": n, "pid": os.getpid(),
                                                       "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}) + "\n")

    def clear_building(self) -> None:
        (self.root / BUILDING).unlink(missing_ok=True)


def _link_target(path: Path) -> str | None:
    try:
        return os.readlink(path)
    except OSError:
        return None


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
