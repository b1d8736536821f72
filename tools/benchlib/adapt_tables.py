"""adapt_speed.md: the generated tables and goals of tools/bench_adapt.py (between markers; the
prose around them is kept)."""

from __future__ import annotations

from pathlib import Path

from .adapt_study import PAPER_RECIPE


def _f(v, fmt="{:.2f}"):
    return "n/a" if v is None else fmt.format(v)


def _e2e_lines(e: dict) -> list[str]:
    if "error" in e:
        return ["End-to-end run failed: ```" + e["error"][-500:] + "```", ""]
    lines = ["### End to end: `edgeprune adapt` at defaults, efficientnet_lite0, 224 px, k=3", "",
             f"Removed {', '.join(e['removed_blocks'])}; scope {e['train_scope']}, precision {e['precision']}, "
             f"threads {(e.get('hardware') or {}).get('threads')}, micro-batch {e['distillation'].get('micro_batch')}, "
             f"early stop: {e['early_stop'].get('reason')} (steps {e['early_stop'].get('steps_done')}).", "",
             "| phase | wall s | floor s | efficiency |", "|---|---|---|---|"]
    ph = e["compute_floor"]["phases"]
    for k, v in e["timings"].items():
        p = ph.get({"finetune": "distillation"}.get(k, k), {})
        lines.append(f"| {k} | {v:.1f} | {_f(p.get('floor_s'))} | {_f(p.get('efficiency'))} |")
    if "distillation" in ph:
        d = ph["distillation"]
        lines.append(f"| distill loop | {d['actual_s']:.1f} | {d['floor_s']:.1f} | {d['efficiency']:.2f} |")
    f = e["fidelity"]
    return lines + [
        "", f"Wall time of the command: **{e['wall_s'] / 60:.1f} min** (1-min load average of the machine at its start / "
            f"end: {_f(e.get('loadavg_start'), '{:.1f}')} / {_f(e.get('loadavg_end'), '{:.1f}')}); peak memory "
            f"**{e['peak_memory_mb']:.0f} MiB** (report; by phase {e.get('peak_memory_by_phase_mb')}), "
            f"{e['child_peak_rss_mb']:.0f} MiB (rusage of the child); held-out agreement before / after distillation "
            f"{f['agreement_before']:.3f} / {f['agreement_after']:.3f} on {f['held_out']} images; measured latency saving "
            f"{_f(e.get('measured_saving'), '{:.1%}')}.", ""]


def _variant_row(name: str, v: dict) -> str:
    ext = v.get("extrapolated")
    dist = (f"{ext['distill_s_500_extrapolated']:.0f} (EXTRAPOLATED from {ext['steps_measured']} steps)" if ext
            else f"{v['distill_s']:.0f}")
    es = v["early_stop"]
    es_txt = f"stopped at {es['stopped_at']}" if es.get("stopped_at") else ("on, ran all" if es.get("enabled") else "off")
    return (f"| {name} | {v['train_scope_used']} | {v['precision_used']} | {v['steps_done']} | {dist} | "
            f"{v['step_s_median']:.2f} | {v['step_cpu_s_median']:.2f} | {v['floor_s']:.0f} | {_f(v['efficiency'])} | "
            f"{_f(v.get('held_out_agreement'), '{:.3f}')} | {_f(v.get('held_out_feature_mse'), '{:.4f}')} | {es_txt} |")


