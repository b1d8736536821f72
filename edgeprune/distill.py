"""Distillation of the pruned student toward stored pseudo-labels (method.md, "Fine-tuning").

Student = pruned model in train mode; every weight but the classifier head is trained;
loss = MSE(student pre-GAP features, stored teacher features); SGD momentum 0.9, weight decay
1e-4, lr 0.02 multiplied by 0.1 every 40% of the steps; 500 steps of batch 64; no augmentation.
A non-finite loss stops training and restores the last good weights.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .images import normalise
from .pseudo_labels import FeatureStore
from .zoo import ZooEntry, extract_features, head_parameters


@dataclass
class DistillConfig:
    steps: int = 500
    batch_size: int = 64
    lr: float = 0.02
    momentum: float = 0.9
    weight_decay: float = 1e-4
    decay_every: float = 0.4  # fraction of the steps between x gamma
    gamma: float = 0.1
    seed: int = 0
    freeze_head: bool = True  # method.md: every weight but the classifier head is trained


@dataclass
class DistillResult:
    steps_done: int
    losses: list[float] = field(default_factory=list)
    stopped_nonfinite: bool = False
    restored_step: int | None = None  # updates applied to the restored weights
    seconds: float = 0.0

    @property
    def final_loss(self) -> float:
        return self.losses[-1] if self.losses else float("nan")


def trainable_parameters(student: nn.Module, entry: ZooEntry, freeze_head: bool = True) -> list[nn.Parameter]:
    head = head_parameters(student, entry) if freeze_head else set()
    params = []
    for p in student.parameters():
        p.requires_grad_(id(p) not in head)
        if id(p) not in head:
            params.append(p)
    return params


def batch_schedule(n: int, batch: int, steps: int, seed: int):
    """Index batches: a fresh seeded permutation per epoch, incomplete tails dropped."""
    g = torch.Generator().manual_seed(seed)
    batch = min(batch, n)
    done = 0
    while done < steps:
        perm = torch.randperm(n, generator=g)
        for start in range(0, n - batch + 1, batch):
            if done == steps:
                return
            yield perm[start : start + batch]
            done += 1


def distill(
    student: nn.Module,
    entry: ZooEntry,
    pixels: torch.Tensor,
    labels: FeatureStore,
    config: DistillConfig,
    progress: Callable[[int, int, float], None] | None = None,
) -> DistillResult:
    """Train ``student`` in place toward ``labels`` (aligned with ``pixels`` by position)."""
    torch.manual_seed(config.seed)
    params = trainable_parameters(student, entry, config.freeze_head)
    opt = torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    step_size = max(1, int(round(config.decay_every * config.steps)))
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=step_size, gamma=config.gamma)
    result = DistillResult(0)
    # Weights that last gave a finite loss, refreshed in place each step (no reallocation).
    good = {k: v.detach().clone() for k, v in student.state_dict().items()}
    good_updates = 0  # optimizer updates already applied to `good`
    start = time.perf_counter()
    student.train()
    for step, idx in enumerate(batch_schedule(len(labels), config.batch_size, config.steps, config.seed), 1):
        x = normalise(pixels[idx], entry.mean, entry.std)
        target = labels.get(idx).float()
        loss = F.mse_loss(extract_features(student, entry, x).float(), target)
        value = float(loss.detach())
        if not math.isfinite(value):
            student.load_state_dict(good)
            result.stopped_nonfinite, result.restored_step = True, good_updates
            break
        with torch.no_grad():
            for k, v in student.state_dict().items():
                good[k].copy_(v)
        good_updates = step - 1
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        result.losses.append(value)
        result.steps_done = step
        if progress:
            progress(step, config.steps, value)
    student.eval()
    for p in student.parameters():
        p.requires_grad_(True)
    result.seconds = time.perf_counter() - start
    return result
