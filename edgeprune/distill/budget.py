"""A wall-time budget for distillation: the step count that fits, measured on the device (beyond the paper).

A step costs 0.05 s for a Fashion-MNIST ResNet and 2-3 s for efficientnet_lite0 on a 2-core CPU,
so no fixed step count suits both: 500 steps are half a minute for one and 20 minutes for the
other. With ``time_budget_minutes`` set, a run first takes ``MEASURE_STEPS`` steps (the student
BatchNorm probe's, when there is one), then lowers ``steps`` to what its measured step and
validation times leave room for, and the learning-rate schedule is laid out over the new count
(the decays keep their place as fractions of the run). It only ever lowers the count: a budget
larger than ``steps`` needs changes nothing, so small models run exactly as without it.
"""

from __future__ import annotations

import dataclasses
import math

MEASURE_STEPS = 10  # steps timed before the count is fitted (the student BatchNorm probe's default)


def budget_seconds(cfg) -> float | None:
    """The distillation phase's wall-time budget in seconds (None: no budget)."""
    minutes = cfg.time_budget_minutes
    return None if not minutes else 60.0 * minutes


def steps_that_fit(remaining_s: float, step_s: float, check_s: float, check_every: int) -> int:
    """Steps that fit in ``remaining_s`` when a step takes ``step_s`` and every ``check_every``-th
    step adds a validation check of ``check_s`` (one more check at the end, for keep-best)."""
    per_step = step_s + check_s / max(check_every, 1)
    return max(0, math.floor((remaining_s - check_s) / per_step)) if per_step > 0 else 0


def fit_to_budget(run, elapsed_s: float) -> dict:
    """Lower ``run.cfg.steps`` (a ``distiller.Distiller``) to what fits in the budget; the record.

    ``elapsed_s``: the phase's wall time so far (set-up, the steps done, and a probe's dropped run).
    """
    budget, cfg, done = budget_seconds(run.cfg), run.cfg, run.result.steps_done
    step_s = run.step_seconds / max(done, 1)
    fit = done + steps_that_fit(budget - elapsed_s, step_s, run.val_seconds, cfg.check_every)
    record = {"minutes": cfg.time_budget_minutes, "measured_steps": done, "seconds_per_step": step_s,
              "seconds_per_check": run.val_seconds, "elapsed_seconds": elapsed_s, "steps_requested": cfg.steps,
              "steps_that_fit": fit, "bound": fit < cfg.steps}
    if fit < cfg.steps:
        run.cfg = dataclasses.replace(cfg, steps=max(fit, done))
        run.lr_schedule.rescale(run.cfg.steps, done)
        if run.cfg.steps <= done:
            run.done = True
    return record
