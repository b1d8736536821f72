"""The distillation fast path: suffix scope from a cached prefix, one teacher pass, precision and
hardware choices, early stop, compute floor and peak memory (small random models, seconds)."""

import copy
import json
import math
import mmap

import pytest
import torch

from edgeprune.data.transforms import normalise
from edgeprune.distill import hardware
from edgeprune.distill.compute_floor import ComputeFloor, matmul_throughput
from edgeprune.distill.distiller import DistillConfig, Distiller, distill
from edgeprune.distill.targets import build_distill_targets, build_pseudo_labels, prefix_stop
from edgeprune.errors import UsageError
from edgeprune.models import zoo
from edgeprune.models.features import extract_features
from edgeprune.models.staging import run_stages, split
from edgeprune.models.surgery import remove_blocks

RES = 32
REMOVED = ["layer1.1", "layer3.1"]


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    teacher, entry, _ = zoo.load_model("resnet18", weights="random")
    pixels = torch.randint(0, 256, (40, 3, RES, RES), dtype=torch.uint8)
    return teacher, entry, pixels


def _targets(teacher, entry, pixels, **kw):
    stages = split(teacher, entry.staging)
    stop = prefix_stop(stages, REMOVED)
    return stages, stop, build_distill_targets(teacher, entry, pixels, stages=stages, stop=stop, batch_size=16, **kw)


def test_one_pass_gives_labels_and_prefix(setup):
    teacher, entry, pixels = setup
    stages, stop, t = _targets(teacher, entry, pixels)
    assert stages[stop][0] == "layer1.1" and t.prefix.stop == stop and t.prefix.stage == "layer1.1"
    x = normalise(pixels[5:7], entry.mean, entry.std)
    with torch.no_grad():
        feats = extract_features(teacher, entry, x)
        pre = run_stages(stages, x, 0, stop)
    assert torch.allclose(t.labels.get([5, 6]).float(), feats, rtol=2e-3, atol=2e-3)
    assert torch.allclose(t.prefix.store.get([5, 6]).float(), pre, rtol=2e-3, atol=2e-3)
    assert t.teacher_images == 40 and t.prefix_only_images == 0
    assert t.labels.get([0]).dtype == torch.float16 and t.prefix.store.get([0]).dtype == torch.float16
    t.close()


def test_reused_labels_only_run_the_prefix(setup):
    teacher, entry, pixels = setup
    marker = torch.full((512, 1, 1), 3.0)
    _, _, t = _targets(teacher, entry, pixels, reuse={0: marker, 1: marker})
    assert float(t.labels.get([1]).float().mean()) == 3.0
    assert t.teacher_images == 38 and t.prefix_only_images == 2
    assert bool(t.prefix.store.filled.all()) and bool(t.labels.filled.all())
    t.close()


def test_both_stores_memory_map_above_the_budget(setup):
    teacher, entry, pixels = setup
    _, _, t = _targets(teacher, entry, pixels, memory_budget=1024)
    assert t.memory_mapped and t.labels.memory_mapped and t.prefix.store.memory_mapped
    files = [t.labels._file, t.prefix.store._file]
    t.close()
    import os

    assert not any(os.path.exists(f) for f in files)
    # budget shared: the prefix fits, the labels do not
    _, _, t = _targets(teacher, entry, pixels, memory_budget=40 * 64 * 8 * 8 * 2 + 10)
    assert not t.prefix.store.memory_mapped and t.labels.memory_mapped
    t.close()


def test_suffix_distillation_freezes_the_prefix_exactly(setup):
    teacher, entry, pixels = setup
    stages, stop, t = _targets(teacher, entry, pixels)
    student = remove_blocks(teacher, REMOVED)
    before = copy.deepcopy(student.state_dict())
    cfg = DistillConfig.paper(steps=12, batch_size=16, train_scope="suffix")
    res = distill(student, entry, pixels, t.labels, cfg, prefix=t.prefix)
    t.close()
    assert res.train_scope == "suffix" and res.prefix_stage == "layer1.1" and res.steps_done == 12
    after = student.state_dict()
    prefix_keys = [k for k in before if k.startswith(("conv1", "bn1", "layer1.0"))]
    assert prefix_keys and all(torch.equal(before[k], after[k]) for k in prefix_keys)  # weights AND BN statistics
    assert not torch.equal(before["layer4.1.conv2.weight"], after["layer4.1.conv2.weight"])
    assert torch.equal(before["fc.weight"], after["fc.weight"])  # head frozen
    assert sum(res.losses[-3:]) < sum(res.losses[:3])
    assert all(p.requires_grad for p in student.parameters()) and not student.training
    assert res.trained_forward_flops > 0 and res.floor_flops() == 3 * 12 * 16 * res.trained_forward_flops


