"""tools/bench_adapt.py's in-process study: one prune plan, the pseudo-label passes alternated, the
distillation variants stepped round-robin, then held-out agreement / accuracy per variant."""

from __future__ import annotations

import dataclasses
import json
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from edgeprune.data.images import load_images
from edgeprune.data.split import split_indices
from edgeprune.data.transforms import normalise
from edgeprune.distill import hardware
from edgeprune.distill.compute_floor import matmul_throughput
from edgeprune.distill.distiller import DistillConfig, Distiller
from edgeprune.distill.targets import build_distill_targets, prefix_stop
from edgeprune.models.features import extract_features
from edgeprune.models.staging import split
from edgeprune.models.surgery import remove_blocks
from edgeprune.models.zoo import load_model
from edgeprune.pipeline.evaluate import accuracy, agreement, predict

from .adapt_probes import log


def _fields(recipe: DistillConfig) -> dict:
    return {k: v for k, v in dataclasses.asdict(recipe).items() if k not in ("steps", "batch_size", "seed")}


def variants() -> dict[str, dict]:
    """The compared recipes (DistillConfig fields): the paper's (NCHW as the code once ran it, and
    channels_last), suffix scope alone / with bf16 / with micro-batches, and ``fast`` = adapt's."""
    from edgeprune.pipeline.options import adapt_recipe

    # the study distils from the source teacher: choosing teacher statistics is adapt's prepare step
    # and a fixed student BatchNorm mode: each variant is one Distiller stepped round-robin, while
    # adapt's "auto" mode is a decision between two runs (distill/bn_probe.py)
    paper = _fields(DistillConfig.paper())
    fast = {**_fields(adapt_recipe()), "teacher_stats": "source", "student_bn": "train"}
    suffix = {**paper, "train_scope": "suffix"}
    return {"plain": {**paper, "channels_last": False}, "paper_cl": paper, "suffix_fp32": suffix,
            "suffix_bf16": {**suffix, "precision": "bf16"}, "suffix_micro": {**suffix, "micro_batch": fast["micro_batch"]},
            "fast": fast}


PAPER_RECIPE = ("plain", "paper_cl")  # the paper's recipe in the default / channels_last layout (same math)


class Run:
    """One distillation variant stepped by the round-robin loop, with per-step wall and CPU time."""

    def __init__(self, name, distiller: Distiller, max_steps: int, config: dict):
        self.name, self.d, self.max_steps, self.config = name, distiller, max_steps, config
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


@dataclass
class Plan:
    """The model, its stream split and the TT-MPD plan every variant distils."""

    model: str
    source: dict
    teacher: torch.nn.Module
    entry: object
    resolution: int
    usable: int
    ft_px: torch.Tensor
    held_px: torch.Tensor
    held_labels: torch.Tensor | None
    removed: list[str]
    stages: list
    stop: int
    reuse: dict
    scoring_s: float


def make_plan(stream: Path, profile: Path, model: str, blocks: int, prune_n: int, finetune_n: int) -> Plan:
    from edgeprune.latency.profiles import block_savings, load_profile
    from edgeprune.models.blocks import find_blocks
    from edgeprune.pruning.criteria import CRITERIA, ScoringContext
    from edgeprune.pruning.plan import floor_savings
    from edgeprune.pruning.plan import make_plan as plan_blocks

    teacher, entry, source = load_model(model)
    prof = load_profile(profile)
    res = int(prof["resolution"])
    imgs = load_images(stream, res, entry.crop_pct)
    parts = split_indices(len(imgs.pixels), prune=prune_n, finetune=max(finetune_n - prune_n, 0), seed=0)
    held = list(parts.held_out)
    savings, _ = floor_savings(block_savings(prof))
    stages = split(teacher, entry.staging)
    t = time.perf_counter()
    ctx = ScoringContext(teacher, entry, find_blocks(teacher, entry, torch.zeros(1, entry.in_chans, res, res)),
                         normalise(imgs.pixels[parts.prune], entry.mean, entry.std), savings, stages, seed=0, batch_size=64)
    scored = CRITERIA.get("ttmpd")().score(ctx)
    scoring_s = time.perf_counter() - t
    removed = plan_blocks(scored.scores, block_savings(prof), k=blocks, base_ms=prof["base"]["median_ms"]).removed
    stop = prefix_stop(stages, removed)
    log(f"{model}: {len(imgs.pixels)} images, removed {removed}, prefix = stages[:{stop}] (first trained "
        f"{stages[stop][0]}), scoring {scoring_s:.1f}s")
    return Plan(model, source, teacher, entry, res, len(imgs.pixels), imgs.pixels[list(parts.prune) + list(parts.finetune)],
                imgs.pixels[held], imgs.labels[held] if imgs.labels is not None else None, removed, stages, stop,
                {i: scored.teacher_features[i] for i in range(len(parts.prune))}, scoring_s)


