"""report.json (stable, documented keys) and report.md for an adaptation run."""

from __future__ import annotations

import json
import math
from pathlib import Path

from ..deploy.outputs import atomic_write

REPORT_SCHEMA = "edgeprune.adapt-report"
REPORT_VERSION = 1


def _clean(obj):
    """JSON-safe: NaN/inf become null, tuples lists, paths strings."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj


def write_json(path: Path, data: dict) -> None:
    atomic_write(path, json.dumps(_clean(data), indent=2, sort_keys=False) + "\n")


def _pct(v) -> str:
    return "n/a" if v is None else f"{100 * v:.1f}%"


def _num(v) -> str:
    # None: a figure this run did not compute (the block noise exists for TT-MPD only)
    return "n/a" if v is None else f"{v:.4g}"


def render_markdown(r: dict) -> str:
    fid = r["fidelity"]
    lines = [
        f"# edgeprune adaptation report: {r['model']}",
        "",
        f"- criterion: `{r['criterion']}`, k = {r['k']}, seed = {r['seed']}",
        f"- removed blocks: {', '.join(f'`{b}`' for b in r['removed_blocks'])}",
        f"- latency saving: predicted {_pct(r['predicted_saving'])}, measured {_pct(r['measured_saving'])} "
        f"({r.get('measured_latency', {}).get('backend', 'n/a')})",
        f"- scoring cost: {r['scoring_forward_equivalents']:.2f} full-forward equivalents "
        f"for {len(r['block_scores'])} blocks",
        f"- images: {r['images']['found']} found, {len(r['images']['skipped'])} skipped; "
        f"{r['images']['prune']} prune / {r['images']['finetune']} fine-tune / {r['images']['held_out']} held out",
        "",
        "## Fidelity on held-out images",
        "",
        "| model | agreement with original | accuracy |",
        "|---|---|---|",
        f"| original | 100.0% | {_pct(fid['accuracy_original'])} |",
        f"| pruned, before distillation | {_pct(fid['agreement_before'])} | {_pct(fid['accuracy_before'])} |",
        f"| pruned + distilled | {_pct(fid['agreement_after'])} | {_pct(fid['accuracy_after'])} |",
        "",
        "## Block scores (ascending importance = removed first)",
        "",
        "| block | noise L | capacity gap G | latency saving LS | importance I | removed |",
        "|---|---|---|---|---|---|",
    ]
    for s in sorted(r["block_scores"], key=lambda s: s["importance"]):
        lines.append(
            f"| `{s['name']}` | {_num(s.get('noise'))} | {s['capacity_gap']:.4f} | {s['latency_saving']:.4f} "
            f"| {s['importance']:.4g} | {'yes' if s['name'] in r['removed_blocks'] else ''} |"
        )
    t = r["timings"]
    lines += ["", "## Time (seconds)", "", "| " + " | ".join(t) + " |", "|" + "---|" * len(t),
              "| " + " | ".join(f"{v:.1f}" for v in t.values()) + " |", ""]
    par = r.get("onnx_parity") or {}
    if par:
        lines.append(f"ONNX parity: max |logit diff| {par.get('max_abs_diff', float('nan')):.2e}, top-1 agreement {_pct(par.get('top1_agreement'))}.")
    for w in r.get("warnings", []):
        lines.append(f"- warning: {w}")
    for e in r.get("errors", []):
        lines.append(f"- error: {e}")
    return "\n".join(lines) + "\n"


def write_report(folder: Path, report: dict) -> None:
    report = {"schema": REPORT_SCHEMA, "schema_version": REPORT_VERSION, **report}
    write_json(folder / "report.json", report)
    atomic_write(folder / "report.md", render_markdown(_clean(report)))
