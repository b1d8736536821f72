"""The criterion interface: score removable blocks; the plan removes the smallest first.

A criterion is an object with ``name`` and ``score(ctx) -> CriterionResult`` (Torch-Pruning's
importance objects are the model). Register one with ``@CRITERIA.register("name")``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from ...models.blocks import Block
from ...models.staging import Stage
from ...models.zoo import ZooEntry
from ...registry import Registry

CRITERIA: Registry = Registry("criterion")


@dataclass
class ScoringContext:
    model: nn.Module  # the original model, eval mode; criteria must leave it unchanged
    entry: ZooEntry
    blocks: list[Block]
    images: torch.Tensor  # the prune images, normalised float batch
    latency_saving: dict[str, float]  # LS_i per block from the profile, already floored (> 0)
    stages: list[Stage] | None = None  # staging.split(...) when the model has a splitter
    seed: int = 0
    batch_size: int = 64
    steps: int = 100  # for criteria that train (Practise)


@dataclass
class CriterionResult:
    scores: dict[str, float]  # block name -> score; smaller = removed first
    details: dict[str, dict[str, float]] = field(default_factory=dict)  # per block, for the report
    forward_equivalents: float = 0.0  # cost in full-model forward passes (FLOP-weighted)
    teacher_features: torch.Tensor | None = None  # full-model pre-GAP maps of ctx.images, reusable
    notes: list[str] = field(default_factory=list)


class Criterion:
    name = "base"

    def score(self, ctx: ScoringContext) -> CriterionResult:  # pragma: no cover - interface
        raise NotImplementedError


def batches(x: torch.Tensor, size: int):
    for i in range(0, x.shape[0], size):
        yield x[i : i + size]