def time_pseudo_labels(p: Plan) -> tuple[dict, dict]:
    """Plain (labels only, NCHW) vs fast (labels + prefix, one pass, channels_last), alternated, 2 rounds."""
    times: dict[str, list[float]] = {"plain": [], "fast": []}
    targets = {}
    for rnd in range(2):
        for kind in (("plain", "fast") if rnd == 0 else ("fast", "plain")):
            if kind in targets:
                targets[kind].close()
            t = time.perf_counter()
            extra = {} if kind == "plain" else {"stages": p.stages, "stop": p.stop}
            targets[kind] = build_distill_targets(p.teacher, p.entry, p.ft_px, batch_size=64, reuse=p.reuse,
                                                  channels_last=kind == "fast", **extra)
            times[kind].append(time.perf_counter() - t)
            log(f"pseudo-labels {kind}: {times[kind][-1]:.1f}s")
    return times, targets


def make_runs(p: Plan, fast_targets, names, steps: int, plain_steps: int) -> list[Run]:
    runs = []
    table = variants()
    for name in names:
        v = table[name]
        d = Distiller(remove_blocks(p.teacher, p.removed), p.entry, p.ft_px, fast_targets.labels,
                      DistillConfig(steps=steps, batch_size=64, seed=0, **v),
                      prefix=fast_targets.prefix if v["train_scope"] == "suffix" else None, removed=p.removed)
        runs.append(Run(name, d, plain_steps if name == "plain" else steps, v))
        log(f"{name}: setup {d.result.setup_seconds:.1f}s, precision {d.hw.precision} {d.hw.probe or ''}")
    return runs


def _features(model, entry, px) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([extract_features(model, entry, normalise(px[i:i + 64], entry.mean, entry.std))
                          for i in range(0, len(px), 64)])


def variant_record(r: Run, p: Plan, rates: dict, steps: int, reference: dict) -> dict:
    """Timings, early stop, efficiency and (when run to the end) held-out quality of one variant."""
    res = r.d.finish()
    out = {"config": r.config, "precision_used": res.precision, "probe": r.d.hw.probe, "train_scope_used": res.train_scope,
           "steps_done": res.steps_done, "setup_s": res.setup_seconds, "check_s": res.check_seconds,
           "step_s_median": statistics.median(r.step_s), "step_s_min": min(r.step_s),
           "step_cpu_s_median": statistics.median(r.step_cpu_s), "distill_s": res.seconds, "steps_wall_s": sum(r.step_s),
           "peak_step_rss_mb": r.peak_mb,
           "early_stop": {k: res.early_stop.get(k) for k in ("enabled", "stopped_at", "reason", "lr_events")},
           "final_loss": res.final_loss, "trained_gflops_per_image": res.trained_forward_flops / 1e9}
    out["floor_s"] = res.floor_flops() / rates[res.precision]
    out["efficiency"] = out["floor_s"] / res.seconds if res.seconds else None
    if res.steps_done < steps and not res.early_stop.get("stopped_at"):
        per = statistics.mean(r.step_s)
        out["extrapolated"] = {"steps_measured": res.steps_done, "mean_step_s": per,
                               "distill_s_500_extrapolated": res.setup_seconds + per * steps}
        return out
    pred = predict(r.d.student, p.entry, p.held_px)
    out["held_out_agreement"] = agreement(pred, reference["pred"])
    out["held_out_accuracy"] = accuracy(pred, p.held_labels)
    out["held_out_feature_mse"] = float(F.mse_loss(_features(r.d.student, p.entry, p.held_px), reference["features"]))
    return out


