"""Random baseline (method.md, "Baselines"): remove k random removable blocks.

Every block gets a score drawn uniformly from [0, 1) by a ``torch.Generator`` seeded with
``ctx.seed``; the plan removes the k smallest, i.e. a uniformly random k-subset. The same seed
gives the same blocks. No forward pass is run: the cost is 0 forward equivalents.
"""

from __future__ import annotations

import torch

from .base import CRITERIA, Criterion, CriterionResult, ScoringContext


@CRITERIA.register("random")
class RandomCriterion(Criterion):
    name = "random"

    def score(self, ctx: ScoringContext) -> CriterionResult:
        g = torch.Generator().manual_seed(int(ctx.seed))
        draws = torch.rand(len(ctx.blocks), generator=g, dtype=torch.float64).tolist()
        scores = {b.name: float(v) for b, v in zip(ctx.blocks, draws)}
        details = {name: {"random": v} for name, v in scores.items()}
        notes = [f"random baseline: scores drawn with seed {ctx.seed}, no forward pass"]
        return CriterionResult(scores, details, 0.0, None, notes)
