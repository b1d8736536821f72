"""Practise baseline (Wang & Wu 2023; method.md "Baselines" [C]): recoverability per latency saved.

For each removable block b: remove it, put an identity-initialised adaptor in the gap, train
ONLY the adaptor so that the pruned model's pre-GAP feature map matches the original model's
(MSE; SGD lr 0.02, momentum 0.9, weight decay 1e-4; lr x0.1 at 40% of the iterations;
``ctx.steps`` iterations of ``ctx.batch_size`` prune images, seeded batches as in distillation;
model in eval mode, as in Practise's code). Recoverability ``R_b`` = the MSE over all prune images
after training; ``score_b = R_b / LS_b``; the k smallest are removed, one shot.

Adaptors (a generic reconstruction): Practise's code hard-codes, per architecture, 1x1 convs on
the neighbouring blocks' convolutions. edgeprune discovers blocks from the model instead, so it
puts ONE adaptor in the gap itself: a bias-free 1x1 ``Conv2d`` (C -> C) for 4-D conv feature maps,
a bias-free ``Linear`` (D -> D) over the last dimension for token sequences (ViT), initialised to
the identity, so before training the pruned model is exactly "block b replaced by identity".

The original model's weights are never changed: gradients are taken with ``torch.autograd.grad``
w.r.t. the adaptor's weight only (no ``.grad`` is written into the model) and the model stays in
eval mode (BatchNorm statistics untouched).

Cost (``forward_equivalents``, in units of one full-model forward — head included — over the
prune images): one teacher pass for the targets; with a stage split, one prefix pass (every
block's input is cached, since the frozen prefix does not depend on the adaptor) and then per
block, per iteration, adaptor + suffix forward and backward; without a split, a full forward
and backward of the pruned model per iteration. A forward+backward is counted as 3 forwards
(``TRAIN_STEP_FORWARDS``: the usual estimate; an upper bound here, since frozen weights need no
weight gradients). The final recoverability pass adds one forward per block.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from ...data.batches import batch_schedule
from ...models.features import extract_features, set_module
from ...models.flops import count_flops, model_flops, stage_flops
from ...models.staging import run_stages
from .base import CRITERIA, Criterion, CriterionResult, ScoringContext, batches

LR = 0.02
MOMENTUM = 0.9
WEIGHT_DECAY = 1e-4
DECAY_AT = 0.4  # StepLR step = 40% of the iterations
GAMMA = 0.1
TRAIN_STEP_FORWARDS = 3.0  # forward + backward counted as three forward passes


class ChannelAdaptor(nn.Module):
    """Identity-initialised, bias-free 1x1 conv (4-D maps) or Linear over the last dim (tokens)."""

    def __init__(self, shape: tuple[int, ...], dtype=torch.float32, device=None):
        super().__init__()
        self.conv = len(shape) == 3  # (C, H, W) per sample
        channels = shape[0] if self.conv else shape[-1]
        self.weight = nn.Parameter(torch.eye(channels, dtype=dtype, device=device))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.conv:
            return F.conv2d(x, self.weight[:, :, None, None])
        return F.linear(x, self.weight)


def _train_adaptor(adaptor: ChannelAdaptor, forward, targets: torch.Tensor, ctx: ScoringContext) -> list[float]:
    """SGD on the adaptor only; ``forward(idx)`` gives the pruned model's pre-GAP maps."""
    params = [adaptor.weight]
    opt = torch.optim.SGD(params, lr=LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=max(1, int(DECAY_AT * ctx.steps)), gamma=GAMMA)
    losses = []
    for idx in batch_schedule(int(ctx.images.shape[0]), ctx.batch_size, ctx.steps, ctx.seed):
        loss = F.mse_loss(forward(idx).float(), targets[idx].float())
        (grad,) = torch.autograd.grad(loss, params)
        adaptor.weight.grad = grad
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
    adaptor.weight.grad = None
    return losses


