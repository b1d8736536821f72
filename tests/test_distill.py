import copy
import math

import pytest
import torch

from edgeprune.data.batches import batch_schedule
from edgeprune.data.transforms import normalise
from edgeprune.distill.distiller import DistillConfig, distill
from edgeprune.distill.targets import FeatureStore, build_pseudo_labels
from edgeprune.models import zoo
from edgeprune.models.features import extract_features
from edgeprune.models.surgery import remove_blocks


def _setup(n=24, res=32):
    torch.manual_seed(0)
    teacher, entry, _ = zoo.load_model("resnet18", weights="random")
    pixels = torch.randint(0, 256, (n, 3, res, res), dtype=torch.uint8)
    return teacher, entry, pixels


def test_store_in_memory_and_memory_mapped():
    small = FeatureStore(4, (2, 3), memory_budget=1 << 20)
    big = FeatureStore(4, (2, 3), memory_budget=8)
    for s in (small, big):
        s.put([0, 2], torch.ones(2, 2, 3) * 0.5)
        assert s.get([2]).dtype == torch.float16 and float(s.get([2]).sum()) == 3.0
    assert big.memory_mapped and not small.memory_mapped
    path = big._file
    big.close()
    import os

    assert not os.path.exists(path)


def test_pseudo_labels_reuse_given_features():
    teacher, entry, pixels = _setup(8)
    marker = torch.full((512, 1, 1), 7.0)
    store = build_pseudo_labels(teacher, entry, pixels, batch_size=4, reuse={0: marker, 1: marker})
    assert float(store.get([0]).mean()) == 7.0
    from edgeprune.data.transforms import normalise

    with torch.no_grad():
        ref = extract_features(teacher, entry, normalise(pixels[2:3], entry.mean, entry.std))
    assert torch.allclose(store.get([2]).float(), ref, rtol=2e-3, atol=1e-3)


def test_batch_schedule_is_seeded_and_covers_steps():
    a = [b.tolist() for b in batch_schedule(10, 4, 7, seed=1)]
    b = [b.tolist() for b in batch_schedule(10, 4, 7, seed=1)]
    assert a == b and len(a) == 7 and all(len(x) == 4 for x in a)
    assert len(list(batch_schedule(3, 64, 5, 0))[0]) == 3  # batch = set size when smaller


def test_distillation_lowers_loss_and_freezes_head():
    teacher, entry, pixels = _setup()
    store = build_pseudo_labels(teacher, entry, pixels, batch_size=8)
    student = remove_blocks(teacher, ["layer1.0", "layer3.1"])
    head_before = student.fc.weight.clone()
    res = distill(student, entry, pixels, store, DistillConfig.paper(steps=20, batch_size=8, lr=0.02))
    assert res.steps_done == 20 and not res.stopped_nonfinite
    assert sum(res.losses[-3:]) < sum(res.losses[:3])
    assert torch.equal(student.fc.weight, head_before)
    assert all(p.requires_grad for p in student.parameters())  # flags restored


def test_nonfinite_loss_restores_last_good_weights():
    teacher, entry, pixels = _setup()
    store = build_pseudo_labels(teacher, entry, pixels, batch_size=8)
    student = remove_blocks(teacher, ["layer1.0"])
    res = distill(student, entry, pixels, store, DistillConfig.paper(steps=50, batch_size=8, lr=1e6))
    assert res.stopped_nonfinite and res.restored_step is not None and res.restored_step < 50
    assert all(torch.isfinite(p).all() for p in student.parameters())
    assert all(math.isfinite(v) for v in res.losses)


def test_interleaved_distillers_match_running_alone(monkeypatch):
    """The benchmark steps several runs round-robin: that must not change what each one computes."""
    from edgeprune.distill.distiller import Distiller

    # a fixed thread count: the thread probe may pick another count per run on a loaded machine,
    # and another summation order differs in the 7th digit
    monkeypatch.setenv("OMP_NUM_THREADS", "1")

    teacher, entry, pixels = _setup()
    store = build_pseudo_labels(teacher, entry, pixels, batch_size=8)
    cfg = DistillConfig.paper(steps=4, batch_size=8)
    alone = distill(remove_blocks(teacher, ["layer1.0"]), entry, pixels, store, cfg).losses
    a = Distiller(remove_blocks(teacher, ["layer1.0"]), entry, pixels, store, cfg)
    b = Distiller(remove_blocks(teacher, ["layer2.1"]), entry, pixels, store, DistillConfig.paper(steps=4, batch_size=8, train_scope="suffix"),
                  removed=["layer2.1"])
    while a.step() | b.step():
        pass
    assert a.finish().losses == alone and b.finish().steps_done == 4


