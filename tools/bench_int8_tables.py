"""docs/benchmarks/int8.md from int8.json (tools/bench_int8.py)."""

from __future__ import annotations

from edgeprune.cli.inspect_commands import float_rule_lines
from edgeprune.formatting import percent


def _x(v) -> str:
    return "n/a" if v is None else f"{v:.2f}x"


def markdown(d: dict) -> str:
    goal = d["goal"]
    lines = [
        "# INT8 deployment: k = 3 pruned + INT8 vs the fp32 original (ONNX Runtime, CPU)",
        "",
        f"Command: `{d['command']}`  ",
        f"Commit: `{d['commit']}`{' (uncommitted changes: ' + ', '.join(d['dirty_paths']) + ')' if d['dirty'] else ''}; "
        f"created {d['created']}.  ",
        f"Machine: {d['machine']['cpu']}, {d['machine']['cpus']} CPUs, ISA flags {', '.join(d['machine']['isa'])} (no VNNI), "
        f"onnxruntime {d['machine']['onnxruntime']}; load average {_load(d['machine'])}."
        + (f"  \nStream: `{d['machine']['stream']}`." if d["machine"].get("stream") else ""),
        "",
        "**How it is measured.** Per model: an INT8 latency profile measured here (`edgeprune profile --precision int8`), "
        "the TT-MPD plan for k = 3 on that profile (adapt's scoring and surgery stages on a real-photo stream: "
        "`tools/make_photo_stream.py`, clean/fog/Gaussian-noise round robin), **no distillation** (the goal compares "
        "INT8 with fp32 of the same pruned model; latency does not depend on the weights' values), then the INT8 graphs of "
        "the pruned model built exactly as `adapt --deploy-precision int8` builds it (static QDQ, "
        "calibrated on the stream's fine-tune images, the measured float-node rule, the gate on held-out images) and of the "
        "original fully quantised with the same calibration (for the INT8-only factor); where the rule kept nodes in float, "
        "also the pruned model fully quantised (\"no float nodes\": its factor, with its agreement in brackets). A graph "
        "that fails the gate is still timed, and the table says it failed. The four or five "
        "graphs are timed **together, interleaved** (round robin, order shuffled per round) for the whole budget; figures "
        "are medians. The machine is shared with another long benchmark running at normal priority (this one at "
        f"{_nice(d['machine'])}), so absolute milliseconds are inflated and noisy; the ratios, measured interleaved, are "
        "what to read.",
        "",
        f"Goal (issue 13): k = 3 + INT8 >= {goal['speedup_vs_fp32_original']:.1f}x faster than the fp32 original, with "
        f"held-out top-1 agreement >= {goal['agreement_int8_vs_fp32_adapted']:.2f} against the fp32 pruned model.",
        "",
        "| model | weights | threads | fp32 original ms | fp32 pruned ms | int8 original ms | int8 pruned ms | "
        "prune only | INT8 only (pruned) | INT8 only (original) | **pruned + INT8** | pruned + INT8, no float nodes "
        "| agreement int8 vs fp32 pruned (all / confident images) | gate | goal |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, m in d["models"].items():
        fid = m["agreement"]["int8_pruned_vs_fp32_pruned"] or {}
        agree, gate = fid.get("agreement"), "passed" if m["int8"]["pruned"]["passed"] else "FAILED"
        for label, s in m["timings"].items():
            f = m["factors"][label]
            speed = f.get("pruned_int8_vs_fp32_original")
            met = speed is not None and agree is not None and speed >= goal["speedup_vs_fp32_original"] \
                and agree >= goal["agreement_int8_vs_fp32_adapted"]
            ms = {k: f"{v['median_ms']:.2f}" for k, v in s.items()}
            lines.append(f"| {name} | {_weights(name, m)} | {label} | {ms['fp32_original']} "
                         f"| {ms['fp32_pruned']} | {ms.get('int8_original', 'n/a')} | {ms.get('int8_pruned', 'n/a')} "
                         f"| {_x(f['prune_only'])} | {_x(f.get('int8_only_on_pruned'))} | {_x(f.get('int8_only_on_original'))} "
                         f"| **{_x(speed)}** | {_full(m, f)} | {percent(agree)} / {percent(fid.get('confident_agreement'))} "
                         f"({fid.get('confident_images')} images) | {gate} | {'met' if met else 'missed'} |")
    lines.append("")
    lines += tensorrt_table(d["models"])
    for name, m in d["models"].items():
        lines += _model_section(name, m)
    return "\n".join(lines) + "\n"


def tensorrt_table(models: dict) -> list[str]:
    """The TensorRT target's symmetric graph beside the CPU graph (models built with --tensorrt-graph)."""
    rows = [(n, m) for n, m in models.items() if "tensorrt_pruned" in m["int8"]]
    if not rows:
        return []
    lines = ["TensorRT target (`--tensorrt-graph`): the pruned model's symmetric QDQ graph (`Int8Config.for_tensorrt()`, "
             "as adapt writes `model.int8.tensorrt.onnx`), run in ONNX Runtime on this CPU against the fp32 pruned model on "
             "the same held-out images. **Not timed**: its CPU latency says nothing of a TensorRT engine's on a GPU.", "",
             "| model | weights | graph | chosen (float nodes) | fully quantised candidate | agreement (all / confident images) "
             "| KL | gate |", "|---|---|---|---|---|---|---|---|"]
    for name, m in rows:
        for label, key, fid in (("CPU (ONNX Runtime)", "pruned", "int8_pruned_vs_fp32_pruned"),
                                ("TensorRT (symmetric)", "tensorrt_pruned", "int8_tensorrt_pruned_vs_fp32_pruned (not timed)")):
            q, f = m["int8"][key], m["agreement"][fid] or {}
            full = next((c["agreement"] for c in q["candidates"] if c["name"] == "all"), None)
            lines.append(f"| {name} | {_weights(name, m)} | {label} | `{q['chosen']}` ({len(q['keep_float'])}) | {percent(full)} "
                         f"| {percent(f.get('agreement'))} / {percent(f.get('confident_agreement'))} "
                         f"({f.get('confident_images')} images) | {f.get('kl_original_adapted', float('nan')):.4f} "
                         f"| {'passed' if q['passed'] else 'FAILED'} |")
    return lines + [""]


def _full(m: dict, factors: dict) -> str:
    """pruned + fully quantised INT8 vs the fp32 original, where the rule kept nodes in float."""
    if not m["int8"]["pruned"]["keep_float"]:
        return "(the same graph)"
    full = factors.get("pruned_full_int8_vs_fp32_original")
    return "n/a" if full is None else f"{full:.2f}x ({percent(m['agreement']['int8_pruned_full_vs_fp32_pruned']['agreement'])})"


def _weights(name: str, m: dict) -> str:
    random = m.get("random_weights", name != "efficientnet_lite0")  # runs before the key was recorded
    return "random" if random else "real"


def _nice(machine: dict) -> str:
    return f"nice {machine['nice']}" if "nice" in machine else "`nice -n 10`"


def _load(machine: dict) -> str:
    start, end = machine.get("loadavg_start"), machine.get("loadavg_end")
    fmt = lambda v: "/".join(f"{x:.1f}" for x in v) if v else "n/a"  # noqa: E731
    return f"{fmt(start)} at the start, {fmt(end)} at the end (1/5/15 min)"


def _model_section(name: str, m: dict) -> list[str]:
    q, ag = m["int8"]["pruned"], m["agreement"]
    lines = [f"## {name}", "", f"- weights: {m['weights']}",
             f"- removed (k = {len(m['removed_blocks'])}, TT-MPD on the INT8 profile): "
             + ", ".join(f"`{b}`" for b in m["removed_blocks"]) + f"; predicted INT8 saving {percent(m['predicted_saving_int8_profile'])}",
             f"- images: {m['images']['calibration']} calibration (fine-tune images), {m['images']['held_out']} held out, "
             f"stream of {m['images']['stream']} crops of about 19 source photos (held-out agreement is correlated across images)",
             f"- calibration: {q['calibration']['method']}, per-channel {q['calibration']['per_channel']}, reduce_range "
             f"{q['calibration']['reduce_range']}, {q['calibration']['activation_type']}/{q['calibration']['weight_type']}, QDQ",
             f"- float-node rule on the pruned model: chose `{q['chosen']}`; {len(q['keep_float'])} node(s) kept in float"]
    lines += [f"  - `{k['name']}` ({k['op']}): {k['reason']}" for k in q["keep_float"][:20]]
    lines += ["", "| candidate (pruned model) | float nodes | median ms | vs fp32 | agreement | passed |", "|---|---|---|---|---|---|"]
    lines += [f"| {c['name']} | {c['float_nodes']} | {c['median_ms']:.2f} | {_x(c['speedup_vs_fp32'])} | {percent(c['agreement'])} "
              f"| {'yes' if c['passed'] else 'no'} |" for c in q["candidates"]]
    lines += ["", "| held-out fidelity | top-1 agreement | top-5 overlap | confident images | agreement there | KL "
              "| reference's distinct top-1 classes |", "|---|---|---|---|---|---|---|"]
    for label, f in ag.items():
        if f:
            lines.append(f"| {label} | {percent(f['agreement'])} | {percent(f['top5_overlap'])} | {f['confident_images']} "
                         f"| {percent(f['confident_agreement'])} | {f['kl_original_adapted']:.4f} "
                         f"| {f.get('reference_top1_classes', 'n/a')} |")
    for label, s in m["timings"].items():
        lines += ["", f"Latency, {label} (ms; n = {min(v['n'] for v in s.values())} interleaved rounds):", "",
                  "| graph | median | p90 | p95 | p99 | robust CV |", "|---|---|---|---|---|---|"]
        lines += [f"| {k} | {v['median_ms']:.3f} | {v['p90_ms']:.3f} | {v['p95_ms']:.3f} | {v['p99_ms']:.3f} | {percent(v['cv'])} |"
                  for k, v in s.items()]
    trt = m["int8"].get("tensorrt_pruned")
    if trt:
        lines += ["", f"TensorRT target (symmetric graph of the pruned model, not timed): chose `{trt['chosen']}`, "
                  f"{len(trt['keep_float'])} node(s) kept in float; candidates' agreement: "
                  + ", ".join(f"{c['name']} {percent(c['agreement'])}" for c in trt["candidates"])
                  + "".join(f", sensitive-{s['float_nodes']} {percent(s['agreement'])}" for s in (trt.get("sensitivity") or {}).get("steps", []))]
    savings = sorted(m["profile"]["savings"].items(), key=lambda kv: -kv[1])
    lines += ["", "INT8 profile savings (largest first): " + ", ".join(f"`{n}` {percent(v)}" for n, v in savings), ""]
    rule = float_rule_lines({"backend": {"quantisation": m["profile"].get("quantisation")}})
    if rule:  # the profile's speed rule (profiles measured before it have none)
        lines += [f"- {ln}" for ln in rule] + [""]
    if q.get("warnings"):
        lines += ["onnxruntime's quantiser warned: " + "; ".join(q["warnings"][:5]), ""]
    return lines
