"""Local gap reconstruction (distill/local.py) on a small model."""

import torch

from edgeprune.distill.config import DistillConfig
from edgeprune.distill.local import cache_stage_inputs, gap_windows, needed_activations, run_local_phase
from edgeprune.distill.targets import build_pseudo_labels
from edgeprune.models import zoo
from edgeprune.models.staging import run_stages, split
from edgeprune.models.surgery import remove_blocks


def _setup(n=48, res=32):
    torch.manual_seed(0)
    teacher, entry, _ = zoo.load_model("resnet18", weights="random")
    return teacher.eval(), entry, torch.randint(0, 256, (n, 3, res, res), dtype=torch.uint8)


def test_windows_take_the_next_stage_with_weights_and_merge_adjacent_gaps():
    teacher, entry, _ = _setup()
    stages = split(teacher, entry.staging)
    names = [n for n, _ in stages]
    windows, notes = gap_windows(stages, ["layer1.1", "layer3.1", "layer4.1"])
    assert [w.gap for w in windows] == [["layer1.1"], ["layer3.1"]]
    assert [names[w.trained] for w in windows] == ["layer2.0", "layer4.0"]
    assert all(w.stop == w.trained + 1 for w in windows)
    assert notes and "layer4.1" in notes[0]  # nothing with weights after the last block: left to the global phase
    adjacent, _ = gap_windows(stages, ["layer1.0", "layer1.1"])
    assert [w.gap for w in adjacent] == [["layer1.0", "layer1.1"]] and names[adjacent[0].trained] == "layer2.0"
    assert needed_activations(adjacent) == {adjacent[0].start, adjacent[0].stop}


def test_cached_stage_inputs_are_the_teachers_activations():
    teacher, entry, pixels = _setup(8)
    stages = split(teacher, entry.staging)
    stores = cache_stage_inputs(stages, entry, pixels, {3, 5}, batch_size=4, channels_last=False)
    from edgeprune.data.transforms import normalise

    with torch.no_grad():
        x = normalise(pixels[:2], entry.mean, entry.std)
        ref3, ref5 = run_stages(stages, x, 0, 3), run_stages(stages, x, 0, 5)
    assert torch.allclose(stores[3].get([0, 1]).float(), ref3, atol=2e-2, rtol=1e-2)
    assert torch.allclose(stores[5].get([0, 1]).float(), ref5, atol=2e-2, rtol=1e-2)


def test_local_phase_lowers_each_windows_loss_and_only_touches_the_trained_stage():
    teacher, entry, pixels = _setup()
    labels = build_pseudo_labels(teacher, entry, pixels, batch_size=16)
    removed = ["layer1.1", "layer3.1"]
    student = remove_blocks(teacher, removed)
    before = {k: v.clone() for k, v in student.state_dict().items()}
    cfg = DistillConfig(local_steps=15, batch_size=16, micro_batch=8, lr=0.05)
    rep = run_local_phase(split(teacher, entry.staging), split(student, entry.staging), entry, pixels, labels, removed, cfg)
    assert rep["enabled"] and [w["trained"] for w in rep["windows"]] == ["layer2.0", "layer4.0"]
    for w in rep["windows"]:
        assert w["relative_loss_last"] < w["relative_loss_first"]
    changed = {k.split(".")[0] + "." + k.split(".")[1] for k, v in student.state_dict().items()
               if not torch.equal(v, before[k]) and k.startswith("layer")}
    assert changed == {"layer2.0", "layer4.0"}
    assert run_local_phase(None, None, entry, pixels, labels, removed, DistillConfig())["enabled"] is False
