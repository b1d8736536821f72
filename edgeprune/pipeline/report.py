"""report.json (stable, documented keys) and report.md for an adaptation run."""

from __future__ import annotations

import json
from pathlib import Path

from ..deploy.outputs import atomic_write
from ..formatting import json_safe, percent

REPORT_SCHEMA = "edgeprune.adapt-report"
REPORT_VERSION = 1


def write_json(path: Path, data: dict) -> None:
    atomic_write(path, json.dumps(json_safe(data), indent=2, sort_keys=False) + "\n")


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
        f"- latency saving: predicted {percent(r['predicted_saving'])}, measured {percent(r['measured_saving'])} "
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
        f"| original | 100.0% | {percent(fid['accuracy_original'])} |",
        f"| pruned, before distillation | {percent(fid['agreement_before'])} | {percent(fid['accuracy_before'])} |",
        f"| pruned + distilled | {percent(fid['agreement_after'])} | {percent(fid['accuracy_after'])} |",
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
    lines += int8_lines(r) + tensorrt_int8_lines(r)
    par = r.get("onnx_parity") or {}
    if par:
        lines.append(f"ONNX parity: max |logit diff| {par.get('max_abs_diff', float('nan')):.2e}, top-1 agreement {percent(par.get('top1_agreement'))}.")
    for w in r.get("warnings", []):
        lines.append(f"- warning: {w}")
    for e in r.get("errors", []):
        lines.append(f"- error: {e}")
    return "\n".join(lines) + "\n"


def int8_lines(r: dict) -> list[str]:
    """report.md's INT8 section: calibration, nodes kept in float, the gate, latency per precision."""
    q = r.get("int8")
    if not q:
        return []
    cal, gate, lat = q["calibration"], q["gate"], r.get("measured_latency") or {}
    lines = ["## INT8 deployment", "",
             f"- deployed: `{r.get('deployed')}`; {'passed' if q['passed'] else 'FAILED'} the gate: top-1 agreement "
             f"{percent(gate['agreement'])} with the fp32 adapted model on {gate['inputs']} (minimum {percent(gate['min_agreement'])}), "
             f"confident images {percent(gate['confident_agreement'])}, KL {_num(gate['kl_original_adapted'])}",
             f"- calibration: {cal['images']} images ({cal['source']}), {cal['method']}, per-channel {cal['per_channel']}, "
             f"reduce_range {cal['reduce_range']}, {cal['activation_type']} activations / {cal['weight_type']} weights, QDQ",
             f"- nodes kept in float: {len(q['keep_float'])}" + "".join(f"\n  - `{k['name']}` ({k['op']}): {k['reason']}" for k in q["keep_float"]),
             "", "| candidate | float nodes | median ms | speed-up vs fp32 | agreement | passed |", "|---|---|---|---|---|---|"]
    lines += [f"| {c['name']} | {c['float_nodes']} | {c['median_ms']:.3g} | {c['speedup_vs_fp32']:.2f}x | {percent(c['agreement'])} "
              f"| {'yes' if c['passed'] else 'no'} |" for c in q["candidates"]]
    if "int8_adapted_ms" in lat:
        lines += ["", "| latency (ONNX Runtime, interleaved) | median ms | p90 ms | p95 ms |", "|---|---|---|---|"]
        for key, label in (("original", "fp32 original"), ("adapted", "fp32 adapted"), ("int8_adapted", "int8 adapted")):
            s = lat[key]
            lines.append(f"| {label} | {s['median_ms']:.3g} | {s['p90_ms']:.3g} | {_num(s.get('p95_ms'))} |")
        lines.append(f"\nint8 adapted vs fp32 original: {lat['int8_speedup_vs_original']:.2f}x faster "
                     f"(int8 alone {lat['int8_speedup_vs_adapted']:.2f}x)")
    return lines + [""]


def tensorrt_int8_lines(r: dict) -> list[str]:
    """report.md's TensorRT INT8 lines: the symmetric graph's gate and the engine, or how to build it."""
    q = (r.get("tensorrt") or {}).get("int8")
    if not q:
        return []
    if "gate" not in q:
        return [f"TensorRT INT8: not built ({q['reason']}); on the target: `{q['build_on_target']}`", ""]
    gate, build = q["gate"], q.get("engine_build") or {}
    engine = (f"`{q['engine']}` built (TensorRT {build.get('tensorrt_version')}, float layers {build.get('float_layers')})"
              if q.get("engine") else f"no engine: {q.get('engine_error') or 'the graph failed the gate'}")
    verdict = "passed" if q["passed"] else "FAILED"
    return [f"TensorRT INT8: `model.int8.tensorrt.onnx` (symmetric QDQ) {verdict} the gate in ONNX Runtime: "
            f"top-1 agreement {percent(gate['agreement'])} on {gate['inputs']}; {engine}", ""]


def write_report(folder: Path, report: dict) -> None:
    report = {"schema": REPORT_SCHEMA, "schema_version": REPORT_VERSION, **report}
    write_json(folder / "report.json", report)
    atomic_write(folder / "report.md", render_markdown(json_safe(report)))
