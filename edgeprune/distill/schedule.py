"""The learning-rate schedule of a distillation run, and early stopping on its validation checks.

The paper's StepLR: the rate is multiplied by ``gamma`` every ``decay_every`` of the steps. With
``early_stop`` (beyond the paper) a validation check that has not improved by
``min_rel_improvement`` for ``patience`` checks moves the rate to its next step early; on the last
step of the schedule training stops. It also stops when the first check after such a plateau decay
shows no improvement: a 10x lower rate that does not help on a plateau means the next, lower one
will not either. Without plateaus the schedule is the paper's.
"""

from __future__ import annotations

import math

import torch

from .config import DistillConfig


class PlateauSchedule:
    """The paper's step schedule for ``opt``, moved early by validation plateaus.

    ``early`` is the early-stop record (report.json's ``early_stop``): checks and learning-rate
    events are appended to it, and the reason training stopped is written into it.
    """

    def __init__(self, cfg: DistillConfig, opt: torch.optim.Optimizer, early: dict):
        self.cfg, self.opt, self.early = cfg, opt, early
        self.phase = 0
        self._lay_out(cfg.steps)
        self.next_boundary = self.step_size
        self.best, self.bad = math.inf, 0
        self.decayed_at: int | None = None  # step of the last plateau decay not yet judged by a check

    def _lay_out(self, steps: int) -> None:
        """Decays every ``decay_every`` of ``steps``: the interval and how many the run reaches."""
        self.step_size = max(1, int(round(self.cfg.decay_every * steps)))
        self.last_phase = (steps - 1) // self.step_size  # the paper's schedule reaches this many decays

    def rescale(self, steps: int, step: int) -> None:
        """Lay the schedule out over ``steps`` instead (a time budget changed the count at ``step``):
        the coming decays move to their fractions of the new count."""
        self._lay_out(steps)
        self.next_boundary = max(step + 1, (self.phase + 1) * self.step_size)

    def _set_lr(self) -> None:
        for g in self.opt.param_groups:
            g["lr"] = self.cfg.lr * self.cfg.gamma ** self.phase

    def after_step(self, step: int) -> None:
        """The scheduled decay (StepLR within ``steps``; plateau decays shift the boundaries)."""
        if step == self.next_boundary:
            self.phase = min(self.phase + 1, self.last_phase)
            self.next_boundary += self.step_size
            self._set_lr()
            self.decayed_at = None  # a scheduled decay of a still-improving run is not a test of lower rates

    def judge(self, step: int, value: float) -> bool:
        """Take the validation loss ``value`` checked at ``step``; True when training should stop."""
        cfg = self.cfg
        improved = value < self.best * (1 - cfg.min_rel_improvement)
        if improved:
            self.best, self.bad = value, 0
        else:
            self.bad += 1
        if self.decayed_at is not None and step > self.decayed_at:
            # The first check after a plateau's decay judges it: when a 10x lower rate brings no gain
            # on a plateau, the still lower ones will not either (docs/benchmarks/adapt_speed.md).
            # Only plateau decays: right after a scheduled decay of a run still improving, the
            # validation loss can rise for a few steps (measured on lite0: 0.218 -> 0.223).
            decayed, self.decayed_at = self.decayed_at, None
            if not improved:
                return self._stop(step, f"the learning-rate decay at step {decayed} improved the validation loss "
                                        f"< {cfg.min_rel_improvement:.0%} within {step - decayed} steps")
        if self.bad < cfg.patience:
            return False
        self.bad = 0
        if self.phase >= self.last_phase:
            return self._stop(step, f"validation loss improved < {cfg.min_rel_improvement:.0%} in {cfg.patience} "
                                    f"checks ({cfg.patience * cfg.check_every} steps) at the last learning rate")
        self.phase += 1
        self.next_boundary = step + self.step_size
        self._set_lr()
        self.decayed_at = step
        self.early["lr_events"].append({"step": step, "lr": cfg.lr * cfg.gamma ** self.phase, "why": "validation plateau"})
        return False

    def _stop(self, step: int, reason: str) -> bool:
        self.early["stopped_at"], self.early["reason"] = step, reason
        return True