def _study_lines(key: str, s: dict) -> list[str]:
    steps = max(v["steps_done"] for v in s["variants"].values())
    pl = s["pseudo_labels_s"]
    lines = [f"### In-process interleaved study `{key}`: {s['model']} ({s['weights']}), removed "
             f"{', '.join(s['removed_blocks'])}, {steps} requested steps (schedule scaled to them)", "",
             f"{s['images']['finetune']} fine-tune images, {s['images']['held_out']} held out; frozen prefix ends before "
             f"`{s['prefix_stage']}`; cached prefix {s['cached_prefix_mb']:.0f} MB + labels {s['labels_mb']:.0f} MB (fp16). "
             f"Matmul throughput: fp32 {s['matmul_gflops']['fp32']:.0f} GFLOP/s, bf16 {s['matmul_gflops']['bf16']:.0f} "
             f"GFLOP/s. Pruned without distillation: agreement {s['agreement_pruned_no_distill']:.3f}.", "",
             f"Pseudo-label pass (alternated, 2 rounds): plain {', '.join(f'{v:.1f}' for v in pl['plain'])} s; "
             f"fast (+ prefix cache) {', '.join(f'{v:.1f}' for v in pl['fast'])} s.", "",
             "| variant | scope | precision | steps | distill s | median s/step | CPU s/step | floor s | efficiency | "
             "agreement | feature MSE | early stop |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    return lines + [_variant_row(name, v) for name, v in s["variants"].items()] + [""]


def _threads_lines(th: dict) -> list[str]:
    lines = ["### Threads and OpenMP wait policy (suffix step, bf16, batch 64; fresh process each, alternated)", "",
             "| setting | median s/step per round | 1-min load average per round |", "|---|---|---|"]
    for k, v in th.items():
        lines.append(f"| {k} | {', '.join(f'{x:.2f}' for x in v['median_step_s'])} | "
                     f"{', '.join(f'{x:.1f}' for x in v['load'])} |")
    return lines + [""]


def _small_lines(sm: dict) -> list[str]:
    if "skipped" in sm:
        return [f"### Small Fashion-MNIST source models: skipped ({sm['skipped']})", ""]
    lines = [f"Stream: {sm.get('stream')}. Not ready (no cached weights): {sm.get('not_ready') or 'none'}.", ""]
    for name, s in sm.items():
        if not isinstance(s, dict) or "variants" not in s:
            continue
        lines += [f"### {name}: removed {', '.join(s['removed_blocks'])}, prefix ends before `{s['prefix_stage']}`", "",
                  f"Held out {s['images']['held_out']} images: original accuracy {_f(s['accuracy_original'], '{:.3f}')}, "
                  f"pruned without distillation {_f(s['accuracy_pruned_no_distill'], '{:.3f}')}.", "",
                  "| variant | scope | precision | steps | distill s | median s/step | accuracy | agreement | efficiency |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for vn, v in s["variants"].items():
            lines.append(f"| {vn} | {v['train_scope_used']} | {v['precision_used']} | {v['steps_done']} | "
                         f"{v['distill_s']:.1f} | {v['step_s_median']:.3f} | {_f(v.get('held_out_accuracy'), '{:.3f}')} | "
                         f"{_f(v.get('held_out_agreement'), '{:.3f}')} | {_f(v['efficiency'])} |")
        lines.append("")
    return lines


def tables(data: dict) -> str:
    cmds = data.get("commands") or [data["command"]]
    m = data["machine"]
    lines = [f"Generated by `{'` + `'.join(cmds)}` (last on {data['created']}; {m['cpu']}, {m['cpus']} CPUs, torch "
             f"{m['torch']}; {m['bf16']}).", ""]
    if data.get("e2e"):
        lines += _e2e_lines(data["e2e"])
    for key in sorted(k for k in data if k.startswith("lite0")):
        lines += _study_lines(key, data[key])
    if data.get("threads"):
        lines += _threads_lines(data["threads"])
    if data.get("small_models"):
        lines += _small_lines(data["small_models"])
    return "\n".join(lines + goals(data))


# ------------------------------------------------------------------------------ goals
def _paper_best(variants: dict) -> tuple[str, dict] | None:
    """The faster of the paper-recipe variants that ran to the end (not extrapolated)."""
    done = [(n, variants[n]) for n in PAPER_RECIPE if n in variants and "extrapolated" not in variants[n]]
    return min(done, key=lambda nv: nv[1]["distill_s"]) if done else None


def _goal(ok, text) -> str:
    return f"- **{'met' if ok else 'MISSED'}**: {text}"


def _e2e_goals(e: dict) -> list[str]:
    eff = e["efficiency"].get("distillation")
    ph = e["compute_floor"]["phases"].get("distillation", {})
    return [_goal(e["wall_s"] <= 15 * 60, f"lite0 `adapt` end to end at defaults in {e['wall_s'] / 60:.1f} min (goal <= "
                                          "15 min)"),
            _goal(eff is not None and eff >= 0.5, f"distillation efficiency {_f(eff)} of the compute floor ({e['precision']} "
                                                  f"matmul throughput at the {ph.get('threads')} thread(s) it ran with; "
                                                  f"{_f(ph.get('efficiency_all_cores'))} against all cores; goal >= 0.5)"),
            _goal(e["peak_memory_mb"] <= 3 * 1024, f"peak memory {e['peak_memory_mb']:.0f} MiB (goal <= 3 GiB = 3072 MiB)")]


def _study_goal(key: str, s: dict) -> list[str]:
    if "fast" not in s["variants"] or not _paper_best(s["variants"]):
        return []
    name, paper = _paper_best(s["variants"])
    fast = s["variants"]["fast"]
    d = (fast["held_out_agreement"] - paper["held_out_agreement"]) * 100
    return [_goal(d >= -1.0, f"`{key}`: lite0 held-out agreement, fast {fast['held_out_agreement']:.3f} "
                             f"({fast['steps_done']} steps) vs paper recipe ({name}) {paper['held_out_agreement']:.3f} "
                             f"({paper['steps_done']} steps): {d:+.1f} points (goal: within 1 point); distillation "
                             f"{paper['distill_s'] / fast['distill_s']:.1f}x faster")]


def _small_goal(mname: str, m) -> list[str]:
    if not isinstance(m, dict) or "variants" not in m or "fast" not in m["variants"] or not _paper_best(m["variants"]):
        return []
    v = m["variants"]
    if "plain" not in v:
        return []
    fast, plain = v["fast"], v["plain"]  # the goal's "plain recipe": the paper's, without the fast path's layout choice
    speed = plain["distill_s"] / fast["distill_s"]
    d = (fast["held_out_accuracy"] - plain["held_out_accuracy"]) * 100
    extra = (f"; against the same recipe in channels_last layout (one of the fast path's own choices) "
             f"{v['paper_cl']['distill_s'] / fast['distill_s']:.1f}x") if "paper_cl" in v else ""
    return [_goal(speed >= 3 and d >= -0.5, f"{mname}: fast path {speed:.1f}x faster than the plain recipe in the "
                                            f"distillation phase ({plain['distill_s']:.1f} s -> {fast['distill_s']:.1f} s"
                                            f"{extra}); accuracy {fast['held_out_accuracy']:.3f} vs "
                                            f"{plain['held_out_accuracy']:.3f} ({d:+.1f} points), agreement "
                                            f"{fast['held_out_agreement']:.3f} vs {plain['held_out_agreement']:.3f} "
                                            "(goal >= 3x within 0.5 points)")]


def goals(data: dict) -> list[str]:
    """The issue's goals, each met / MISSED, from this run's numbers only."""
    out = []
    e = data.get("e2e")
    if e and "error" not in e:
        out += _e2e_goals(e)
    for key in sorted(k for k in data if k.startswith("lite0")):
        out += _study_goal(key, data[key])
    for mname, m in (data.get("small_models") or {}).items():
        out += _small_goal(mname, m)
    return ["### Goals (computed from the runs above)", ""] + out + [""] if out else []


def write_md(path: Path, body: str) -> None:
    from edgeprune.deploy.outputs import atomic_write

    begin, end = "<!-- bench:begin -->", "<!-- bench:end -->"
    text = path.read_text() if path.exists() else f"# adapt speed\n\n{begin}\n{end}\n"
    if begin not in text:
        text += f"\n{begin}\n{end}\n"
    head, rest = text.split(begin, 1)
    tail = rest.split(end, 1)[1] if end in rest else ""
    atomic_write(path, f"{head}{begin}\n{body}\n{end}{tail}")
