"""``adapt``'s middle stages: score the blocks and plan the removal; distil the pruned student.

Each stage takes what the previous ones returned (``prepare.Prepared``, then ``Scored``) and
records its time and peak memory in the run's ``PhaseClock``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..data.transforms import normalise
from ..distill.bn_stats import reestimate_bn_stats
from ..distill.budget import budget_warning
from ..distill.config import DistillConfig
from ..distill.distiller import distill
from ..distill.result import DistillResult
from ..distill.local import run_local_phase
from ..distill.hardware import release_free_memory, to_layout
from ..distill.targets import DistillTargets, build_distill_targets, suffix_stop
from ..models.staging import Stage, split
from ..models.surgery import remove_blocks
from ..pruning.criteria import CRITERIA, CriterionResult, ScoringContext
from ..pruning.plan import LS_FLOOR, Plan, floor_savings, make_plan
from .fidelity import logits
from .prepare import Prepared


@dataclass
class Scored:
    """Block scores and the removal plan."""

    savings_profiled: dict[str, float]  # LS_i as measured
    savings: dict[str, float]  # LS_i floored to LS_FLOOR where <= 0 (what criteria divide by)
    floored: list[str]
    stages: list[Stage] | None
    result: CriterionResult
    plan: Plan


@dataclass
class Distilled:
    """The distilled student and what the report says about it."""

    student: nn.Module
    config: DistillConfig  # the recipe as run
    result: DistillResult
    targets: DistillTargets  # closed: sizes and counts only
    stop: int  # first trained stage (suffix scope)
    held_labels: torch.Tensor | None
    logits_original: torch.Tensor  # held-out logits of the original, the pruned and the distilled model
    logits_before: torch.Tensor
    logits_after: torch.Tensor
    local: dict  # the local gap-reconstruction phase's record (distill/local.py)

    @property
    def pred_original(self) -> torch.Tensor:
        return self.logits_original.argmax(1)

    @property
    def pred_before(self) -> torch.Tensor:
        return self.logits_before.argmax(1)

    @property
    def pred_after(self) -> torch.Tensor:
        return self.logits_after.argmax(1)


def score(prep: Prepared) -> Scored:
    """Score every removable block with the run's criterion and plan what to remove."""
    from ..latency.profiles import block_savings

    opts, rep = prep.options, prep.reporter
    with prep.clock.phase("scoring"):
        rep.stage("scoring")
        savings_raw = block_savings(prep.profile)
        savings, floored = floor_savings(savings_raw)
        for name in floored:
            rep.warn(f"block {name}: profiled saving {savings_raw[name]:.4f} <= 0, floored to {LS_FLOOR} (LS floor)")
        stages = split(prep.teacher, prep.entry.staging)
        # channels-last as the pseudo-label pass: the same math, faster convolutions on CPU
        prune_x = to_layout(normalise(prep.images.pixels[prep.split.prune], prep.entry.mean, prep.entry.std),
                            prep.hardware.channels_last)
        ctx = ScoringContext(prep.teacher, prep.entry, prep.blocks, prune_x, savings, stages, seed=opts.seed,
                             batch_size=opts.recipe.batch_size)
        scored = CRITERIA.get(opts.criterion)().score(ctx)
        plan = make_plan(scored.scores, savings_raw, k=prep.plan_blocks, target_saving=opts.target_saving,
                         latency_budget_ms=opts.latency_budget_ms, base_ms=prep.profile["base"]["median_ms"])
    release_free_memory()  # so the next phase's peak does not stack on this one's freed buffers
    rep.info(f"removing {len(plan.removed)} blocks: {', '.join(plan.removed)} (predicted saving {plan.predicted_saving:.1%})")
    return Scored(savings_raw, savings, floored, stages, scored, plan)


def inference_batch(prep: Prepared) -> int:
    # Inference-only passes (pseudo-labels, held-out predictions) run in micro-batch chunks too: the
    # result is the same and the transient activations are smaller (lite0, 224 px: +1.3 GB at 64, +0.8 at 32).
    recipe = prep.options.recipe
    return min(recipe.batch_size, recipe.micro_batch or recipe.batch_size)


