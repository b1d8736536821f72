"""Local reconstruction of each gap before the global distillation (beyond the paper; off by default).

Removing a block leaves a gap: the stages after it receive the activation the removed block used
to transform. The teacher's activation a little further on is a dense target, and only the stage
next to the gap needs to change to meet it. For each run of removed stages the *window* is the
gap plus the next kept stage that has weights; its input is the teacher's activation entering
the gap, its target the teacher's activation leaving the window, both cached in the one teacher
pass that makes the pseudo-labels (targets.build_distill_targets(keep=...)). A window runs one
block instead of the whole suffix. The loss is the MSE relative to the target's mean square, so
one learning rate suits windows whose activations differ in scale by orders of magnitude.

Windows start at a removed stage, so they never touch the frozen prefix of the suffix scope.
Measured on efficientnet_lite0 (docs/benchmarks/fidelity.md): at equal wall time it did not beat
global distillation alone, so ``DistillConfig.local_steps`` is 0 by default.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..data.transforms import normalise
from ..models.staging import Stage
from ..models.zoo import ZooEntry
from .bn_stats import freeze_batchnorm
from .config import DistillConfig
from .hardware import to_layout
from .targets import FeatureStore


@dataclass
class Window:
    gap: list[str]  # the removed stages (consecutive)
    start: int  # index of the first removed stage: the input is the teacher's activation entering it
    trained: int  # index of the kept stage after the gap: the only one trained
    stop: int  # trained + 1: the target is the teacher's input of this stage (len(stages) = final features)


def gap_windows(stages: list[Stage], removed) -> tuple[list[Window], list[str]]:
    """A window for every run of removed stages, and a note for each gap that gets none."""
    names = [n for n, _ in stages]
    gone = sorted(names.index(r) for r in removed if r in names)
    windows: list[Window] = []
    notes: list[str] = []
    runs: list[list[int]] = []
    for i in gone:
        if runs and runs[-1][-1] == i - 1:
            runs[-1].append(i)
        else:
            runs.append([i])
    for run in runs:
        nxt = run[-1] + 1
        while nxt < len(stages) and (nxt in gone or not any(True for _ in stages[nxt][1].parameters())):
            nxt += 1
        gap = [names[i] for i in run]
        if nxt >= len(stages):
            notes.append(f"no stage with weights after {', '.join(gap)}: its gap is left to the global distillation")
            continue
        windows.append(Window(gap, run[0], nxt, nxt + 1))
    return windows, notes


def needed_activations(windows: list[Window]) -> set[int]:
    """Stage indices whose teacher *input* the local phase reads (the final features are the labels)."""
    return {w.start for w in windows} | {w.stop for w in windows}


def cache_stage_inputs(stages: list[Stage], entry: ZooEntry, pixels: torch.Tensor, keep: set[int],
                       batch_size: int = 64, channels_last: bool = True) -> dict[int, FeatureStore]:
    """The teacher's input of each stage in ``keep`` for every image (float16 stores, by position).

    ``stages`` must be the *teacher's* (unpruned) stages; index ``len(stages)`` is not cached here
    (it is the pseudo-label itself).
    """
    keep = {i for i in keep if i < len(stages)}
    stores: dict[int, FeatureStore] = {}
    last = max(keep) if keep else -1
    with torch.no_grad():
        for start in range(0, pixels.shape[0], batch_size):
            pos = list(range(start, min(start + batch_size, pixels.shape[0])))
            x = to_layout(normalise(pixels[pos], entry.mean, entry.std), channels_last)
            for i, (_, module) in enumerate(stages[: last + 1]):
                if i in keep:
                    if i not in stores:
                        stores[i] = FeatureStore(pixels.shape[0], tuple(x.shape[1:]))
                    stores[i].put(pos, x)
                if i < last:
                    x = module(x)
    return stores


def _train_window(module: nn.Module, inputs: FeatureStore, targets: FeatureStore, cfg: DistillConfig,
                  channels_last: bool) -> dict:
    params = [p for p in module.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    step_size = max(1, round(cfg.decay_every * cfg.local_steps))
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size, cfg.gamma)
    g = torch.Generator().manual_seed(cfg.seed + 104729)
    n, batch = len(inputs), min(cfg.batch_size, len(inputs))
    chunk = cfg.micro_batch or batch
    losses = []
    module.train()
    if cfg.student_bn == "frozen":
        freeze_batchnorm(module)
    for _ in range(cfg.local_steps):
        idx = torch.randperm(n, generator=g)[:batch]
        opt.zero_grad(set_to_none=True)
        value = 0.0
        for part in idx.split(chunk):
            x = to_layout(inputs.get(part).float(), channels_last)
            y = targets.get(part).float()
            loss = F.mse_loss(module(x).float(), y) / y.pow(2).mean().clamp_min(1e-12) * (len(part) / batch)
            loss.backward()
            value += float(loss.detach())
        opt.step()
        sched.step()
        losses.append(value)
    module.eval()
    return {"first_loss": losses[0] if losses else None, "last_loss": losses[-1] if losses else None}


def reconstruct_gaps(stages: list[Stage], windows: list[Window], activations: dict[int, FeatureStore],
                     labels: FeatureStore, cfg: DistillConfig, channels_last: bool = True) -> list[dict]:
    """Train the kept stage after each gap toward the teacher's activation (in place); a record per window."""
    records = []
    for w in windows:
        t = time.perf_counter()
        target = labels if w.stop >= len(stages) else activations[w.stop]
        module = stages[w.trained][1]
        if channels_last:
            module.to(memory_format=torch.channels_last)
        rec = _train_window(module, activations[w.start], target, cfg, channels_last)
        if channels_last:
            module.to(memory_format=torch.contiguous_format)
        records.append({"gap": w.gap, "trained": stages[w.trained][0], "steps": cfg.local_steps,
                        "relative_loss_first": rec["first_loss"], "relative_loss_last": rec["last_loss"],
                        "seconds": time.perf_counter() - t})
    return records


def run_local_phase(teacher_stages: list[Stage] | None, student_stages: list[Stage] | None, entry: ZooEntry,
                    pixels: torch.Tensor, labels: FeatureStore, removed, cfg: DistillConfig) -> dict:
    """The whole local phase for ``adapt``: windows, one teacher pass for their activations, training.

    Returns the report entry (``distillation.local``); ``{"enabled": False, ...}`` with the reason
    when it does not run.
    """
    if cfg.local_steps <= 0:
        return {"enabled": False, "reason": "local_steps = 0 (default)"}
    if teacher_stages is None or student_stages is None:
        return {"enabled": False, "reason": "no stage split for this model"}
    t = time.perf_counter()
    windows, notes = gap_windows(teacher_stages, removed)
    stores = cache_stage_inputs(teacher_stages, entry, pixels, needed_activations(windows),
                                cfg.micro_batch or cfg.batch_size, cfg.channels_last)
    try:
        records = reconstruct_gaps(student_stages, windows, stores, labels, cfg, cfg.channels_last)
    finally:
        for store in stores.values():
            store.close()
    return {"enabled": True, "steps_per_window": cfg.local_steps, "windows": records, "notes": notes,
            "seconds": time.perf_counter() - t}
