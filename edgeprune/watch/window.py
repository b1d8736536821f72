"""The stream as the watcher remembers it: which files it has taken, which are still being
written, and a bounded window of the newest decoded images.

* **New files only**: a file is taken once, identified by its path, size and modification time
  (a file rewritten in place counts as new again). Files that vanish from the folder are
  forgotten, so the memory is bounded by the folder; the user's files are never moved or deleted.
* **Complete files only**: a file is read when its size and mtime have been stable for
  ``settle_s`` seconds (its mtime is that old, or two scans that far apart saw the same size and
  mtime); a file still growing waits for a later cycle. A file that changes while it is decoded
  goes back to waiting. Hidden files (``.name.png`` while a copy runs) are never read.
* **Skip and count**: unusable files are decoded by ``data.decoding`` exactly as ``adapt`` does
  and skipped with the reason; they are not retried unless they change.
* **Bounded window**: the newest ``capacity`` images (uint8, at the model's resolution), oldest
  first; older ones are dropped from the window (not from the folder).

Persistence: ``window.pt`` (the window's names and pixels) and ``state.json`` (files taken,
files waiting, the cycle's counters), each written atomically at the end of a cycle. A crash
between the two writes re-reads that cycle's files, which replace their own window entries.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from ..data.decoding import SkipImage, decode_image
from ..data.discovery import check_root, discover_images
from ..data.images import ImageSet
from ..deploy.outputs import atomic_path, atomic_write
from ..errors import ImageError

STATE_FORMAT = "edgeprune.watch-state"
STATE_NAME, WINDOW_NAME = "state.json", "window.pt"


@dataclass
class WatchState:
    """What survives between cycles (and between processes: ``--once`` from cron)."""

    seen: dict[str, list[int]] = field(default_factory=dict)  # path -> [size, mtime_ns] of files taken
    pending: dict[str, list[float]] = field(default_factory=dict)  # path -> [size, mtime_ns, first seen] still settling
    unjudged: int = 0  # newest window images no drift decision has looked at yet
    drift_images: int = 0  # newest window images since the drift point (0: no drift pending)
    cycles: int = 0
    skipped_total: int = 0


@dataclass
class Scan:
    ready: list[tuple[str, Path, list[int]]]  # (name, path, [size, mtime_ns]) oldest first
    waiting: int  # files seen but not yet complete


def scan(root: Path, state: WatchState, settle_s: float, now: float | None = None) -> Scan:
    """The new complete image files under ``root`` (module docstring); updates ``state.pending``."""
    now = time.time() if now is None else now
    check_root(root)
    try:
        paths, _ = discover_images(root)
    except ImageError:  # no images yet: a watched folder may well be empty
        paths = []
    ready, waiting, present = [], 0, set()
    for path in paths:
        name = os.fsdecode(path.relative_to(root))
        present.add(name)
        try:
            st = path.stat()
        except OSError:
            continue  # vanished meanwhile
        sig = [st.st_size, st.st_mtime_ns]
        if state.seen.get(name) == sig:
            continue
        if _settled(name, sig, state.pending, settle_s, now):
            ready.append((sig[1], name, path, sig))
        else:
            waiting += 1
    state.seen = {k: v for k, v in state.seen.items() if k in present}
    state.pending = {k: v for k, v in state.pending.items() if k in present}
    ready.sort(key=lambda r: (r[0], r[1]))
    return Scan([(name, path, sig) for _, name, path, sig in ready], waiting)


def _settled(name: str, sig: list[int], pending: dict, settle_s: float, now: float) -> bool:
    if now - sig[1] / 1e9 >= settle_s:
        return True
    seen = pending.get(name)
    if seen is not None and seen[:2] == sig:
        return now - seen[2] >= settle_s
    pending[name] = [*sig, now]
    return False


def decode_new(found: Scan, state: WatchState, resolution: int, crop_pct: float) -> tuple[list[str], torch.Tensor, list[dict]]:
    """Decode the ready files: (names, uint8 N x 3 x R x R, skipped [{path, reason}]); marks them taken."""
    names, arrays, skipped = [], [], []
    for name, path, sig in found.ready:
        try:
            arr, reason = decode_image(path, resolution, crop_pct), None
        except SkipImage as exc:
            arr, reason = None, exc.reason
        state.pending.pop(name, None)
        if _changed(path, sig):  # written to while we read it: it waits to settle again
            continue
        state.seen[name] = sig
        if arr is None:
            skipped.append({"path": name, "reason": reason})
        else:
            names.append(name)
            arrays.append(torch.from_numpy(arr).permute(2, 0, 1))
    pixels = torch.stack(arrays) if arrays else torch.empty((0, 3, resolution, resolution), dtype=torch.uint8)
    return names, pixels, skipped


def _changed(path: Path, sig: list[int]) -> bool:
    try:
        st = path.stat()
    except OSError:
        return True
    return [st.st_size, st.st_mtime_ns] != sig


class Window:
    """The newest ``capacity`` images, oldest first."""

    def __init__(self, capacity: int, resolution: int, pixels: torch.Tensor | None = None, names: list[str] | None = None):
        self.capacity, self.resolution = capacity, resolution
        self.pixels = pixels if pixels is not None else torch.empty((0, 3, resolution, resolution), dtype=torch.uint8)
        self.names = list(names or [])

    def __len__(self) -> int:
        return len(self.names)

    def add(self, names: list[str], pixels: torch.Tensor) -> None:
        """Append (a name already in the window, e.g. a file rewritten in place, replaces its entry)."""
        again = set(names)
        keep = [i for i, n in enumerate(self.names) if n not in again]
        if len(keep) < len(self.names):
            self.pixels, self.names = self.pixels[keep], [self.names[i] for i in keep]
        self.pixels = torch.cat([self.pixels, pixels])[-self.capacity:]
        self.names = (self.names + names)[-self.capacity:]

    def newest(self, n: int) -> ImageSet:
        """The newest ``n`` images as the ``ImageSet`` adapt's stages take (unlabeled)."""
        n = min(n, len(self))
        start = len(self) - n
        return ImageSet(pixels=self.pixels[start:], paths=self.names[start:], labels=None, classes=None, found=n)


