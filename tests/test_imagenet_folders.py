import numpy as np
import pytest
import torch
from PIL import Image

from edgeprune.data.images import load_images
from edgeprune.errors import ImageError, UsageError
from edgeprune.research.imagenet_folders import (
    imagenet_c,
    imagenet_r,
    imagenet_r_logit_indices,
    imagenet_val,
    imagenet_wnids,
    restrict_logits,
    wnid_to_index,
)

R_WNIDS = ["n01443537", "n01484850", "n01494475"]  # goldfish, great white shark, hammerhead (in ImageNet-R)


def _make(folder, wnids, ext):
    rng = np.random.default_rng(0)
    for w in wnids:
        d = folder / w
        d.mkdir(parents=True)
        for k in range(2):
            arr = rng.integers(0, 256, size=(20, 24, 3), dtype=np.uint8)
            Image.fromarray(arr).save(d / f"img{k}{ext}", format="JPEG" if ext.lower() in (".jpeg", ".jpg") else "PNG")


def test_wnid_list():
    w = imagenet_wnids()
    assert len(w) == 1000 and len(set(w)) == 1000 and w == sorted(w)
    assert w[0] == "n01440764" and w[-1] == "n15075141"
    assert wnid_to_index()["n01443537"] == 1


def test_imagenet_val(tmp_path):
    wn = [imagenet_wnids()[i] for i in (0, 5, 999)]
    _make(tmp_path, wn, ".JPEG")
    val = imagenet_val(tmp_path)
    assert len(val["class_to_index"]) == 1000
    s = load_images(val["root"], 16, 0.875, class_to_index=val["class_to_index"])
    assert s.pixels.shape == (6, 3, 16, 16)
    assert s.labels.tolist() == [0, 0, 5, 5, 999, 999]


def test_imagenet_val_errors(tmp_path):
    with pytest.raises(ImageError):
        imagenet_val(tmp_path / "missing")
    with pytest.raises(ImageError):
        imagenet_val(tmp_path)  # no class folders
    _make(tmp_path, ["n01440764", "cats", "dogs"], ".png")
    with pytest.raises(ImageError, match="'cats', 'dogs'"):
        imagenet_val(tmp_path)


def test_imagenet_c(tmp_path):
    wn = [imagenet_wnids()[i] for i in (3, 7)]
    _make(tmp_path / "fog" / "3", wn, ".JPEG")
    path = imagenet_c(tmp_path, "fog", 3)
    assert path == tmp_path / "fog" / "3"
    s = load_images(path, 16, 0.875, class_to_index=wnid_to_index())
    assert s.labels.tolist() == [3, 3, 7, 7]
    with pytest.raises(ImageError, match="fog"):
        imagenet_c(tmp_path, "fog", 4)
    with pytest.raises(ImageError):
        imagenet_c(tmp_path, "snow", 1)
    with pytest.raises(ImageError):
        imagenet_c(tmp_path / "nothing", "fog", 3)
    for bad in [("fogg", 3), ("fog", 0), ("fog", 6), ("fog", "3")]:
        with pytest.raises(UsageError):
            imagenet_c(tmp_path, *bad)


def test_imagenet_r(tmp_path):
    _make(tmp_path, R_WNIDS, ".jpg")
    idx = imagenet_r_logit_indices(tmp_path)
    assert idx == sorted(wnid_to_index()[w] for w in R_WNIDS) == [1, 2, 4]
    r = imagenet_r(tmp_path)
    assert r["logit_indices"] == idx
    s = load_images(r["root"], 16, 0.875, class_to_index=wnid_to_index())
    assert s.labels.tolist() == [1, 1, 2, 2, 4, 4]
    logits = torch.randn(6, 1000)
    logits[torch.arange(6), s.labels] += 100.0  # a perfect classifier
    sub = restrict_logits(logits, idx)
    assert sub.shape == (6, 3) and torch.equal(sub[:, 0], logits[:, 1])
    pred = torch.as_tensor(idx)[sub.argmax(1)]
    assert torch.equal(pred, s.labels)
    npsub = restrict_logits(logits.numpy(), idx)
    assert np.array_equal(npsub, sub.numpy())
    with pytest.raises(UsageError):
        restrict_logits(logits, [1000])
    with pytest.raises(UsageError):
        restrict_logits(logits[0], idx)


def test_imagenet_r_rejects_non_r_classes(tmp_path):
    _make(tmp_path, ["n01443537", "n01440764"], ".jpg")  # tench is not an ImageNet-R class
    with pytest.raises(ImageError, match="n01440764"):
        imagenet_r_logit_indices(tmp_path)
