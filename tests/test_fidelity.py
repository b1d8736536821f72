import math

import torch

from edgeprune.pipeline.fidelity import CONFIDENT, fidelity_metrics


def test_identical_logits_are_perfect():
    x = torch.randn(20, 10)
    m = fidelity_metrics(x, x.clone())
    assert m["agreement"] == 1.0 and m["top5_overlap"] == 1.0
    assert abs(m["kl_original_adapted"]) < 1e-6


def test_keys_count_what_they_say():
    ramp = torch.arange(6, 0, -1).float() * 0.01  # distinct small logits: top-5 = classes 0..4 unless moved
    original = torch.stack([ramp + torch.tensor([10.0, 0, 0, 0, 0, 0]), ramp, ramp + torch.tensor([0, 0, 10.0, 0, 0, 0])])
    adapted = torch.stack([ramp + torch.tensor([10.0, 0, 0, 0, 0, 0]), ramp.flip(0), ramp + torch.tensor([0, 10.0, 0, 0, 0, 0])])
    m = fidelity_metrics(original, adapted)
    # images 0 and 2 are confident (softmax ~1 >= CONFIDENT); image 1 is not (~0.18)
    assert CONFIDENT == 0.5 and m["confident_images"] == 2
    assert math.isclose(m["agreement"], 1 / 3, rel_tol=1e-6) and m["confident_agreement"] == 0.5
    assert m["kl_original_adapted"] > 1.0  # image 2 moved its mass to another class
    assert math.isclose(m["top5_overlap"], (1 + 0.8 + 1) / 3, rel_tol=1e-6)  # image 1: the reversed ramp swaps classes 0 and 5
