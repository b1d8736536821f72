"""Residual-ratio baseline (Jastrzebski et al. 2018; method.md "Baselines", a reconstruction [R]).

``r_b = E_x ||F_b(x)||_2 / ||x||_2``: the norm of block b's residual branch over the norm of its
input, per sample, averaged over the prune images. A small ratio means the block is nearly the
identity, so it is removed first.

``F_b(x)`` is taken as ``block output - block input``. For pre-activation style blocks
(MobileNetV2 ``InvertedResidual``, ViT encoder layers, ConvNeXt) that is exactly the residual
branch; for torchvision's post-activation ``BasicBlock``/``Bottleneck`` (``relu(x + F(x))``) it is
the branch after the final ReLU, i.e. the change the block makes to its input — which is what
removing the block takes away.

Cost: ONE pass over the prune images, with a forward hook on every block (the pass stops at the
pre-GAP feature layer, so the head is not even run): reported as 1.0 forward equivalent. The
pre-GAP features of that pass are returned as ``teacher_features`` (reusable as pseudo-labels).
"""

from __future__ import annotations

import torch

from ...models.features import extract_features, get_module
from .base import CRITERIA, Criterion, CriterionResult, ScoringContext, batches

EPS = 1e-12  # guards an all-zero block input


@CRITERIA.register("ratio")
class ResidualRatio(Criterion):
    name = "ratio"

    def score(self, ctx: ScoringContext) -> CriterionResult:
        sums = {b.name: {"ratio": 0.0, "branch_norm": 0.0, "input_norm": 0.0} for b in ctx.blocks}

        def make_hook(name):
            def hook(_module, inputs, output):
                x = inputs[0]
                branch = (output - x).flatten(1).float().norm(dim=1)
                inp = x.flatten(1).float().norm(dim=1)
                acc = sums[name]
                acc["ratio"] += float((branch / inp.clamp_min(EPS)).sum())
                acc["branch_norm"] += float(branch.sum())
                acc["input_norm"] += float(inp.sum())

            return hook

        handles = [get_module(ctx.model, b.name).register_forward_hook(make_hook(b.name)) for b in ctx.blocks]
        feats = []
        try:
            with torch.no_grad():
                for x in batches(ctx.images, ctx.batch_size):
                    feats.append(extract_features(ctx.model, ctx.entry, x))
        finally:
            for h in handles:
                h.remove()
        n = max(int(ctx.images.shape[0]), 1)
        details = {name: {k: v / n for k, v in acc.items()} for name, acc in sums.items()}
        for name, d in details.items():
            d["latency_saving"] = ctx.latency_saving.get(name, float("nan"))
        scores = {name: d["ratio"] for name, d in details.items()}
        return CriterionResult(scores, details, 1.0, torch.cat(feats) if feats else None,
                               ["ratio: one forward pass with hooks on every block"])