def study(stream: Path, profile: Path, model: str = "efficientnet_lite0", names=None, blocks=3, prune_n=64,
          finetune_n=1000, steps=500, plain_steps=None) -> dict:
    """The plan, the pseudo-label passes and the variants of one model, as one JSON-ready dict."""
    names = names or list(variants())
    p = make_plan(stream, profile, model, blocks, prune_n, finetune_n)
    pl_times, targets = time_pseudo_labels(p)
    fast_t = targets["fast"]
    rates = {q: matmul_throughput(q) for q in ("fp32", "bf16")}
    runs = make_runs(p, fast_t, names, steps, steps if plain_steps is None else plain_steps)
    interleave(runs)
    rates = {q: max(v, matmul_throughput(q)) for q, v in rates.items()}  # best of before / after (shared machine)
    reference = {"pred": predict(p.teacher, p.entry, p.held_px), "features": _features(p.teacher, p.entry, p.held_px)}
    pred_before = predict(remove_blocks(p.teacher, p.removed), p.entry, p.held_px)
    out = {"model": model, "weights": p.source, "resolution": p.resolution, "removed_blocks": p.removed,
           "prefix_stage": p.stages[p.stop][0],
           "images": {"usable": p.usable, "finetune": len(p.ft_px), "held_out": len(p.held_px)},
           "scoring_s": p.scoring_s, "pseudo_labels_s": pl_times,
           "cached_prefix_mb": fast_t.prefix.store.nbytes / 2**20, "labels_mb": fast_t.labels.nbytes / 2**20,
           "matmul_gflops": {k: v / 1e9 for k, v in rates.items()},
           "agreement_pruned_no_distill": agreement(pred_before, reference["pred"]),
           "accuracy_original": accuracy(reference["pred"], p.held_labels),
           "accuracy_pruned_no_distill": accuracy(pred_before, p.held_labels), "variants": {}}
    for r in runs:
        rec = out["variants"][r.name] = variant_record(r, p, rates, steps, reference)
        log(f"{r.name}: " + json.dumps({k: rec.get(k) for k in ('steps_done', 'distill_s', 'step_s_median',
                                                                 'held_out_agreement', 'efficiency')}))
    for t_ in targets.values():
        t_.close()
    return out


def small_models_study(work: Path, only, blocks: int, steps: int) -> dict:
    """Plain vs fast on the small Fashion-MNIST source models (edgeprune/research/source_models.py) whose
    trained weights are cached (tools/train_source.py); skipped with a note otherwise."""
    import edgeprune.research.source_models as sm
    from edgeprune.models import zoo
    from edgeprune.pipeline.demo import CORRUPTION, SEVERITY, build_stream

    names = [n for n in zoo.names() if zoo.get_entry(n).family == "local" and (not only or n in only)]
    ready = [n for n in names if sm.pretrained_path(n).is_file()]
    if not ready:
        return {"skipped": f"small models {names} have no trained weights cached (tools/train_source.py)"}
    out: dict = {"not_ready": [n for n in names if n not in ready],
                 "stream": f"2000 Fashion-MNIST test images, {CORRUPTION} severity {SEVERITY} "
                           "(edgeprune.pipeline.demo.build_stream), labelled"}
    stream = build_stream(Path(work) / "fmnist_stream")
    for name in ready:
        prof_path = Path(work) / "profiles" / f"{name}.json"
        if not prof_path.exists():
            from edgeprune.latency.measurement import run_profile
            from edgeprune.latency.profiles import save_profile

            save_profile(run_profile(name, backend="onnxruntime", resolution=zoo.get_entry(name).resolution), prof_path)
        out[name] = study(stream, prof_path, model=name, names=["plain", "paper_cl", "suffix_fp32", "fast"],
                          blocks=blocks, steps=steps, plain_steps=steps)
    return out
