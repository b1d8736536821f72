"""Benchmark of adapt's distillation fast path against the paper's plain recipe (not a test).

    python tools/bench_adapt.py [--work out/bench_adapt] [--plain-steps 12] [--skip-e2e] [--quick]

What it runs (everything in ONE process except the end-to-end CLI run, and the compared
variants interleaved so that load from other processes on the shared CPU hits them alike):

1. ``edgeprune adapt`` end to end at its defaults on efficientnet_lite0 (real ImageNet weights,
   224 px, k=3) over a stream of real photos (tools/make_photo_stream.py), in a subprocess:
   wall time, per-phase timings, peak memory, compute-floor efficiency, early stop.
2. The same prune plan in-process, then
   * pseudo-labels: plain (labels only, NCHW) and fast (labels + cached prefix, one pass,
     channels_last) alternated, 2 rounds each;
   * distillation variants stepped round-robin (one optimiser step of each in turn):
     ``plain`` (all stages, fp32, NCHW, no early stop: the paper's recipe as the code ran it; only
     ``--plain-steps`` steps are run and the 500-step time is EXTRAPOLATED from them),
     ``paper_cl`` (the same recipe in channels_last layout: same math, run to 500 steps: the
     plain recipe's accuracy), ``suffix_fp32``, ``suffix_bf16`` (suffix scope, 500 steps, no early
     stop) and ``fast`` (adapt's defaults: suffix, precision auto, early stop);
   * held-out top-1 agreement with the original model and feature MSE to the teacher, per variant.
3. The small Fashion-MNIST source models (edgeprune/research/source_models.py) when they exist and their
   trained weights are cached: plain vs fast end to end, interleaved. Skipped with a note otherwise.

Writes ``--json`` (default docs/benchmarks/adapt_speed.json) and the generated tables between the
``<!-- bench:begin -->`` / ``<!-- bench:end -->`` markers of ``--md`` (prose outside is kept).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

if "--omp-active" not in sys.argv:  # same OpenMP wait policy as `edgeprune adapt` (set before torch loads)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
_USER_OMP = os.environ.get("OMP_NUM_THREADS")  # the end-to-end child gets the user's setting, not the study's

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

from edgeprune.data.images import load_images, normalise, split_indices  # noqa: E402
from edgeprune.distill import hardware  # noqa: E402
from edgeprune.distill.compute_floor import matmul_throughput  # noqa: E402
from edgeprune.distill.distiller import DistillConfig, Distiller  # noqa: E402
from edgeprune.distill.targets import build_distill_targets, prefix_stop  # noqa: E402
from edgeprune.models.staging import split  # noqa: E402
from edgeprune.models.surgery import remove_blocks  # noqa: E402
from edgeprune.models.zoo import extract_features, load_model  # noqa: E402
from edgeprune.pipeline.evaluate import accuracy, agreement, predict  # noqa: E402

VARIANTS = {
    "plain": dict(train_scope="all", precision="fp32", channels_last=False, early_stop=False, micro_batch=None),
    "paper_cl": dict(train_scope="all", precision="fp32", channels_last=True, early_stop=False, micro_batch=None),
    "suffix_fp32": dict(train_scope="suffix", precision="fp32", channels_last=True, early_stop=False, micro_batch=None),
    "suffix_bf16": dict(train_scope="suffix", precision="bf16", channels_last=True, early_stop=False, micro_batch=None),
    "suffix_micro": dict(train_scope="suffix", precision="fp32", channels_last=True, early_stop=False, micro_batch=32),
    "fast": dict(train_scope="suffix", precision="auto", channels_last=True, early_stop=True, micro_batch=32),  # adapt's defaults
}
PAPER_RECIPE = ("plain", "paper_cl")  # the paper's recipe in the default / channels_last layout (same math)


def log(msg: str) -> None:
    print(f"[{datetime.now().strftime('%H:%M:%S')}] {msg}", flush=True)


def machine() -> dict:
    ok, why = hardware.cpu_bf16_support()
    return {"cpu": platform.processor() or platform.machine(), "cpus": hardware.available_cpus(),
            "torch_threads": torch.get_num_threads(), "torch": torch.__version__, "python": platform.python_version(),
            "bf16": why, "native_bf16": ok, "capability": torch.backends.cpu.get_cpu_capability(),
            "loadavg_start": os.getloadavg()}


# ------------------------------------------------------------------ 1. end to end
def run_e2e(args, stream: Path, profile: Path) -> dict:
    out = Path(args.work) / "e2e"
    cmd = [sys.executable, "-m", "edgeprune.cli", "adapt", "--images", str(stream), "--profile", str(profile),
           "--output", str(out), "--force", "--json"]
    log("end to end: " + " ".join(cmd[2:]))
    load_start = os.getloadavg()[0]
    t = time.perf_counter()
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    if _USER_OMP:
        env["OMP_NUM_THREADS"] = _USER_OMP
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t
    import resource

    child_peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024.0
    if proc.returncode != 0:
        return {"error": proc.stderr[-2000:], "wall_s": wall}
    r = json.loads(proc.stdout)
    return {"command": "edgeprune adapt --images STREAM --profile PROFILE --output OUT --force --json", "wall_s": wall,
            "loadavg_start": load_start, "loadavg_end": os.getloadavg()[0],
            "child_peak_rss_mb": child_peak, "removed_blocks": r["removed_blocks"], "timings": r["timings"],
            "train_scope": r["train_scope"], "precision": r["precision"], "hardware": r.get("hardware"),
            "early_stop": r["early_stop"], "distillation": r["distillation"], "compute_floor_s": r["compute_floor_s"],
            "efficiency": r["efficiency"], "compute_floor": r["compute_floor"], "peak_memory_mb": r["peak_memory_mb"],
            "peak_memory_by_phase_mb": r.get("peak_memory_by_phase_mb"),
            "fidelity": r["fidelity"], "images": {k: v for k, v in r["images"].items() if k != "skipped"},
            "measured_saving": r.get("measured_saving")}


# ------------------------------------------------------------------ 2. in-process study
class Run:
    """One distillation variant stepped by the round-robin loop, with per-step wall and CPU time."""

    def __init__(self, name, distiller: Distiller, max_steps: int):
        self.name, self.d, self.max_steps = name, distiller, max_steps
        self.step_s: list[float] = []
        self.step_cpu_s: list[float] = []
        self.peak_mb = 0.0
        self.active = True

    def step(self) -> None:
        hardware.reset_peak_rss()
        t, c = time.perf_counter(), time.process_time()
        more = self.d.step()
        self.step_s.append(time.perf_counter() - t)
        self.step_cpu_s.append(time.process_time() - c)
        self.peak_mb = max(self.peak_mb, hardware.peak_rss_mb())
        if not more or self.d.result.steps_done >= self.max_steps:
            self.active = False


def interleave(runs: list[Run]) -> None:
    rnd = 0
    while any(r.active for r in runs):
        order = [r for r in runs if r.active]
        if rnd % 2:
            order.reverse()  # alternate who goes first
        for r in order:
            r.step()
        rnd += 1
        if rnd % 25 == 0:
            log("round %d: %s" % (rnd, ", ".join(f"{r.name} {r.d.result.steps_done} ({statistics.median(r.step_s):.2f}s/step)"
                                                   for r in runs)))


def study(args, stream: Path, profile: Path, model: str = "efficientnet_lite0", variants=None, blocks=3,
          prune_n=64, finetune_n=1000, steps=500, plain_steps=None) -> dict:
    from edgeprune.latency.profiles import block_savings, load_profile
    from edgeprune.models.blocks import find_blocks
    from edgeprune.pruning.criteria import CRITERIA, ScoringContext
    from edgeprune.pruning.plan import floor_savings, make_plan

    variants = variants or list(VARIANTS)
    plain_steps = steps if plain_steps is None else plain_steps
    teacher, entry, source = load_model(model)
    prof = load_profile(profile)
    res = int(prof["resolution"])
    imgs = load_images(stream, res, entry.crop_pct)
    parts = split_indices(len(imgs.pixels), prune=prune_n, finetune=max(finetune_n - prune_n, 0), seed=0)
    ft_idx = list(parts.prune) + list(parts.finetune)
    held = list(parts.held_out)
    ft_px, held_px = imgs.pixels[ft_idx], imgs.pixels[held]
    all_blocks = find_blocks(teacher, entry, torch.zeros(1, entry.in_chans, res, res))
    savings, _ = floor_savings(block_savings(prof))
    stages = split(teacher, entry.staging)
    t = time.perf_counter()
    ctx = ScoringContext(teacher, entry, all_blocks, normalise(imgs.pixels[parts.prune], entry.mean, entry.std), savings,
                         stages, seed=0, batch_size=64)
    scored = CRITERIA.get("ttmpd")().score(ctx)
    scoring_s = time.perf_counter() - t
    plan = make_plan(scored.scores, block_savings(prof), k=blocks, base_ms=prof["base"]["median_ms"])
    removed = plan.removed
    stop = prefix_stop(stages, removed)
    log(f"{model}: {len(imgs.pixels)} images, removed {removed}, prefix = stages[:{stop}] (first trained {stages[stop][0]}), "
        f"scoring {scoring_s:.1f}s")
    reuse = {i: scored.teacher_features[i] for i in range(len(parts.prune))}

    # pseudo-labels: plain (labels only, NCHW) vs fast (labels + prefix, one pass, channels_last), alternated
    pl_times: dict[str, list[float]] = {"plain": [], "fast": []}
    targets = {}
    for rnd in range(2):
        for kind in (("plain", "fast") if rnd == 0 else ("fast", "plain")):
            if kind in targets:
                targets[kind].close()
            t = time.perf_counter()
            if kind == "plain":
                targets[kind] = build_distill_targets(teacher, entry, ft_px, batch_size=64, reuse=reuse, channels_last=False)
            else:
                targets[kind] = build_distill_targets(teacher, entry, ft_px, stages=stages, stop=stop, batch_size=64,
                                                      reuse=reuse, channels_last=True)
            pl_times[kind].append(time.perf_counter() - t)
            log(f"pseudo-labels {kind}: {pl_times[kind][-1]:.1f}s")
    fast_t = targets["fast"]

    # distillation variants, round-robin
    rates = {p: matmul_throughput(p) for p in ("fp32", "bf16")}
    runs = []
    for name in variants:
        v = VARIANTS[name]
        cfg = DistillConfig(steps=steps, batch_size=64, seed=0, **v)
        student = remove_blocks(teacher, removed)
        d = Distiller(student, entry, ft_px, fast_t.labels, cfg, prefix=fast_t.prefix if v["train_scope"] == "suffix" else None,
                      removed=removed)
        runs.append(Run(name, d, plain_steps if name == "plain" else steps))
        log(f"{name}: setup {d.result.setup_seconds:.1f}s, precision {d.hw.precision} {d.hw.probe or ''}")
    interleave(runs)
    rates = {p: max(v, matmul_throughput(p)) for p, v in rates.items()}  # best of before / after (shared machine)

    # evaluation on the held-out images
    with torch.no_grad():
        t_feats = torch.cat([extract_features(teacher, entry, normalise(held_px[i:i + 64], entry.mean, entry.std))
                             for i in range(0, len(held_px), 64)])
    pred_orig = predict(teacher, entry, held_px)
    pred_before = predict(remove_blocks(teacher, removed), entry, held_px)
    held_labels = imgs.labels[held] if imgs.labels is not None else None
    out = {"model": model, "weights": source, "resolution": res, "removed_blocks": removed, "prefix_stage": stages[stop][0],
           "images": {"usable": len(imgs.pixels), "finetune": len(ft_idx), "held_out": len(held)},
           "scoring_s": scoring_s, "pseudo_labels_s": pl_times,
           "cached_prefix_mb": fast_t.prefix.store.nbytes / 2**20, "labels_mb": fast_t.labels.nbytes / 2**20,
           "matmul_gflops": {k: v / 1e9 for k, v in rates.items()},
           "agreement_pruned_no_distill": agreement(pred_before, pred_orig),
           "accuracy_original": accuracy(pred_orig, held_labels), "accuracy_pruned_no_distill": accuracy(pred_before, held_labels),
           "variants": {}}
    for r in runs:
        res_ = r.d.finish()
        student = r.d.student
        n = res_.steps_done
        train_s = sum(r.step_s)
        entry_out = {"config": VARIANTS[r.name], "precision_used": res_.precision, "probe": r.d.hw.probe,
                     "train_scope_used": res_.train_scope, "steps_done": n, "setup_s": res_.setup_seconds,
                     "check_s": res_.check_seconds, "step_s_median": statistics.median(r.step_s),
                     "step_s_min": min(r.step_s), "step_cpu_s_median": statistics.median(r.step_cpu_s),
                     "distill_s": res_.seconds, "steps_wall_s": train_s, "peak_step_rss_mb": r.peak_mb,
                     "early_stop": {k: res_.early_stop.get(k) for k in ("enabled", "stopped_at", "reason", "lr_events")},
                     "final_loss": res_.final_loss, "trained_gflops_per_image": res_.trained_forward_flops / 1e9}
        floor = res_.floor_flops() / rates[res_.precision]
        entry_out["floor_s"] = floor
        entry_out["efficiency"] = floor / res_.seconds if res_.seconds else None
        if n < steps and not res_.early_stop.get("stopped_at"):
            per = statistics.mean(r.step_s)
            entry_out["extrapolated"] = {"steps_measured": n, "mean_step_s": per,
                                         "distill_s_500_extrapolated": res_.setup_seconds + per * steps}
        else:
            pred = predict(student, entry, held_px)
            with torch.no_grad():
                s_feats = torch.cat([extract_features(student, entry, normalise(held_px[i:i + 64], entry.mean, entry.std))
                                     for i in range(0, len(held_px), 64)])
            entry_out["held_out_agreement"] = agreement(pred, pred_orig)
            entry_out["held_out_accuracy"] = accuracy(pred, held_labels)
            entry_out["held_out_feature_mse"] = float(F.mse_loss(s_feats, t_feats))
        out["variants"][r.name] = entry_out
        log(f"{r.name}: {json.dumps({k: entry_out.get(k) for k in ('steps_done', 'distill_s', 'step_s_median', 'held_out_agreement', 'efficiency')})}")
    for t_ in targets.values():
        t_.close()
    return out


# ------------------------------------------------------------------ threads / OpenMP wait policy
_THREAD_PROBE = r"""
import json, os, sys, time, torch, torch.nn.functional as F
from edgeprune import zoo
from edgeprune.staging import split, run_stages
from edgeprune.surgery import remove_blocks
torch.set_num_threads(int(sys.argv[1]))
removed = sys.argv[2].split(",")
m, e, _ = zoo.load_model("efficientnet_lite0")
st = remove_blocks(m, removed); stages = split(st, e.staging)
p = min([n for n, _ in stages].index(r) for r in removed)
x = torch.randn(64, 3, 224, 224)
with torch.no_grad():
    pre = run_stages(split(m, e.staging), x, 0, p).contiguous(memory_format=torch.channels_last); tgt = m.forward_features(x)
