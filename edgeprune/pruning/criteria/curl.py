"""CURL baseline, block version (Luo & Wu 2020; method.md "Baselines", a reconstruction [R]).

``score_b = mean_x KL(p_{-b}(x) || p(x))``: p = softmax of the full model's logits, p_{-b} = softmax
of the logits with block b replaced by identity, on the prune images (eval mode, no grad). The
blocks whose removal changes the predictive distribution least are removed first.

Cost. With a stage split (like ``ttmpd``) the full model runs once, every block's input is kept,
and "block b removed" runs only the stages after b from that input, then the model's own
classifier head on the resulting pre-GAP map. The head is found by a probe: a few known ways of
turning the pre-GAP map into logits (timm ``forward_head``; global-average-pool + flatten + head
module; pool + head; class token + head; token mean + head) are tried on two prune images and
the one that reproduces ``model(x)`` is used. When none does, or there is no stage split, it
falls back to the paper-style cost of one full forward per block. Either way the reported
``forward_equivalents`` are FLOP-weighted in units of one full-model forward (head included)
over the prune images, probe included.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ...models.flops import count_flops, model_flops, stage_flops
from ...models.head import HeadFn, find_head, logits_and_features
from ...models.staging import run_keeping_inputs, run_stages, stage_positions
from ...models.surgery import remove_blocks
from .base import CRITERIA, Criterion, CriterionResult, ScoringContext, batches

PROBE_IMAGES = 2


def kl_to_full(pruned_logits: torch.Tensor, full_logits: torch.Tensor) -> torch.Tensor:
    """Per-sample KL(p_pruned || p_full) of the softmax outputs (nats, float64, rounding below 0 clipped)."""
    log_p_full = F.log_softmax(full_logits.double(), dim=1)
    log_p_pruned = F.log_softmax(pruned_logits.double(), dim=1)
    return F.kl_div(log_p_full, log_p_pruned, log_target=True, reduction="none").sum(1).clamp_min(0.0)


@CRITERIA.register("curl")
class Curl(Criterion):
    name = "curl"

    def score(self, ctx: ScoringContext) -> CriterionResult:
        n = int(ctx.images.shape[0])
        notes: list[str] = []
        head = None
        probe_cost = 0.0
        if ctx.stages is not None and n:
            probe = ctx.images[:PROBE_IMAGES]
            head = find_head(ctx.model, ctx.entry, probe)
            probe_cost = probe.shape[0] / n
            if head is None:
                notes.append("curl: could not apply the model's head to the pre-GAP map; one full forward per block")
        if head is not None:
            kl, feats, cost = self._with_cached_prefixes(ctx, head[1])
            notes.append(f"curl: cached prefixes, head applied as {head[0]}")
        else:
            kl, feats, cost = self._with_full_passes(ctx)
            if ctx.stages is None:
                notes.append("curl: no stage split for this model: one full forward per block (paper cost)")
        details = {b.name: {"kl": kl[b.name], "latency_saving": ctx.latency_saving.get(b.name, float("nan"))}
                   for b in ctx.blocks}
        return CriterionResult(dict(kl), details, cost + probe_cost, feats, notes)

    def _with_cached_prefixes(self, ctx: ScoringContext, head: HeadFn):
        stages = ctx.stages
        index = stage_positions(stages, [b.name for b in ctx.blocks])
        kl_sum = {b.name: 0.0 for b in ctx.blocks}
        feats = []
        with torch.no_grad():
            for x in batches(ctx.images, ctx.batch_size):
                kept, h = run_keeping_inputs(stages, x)
                feats.append(h)
                full_logits = head(h)
                for b in ctx.blocks:
                    s = index[b.name]
                    out = run_stages(stages, kept[s], start=s + 1)  # block s is identity
                    kl_sum[b.name] += float(kl_to_full(head(out), full_logits).sum())
        n = max(int(ctx.images.shape[0]), 1)
        example = ctx.images[:1]
        flops = stage_flops(stages, example)
        head_flops = count_flops(head, feats[0][:1]) if feats else 0
        unit = model_flops(ctx.model, example) or (sum(flops) + head_flops)
        suffix = sum(sum(flops[index[b.name] + 1 :]) + head_flops for b in ctx.blocks)
        cost = (sum(flops) + head_flops + suffix) / unit if unit else float("nan")
        return {k: v / n for k, v in kl_sum.items()}, torch.cat(feats) if feats else None, cost

    def _with_full_passes(self, ctx: ScoringContext):
        kl = {}
        with torch.no_grad():
            full, feats = [], []
            for x in batches(ctx.images, ctx.batch_size):
                logits, f = logits_and_features(ctx.model, ctx.entry, x)
                full.append(logits)
                feats.append(f)
            full_logits = torch.cat(full)
            for b in ctx.blocks:
                pruned = remove_blocks(ctx.model, [b.name])
                out = torch.cat([pruned(x) for x in batches(ctx.images, ctx.batch_size)])
                kl[b.name] = float(kl_to_full(out, full_logits).mean())
        return kl, torch.cat(feats) if feats else None, float(1 + len(ctx.blocks))
