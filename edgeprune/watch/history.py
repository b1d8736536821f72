"""``history.jsonl``: one JSON object per line for every decision (cycles, promotions,
rejections, rollbacks, recoveries, stops). Appended with a flush and fsync; a line cut short by a
crash or a full disk is skipped when read."""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..formatting import json_safe

HISTORY_NAME = "history.jsonl"


def append(deploy: Path, entry: dict) -> str | None:
    """Append ``entry``; returns None, or why it could not be written (the caller reports it)."""
    line = json.dumps(json_safe(entry), sort_keys=False) + "\n"
    path = deploy / HISTORY_NAME
    try:
        with open(path, "a+b") as f:
            if f.tell() and (f.seek(-1, os.SEEK_END), f.read(1))[1] != b"\n":
                line = "\n" + line  # a line cut short earlier stays on its own line
            f.write(line.encode("utf-8"))
            f.flush()
            os.fsync(f.fileno())
    except OSError as exc:
        return f"could not append to {path}: {exc.strerror or exc}"
    return None


def read(deploy: Path) -> list[dict]:
    path = deploy / HISTORY_NAME
    if not path.exists():
        return []
    entries = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            entries.append(json.loads(line))
        except ValueError:
            continue
    return entries