def build_targets(prep: Prepared, scored: Scored) -> tuple[DistillTargets, int]:
    """One teacher pass over the fine-tune images: pseudo-labels and (suffix scope) the frozen
    prefix's output, reusing the scoring pass's features of the prune images."""
    with prep.clock.phase("pseudo_labels"):
        prep.reporter.stage("pseudo-labels")
        features = scored.result.teacher_features
        reuse = {i: features[i] for i in range(len(prep.split.prune))} if features is not None else {}
        stop = suffix_stop(scored.stages, scored.plan.removed, prep.options.recipe.train_scope)
        targets = build_distill_targets(prep.teacher, prep.entry, prep.images.pixels[prep.finetune_idx], stages=scored.stages,
                                        stop=stop, batch_size=inference_batch(prep), reuse=reuse,
                                        progress=lambda d, tot: prep.reporter.progress("pseudo-labels", d, tot))
    release_free_memory()
    return targets, stop


def distil(prep: Prepared, scored: Scored) -> Distilled:
    """Pseudo-labels, then the pruned student distilled toward them; held-out predictions before and after."""
    targets, stop = build_targets(prep, scored)
    opts, rep, entry = prep.options, prep.reporter, prep.entry
    with prep.clock.phase("finetune"):
        rep.stage("distillation")
        student = remove_blocks(prep.teacher, scored.plan.removed)
        held_px, infer = prep.images.pixels[prep.held], inference_batch(prep)
        held_labels = prep.images.labels[prep.held] if prep.images.labels is not None else None
        logits_orig, logits_before = logits(prep.original, entry, held_px, infer), logits(student, entry, held_px, infer)
        cfg = opts.distill_config()
        ft_pixels = prep.images.pixels[prep.finetune_idx]
        local = run_local_phase(scored.stages, split(student, entry.staging) if scored.stages else None, entry, ft_pixels,
                                targets.labels, scored.plan.removed, cfg)
        try:
            dres = distill(student, entry, ft_pixels, targets.labels, cfg, prefix=targets.prefix, removed=scored.plan.removed,
                           hardware=prep.hardware, progress=lambda s, n, loss: rep.progress("distillation", s, n, loss=loss))
        finally:
            targets.close()
        short = budget_warning(dres.time_budget, dres.steps_done)
        if short:
            rep.warn(short)
        if dres.stopped_nonfinite:
            rep.warn(f"non-finite loss: distillation stopped, weights after {dres.restored_step} updates restored")
        if cfg.student_bn == "reestimate":
            reestimate_bn_stats(student, entry, ft_pixels, cfg.batch_size)
        logits_after = logits(student, entry, held_px, infer)
    release_free_memory()
    distilled = Distilled(student, cfg, dres, targets, stop, held_labels, logits_orig, logits_before, logits_after, local)
    _account_compute(prep, scored, distilled)
    return distilled


def _account_compute(prep: Prepared, scored: Scored, distilled: Distilled) -> None:
    """The compute floor of each phase: its FLOPs at the best matmul throughput measured."""
    floor, dres, timings = prep.floor, distilled.result, prep.clock.timings
    distill_threads = torch.get_num_threads()
    for p, n in {("fp32", prep.threads), (dres.precision, distill_threads), (dres.precision, prep.threads)}:
        floor.measure(p, again=True, threads=n)  # best of start-up and now
    flops = _phase_flops(prep, scored, distilled)
    floor.add("scoring", flops["scoring"], timings["scoring"], threads=prep.threads)
    floor.add("pseudo_labels", flops["pseudo_labels"], timings["pseudo_labels"], threads=prep.threads)
    floor.add("distillation", dres.floor_flops(), dres.seconds, dres.precision, threads=distill_threads)


def _phase_flops(prep: Prepared, scored: Scored, distilled: Distilled) -> dict[str, float]:
    """FLOPs the scoring and pseudo-label phases required (compute_floor.py says what counts)."""
    from ..models.flops import model_flops, stage_flops

    stages, stop, targets = scored.stages, distilled.stop, distilled.targets
    per_stage = stage_flops(stages, prep.example) if stages is not None else None
    full = sum(per_stage) if per_stage is not None else model_flops(prep.teacher, prep.example)
    prefix = sum(per_stage[:stop]) if per_stage is not None and stop else 0
    return {"scoring": len(prep.split.prune) * full * scored.result.forward_equivalents,
            "pseudo_labels": targets.teacher_images * full + targets.prefix_only_images * prefix}
