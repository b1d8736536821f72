"""--teacher-stats auto: the decision on a clearly shifted and a clearly unshifted stream.

A small BatchNorm CNN is trained here in seconds on a synthetic 10-class task (oriented gratings
of random phase and frequency: every class is present in every stream, as in a varied field
stream), so the tests know the truth: labels say whether the chosen statistics help.
"""

import copy
import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from edgeprune.distill import normalisation
from edgeprune.distill.bn_stats import bn_layers

ENTRY = SimpleNamespace(mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))


def _gratings(n, seed, contrast=1.0, noise=0.0):
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 10, (n,), generator=g)
    angle = labels.float() * math.pi / 10
    freq = 0.25 + 0.35 * torch.rand(n, generator=g)
    phase = 2 * math.pi * torch.rand(n, generator=g)
    yy, xx = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    u = xx[None] * torch.cos(angle)[:, None, None] + yy[None] * torch.sin(angle)[:, None, None]
    img = torch.sin(freq[:, None, None] * u + phase[:, None, None])
    img = 0.5 + 0.45 * contrast * img + noise * torch.randn(n, 32, 32, generator=g)
    pixels = (img.clamp(0, 1) * 255).round().to(torch.uint8)[:, None].expand(n, 3, 32, 32).contiguous()
    return pixels, labels


def _net():
    return nn.Sequential(nn.Conv2d(3, 16, 5, padding=2), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10))


def _accuracy(model, pixels, labels):
    return float((normalisation.logits(model, ENTRY, pixels, 128).argmax(1) == labels).float().mean())


@pytest.fixture(scope="module")
def trained():
    torch.manual_seed(0)
    model = _net()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    pixels, labels = _gratings(4096, seed=1)
    x = normalisation.normalise(pixels, ENTRY.mean, ENTRY.std)
    model.train()
    for step in range(150):
        idx = torch.randint(0, len(x), (64,))
        loss = nn.functional.cross_entropy(model(x[idx]), labels[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    clean = _gratings(512, seed=2)
    assert _accuracy(model, *clean) > 0.8  # a model worth adapting
    return model


@pytest.fixture(autouse=True)
def _slices(monkeypatch):
    monkeypatch.setattr(normalisation, "STREAM_IMAGES", 256)
    monkeypatch.setattr(normalisation, "CHECK_IMAGES", 128)


def test_blend_counts_source_as_pseudo_samples():
    src = [(torch.zeros(2), torch.ones(2))]
    stream = [(torch.full((2,), 2.0), torch.ones(2))]
    (mean, var), = normalisation.blend(src, stream, prior_weight=16, n=16)
    assert torch.allclose(mean, torch.ones(2)) and torch.allclose(var, torch.full((2,), 2.0))  # 1 + spread of the means
    assert normalisation.blend(src, stream, math.inf, 16) is src
    (mean, _), = normalisation.blend(src, stream, 0, 16)
    assert torch.equal(mean, stream[0][0])


def test_unshifted_stream_keeps_the_source_statistics(trained):
    model = copy.deepcopy(trained)
    before = [m.running_mean.clone() for m in bn_layers(model)]
    d = normalisation.choose_teacher_stats(model, ENTRY, _gratings(512, seed=3)[0], batch=128)
    assert d.choice == "source", d.reason
    assert all(torch.equal(a, m.running_mean) for a, m in zip(before, bn_layers(model)))
    assert len(d.candidates) == len(normalisation.PRIOR_WEIGHTS) and d.to_dict()["prior_weight"] is None


def test_clearly_shifted_stream_moves_toward_the_stream_statistics_and_that_helps(trained):
    model = copy.deepcopy(trained)
    pixels, labels = _gratings(768, seed=4, contrast=0.25, noise=0.05)  # a washed-out, noisy camera
    acc_source = _accuracy(model, pixels[512:], labels[512:])
    d = normalisation.choose_teacher_stats(model, ENTRY, pixels[:512], batch=128)
    assert d.choice in ("stream", "blend"), d.reason
    scores = {c["prior_weight"]: c["im"] for c in d.candidates}
    assert scores[d.prior_weight] > scores[None]
    assert _accuracy(model, pixels[512:], labels[512:]) > acc_source + 0.1  # held-out images, labels never used above


def test_model_without_batchnorm_is_not_applicable():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 10))
    d = normalisation.choose_teacher_stats(model, ENTRY, _gratings(8, seed=5)[0])
    assert d.choice == "not applicable"
