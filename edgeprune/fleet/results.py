"""A sweep's results table: ``results.json`` + ``results.md``, rewritten atomically as units finish.

``results.json`` (schema ``edgeprune.sweep-results``, version 1): {schema, schema_version, config
(the sweep's config as read), axes, created, updated, units: {key: {params, status ("ok" |
"failed"), result | error, worker, finished}}}. A resumed sweep reads it and skips every unit
whose status is "ok"; failed units run again.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

from ..deploy.outputs import atomic_write
from ..errors import OutputError

SCHEMA = "edgeprune.sweep-results"
SCHEMA_VERSION = 1


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class ResultsTable:
    def __init__(self, folder: Path, config: dict, axes: list[str], columns: list[tuple[str, str]]):
        """``columns``: (header, result key) pairs shown in results.md after the axes."""
        self.folder, self.axes, self.columns = Path(folder), axes, columns
        self.data = {"schema": SCHEMA, "schema_version": SCHEMA_VERSION, "config": config, "axes": axes,
                     "created": _now(), "updated": None, "units": {}}
        path = self.folder / "results.json"
        if path.is_file():
            self._resume(path)

    def _resume(self, path: Path) -> None:
        try:
            old = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise OutputError(f"cannot resume from {path}: {exc}", "move it away to start the sweep afresh") from None
        if not isinstance(old, dict) or old.get("schema") != SCHEMA:
            raise OutputError(f"{path} is not an edgeprune sweep results file", "give another --out")
        self.data["units"] = old.get("units", {})
        self.data["created"] = old.get("created", self.data["created"])

    def done(self) -> set[str]:
        """Keys of the units that finished successfully (a resumed sweep skips them)."""
        return {k for k, u in self.data["units"].items() if u.get("status") == "ok"}

    def record(self, key: str, params: dict, outcome: dict) -> None:
        self.data["units"][key] = {"params": params, **outcome, "finished": _now()}
        self.write()

    def write(self) -> None:
        self.data["updated"] = _now()
        self.folder.mkdir(parents=True, exist_ok=True)
        atomic_write(self.folder / "results.json", json.dumps(self.data, indent=1, default=str) + "\n")
        atomic_write(self.folder / "results.md", self.markdown())

    def markdown(self) -> str:
        units = self.data["units"]
        head = ["unit", *self.axes, "status", *(h for h, _ in self.columns), "seconds", "worker (device, load 1 min)"]
        lines = [f"# Sweep results ({len(units)} units, {len(self.done())} ok)", "",
                 "Timings are comparable only within a unit (one worker, one load); each row names its worker.", "",
                 "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for key, u in sorted(units.items(), key=lambda kv: [str(kv[1]["params"].get(a)) for a in self.axes]):
            res, w = u.get("result") or {}, u.get("worker") or {}
            cells = [key[:8], *(_cell(u["params"].get(a)) for a in self.axes),
                     u["status"] if u["status"] == "ok" else f"failed: {u.get('error', '')[:80]}",
                     *(_cell(res.get(k)) for _, k in self.columns), _cell(w.get("seconds")),
                     f"{w.get('host', '?')} {w.get('device', '?')}, {_cell((w.get('load_avg_start') or [None])[0])}"]
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines) + "\n"


def _cell(v) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, (list, tuple)):
        return ", ".join(map(str, v))
    return str(v).replace("|", "\\|")
