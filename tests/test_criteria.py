import math

import torch

from edgeprune.models import zoo
from edgeprune.models.blocks import find_blocks
from edgeprune.models.features import extract_features
from edgeprune.models.staging import split
from edgeprune.models.surgery import remove_blocks
from edgeprune.pruning.criteria import CRITERIA, ScoringContext


def _ctx(name, res=64, stages=True):
    torch.manual_seed(0)
    model, entry, _ = zoo.load_model(name, weights="random")
    blocks = find_blocks(model, entry, torch.zeros(1, 3, res, res))
    ls = {b.name: 0.01 * (i + 1) for i, b in enumerate(blocks)}
    return ScoringContext(model, entry, blocks, torch.randn(6, 3, res, res), ls,
                          split(model, entry.staging) if stages else None, batch_size=4)


def test_cached_prefix_scores_equal_full_passes_and_cost_less():
    fast = CRITERIA.get("ttmpd")().score(_ctx("mobilenet_v2"))
    slow = CRITERIA.get("ttmpd")().score(_ctx("mobilenet_v2", stages=False))
    n = len(fast.scores)
    for k in fast.scores:
        assert abs(fast.scores[k] - slow.scores[k]) <= 1e-5 * abs(slow.scores[k]) + 1e-12
    assert fast.forward_equivalents <= 0.6 * n < slow.forward_equivalents
    assert torch.allclose(fast.teacher_features, slow.teacher_features, atol=1e-5)


def test_importance_is_noise_times_gap_over_saving():
    """Eq. 4 against L_i computed here the paper's way (one full forward per removed block)."""
    ctx = _ctx("resnet18")
    res = CRITERIA.get("ttmpd")().score(ctx)
    size = sum(p.numel() for p in ctx.model.parameters())
    with torch.no_grad():
        full = extract_features(ctx.model, ctx.entry, ctx.images)
        for b in ctx.blocks:
            student = remove_blocks(ctx.model, [b.name])
            noise = float(((full - extract_features(student, ctx.entry, ctx.images)) ** 2).mean())  # Eq. 1
            gap = (size - sum(p.numel() for p in student.parameters())) / size  # Eq. 2
            expected = noise * gap / ctx.latency_saving[b.name]
            assert noise > 0 and gap > 0
            assert math.isclose(res.scores[b.name], expected, rel_tol=1e-4), b.name