def test_suffix_with_nothing_trainable_falls_back_to_all(setup):
    """Removing the last block leaves only the frozen head after it: train every stage instead."""
    teacher, entry, pixels = setup
    stages = split(teacher, entry.staging)
    stop = prefix_stop(stages, ["layer4.1"])
    t = build_distill_targets(teacher, entry, pixels, stages=stages, stop=stop, batch_size=16)
    student = remove_blocks(teacher, ["layer4.1"])
    res = distill(student, entry, pixels, t.labels, DistillConfig.paper(steps=2, batch_size=16, train_scope="suffix"),
                  prefix=t.prefix, removed=["layer4.1"])
    t.close()
    assert res.train_scope == "all" and res.steps_done == 2 and any("nothing trainable" in n for n in res.notes)


def test_micro_batches_accumulate_the_same_gradient(setup):
    """Without BatchNorm in train mode (eval-mode student), 2 x 8 equals one pass of 16 exactly."""
    teacher, entry, pixels = setup
    store = build_pseudo_labels(teacher, entry, pixels, batch_size=16)
    weights = {}
    for micro in (None, 8):
        student = remove_blocks(teacher, REMOVED)
        d = Distiller(student, entry, pixels, store, DistillConfig.paper(steps=1, batch_size=16, micro_batch=micro))
        d._train_mode = lambda d=d: d.student.eval()  # take BatchNorm's per-chunk statistics out of the comparison
        d._train_mode()
        d.step()
        weights[micro] = {k: v.clone() for k, v in student.state_dict().items()}
        assert len(d.result.losses) == 1
    changed = [k for k in weights[None] if not torch.equal(weights[None][k], teacher.state_dict()[k])]
    assert changed and all(torch.allclose(weights[None][k], weights[8][k], atol=1e-5, rtol=1e-4) for k in weights[None])


def _loss_and_grads(model, entry, pixels, store, positions, chunks):
    """Mean MSE over ``positions`` computed as ``chunks`` equal train-mode passes, and its gradient."""
    model.train()
    model.zero_grad(set_to_none=True)
    total = 0.0
    for part in torch.as_tensor(positions).chunk(chunks):
        out = extract_features(model, entry, normalise(pixels[part], entry.mean, entry.std))
        loss = torch.nn.functional.mse_loss(out, store.get(part).float()) / chunks
        loss.backward()
        total += float(loss.detach())
    return total, {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}


def test_micro_batches_are_ghost_batches_in_train_mode(setup):
    """In train mode 2 x 8 normalises each half with its own BatchNorm statistics: the step's loss and
    gradient are the two halves' (ghost batches), not one pass over 16."""
    teacher, entry, pixels = setup
    store = build_pseudo_labels(teacher, entry, pixels, batch_size=16)
    student = remove_blocks(teacher, REMOVED)
    d = Distiller(student, entry, pixels, store, DistillConfig.paper(steps=1, batch_size=16, micro_batch=8))
    reference = copy.deepcopy(student)
    first = next(iter(__import__("edgeprune.data.batches", fromlist=["x"]).batch_schedule(40, 16, 1, 0))).tolist()
    d.step()
    got = {k: p.grad for k, p in student.named_parameters() if p.grad is not None}
    ghost_loss, ghost = _loss_and_grads(copy.deepcopy(reference), entry, pixels, store, first, 2)
    whole_loss, whole = _loss_and_grads(copy.deepcopy(reference), entry, pixels, store, first, 1)
    assert got and set(got) == set(ghost) == set(whole)
    assert math.isclose(d.result.losses[0], ghost_loss, rel_tol=1e-4)
    assert all(torch.allclose(got[k], ghost[k], rtol=1e-3, atol=1e-6) for k in got)
    assert not math.isclose(d.result.losses[0], whole_loss, rel_tol=1e-3)
    assert not all(torch.allclose(got[k], whole[k], rtol=1e-2, atol=1e-5) for k in got)
    d.finish()