def load_state(deploy: Path, capacity: int, resolution: int) -> tuple[WatchState, Window, str | None]:
    """The saved state and window; a missing or unreadable one starts afresh (third item says why)."""
    if not (deploy / STATE_NAME).exists():
        return WatchState(), Window(capacity, resolution), None
    try:
        raw = json.loads((deploy / STATE_NAME).read_text())
        if raw.pop("format", None) != STATE_FORMAT:
            raise ValueError("not a watch state file")
        state = WatchState(**raw)
        saved = torch.load(deploy / WINDOW_NAME, weights_only=True)
        pixels, names = saved["pixels"], list(saved["names"])
        if len(pixels) != len(names) or tuple(pixels.shape[1:]) != (3, resolution, resolution):
            raise ValueError("the window's pixels do not match its names or the model's resolution")
    except (OSError, ValueError, TypeError, KeyError, RuntimeError) as exc:
        return WatchState(), Window(capacity, resolution), f"the saved state was unusable ({exc}); starting afresh"
    window = Window(capacity, resolution)
    window.add(names, pixels)  # a smaller --window than last time trims it
    return state, window, None


def save_state(deploy: Path, state: WatchState, window: Window) -> None:
    """Atomically: the window (names with their pixels), then the state."""
    with atomic_path(deploy / WINDOW_NAME) as tmp:
        torch.save({"pixels": window.pixels.contiguous(), "names": list(window.names)}, tmp)
    atomic_write(deploy / STATE_NAME, json.dumps({"format": STATE_FORMAT, **asdict(state)}) + "\n")
