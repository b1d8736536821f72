"""The distillation's time budget (distill/budget.py) and the learning-rate schedule laid out anew."""

import pytest
import torch

from edgeprune.distill.budget import MEASURE_STEPS, steps_that_fit
from edgeprune.distill.config import DistillConfig
from edgeprune.distill.distiller import Distiller, distill
from edgeprune.distill.schedule import PlateauSchedule
from edgeprune.distill.targets import build_pseudo_labels
from edgeprune.errors import UsageError
from edgeprune.models import zoo
from edgeprune.models.surgery import remove_blocks


def _setup(n=48, res=32):
    torch.manual_seed(0)
    teacher, entry, _ = zoo.load_model("resnet18", weights="random")
    pixels = torch.randint(0, 256, (n, 3, res, res), dtype=torch.uint8)
    return teacher, entry, pixels, build_pseudo_labels(teacher, entry, pixels, batch_size=8)


def test_steps_that_fit_counts_steps_and_their_validation_checks():
    assert steps_that_fit(100.0, 1.0, 0.0, 25) == 100
    # every 25 steps a 5 s check, plus one at the end: 95 s left for steps of 1.2 s each
    assert steps_that_fit(100.0, 1.0, 5.0, 25) == 79
    assert steps_that_fit(3.0, 1.0, 5.0, 25) == 0  # already over: no more steps


def test_rescaled_schedule_decays_at_its_fraction_of_the_new_count():
    cfg = DistillConfig(steps=100, decay_every=0.5, lr=1.0)
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    early = {"lr_events": []}
    sched = PlateauSchedule(cfg, opt, early)
    sched.rescale(40, step=10)
    for step in range(11, 41):
        sched.after_step(step)
        if step == 19:
            assert opt.param_groups[0]["lr"] == 1.0
    assert opt.param_groups[0]["lr"] == pytest.approx(0.1)  # decayed at step 20 = 0.5 x 40, and only once


def test_a_budget_that_cannot_bind_changes_nothing():
    teacher, entry, pixels, store = _setup()
    cfg = DistillConfig.paper(steps=MEASURE_STEPS + 4, batch_size=8, time_budget_minutes=1000.0)
    res = distill(remove_blocks(teacher, ["layer1.0"]), entry, pixels, store, cfg)
    assert res.steps_done == MEASURE_STEPS + 4
    assert res.time_budget["bound"] is False and res.time_budget["measured_steps"] == MEASURE_STEPS
    assert res.time_budget["seconds_per_step"] > 0
    unbudgeted = distill(remove_blocks(teacher, ["layer1.0"]), entry, pixels, store,
                         DistillConfig.paper(steps=MEASURE_STEPS + 4, batch_size=8))
    assert unbudgeted.time_budget == {}  # no budget, no record


def test_a_spent_budget_stops_after_the_measured_steps():
    teacher, entry, pixels, store = _setup()
    cfg = DistillConfig.paper(steps=200, batch_size=8, time_budget_minutes=1e-6)
    progress = []
    res = distill(remove_blocks(teacher, ["layer1.0"]), entry, pixels, store, cfg,
                  progress=lambda s, n, loss: progress.append(n))
    assert res.steps_done == MEASURE_STEPS and res.time_budget["bound"] is True
    assert res.time_budget["steps_requested"] == 200 and progress[-1] == MEASURE_STEPS  # the bar's total follows


def test_the_budget_fits_the_count_from_the_measured_step_time(monkeypatch):
    teacher, entry, pixels, store = _setup()
    cfg = DistillConfig.paper(steps=500, batch_size=8, time_budget_minutes=1.0, early_stop=True, val_images=8)
    d = Distiller(remove_blocks(teacher, ["layer1.0"]), entry, pixels, store, cfg)
    monkeypatch.setattr(Distiller, "step_seconds", property(lambda self: 2.0 * self.result.steps_done))
    d.val_seconds, d.seconds = 1.0, 20.0  # 10 steps of 2 s done: 40 s left
    for _ in range(MEASURE_STEPS):
        d.step()
    # _fit_budget read the elapsed time as d.seconds after the steps; recompute what it must have chosen
    rec = d.result.time_budget
    assert rec["seconds_per_step"] == 2.0 and rec["bound"]
    expected = MEASURE_STEPS + steps_that_fit(60.0 - rec["elapsed_seconds"], 2.0, 1.0, cfg.check_every)
    assert d.cfg.steps == expected == rec["steps_that_fit"] < 500


def test_auto_student_batchnorm_counts_the_dropped_run_against_the_budget():
    teacher, entry, pixels, store = _setup(n=96)
    cfg = DistillConfig.paper(steps=200, batch_size=8, student_bn="auto", bn_probe_steps=12, early_stop=True,
                              val_images=16, time_budget_minutes=1e-6)
    res = distill(remove_blocks(teacher, ["layer1.0"]), entry, pixels, store, cfg)
    assert res.steps_done == 12  # fitted after the probe's 12 steps, not the usual 10
    assert res.time_budget["elapsed_seconds"] > res.time_budget["seconds_per_step"] * 12  # both runs' time


@pytest.mark.parametrize("field, value, flag", [("time_budget_minutes", -1.0, "--time-budget"),
                                                ("decay_every", 0.0, "--decay-every"),
                                                ("decay_every", 1.5, "--decay-every")])
def test_bad_budget_or_schedule_is_refused_naming_the_option(field, value, flag):
    with pytest.raises(UsageError, match=flag):
        DistillConfig(**{field: value}).validate()


def test_steps_that_slow_down_are_refitted_at_the_next_check(monkeypatch):
    teacher, entry, pixels, store = _setup()
    cfg = DistillConfig.paper(steps=500, batch_size=8, time_budget_minutes=1.0, early_stop=True, val_images=8,
                              check_every=5)
    d = Distiller(remove_blocks(teacher, ["layer1.0"]), entry, pixels, store, cfg)
    # 1 s per step for the first 10 steps, 3 s per step after (set-up and checks take real time)
    monkeypatch.setattr(Distiller, "step_seconds", property(
        lambda self: 1.0 * min(self.result.steps_done, 10) + 3.0 * max(self.result.steps_done - 10, 0)))
    for _ in range(MEASURE_STEPS):
        d.step()
    first, rec = d.cfg.steps, d.result.time_budget
    # about 60 s left at 1 s per step (the real elapsed time, set-up included, is subtracted)
    assert first == MEASURE_STEPS + steps_that_fit(60.0 - rec["elapsed_seconds"], 1.0, d.val_seconds, 5) > 40
    for _ in range(5):
        d.step()
    refit = rec["refits"][-1]
    assert refit["step"] == 15 and refit["seconds_per_step"] == 3.0  # timed from the steps since the last fit
    assert d.cfg.steps == refit["steps"] == 15 + steps_that_fit(60.0 - refit["elapsed_seconds"], 3.0, d.val_seconds, 5)
    assert d.cfg.steps < first and rec["steps_requested"] == 500 and rec["bound"]


def test_a_run_cut_short_by_the_budget_warns_and_says_how_to_fix_it():
    from edgeprune.distill.budget import FEW_STEPS, budget_warning

    record = {"minutes": 5.0, "seconds_per_step": 38.2, "steps_requested": 500, "bound": True}
    text = budget_warning(record, 10)
    assert "10 steps" in text and "38.2 s per step" in text and "--time-budget" in text
    assert budget_warning(record, FEW_STEPS) is None  # enough steps
    assert budget_warning({**record, "bound": False}, 10) is None  # the run asked for few steps itself
    assert budget_warning({}, 10) is None  # no budget