def test_suffix_loss_matches_the_full_forward_with_an_eval_prefix(setup):
    """Training from the cache computes what the full student computes with its prefix in eval mode."""
    teacher, entry, pixels = setup
    stages, stop, t = _targets(teacher, entry, pixels)
    student = remove_blocks(teacher, REMOVED)
    reference = copy.deepcopy(student)
    cfg = DistillConfig.paper(steps=1, batch_size=16, train_scope="suffix")
    d = Distiller(student, entry, pixels, t.labels, cfg, prefix=t.prefix)
    d.step()
    first_batch = next(iter(__import__("edgeprune.data.batches", fromlist=["x"]).batch_schedule(40, 16, 1, 0)))
    reference.train()
    for _, m in split(reference, entry.staging)[:stop]:
        m.eval()
    with torch.no_grad():
        out = extract_features(reference, entry, normalise(pixels[first_batch], entry.mean, entry.std))
    expected = float(torch.nn.functional.mse_loss(out, t.labels.get(first_batch).float()))
    assert math.isclose(d.result.losses[0], expected, rel_tol=1e-2)
    d.finish()
    t.close()


def test_suffix_without_a_cache_finds_the_prefix_itself(setup):
    teacher, entry, pixels = setup
    store = build_pseudo_labels(teacher, entry, pixels, batch_size=16)
    student = remove_blocks(teacher, REMOVED)
    res = distill(student, entry, pixels, store, DistillConfig.paper(steps=3, batch_size=16, train_scope="suffix"))
    assert res.train_scope == "suffix" and res.prefix_stage == "layer1.1" and res.notes
    with pytest.raises(UsageError):
        distill(student, entry, pixels, store, DistillConfig.paper(steps=1, train_scope="middle"))


