"""Student BatchNorm mode chosen from evidence (``student_bn="auto"``, beyond the paper).

Neither mode wins everywhere (docs/benchmarks/fidelity.md): eval-mode ("frozen") BatchNorm keeps
the student normalising as the teacher that made its targets and lifts efficientnet_lite0 from
0.30 to 0.58 held-out agreement on a mixed photo stream, while on the Fashion-MNIST models the
paper's train mode ends 5-7 points more accurate and frozen can diverge at lr 0.02. So both modes
train ``probe_steps`` steps from the same weights, on the same batches, and the one with the lower
loss on the validation slice (the slice early stopping already uses, never trained on) continues;
the other is dropped. The cost is ``probe_steps`` extra steps; the decision and both losses go to
the report.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from typing import Callable

import torch
from torch import nn

from ..models.zoo import ZooEntry
from .config import DistillConfig
from .result import DistillResult
from .targets import FeatureStore, PrefixCache

PROBED_MODES = ("frozen", "train")


def distill_auto_bn(distiller_cls, student: nn.Module, entry: ZooEntry, pixels: torch.Tensor, labels: FeatureStore,
                    config: DistillConfig, progress: Callable[[int, int, float], None] | None = None,
                    prefix: PrefixCache | None = None, removed: list[str] | None = None,
                    hardware=None) -> DistillResult:
    """``distill`` with the student BatchNorm mode decided by a short probe of both modes.

    Trains ``student`` in place, as ``distill`` does. Without a validation slice (too few images,
    or early stop and keep-best both off) there is no evidence: the paper's train mode runs, and
    the result says why. ``distiller_cls`` is distiller.Distiller (passed in: this module sits
    below distiller.py, which dispatches here).
    """
    steps = min(config.bn_probe_steps, config.steps)
    runs: dict = {}
    for mode in PROBED_MODES:
        cfg = dataclasses.replace(config, student_bn=mode)
        first = next(iter(runs.values()), None)
        # the second run reuses the first's measured thread count and precision (no second probe)
        hw = dataclasses.replace(first.hw, threads_auto=False, notes=list(first.hw.notes)) if first else hardware
        runs[mode] = distiller_cls(copy.deepcopy(student), entry, pixels, labels, cfg, None, prefix, removed, hw)
    runs["frozen"].partner, runs["train"].partner = runs["train"], runs["frozen"]  # one time budget for both
    if not runs["train"].val_pos or steps <= 0:
        return _finish(student, runs["train"], None, {"chosen": "train", "reason": "no validation slice: the paper's mode",
                                                      "probe_steps": 0}, progress)
    for step in range(steps):
        for mode in PROBED_MODES if step % 2 == 0 else PROBED_MODES[::-1]:  # alternate who goes first
            runs[mode].step()
        if progress:
            progress(step + 1, config.steps, runs["train"].result.final_loss)
    losses = {mode: _validation_loss(run) for mode, run in runs.items()}
    chosen = min(PROBED_MODES, key=lambda m: (not math.isfinite(losses[m]), losses[m]))
    record = {"chosen": chosen, "probe_steps": steps, "val_loss": losses,
              "reason": f"validation loss after {steps} steps: frozen {losses['frozen']:.4g}, train {losses['train']:.4g}"}
    return _finish(student, runs[chosen], runs[_other(chosen)], record, progress)


def _other(mode: str) -> str:
    return PROBED_MODES[1 - PROBED_MODES.index(mode)]


def _validation_loss(run) -> float:
    if run.result.stopped_nonfinite:
        return math.inf
    checks = run.early["checks"]
    if checks and checks[-1][0] == run.result.steps_done:  # the run just validated at this step
        return float(checks[-1][1])
    value = run.validation_loss()
    run.early["checks"].append([run.result.steps_done, value])
    run.record_validation(run.result.steps_done, value)
    return value


def _finish(student: nn.Module, winner, loser, record: dict, progress) -> DistillResult:
    """Run the winner to the end, copy its weights into ``student``, account the loser's time."""
    if progress:
        winner.progress = progress
    while winner.step():
        pass
    result = winner.finish()
    student.load_state_dict(winner.student.state_dict())
    student.eval()
    if loser is not None:
        result.seconds += loser.seconds
        record["probe_seconds"] = loser.seconds
    result.student_bn = record
    result.notes.append(f"student BatchNorm: {record['chosen']} ({record['reason']})")
    return result
