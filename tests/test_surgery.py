import pytest
import torch
from torch import nn

from edgeprune.errors import ModelError, UsageError
from edgeprune.models import zoo
from edgeprune.models.blocks import find_blocks
from edgeprune.models.surgery import load_manifest, read_manifest, remove_blocks, save_manifest


def test_remove_save_reload_reproduces_outputs(tmp_path):
    model, entry, source = zoo.load_model("mobilenet_v2", weights="random")
    names = [b.name for b in find_blocks(model, entry, torch.zeros(1, 3, 64, 64))][:3]
    pruned = remove_blocks(model, names)
    assert all(isinstance(pruned.get_submodule(n), nn.Identity) for n in names)
    assert not isinstance(model.get_submodule(names[0]), nn.Identity)  # original untouched
    path = tmp_path / "model.pt"
    save_manifest(path, pruned, "mobilenet_v2", source, names, resolution=64)
    raw = torch.load(path, weights_only=True)  # plain data: no pickled classes
    assert raw["removed_blocks"] == names and raw["model"] == "mobilenet_v2"
    again, data = load_manifest(path)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(pruned.eval()(x), again(x))
    assert data["resolution"] == 64


def test_unknown_block_and_bad_manifest(tmp_path):
    model, _, _ = zoo.load_model("resnet18", weights="random")
    with pytest.raises(UsageError):
        remove_blocks(model, ["layer9.0"])
    bad = tmp_path / "model.pt"
    torch.save({"hello": torch.zeros(1)}, bad)
    with pytest.raises(ModelError, match="not an edgeprune manifest"):
        read_manifest(bad)
    with pytest.raises(ModelError):
        read_manifest(tmp_path / "missing.pt")