def test_auto_precision_probe_leaves_the_student_unchanged(monkeypatch):
    from edgeprune.distill import hardware
    from edgeprune.distill.distiller import Distiller

    monkeypatch.setattr(hardware, "cpu_bf16_support", lambda: (True, "native (test)"))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # no thread probe (run alone, the test would see one)
    teacher, entry, pixels = _setup()
    store = build_pseudo_labels(teacher, entry, pixels, batch_size=8)
    student = remove_blocks(teacher, ["layer1.0"])
    before = {k: v.clone() for k, v in student.state_dict().items()}
    d = Distiller(student, entry, pixels, store, DistillConfig.paper(steps=2, batch_size=8, precision="auto"))
    assert d.hw.precision in ("fp32", "bf16") and set(d.hw.probe) == {"fp32", "bf16"}
    assert all(torch.equal(before[k], v) for k, v in student.state_dict().items())  # BN statistics included
    assert all(p.grad is None for p in student.parameters())
    res = d.finish()
    assert res.precision == d.hw.precision and res.hardware["probe"] == d.hw.probe


def _bn_stats(model):
    return [(m.running_mean.clone(), m.running_var.clone()) for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]


def test_frozen_student_batchnorm_keeps_running_statistics_and_train_mode_moves_them():
    teacher, entry, pixels = _setup(n=96)
    store = build_pseudo_labels(teacher, entry, pixels, batch_size=16)
    for mode, should_move in (("frozen", False), ("train", True)):
        student = remove_blocks(teacher, ["layer1.0", "layer3.1"])
        before = _bn_stats(student)
        cfg = DistillConfig.paper(steps=3, batch_size=16, student_bn=mode)
        distill(student, entry, pixels, store, cfg)
        moved = any(not torch.equal(a[0], b[0]) for a, b in zip(before, _bn_stats(student)))
        assert moved == should_move, mode


def test_keep_best_restores_the_undistilled_weights_when_validation_only_gets_worse(monkeypatch):
    from edgeprune.distill.distiller import Distiller

    teacher, entry, pixels = _setup(n=96)
    store = build_pseudo_labels(teacher, entry, pixels, batch_size=16)
    student = remove_blocks(teacher, ["layer1.0", "layer3.1"])
    start = {k: v.clone() for k, v in student.state_dict().items()}
    worse = iter(range(100))  # every check worse than the one before, the undistilled model first
    monkeypatch.setattr(Distiller, "validation_loss", lambda self: float(next(worse)))
    cfg = DistillConfig.paper(steps=6, batch_size=16, keep_best=True, check_every=2, val_images=16)
    res = distill(student, entry, pixels, store, cfg)
    assert res.steps_done == 6 and res.kept["step"] == 0 and res.kept["undistilled"]
    assert all(torch.equal(v, start[k]) for k, v in student.state_dict().items())


def test_keep_best_keeps_the_last_weights_when_they_are_best(monkeypatch):
    from edgeprune.distill.distiller import Distiller

    teacher, entry, pixels = _setup(n=96)
    store = build_pseudo_labels(teacher, entry, pixels, batch_size=16)
    student = remove_blocks(teacher, ["layer1.0", "layer3.1"])
    better = iter(range(100, 0, -1))
    monkeypatch.setattr(Distiller, "validation_loss", lambda self: float(next(better)))
    cfg = DistillConfig.paper(steps=5, batch_size=16, keep_best=True, check_every=2, val_images=16)
    res = distill(student, entry, pixels, store, cfg)
    # checks at 0 (undistilled), 2, 4 and a final one at 5: the last is the best
    assert res.kept["step"] == 5 and not res.kept["undistilled"]
    assert [c[0] for c in res.early_stop["checks"]] == [2, 4, 5]