@CRITERIA.register("practise")
class Practise(Criterion):
    name = "practise"

    def score(self, ctx: ScoringContext) -> CriterionResult:
        n = int(ctx.images.shape[0])
        if n == 0:
            raise ValueError("practise needs at least one prune image")
        example = ctx.images[:1]
        unit = float(model_flops(ctx.model, example)) or 1.0
        with torch.no_grad():
            targets = torch.cat([extract_features(ctx.model, ctx.entry, x) for x in batches(ctx.images, ctx.batch_size)])
        cost = 1.0  # the teacher pass
        if ctx.stages is not None:
            recover, extra = self._with_cached_prefixes(ctx, targets, unit)
            notes = ["practise: cached prefixes, adaptor + suffix trained per block"]
        else:
            recover, extra = self._with_full_passes(ctx, targets, unit)
            notes = ["practise: no stage split: full forward + backward of the pruned model per iteration"]
        cost += extra
        scores, details = {}, {}
        for b in ctx.blocks:
            r, first, last = recover[b.name]
            ls = ctx.latency_saving[b.name]
            scores[b.name] = r / ls
            details[b.name] = {"recoverability": r, "latency_saving": ls, "score": scores[b.name],
                               "first_loss": first, "last_train_loss": last}
        notes.append(f"practise: {ctx.steps} adaptor iterations per block; forward+backward counted as "
                     f"{TRAIN_STEP_FORWARDS:g} forwards")
        return CriterionResult(scores, details, cost, targets, notes)

    def _steps_samples(self, ctx: ScoringContext) -> int:
        n = int(ctx.images.shape[0])
        batch = min(ctx.batch_size, n)
        return len(list(batch_schedule(n, batch, ctx.steps, ctx.seed))) * batch

    def _with_cached_prefixes(self, ctx: ScoringContext, targets: torch.Tensor, unit: float):
        stages = ctx.stages
        index = {name: i for i, (name, _) in enumerate(stages)}
        missing = [b.name for b in ctx.blocks if b.name not in index]
        if missing:
            raise ValueError(f"blocks not in the stage split: {missing}")
        n = int(ctx.images.shape[0])
        flops = stage_flops(stages, ctx.images[:1])
        trained = self._steps_samples(ctx)
        order = sorted(ctx.blocks, key=lambda b: index[b.name])
        h, at = ctx.images, 0  # h = input of stage `at` for all prune images (prefix pass, no grad)
        recover, cost = {}, 0.0
        for b in order:
            s = index[b.name]
            with torch.no_grad():
                h = torch.cat([run_stages(stages, x, start=at, stop=s) for x in batches(h, ctx.batch_size)])
            cost += sum(flops[at:s]) / unit
            at = s
            kept = h
            adaptor = ChannelAdaptor(tuple(kept.shape[1:]), kept.dtype, kept.device)
            losses = _train_adaptor(adaptor, lambda idx: run_stages(stages, adaptor(kept[idx]), start=s + 1), targets, ctx)
            with torch.no_grad():
                out = torch.cat([run_stages(stages, adaptor(x), start=s + 1) for x in batches(kept, ctx.batch_size)])
                r = float(F.mse_loss(out.float(), targets.float()))
            step_flops = sum(flops[s + 1 :]) + count_flops(adaptor, kept[:1])  # the head is not run
            cost += (TRAIN_STEP_FORWARDS * trained + n) * step_flops / (n * unit)
            recover[b.name] = (r, losses[0] if losses else r, losses[-1] if losses else r)
        return recover, cost

    def _with_full_passes(self, ctx: ScoringContext, targets: torch.Tensor, unit: float):
        n = int(ctx.images.shape[0])
        trained = self._steps_samples(ctx)
        recover, cost = {}, 0.0
        for b in ctx.blocks:
            student = copy.deepcopy(ctx.model).eval()
            for p in student.parameters():
                p.requires_grad_(False)
            adaptor = ChannelAdaptor(b.shape, next(ctx.model.parameters()).dtype, ctx.images.device)
            set_module(student, b.name, adaptor)
            losses = _train_adaptor(adaptor, lambda idx: extract_features(student, ctx.entry, ctx.images[idx]), targets, ctx)
            with torch.no_grad():
                out = torch.cat([extract_features(student, ctx.entry, x) for x in batches(ctx.images, ctx.batch_size)])
                r = float(F.mse_loss(out.float(), targets.float()))
            cost += (TRAIN_STEP_FORWARDS * trained + n) / n  # whole passes (the head is skipped: slight overestimate)
            recover[b.name] = (r, losses[0] if losses else r, losses[-1] if losses else r)
        return recover, cost
