"""A wall-time budget for distillation: the step count that fits, measured on the device (beyond the paper).

The cost of a step differs by orders of magnitude between a small Fashion-MNIST network and a
pretrained EfficientNet on a small CPU, so no fixed step count suits both (figures:
docs/benchmarks/fidelity.md, section 8). With ``time_budget_minutes`` set, a run first times
``MEASURE_STEPS`` steps (the student BatchNorm probe's, when there is one), then sets ``steps`` to
what its measured step and validation times leave room for, again at every validation check from
the steps since the last fit; the learning-rate schedule is laid out over the new count (the
decays keep their place as fractions of the run). The count never exceeds the one requested, so
a budget larger than the run needs changes nothing: small models run exactly as without it.
"""

from __future__ import annotations

import dataclasses
import math

MEASURE_STEPS = 10  # steps timed before the count is fitted (the student BatchNorm probe's default)
FEW_STEPS = 50  # below this the run warns: lite0 kept 0.62 agreement after 30 steps, 0.72 after 60 (fidelity.md)


def budget_seconds(cfg) -> float | None:
    """The distillation phase's wall-time budget in seconds (None: no budget)."""
    minutes = cfg.time_budget_minutes
    return None if not minutes else 60.0 * minutes


def steps_that_fit(remaining_s: float, step_s: float, check_s: float, check_every: int) -> int:
    """Steps that fit in ``remaining_s`` when a step takes ``step_s`` and every ``check_every``-th
    step adds a validation check of ``check_s`` (one more check at the end, for keep-best)."""
    per_step = step_s + check_s / max(check_every, 1)
    return max(0, math.floor((remaining_s - check_s) / per_step)) if per_step > 0 else 0


def fit_when_due(run) -> None:
    """Fit ``run``'s step count to the budget once enough steps are timed (the student BatchNorm
    probe's too, whose dropped run is ``run.partner``), then again at each validation check."""
    done, fitted = run.result.steps_done, run.result.time_budget or None
    if budget_seconds(run.cfg) is None or run.done:
        return
    if done < max(MEASURE_STEPS, run.cfg.bn_probe_steps if run.partner else 0) or (fitted and done % run.cfg.check_every):
        return
    elapsed = run.seconds + (run.partner.seconds if run.partner else 0.0)
    run.result.time_budget = fit_to_budget(run, elapsed, fitted)


def fit_to_budget(run, elapsed_s: float, record: dict | None = None) -> dict:
    """Set ``run.cfg.steps`` (a ``distiller.Distiller``) to what fits in the budget; the record.

    The first fit times the steps done so far; each later one (at a validation check) the steps
    since the previous fit, so a run whose steps slow down as it trains still ends near its
    budget. The count never exceeds the one requested. ``elapsed_s``: the phase's wall time so far
    (set-up, the steps done, and a probe's dropped run). ``record``: the previous fit's.
    """
    budget, cfg, done = budget_seconds(run.cfg), run.cfg, run.result.steps_done
    requested = record["steps_requested"] if record else cfg.steps
    since_steps, since_s = run.budget_mark if record else (0, 0.0)
    step_s = (run.step_seconds - since_s) / max(done - since_steps, 1)
    fit = min(requested, done + steps_that_fit(budget - elapsed_s, step_s, run.val_seconds, cfg.check_every))
    if record is None:
        record = {"minutes": cfg.time_budget_minutes, "measured_steps": done, "seconds_per_step": step_s,
                  "seconds_per_check": run.val_seconds, "elapsed_seconds": elapsed_s, "steps_requested": requested,
                  "steps_that_fit": fit, "refits": []}
    elif fit != cfg.steps:
        record["refits"].append({"step": done, "seconds_per_step": step_s, "elapsed_seconds": elapsed_s,
                                 "steps": max(fit, done)})
    run.budget_mark = (done, run.step_seconds)  # the next fit times the steps from here
    if fit != cfg.steps:
        run.cfg = dataclasses.replace(cfg, steps=max(fit, done))
        run.lr_schedule.rescale(run.cfg.steps, done)
        run.done = run.cfg.steps <= done
    record["bound"] = run.cfg.steps < requested
    return record


def budget_warning(record: dict, steps_done: int) -> str | None:
    """A warning when the budget cut the run to fewer than ``FEW_STEPS`` steps (None otherwise)."""
    if not record or not record.get("bound") or steps_done >= FEW_STEPS:
        return None
    return (f"the {record['minutes']:g}-minute distillation budget left room for {steps_done} steps on this device "
            f"({record['seconds_per_step']:.1f} s per step, {record['steps_requested']} requested): the adapted model "
            "may keep few of the original's answers; raise --time-budget (0 = no budget)")
