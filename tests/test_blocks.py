import pytest
import torch
from torch import nn

from edgeprune.models import zoo
from edgeprune.models.blocks import find_blocks
from edgeprune.models.features import extract_features
from edgeprune.models.staging import run_stages, split

EXPECTED = {
    "mobilenet_v2": ["features.3", "features.5", "features.6", "features.8", "features.9", "features.10", "features.12",
                     "features.13", "features.15", "features.16"],
    "resnet34": 13,  # layer1.0 is shape-preserving too (Practise's list of 12 leaves it out)
    "resnet18": 5,
    "resnet50": 12,
    "efficientnet_lite0": 9,
    "mobilenet_v3_large": 10,
    "efficientnet_b0": 9,
    "convnext_tiny": 18,  # 3+3+9+3 CNBlocks; downsampling lives in separate layers
    "vit_b_16": 12,
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_counts_and_staging(name):
    model, entry, _ = zoo.load_model(name, weights="random")
    res = 224 if "vit" in name else 64
    x = torch.randn(1, 3, res, res)
    blocks = find_blocks(model, entry, x)
    want = EXPECTED[name]
    if isinstance(want, list):
        assert [b.name for b in blocks] == want
    else:
        assert len(blocks) == want
    total = sum(p.numel() for p in model.parameters())
    for b in blocks:
        assert b.capacity_gap == pytest.approx(b.params / total)
    stages = split(model, entry.staging)
    names = [s[0] for s in stages]
    assert all(b.name in names for b in blocks)
    with torch.no_grad():
        assert torch.allclose(run_stages(stages, x), extract_features(model, entry, x), atol=1e-5)


@pytest.mark.slow
def test_vit_l_16_has_24_blocks():
    model, entry, _ = zoo.load_model("vit_l_16", weights="random")
    assert len(find_blocks(model, entry)) == 24


class Mixer(nn.Module):
    """A residual block type nobody listed."""

    def __init__(self, c):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(c, c, 3, padding=1), nn.ReLU())

    def forward(self, x):
        return x + self.body(x)


class Down(nn.Module):
    def __init__(self, c_in, c_out):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, 3, stride=2, padding=1)

    def forward(self, x):
        return self.conv(x)


def test_generic_rule_finds_unlisted_residual_blocks():
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), Mixer(8), Mixer(8), Down(8, 16), Mixer(16),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10))
    entry = zoo.ZooEntry("toy", "local", "toy", 16, (0.5,) * 3, (0.5,) * 3, "4", "7", "")
    blocks = find_blocks(net, entry, torch.randn(1, 3, 16, 16))
    assert [b.name for b in blocks] == ["1", "2", "4"]
    assert all(b.kind == "generic:Mixer" for b in blocks)