def test_paper_config_is_the_papers_recipe_and_schedule(setup):
    teacher, entry, pixels = setup
    cfg = DistillConfig.paper()
    assert (cfg.train_scope, cfg.precision, cfg.early_stop, cfg.steps, cfg.batch_size, cfg.lr) == ("all", "fp32", False, 500, 64, 0.02)
    assert (cfg.student_bn, cfg.teacher_stats, cfg.keep_best, cfg.micro_batch, cfg.local_steps) == ("train", "source", False, None, 0)
    default = DistillConfig()  # what adapt runs: the fast path and the fidelity defaults
    assert (default.train_scope, default.student_bn, default.teacher_stats, default.keep_best) == ("suffix", "auto", "auto", True)
    store = build_pseudo_labels(teacher, entry, pixels, batch_size=16)
    student = remove_blocks(teacher, REMOVED)
    d = Distiller(student, entry, pixels, store, DistillConfig.paper(steps=10, batch_size=16, decay_every=0.3))
    lrs = []
    while True:
        lrs.append(d.opt.param_groups[0]["lr"])
        if not d.step():
            break
    res = d.finish()
    # StepLR(step_size=3, gamma=0.1): step t (1-based) uses 0.02 * 0.1 ** ((t - 1) // 3)
    assert [round(v, 10) for v in lrs[:10]] == [round(0.02 * 0.1 ** ((t - 1) // 3), 10) for t in range(1, 11)]
    assert res.steps_done == 10 and res.train_scope == "all" and res.early_stop["enabled"] is False


def test_early_stop_steps_the_lr_down_then_stops_on_a_plateau(setup):
    teacher, entry, pixels = setup
    pixels = pixels.repeat(3, 1, 1, 1)  # 120 images: a validation slice of 12
    store = build_pseudo_labels(teacher, entry, pixels, batch_size=32)
    student = remove_blocks(teacher, REMOVED)
    cfg = DistillConfig.paper(steps=200, batch_size=16, lr=1e-9, early_stop=True, check_every=2, patience=2)
    res = distill(student, entry, pixels, store, cfg)
    es = res.early_stop
    assert es["enabled"] and es["stopped_at"] == res.steps_done < 200
    # no improvement: plateau -> lr x0.1 -> the next check shows the decay did not help -> stop
    assert "decay" in es["reason"] and len(es["lr_events"]) == 1 and es["stopped_at"] == 8
    assert es["val_images"] == 12 and res.train_images == 108
    # too few images: off, with the reason
    small = build_pseudo_labels(teacher, entry, pixels[:20], batch_size=16)
    res = distill(remove_blocks(teacher, REMOVED), entry, pixels[:20], small,
                  DistillConfig.paper(steps=2, batch_size=8, early_stop=True))
    assert not res.early_stop["enabled"] and "too few" in res.early_stop["reason"] and res.steps_done == 2


def test_precision_choices_and_fallbacks(monkeypatch):
    with pytest.raises(UsageError):
        hardware.plan_hardware("fp8")
    assert hardware.plan_hardware("fp16").precision == "fp32"  # CUDA-only
    monkeypatch.setattr(hardware, "cpu_bf16_support", lambda: (False, "no native bf16"))
    plan = hardware.plan_hardware("bf16")
    assert plan.precision == "fp32" and any("not supported" in n for n in plan.notes)
    assert hardware.plan_hardware("auto").precision == "fp32"
    monkeypatch.setattr(hardware, "cpu_bf16_support", lambda: (True, "native"))
    assert hardware.plan_hardware("bf16").precision == "bf16"
    for bf16_s, expected in ((0.5, "bf16"), (0.97, "bf16"), (1.0, "fp32"), (1.04, "fp32")):  # a tie goes to fp32
        plan = hardware.plan_hardware("auto")
        assert plan.precision == "auto"
        fake, now = {"fp32": 1.0, "bf16": bf16_s}, [0.0]

        def step(trial, fake=fake, now=now):
            now[0] += fake[trial.precision]

        hardware.probe_precision(plan, step, timer=lambda now=now: now[0])
        assert plan.precision == expected and plan.probe == {"fp32": 1.0, "bf16": bf16_s}


def test_thread_probe_keeps_the_faster_count(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    before = torch.get_num_threads()
    try:
        for one_s, expected in ((0.5, 1), (2.0, 2)):
            plan = hardware.HardwarePlan(threads=2, threads_auto=True)
            now = [0.0]

            def step(trial, now=now, one_s=one_s):
                assert trial.precision == "fp32"
                now[0] += one_s if torch.get_num_threads() == 1 else 1.0

            hardware.probe_threads(plan, step, timer=lambda now=now: now[0])
            assert plan.threads == expected == torch.get_num_threads() and set(plan.probe["threads"]) == {"1", "2"}
        plan = hardware.HardwarePlan(threads=2, threads_auto=False)  # OMP_NUM_THREADS given: never probed
        hardware.probe_threads(plan, lambda trial: pytest.fail("probed"))
    finally:
        torch.set_num_threads(before)


@pytest.mark.skipif(not hardware.cpu_bf16_support()[0], reason="no native bf16 on this CPU")
def test_bf16_training_stays_close_to_fp32(setup):
    teacher, entry, pixels = setup
    store = build_pseudo_labels(teacher, entry, pixels, batch_size=16)
    losses = {}
    for p in ("fp32", "bf16"):
        student = remove_blocks(teacher, REMOVED)
        res = distill(student, entry, pixels, store, DistillConfig.paper(steps=4, batch_size=16, precision=p))
        assert res.precision == p and all(math.isfinite(v) for v in res.losses)
        assert all(v.dtype == torch.float32 for v in student.state_dict().values() if v.is_floating_point())
        losses[p] = res.losses
    assert math.isclose(losses["fp32"][0], losses["bf16"][0], rel_tol=0.05)


def test_channels_last_is_undone_after_training(setup):
    teacher, entry, pixels = setup
    store = build_pseudo_labels(teacher, entry, pixels, batch_size=16)
    student = remove_blocks(teacher, REMOVED)
    distill(student, entry, pixels, store, DistillConfig.paper(steps=1, batch_size=16, channels_last=True))
    assert student.conv1.weight.is_contiguous()


def test_threads_never_oversubscribe(monkeypatch):
    """torch set to 2 threads on a process allowed 1 CPU: lowered to 1 (only when applied)."""
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(hardware, "available_cpus", lambda: 1)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        n, why = hardware.choose_threads(apply=False)
        assert (n, torch.get_num_threads()) == (1, 2) and "lowered to the 1 CPUs" in why
        n, _ = hardware.choose_threads(apply=True)
        assert n == 1 == torch.get_num_threads()
        monkeypatch.setattr(hardware, "available_cpus", lambda: 4)  # 2 threads on 4 CPUs: kept
        torch.set_num_threads(2)
        assert hardware.choose_threads(apply=True)[0] == 2 == torch.get_num_threads()
    finally:
        torch.set_num_threads(before)


def test_compute_floor():
    rate = matmul_throughput("fp32", n=128, trials=2, min_seconds=0.005)
    assert rate > 1e8
    cf = ComputeFloor()
    cf.throughput["fp32@1t"] = 1e9
    cf.throughput["fp32@2t"] = 2e9
    cf.add("distillation", 2e9, 4.0, threads=1)  # the floor at the thread count the phase ran with
    cf.add("scoring", 2e9, 1.0, threads=2)
    assert cf.floor_s == 3.0
    eff = cf.efficiency()
    assert eff["distillation"] == 0.5 and eff["scoring"] == 1.0 and eff["total"] == 3.0 / 5.0
    assert cf.phases["distillation"]["efficiency_all_cores"] == 0.25 and cf.phases["distillation"]["threads"] == 1
    assert json.dumps(cf.to_dict())


def test_peak_memory_rises_with_a_touched_allocation():
    """VmHWM never decreases, so reset it to the current RSS first; then 64 MiB written must show."""
    if not hardware.reset_peak_rss():
        pytest.skip("no /proc/self/clear_refs: the peak cannot be reset here")
    before = hardware.peak_rss_mb()
    assert before > 10
    size = 64 << 20
    blob = mmap.mmap(-1, size)  # fresh pages (a malloc may reuse heap memory that is already resident)
    for i in range(0, size, mmap.PAGESIZE):
        blob[i] = 1  # written: resident
    assert hardware.peak_rss_mb() >= before + 60
    blob.close()


def test_adapt_report_has_the_fast_path_keys(tmp_path):
    import numpy as np
    from PIL import Image

    from edgeprune.latency.measurement import run_profile
    from edgeprune.latency.profiles import save_profile
    from edgeprune.pipeline.adapt import adapt

    rng = np.random.default_rng(0)
    for i in range(48):
        d = tmp_path / "stream" / f"c{i % 2}"
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).resize((40, 40)).save(d / f"{i}.png")
    torch.manual_seed(0)
    model, _, _ = zoo.load_model("resnet18", weights="random")
    torch.save(model.state_dict(), tmp_path / "w.pt")
    prof = run_profile("resnet18", backend="torch", resolution=RES, budget_s=1.0)
    save_profile(prof, tmp_path / "p.json")
    res = adapt(tmp_path / "stream", tmp_path / "out", model="resnet18", weights=tmp_path / "w.pt", profile=tmp_path / "p.json",
                blocks=2, prune_images=8, finetune_images=24, steps=3, batch=8, measure_latency=False, precision="fp32")
    r = res.report
    assert r["train_scope"] == "suffix" and r["precision"] == "fp32"
    assert r["distillation"]["micro_batch"] is None  # batch 8 <= the default micro-batch of 32: one pass
    assert set(r["early_stop"]) >= {"enabled", "stopped_at", "reason"} and r["early_stop"]["enabled"] is False  # 24 images
    assert r["compute_floor_s"] > 0 and set(r["efficiency"]) >= {"scoring", "pseudo_labels", "distillation"}
    assert r["peak_memory_mb"] > 0 and r["distillation"]["prefix_stage"]
    from edgeprune.cli.adapt_command import render_adapt_summary

    render_adapt_summary(r, tmp_path / "out")  # the summary line for the new keys renders
    saved = json.loads((tmp_path / "out" / "report.json").read_text())
    assert saved["train_scope"] == "suffix" and "peak_memory_mb" in saved
    with pytest.raises(UsageError):
        adapt(tmp_path / "stream", tmp_path / "o2", model="resnet18", weights=tmp_path / "w.pt", profile=tmp_path / "p.json",
              train_scope="prefix", measure_latency=False)


def test_cli_exposes_the_options():
    from typer.testing import CliRunner

    from edgeprune.cli import app

    text = CliRunner().invoke(app, ["adapt", "--help"], terminal_width=200).output
    for opt in ("--train-scope", "--precision", "--early-stop", "--no-early-stop", "--micro-batch"):
        assert opt in text
