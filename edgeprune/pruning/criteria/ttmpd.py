"""TT-MPD importance (method.md Eq. 1-4): I_i = L_i * G_i / LS_i, remove the smallest.

L_i (Eq. 1) is the MSE between the full model's pre-GAP feature map and that of the model with
block i removed, on the prune images (eval mode, no grad). The paper pays one full forward per
block. Here, when the model has a stage split, the full model runs once, each block's input is
kept, and "block i removed" runs only the stages after block i from that kept input (identity
passes the input through). Same numbers, fewer FLOPs; the cost is reported in full-forward
equivalents. Without a split it falls back to the paper's full passes (reported as such).
"""

from __future__ import annotations

import torch

from ...models.features import extract_features
from ...models.flops import stage_flops
from ...models.staging import run_keeping_inputs, run_stages, stage_positions
from ...models.surgery import remove_blocks
from .base import CRITERIA, Criterion, CriterionResult, ScoringContext, batches


def initial_noise(ctx: ScoringContext) -> tuple[dict[str, float], torch.Tensor, float]:
    """L_i for every block, the full model's features, and the cost in forward equivalents."""
    if ctx.stages is not None:
        return _noise_with_cached_prefixes(ctx)
    return _noise_with_full_passes(ctx)


def _noise_with_cached_prefixes(ctx: ScoringContext):
    stages = ctx.stages
    index = stage_positions(stages, [b.name for b in ctx.blocks])
    sq_err = {b.name: 0.0 for b in ctx.blocks}
    feats = []
    count = 0
    with torch.no_grad():
        for x in batches(ctx.images, ctx.batch_size):
            kept, full = run_keeping_inputs(stages, x)
            feats.append(full)
            for b in ctx.blocks:
                s = index[b.name]
                out = run_stages(stages, kept[s], start=s + 1)  # block s is identity
                sq_err[b.name] += float(((full - out) ** 2).sum())
            count += full.numel()
    flops = stage_flops(stages, ctx.images[:1])
    total = sum(flops)
    suffix = sum(sum(flops[index[b.name] + 1 :]) for b in ctx.blocks)
    cost = (total + suffix) / total if total else float("nan")
    return {k: v / count for k, v in sq_err.items()}, torch.cat(feats), cost


def _noise_with_full_passes(ctx: ScoringContext):
    noise = {}
    with torch.no_grad():
        full = torch.cat([extract_features(ctx.model, ctx.entry, x) for x in batches(ctx.images, ctx.batch_size)])
        for b in ctx.blocks:
            pruned = remove_blocks(ctx.model, [b.name])
            out = torch.cat([extract_features(pruned, ctx.entry, x) for x in batches(ctx.images, ctx.batch_size)])
            noise[b.name] = float(((full - out) ** 2).mean())
    return noise, full, float(1 + len(ctx.blocks))


@CRITERIA.register("ttmpd")
class TTMPD(Criterion):
    name = "ttmpd"

    def score(self, ctx: ScoringContext) -> CriterionResult:
        noise, feats, cost = initial_noise(ctx)
        scores, details = {}, {}
        for b in ctx.blocks:
            ls = ctx.latency_saving[b.name]
            scores[b.name] = noise[b.name] * b.capacity_gap / ls  # Eq. 4
            details[b.name] = {"noise": noise[b.name], "capacity_gap": b.capacity_gap, "latency_saving": ls,
                               "importance": scores[b.name]}
        notes = [] if ctx.stages is not None else ["no stage split for this model: one full forward per block (paper cost)"]
        return CriterionResult(scores, details, cost, feats, notes)
