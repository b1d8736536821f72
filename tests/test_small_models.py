"""The Fashion-MNIST source models (``edgeprune.research.source_models``): zoo entries, removable blocks,
staging, forward shape, weights cache. Random weights: no training, no dataset needed."""

import pytest
import torch

from edgeprune.errors import ModelError
from edgeprune.models.blocks import find_blocks
from edgeprune.models.features import extract_features, get_module
from edgeprune.models.staging import run_stages, split
from edgeprune.models.zoo import build_architecture, get_entry, load_model
from edgeprune.research import source_models

NAMES = ("fmnist_resnet", "fmnist_mobilenetv2")


@pytest.fixture(scope="module", params=NAMES)
def built(request):
    torch.manual_seed(0)
    entry = get_entry(request.param)
    model = build_architecture(entry).eval()
    return entry, model


def test_zoo_entry(built):
    entry, model = built
    assert entry.family == "local" and entry.builder is not None
    assert entry.resolution == 32 and entry.num_classes == 10 and entry.in_chans == 3
    assert len(entry.mean) == 3 and len(entry.std) == 3 and all(s > 0 for s in entry.std)
    get_module(model, entry.feature_layer)  # the paths exist
    assert isinstance(get_module(model, entry.head), torch.nn.Linear) or any(
        isinstance(m, torch.nn.Linear) for m in get_module(model, entry.head).modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())  # shift experiments need BN


def test_forward_shape(built):
    entry, model = built
    with torch.no_grad():
        assert model(torch.randn(3, 3, 32, 32)).shape == (3, 10)


def test_at_least_ten_removable_blocks(built):
    entry, model = built
    blocks = find_blocks(model, entry)
    assert len(blocks) >= 10, [b.name for b in blocks]
    assert all(not b.kind.startswith("generic:") for b in blocks)  # torchvision block classes: known rules
    assert all(0 < b.capacity_gap < 1 for b in blocks)


def test_staging_composes_to_features_with_one_stage_per_block(built):
    entry, model = built
    stages = split(model, entry.staging)
    assert stages is not None
    names = [n for n, _ in stages]
    assert {b.name for b in find_blocks(model, entry)} <= set(names)  # each removable block is one stage
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        feats = extract_features(model, entry, x)
        staged = run_stages(stages, x)
    assert feats.shape == staged.shape and feats.ndim == 4 and feats.shape[1] > 1
    torch.testing.assert_close(staged, feats)


def test_pretrained_path_outside_git_and_overridable(tmp_path, monkeypatch):
    monkeypatch.delenv("EDGEPRUNE_CACHE", raising=False)
    default = source_models.pretrained_path("fmnist_resnet")
    assert default.name == "fmnist_resnet.pt" and ".cache" in default.parts
    monkeypatch.setenv("EDGEPRUNE_CACHE", str(tmp_path))
    assert source_models.pretrained_path("fmnist_resnet") == tmp_path / "source_models" / "fmnist_resnet.pt"


def test_weights_round_trip_through_the_zoo(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEPRUNE_CACHE", str(tmp_path))
    with pytest.raises(ModelError, match="train_source"):
        load_model("fmnist_resnet")
    torch.manual_seed(1)
    ref = build_architecture(get_entry("fmnist_resnet")).eval()
    path = source_models.pretrained_path("fmnist_resnet")
    path.parent.mkdir(parents=True)
    torch.save(ref.state_dict(), path)  # the format tools/train_source.py writes
    model, entry, source = load_model("fmnist_resnet")
    assert source.startswith("local:") and not model.training
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(x), ref(x))


def test_mobilenetv2_is_sized_for_cpu_training():
    """fmnist_mobilenetv2: torchvision MobileNetV2 classes and stem, expansion 4, 96 -> 256 last conv
    (torchvision's own 1280-channel last conv and t = 6 made 1-thread training too slow); the t = 1
    block after the stem changes width (32 -> 16), so it is not removable, as in mobilenet_v2."""
    tv_mnv2 = pytest.importorskip("torchvision.models.mobilenetv2")
    model = build_architecture(get_entry("fmnist_mobilenetv2")).eval()
    assert type(model).__name__ == "MobileNetV2"
    assert model.features[0][0].out_channels == 32 and model.features[0][0].stride == (2, 2)
    assert model.features[-1][0].in_channels == 96 and model.features[-1][0].out_channels == 256
    assert model.classifier[-1].in_features == 256 and model.classifier[-1].out_features == 10
    blocks = [m for m in model.features if isinstance(m, tv_mnv2.InvertedResidual)]
    assert len(blocks) == 15 and sum(b.use_res_connect for b in blocks) == 10
    assert not blocks[0].use_res_connect
    found = [b.name for b in find_blocks(model, get_entry("fmnist_mobilenetv2"))]
    assert found == ["features.3", "features.4", "features.6", "features.7", "features.8", "features.10",
                     "features.11", "features.12", "features.14", "features.15"]
    assert source_models.DEFAULT_EPOCHS["fmnist_mobilenetv2"] <= 6