def test_auto_student_batchnorm_continues_with_the_mode_of_lower_validation_loss(monkeypatch):
    from edgeprune.distill.distiller import Distiller

    teacher, entry, pixels = _setup(n=96)
    store = build_pseudo_labels(teacher, entry, pixels, batch_size=16)
    for winner, loser in (("frozen", "train"), ("train", "frozen")):
        monkeypatch.setattr(Distiller, "validation_loss", lambda self, w=winner: 1.0 if self.cfg.student_bn == w else 2.0)
        student = remove_blocks(teacher, ["layer1.0", "layer3.1"])
        before = {k: v.clone() for k, v in student.state_dict().items()}
        cfg = DistillConfig.paper(steps=5, batch_size=16, student_bn="auto", bn_probe_steps=2, early_stop=True,
                                  val_images=16)
        res = distill(student, entry, pixels, store, cfg)
        assert res.student_bn["chosen"] == winner and res.student_bn["probe_steps"] == 2
        assert res.student_bn["val_loss"] == {winner: 1.0, loser: 2.0} and res.steps_done == 5
        assert res.seconds >= res.student_bn["probe_seconds"] > 0 and any(winner in n for n in res.notes)
        # the student in place holds the winner's weights: frozen never moves the running statistics
        moved = any(not torch.equal(a[0], b[0]) for a, b in zip(_bn_stats_of(before), _bn_stats(student)))
        assert moved == (winner == "train")
        assert not any(p.requires_grad is False for p in student.parameters())


def _bn_stats_of(state):
    return [(v, None) for k, v in state.items() if k.endswith("running_mean")]


def test_auto_student_batchnorm_without_a_validation_slice_runs_the_papers_mode():
    teacher, entry, pixels = _setup(n=24)
    store = build_pseudo_labels(teacher, entry, pixels, batch_size=8)
    student = remove_blocks(teacher, ["layer1.0"])
    for cfg in (DistillConfig.paper(steps=2, batch_size=8, student_bn="auto", early_stop=True, min_val_images=8),
                DistillConfig.paper(steps=2, batch_size=8, student_bn="auto")):  # too few images; slice disabled
        res = distill(student, entry, pixels, store, cfg)
        assert res.student_bn["chosen"] == "train" and "no validation slice" in res.student_bn["reason"]


def test_a_distiller_refuses_the_auto_mode_it_cannot_decide_alone():
    import pytest

    from edgeprune.distill.distiller import Distiller

    teacher, entry, pixels = _setup(n=24)
    store = build_pseudo_labels(teacher, entry, pixels, batch_size=8)
    with pytest.raises(ValueError, match="distill\\(\\) resolves auto"):
        Distiller(remove_blocks(teacher, ["layer1.0"]), entry, pixels, store, DistillConfig(student_bn="auto"))


def _logit_distiller(student, entry, pixels, store, **recipe):
    from edgeprune.distill.distiller import Distiller

    cfg = DistillConfig.paper(steps=2, batch_size=16, keep_best=True, val_images=16, **recipe)
    return Distiller(student, entry, pixels, store, cfg)


def test_logit_term_adds_the_originals_kl_through_the_frozen_head():
    import torch.nn.functional as F

    teacher, entry, pixels = _setup(n=96)
    teacher.eval()
    store = build_pseudo_labels(teacher, entry, pixels, batch_size=16)
    student = remove_blocks(teacher, ["layer1.0", "layer3.1"])
    plain = _logit_distiller(copy.deepcopy(student), entry, pixels, store)
    with_kl = _logit_distiller(copy.deepcopy(student), entry, pixels, store, logit_weight=2.0, logit_temperature=3.0)
    assert plain.logit is None and plain.result.logit_term == {}
    assert with_kl.result.logit_term == {"weight": 2.0, "temperature": 3.0, "head": "gap+flatten+head"}
    # the validation loss (= the training objective) gains 2 * 3^2 * KL(original || student) at T = 3, per image
    val = torch.as_tensor(with_kl.val_pos)
    with torch.no_grad():
        t, s = teacher(normalise(pixels[val], entry.mean, entry.std)), student.eval()(normalise(pixels[val], entry.mean, entry.std))
    kl = F.kl_div(F.log_softmax(s / 3, 1), F.log_softmax(t / 3, 1), log_target=True, reduction="batchmean")
    assert float(kl) > 1e-3
    assert with_kl.validation_loss() - plain.validation_loss() == pytest.approx(2 * 9 * float(kl), rel=2e-2)
    with_kl.step()  # the head stays in eval mode (no dropout in the logit term) while the rest trains
    assert with_kl.student.training and not with_kl.logit.head_module.training
    plain.step()  # same weights, same first batch: the logit term adds to the training loss too
    assert with_kl.result.losses[0] > plain.result.losses[0]


def test_logit_term_is_off_when_the_head_trains():
    teacher, entry, pixels = _setup(n=96)
    store = build_pseudo_labels(teacher, entry, pixels, batch_size=16)
    d = _logit_distiller(remove_blocks(teacher, ["layer1.0"]), entry, pixels, store, logit_weight=1.0, freeze_head=False)
    assert d.logit is None and d.result.logit_term == {} and any("logit term off" in n for n in d.result.notes)
