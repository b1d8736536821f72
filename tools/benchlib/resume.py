"""--resume: carry on a stopped run in the same --out, with the same code and the same settings.

A full run (3 seeds x 2 models x 7 streams) takes longer than one sitting on a 2-core machine; a
resumed run keeps every finished unit and runs only the others. It refuses when the code (git
commit, clean tree) or any setting that changes a row differs from the stopped run's: rows from two
revisions would be compared in one table without saying so."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

from edgeprune.errors import UsageError

# Settings that decide where and how long units run, not what a row contains.
RUN_ONLY = ("engine", "ray_address", "workers", "time_budget_s", "out", "resume", "allow_dirty")


def _comparable(config: dict) -> dict:
    plain = json.loads(json.dumps(config, default=str))  # tuples -> lists, Paths -> str, as results.json has them
    return {k: v for k, v in plain.items() if k not in RUN_ONLY}


def load_previous(out: Path, config: dict, provenance: dict) -> dict:
    """The stopped run's results.json; UsageError when it cannot be resumed with this code and config."""
    path = Path(out) / "results.json"
    if not path.is_file():
        raise UsageError(f"--resume needs {path}: there is no run to carry on in {out}")
    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise UsageError(f"--resume cannot read {path}: {exc}") from exc
    before = old.get("provenance", {})
    if provenance.get("dirty") is not False or before.get("dirty") is not False:
        raise UsageError("--resume needs both runs made from a committed, clean tree (the stopped run's "
                         f"dirty={before.get('dirty')}, now dirty={provenance.get('dirty')})")
    if before.get("commit") != provenance.get("commit"):
        raise UsageError(f"--resume: the stopped run measured commit {before.get('commit')}, this tree is "
                         f"{provenance.get('commit')}; check that commit out (git worktree) to carry it on")
    was, now = _comparable(old.get("config", {})), _comparable(config)
    changed = sorted(k for k in was.keys() | now.keys() if was.get(k) != now.get(k))
    if changed:
        raise UsageError("--resume: settings differ from the stopped run's: "
                         + ", ".join(f"{k} {was.get(k)!r} -> {now.get(k)!r}" for k in changed))
    return old


def finished_outcomes(old: dict) -> dict[tuple, tuple]:
    """(model, seed, corruption) -> (unit id, severity, outcome) of every unit the stopped run finished,
    in the shape the collector keeps for a unit that has just finished."""
    done = {}
    for u in old.get("units_done", []):
        key = (u["model"], u["seed"], u["corruption"])
        rows = [r for r in old["rows"] if (r["model"], r["seed"], r["corruption"]) == key]
        outcome = {"status": "ok", "worker": u["worker"],
                   "result": {"rows": rows, "order": u["order"], "seconds": u["seconds"], "latency": {}}}
        done[key] = ({"model": u["model"], "seed": u["seed"], "corruption": u["corruption"]}, u["severity"], outcome)
    return done


def carry_over(result: dict, old: dict) -> float:
    """What the new result keeps of the stopped run: its start, its latency measurements and a record of
    each sitting (when it started, how many units were finished by then). Returns the stopped run's
    wall time (a run killed before its end recorded none: its setup and units are summed instead)."""
    result["started"] = old.get("started", result["started"])
    result["latency"] = old.get("latency", {})
    before = old.get("elapsed_s")
    if before is None:
        before = old.get("setup_s", 0.0) + sum(u["seconds"] for u in old.get("units_done", []))
    result["sittings"] = old.get("sittings", [{"started": old.get("started"), "units_done_before": 0}])
    result["sittings"][-1]["elapsed_s"] = before - sum(s.get("elapsed_s", 0.0) for s in result["sittings"][:-1])
    result["sittings"].append({"started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                               "units_done_before": len(old.get("units_done", []))})
    return before