st.to(memory_format=torch.channels_last).train()
ts = []
for i in range(4):
    t = time.perf_counter()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = run_stages(stages, pre, p)
    F.mse_loss(out.float(), tgt).backward(); st.zero_grad(set_to_none=True)
    ts.append(time.perf_counter() - t)
print(json.dumps({"step_s": ts[1:], "load": os.getloadavg()[0]}))
"""


def threads_ab(removed, rounds: int = 3) -> dict:
    """Suffix step (bf16, batch 64) in fresh processes: 2 threads spinning / 2 threads passive / 1 thread, alternated."""
    configs = {"2 threads, OpenMP default (spin)": ("2", None), "2 threads, OMP_WAIT_POLICY=PASSIVE": ("2", "PASSIVE"),
               "1 thread": ("1", None)}
    out: dict = {k: {"median_step_s": [], "load": []} for k in configs}
    for r in range(rounds):
        items = list(configs.items())
        for name, (n, wait) in (items if r % 2 == 0 else items[::-1]):
            env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
            if wait:
                env["OMP_WAIT_POLICY"] = wait
            proc = subprocess.run([sys.executable, "-c", _THREAD_PROBE, n, ",".join(removed)], capture_output=True, text=True,
                                  env=env)
            if proc.returncode:
                out[name]["error"] = proc.stderr[-500:]
                continue
            res = json.loads(proc.stdout.strip().splitlines()[-1])
            out[name]["median_step_s"].append(statistics.median(res["step_s"]))
            out[name]["load"].append(res["load"])
        log(f"threads A/B round {r}: " + ", ".join(f"{k}: {v['median_step_s'][-1:]}" for k, v in out.items()))
    return out


# ------------------------------------------------------------------ 3. small models
def small_models_study(args) -> dict:
    """Plain vs fast on the small Fashion-MNIST source models whose trained weights are cached."""
    try:
        import edgeprune.research.source_models as sm
    except ImportError:
        return {"skipped": "edgeprune/source_models.py (the small Fashion-MNIST models) does not exist yet"}
    from edgeprune.models import zoo
    from edgeprune.pipeline.demo import CORRUPTION, SEVERITY, build_stream

    names = [n for n in zoo.names() if zoo.get_entry(n).family == "local"]
    if args.small_models:
        names = [n for n in names if n in args.small_models]
    ready = [n for n in names if sm.pretrained_path(n).is_file()]
    out: dict = {"not_ready": [n for n in names if n not in ready]}
    if not ready:
        return {"skipped": f"small models {names} have no trained weights cached (tools/train_source.py)"}
    stream = build_stream(Path(args.work) / "fmnist_stream")
    out["stream"] = f"2000 Fashion-MNIST test images, {CORRUPTION} severity {SEVERITY} (edgeprune.pipeline.demo.build_stream), labelled"
    for name in ready:
        entry = zoo.get_entry(name)
        prof_path = Path(args.work) / "profiles" / f"{name}.json"
        if not prof_path.exists():
            from edgeprune.latency.profiles import run_profile, save_profile

            save_profile(run_profile(name, backend="onnxruntime", resolution=entry.resolution), prof_path)
        out[name] = study(args, stream, prof_path, model=name, variants=["plain", "paper_cl", "suffix_fp32", "fast"],
                          blocks=args.blocks, steps=args.small_steps, plain_steps=args.small_steps)
    return out


# ------------------------------------------------------------------ report
def _f(v, fmt="{:.2f}"):
    return "n/a" if v is None else fmt.format(v)


def tables(data: dict) -> str:
    cmds = data.get("commands") or [data["command"]]
    lines = [f"Generated by `{'` + `'.join(cmds)}` (last on {data['created']}; {data['machine']['cpu']}, "
             f"{data['machine']['cpus']} CPUs, torch {data['machine']['torch']}; {data['machine']['bf16']}).", ""]
    e = data.get("e2e")
    if e and "error" not in e:
        lines += ["### End to end: `edgeprune adapt` at defaults, efficientnet_lite0, 224 px, k=3", "",
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
        lines += ["", f"Wall time of the command: **{e['wall_s'] / 60:.1f} min** (1-min load average of the machine at its "
                      f"start / end: {_f(e.get('loadavg_start'), '{:.1f}')} / {_f(e.get('loadavg_end'), '{:.1f}')}); peak memory "
                      f"**{e['peak_memory_mb']:.0f} MiB** (report; by phase {e.get('peak_memory_by_phase_mb')}), "
                      f"{e['child_peak_rss_mb']:.0f} MiB (rusage of the child); "
                      f"held-out agreement before / after distillation {f['agreement_before']:.3f} / {f['agreement_after']:.3f} "
                      f"on {f['held_out']} images; measured latency saving {_f(e.get('measured_saving'), '{:.1%}')}.", ""]
    elif e:
        lines += ["End-to-end run failed: ```" + e["error"][-500:] + "```", ""]
    for key in sorted(k for k in data if k.startswith("lite0")):
        s = data[key]
        steps = max(v["steps_done"] for v in s["variants"].values())
        lines += [f"### In-process interleaved study `{key}`: {s['model']} ({s['weights']}), removed "
                  f"{', '.join(s['removed_blocks'])}, {steps} requested steps (schedule scaled to them)", "",
                  f"{s['images']['finetune']} fine-tune images, {s['images']['held_out']} held out; frozen prefix ends before "
                  f"`{s['prefix_stage']}`; cached prefix {s['cached_prefix_mb']:.0f} MB + labels {s['labels_mb']:.0f} MB (fp16). "
                  f"Matmul throughput: fp32 {s['matmul_gflops']['fp32']:.0f} GFLOP/s, bf16 {s['matmul_gflops']['bf16']:.0f} GFLOP/s. "
                  f"Pruned without distillation: agreement {s['agreement_pruned_no_distill']:.3f}.", "",
                  f"Pseudo-label pass (alternated, 2 rounds): plain {', '.join(f'{v:.1f}' for v in s['pseudo_labels_s']['plain'])} s; "
                  f"fast (+ prefix cache) {', '.join(f'{v:.1f}' for v in s['pseudo_labels_s']['fast'])} s.", "",
                  "| variant | scope | precision | steps | distill s | median s/step | CPU s/step | floor s | efficiency | "
                  "agreement | feature MSE | early stop |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for name, v in s["variants"].items():
            ext = v.get("extrapolated")
            dist = (f"{ext['distill_s_500_extrapolated']:.0f} (EXTRAPOLATED from {ext['steps_measured']} steps)" if ext
                    else f"{v['distill_s']:.0f}")
            es = v["early_stop"]
            es_txt = f"stopped at {es['stopped_at']}" if es.get("stopped_at") else ("on, ran all" if es.get("enabled") else "off")
            lines.append(f"| {name} | {v['train_scope_used']} | {v['precision_used']} | {v['steps_done']} | {dist} | "
                         f"{v['step_s_median']:.2f} | {v['step_cpu_s_median']:.2f} | {v['floor_s']:.0f} | {_f(v['efficiency'])} | "
                         f"{_f(v.get('held_out_agreement'), '{:.3f}')} | {_f(v.get('held_out_feature_mse'), '{:.4f}')} | {es_txt} |")
        lines.append("")
    th = data.get("threads")
    if th:
        lines += ["### Threads and OpenMP wait policy (suffix step, bf16, batch 64; fresh process each, alternated)", "",
                  "| setting | median s/step per round | 1-min load average per round |", "|---|---|---|"]
        for k, v in th.items():
            lines.append(f"| {k} | {', '.join(f'{x:.2f}' for x in v['median_step_s'])} | {', '.join(f'{x:.1f}' for x in v['load'])} |")
        lines.append("")
    sm = data.get("small_models")
    if sm:
        if "skipped" in sm:
            lines += [f"### Small Fashion-MNIST source models: skipped ({sm['skipped']})", ""]
        else:
            lines += [f"Stream: {sm.get('stream')}. Not ready (no cached weights): {sm.get('not_ready') or 'none'}.", ""]
            for name, s in sm.items():
                if not isinstance(s, dict) or "variants" not in s:
                    continue
                lines += [f"### {name}: removed {', '.join(s['removed_blocks'])}, prefix ends before `{s['prefix_stage']}`", "",
                          f"Held out {s['images']['held_out']} images: original accuracy {_f(s['accuracy_original'], '{:.3f}')}, "
                          f"pruned without distillation {_f(s['accuracy_pruned_no_distill'], '{:.3f}')}.", "",
                          "| variant | scope | precision | steps | distill s | median s/step | accuracy | agreement | efficiency |",
                          "|---|---|---|---|---|---|---|---|---|"]
                for vn, v in s["variants"].items():
                    lines.append(f"| {vn} | {v['train_scope_used']} | {v['precision_used']} | {v['steps_done']} | {v['distill_s']:.1f} | "
                                 f"{v['step_s_median']:.3f} | {_f(v.get('held_out_accuracy'), '{:.3f}')} | "
                                 f"{_f(v.get('held_out_agreement'), '{:.3f}')} | {_f(v['efficiency'])} |")
                lines.append("")
    lines += goals(data)
    return "\n".join(lines)


def _paper_best(variants: dict) -> tuple[str, dict] | None:
    """The faster of the paper-recipe variants that ran to the end (not extrapolated)."""
    done = [(n, variants[n]) for n in PAPER_RECIPE if n in variants and "extrapolated" not in variants[n]]
    return min(done, key=lambda nv: nv[1]["distill_s"]) if done else None


def goals(data: dict) -> list[str]:
    """The issue's goals, each met / MISSED, from this run's numbers only."""
    out = ["### Goals (computed from the runs above)", ""]

    def line(ok, text):
        out.append(f"- **{'met' if ok else 'MISSED'}**: {text}")

    e = data.get("e2e")
    if e and "error" not in e:
        line(e["wall_s"] <= 15 * 60, f"lite0 `adapt` end to end at defaults in {e['wall_s'] / 60:.1f} min (goal <= 15 min)")
        eff = e["efficiency"].get("distillation")
        ph = e["compute_floor"]["phases"].get("distillation", {})
        line(eff is not None and eff >= 0.5, f"distillation efficiency {_f(eff)} of the compute floor ({e['precision']} "
                                             f"matmul throughput at the {ph.get('threads')} thread(s) it ran with; "
                                             f"{_f(ph.get('efficiency_all_cores'))} against all cores; goal >= 0.5)")
        line(e["peak_memory_mb"] <= 3 * 1024, f"peak memory {e['peak_memory_mb']:.0f} MiB (goal <= 3 GiB = 3072 MiB)")
    for key in sorted(k for k in data if k.startswith("lite0")):
        s = data[key]
        if "fast" not in s["variants"] or not _paper_best(s["variants"]):
            continue
        name, paper = _paper_best(s["variants"])
        fast = s["variants"]["fast"]
        d = (fast["held_out_agreement"] - paper["held_out_agreement"]) * 100
        line(d >= -1.0, f"`{key}`: lite0 held-out agreement, fast {fast['held_out_agreement']:.3f} ({fast['steps_done']} steps) "
                        f"vs paper recipe ({name}) {paper['held_out_agreement']:.3f} ({paper['steps_done']} steps): {d:+.1f} "
                        f"points (goal: within 1 point); distillation {paper['distill_s'] / fast['distill_s']:.1f}x faster")
    for mname, m in (data.get("small_models") or {}).items():
        if not isinstance(m, dict) or "variants" not in m or "fast" not in m["variants"] or not _paper_best(m["variants"]):
            continue
        v = m["variants"]
        if "plain" not in v:
            continue
        fast, plain = v["fast"], v["plain"]  # the goal's "plain recipe": the paper's, without the fast path's layout choice
        speed = plain["distill_s"] / fast["distill_s"]
        d = (fast["held_out_accuracy"] - plain["held_out_accuracy"]) * 100
        extra = ""
        if "paper_cl" in v:
            extra = (f"; against the same recipe in channels_last layout (one of the fast path's own choices) "
                     f"{v['paper_cl']['distill_s'] / fast['distill_s']:.1f}x")
        line(speed >= 3 and d >= -0.5, f"{mname}: fast path {speed:.1f}x faster than the plain recipe in the distillation "
                                       f"phase ({plain['distill_s']:.1f} s -> {fast['distill_s']:.1f} s{extra}); accuracy "
                                       f"{fast['held_out_accuracy']:.3f} vs {plain['held_out_accuracy']:.3f} ({d:+.1f} points), "
                                       f"agreement {fast['held_out_agreement']:.3f} vs {plain['held_out_agreement']:.3f} "
                                       f"(goal >= 3x within 0.5 points)")
    return out + [""] if len(out) > 2 else []


def write_md(path: Path, body: str) -> None:
    begin, end = "<!-- bench:begin -->", "<!-- bench:end -->"
    text = path.read_text() if path.exists() else f"# adapt speed\n\n{begin}\n{end}\n"
    if begin not in text:
        text += f"\n{begin}\n{end}\n"
    head, rest = text.split(begin, 1)
    tail = rest.split(end, 1)[1] if end in rest else ""
    path.write_text(f"{head}{begin}\n{body}\n{end}{tail}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", default=str(ROOT / "out" / "bench_adapt"))
    ap.add_argument("--stream", default=None, help="image folder [default: WORK/stream, made by tools/make_photo_stream.py]")
    ap.add_argument("--profile", default=None, help="lite0 latency profile [default: WORK/profiles/..., profiled if missing]")
    ap.add_argument("--images", type=int, default=1300)
    ap.add_argument("--blocks", type=int, default=3)
    ap.add_argument("--finetune", type=int, default=1000, help="fine-tune images (prune images included)")
    ap.add_argument("--omp-active", action="store_true", help="keep OpenMP's default (spinning) wait policy")
    ap.add_argument("--skip-threads", action="store_true", help="skip the thread / OpenMP wait-policy A/B")
    ap.add_argument("--steps", type=int, default=500, help="distillation steps of the lite0 study (schedule scaled to it)")
    ap.add_argument("--small-models", nargs="+", default=None, help="which small source models [default: all trained]")
    ap.add_argument("--small-steps", type=int, default=500, help="distillation steps on the small source models")
    ap.add_argument("--threads", type=int, default=1, help="threads of the in-process study (1: least disturbed on a shared CPU)")
    ap.add_argument("--plain-steps", type=int, default=12, help="steps of the literal plain recipe to time (extrapolated)")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--skip-e2e", action="store_true")
    ap.add_argument("--fresh", action="store_true", help="do not keep sections of an existing --json")
    ap.add_argument("--skip-lite0", action="store_true")
    ap.add_argument("--study-name", default="lite0", help="JSON key of the lite0 study (keep several: lite0, lite0_500, ...)")
    ap.add_argument("--skip-small", action="store_true")
    ap.add_argument("--json", default=str(ROOT / "docs" / "benchmarks" / "adapt_speed.json"))
    ap.add_argument("--md", default=str(ROOT / "docs" / "benchmarks" / "adapt_speed.md"))
    args = ap.parse_args()
    # Every in-process variant at the same fixed thread count (the OpenMP variable also stops each
    # Distiller's thread probe from changing the count under the others).
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    torch.set_num_threads(args.threads)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    stream = Path(args.stream) if args.stream else work / "stream"
    if not stream.exists():
        from make_photo_stream import make_stream

        make_stream(stream, n=args.images)
        log(f"made {args.images} photos in {stream}")
    profile = Path(args.profile) if args.profile else work / "profiles" / "efficientnet_lite0.json"
    if not profile.exists():
        log("profiling efficientnet_lite0 (once per device)")
        subprocess.run([sys.executable, "-m", "edgeprune.cli", "profile", "--model", "efficientnet_lite0", "--output",
                        str(profile), "--json"], check=True, capture_output=True)
    data = {"command": "python tools/bench_adapt.py " + " ".join(sys.argv[1:]),
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": machine()}
    json_path = Path(args.json)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    mine = set(data)  # sections this invocation writes; the others are kept as the file has them

    def save():
        nonlocal data
        data["machine"]["loadavg_end"] = os.getloadavg()
        if json_path.exists() and not args.fresh:  # re-read at each save: another invocation may have written since
            old = json.loads(json_path.read_text())
            data = {**{k: v for k, v in old.items() if k not in mine}, **{k: data[k] for k in mine}}
            data["commands"] = sorted(set(old.get("commands", [old.get("command", "")])) | {data["command"]})
        tmp = json_path.with_name(json_path.name + ".tmp")
        tmp.write_text(json.dumps(data, indent=2, default=str))
        os.replace(tmp, json_path)
        write_md(Path(args.md), tables(data))

    if not args.skip_e2e:
        mine.add("e2e")
        data["e2e"] = run_e2e(args, stream, profile)
        save()
    if not args.skip_lite0:
        mine.add(args.study_name)
        data[args.study_name] = study(args, stream, profile, variants=args.variants.split(","), blocks=args.blocks, steps=args.steps,
                              plain_steps=args.plain_steps, finetune_n=args.finetune)
        save()
    if not args.skip_threads:
        mine.add("threads")
        data["threads"] = threads_ab(data.get("lite0", {}).get("removed_blocks") or ["blocks.3.1"])
        save()
    if not args.skip_small:
        mine.add("small_models")
        data["small_models"] = small_models_study(args)
    save()
    log(f"wrote {json_path} and {args.md}")


if __name__ == "__main__":
    main()
