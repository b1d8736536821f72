"""Fashion-MNIST loading (``edgeprune.research.fashion_mnist``).

The corruptions and the ImageNet/-C/-R folder loaders have their own files
(``test_corruptions.py``, ``test_imagenet_folders.py``). Here: the idx reader on generated files
(runs everywhere), the real dataset when the Debian package is installed, ``to_rgb32``, and the
error a user sees when the data is missing.
"""

import gzip
from pathlib import Path

import numpy as np
import pytest

from edgeprune.errors import EdgepruneError
from edgeprune.research import fashion_mnist as fm

REAL = all((fm.DEFAULT_ROOT / f"{p}-{k}-idx{d}-ubyte.gz").is_file()
           for p in ("train", "t10k") for k, d in (("images", 3), ("labels", 1)))


def _idx_bytes(arr: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, arr.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in arr.shape)
    return header + arr.astype(np.uint8).tobytes()


def _write_split(root: Path, prefix: str, images: np.ndarray, labels: np.ndarray, gz: bool) -> None:
    for stem, arr in ((f"{prefix}-images-idx3-ubyte", images), (f"{prefix}-labels-idx1-ubyte", labels)):
        data = _idx_bytes(arr)
        if gz:
            with gzip.open(root / f"{stem}.gz", "wb") as f:
                f.write(data)
        else:
            (root / stem).write_bytes(data)


@pytest.mark.parametrize("gz", [True, False])
def test_reads_idx_files_from_env_root(tmp_path, monkeypatch, gz):
    rng = np.random.default_rng(0)
    train_x = rng.integers(0, 256, (7, 28, 28), dtype=np.uint8)
    train_y = rng.integers(0, 10, 7).astype(np.uint8)
    test_x = rng.integers(0, 256, (3, 28, 28), dtype=np.uint8)
    test_y = np.array([9, 0, 4], dtype=np.uint8)
    _write_split(tmp_path, "train", train_x, train_y, gz)
    _write_split(tmp_path, "t10k", test_x, test_y, gz)
    monkeypatch.setenv("EDGEPRUNE_FASHION_MNIST", str(tmp_path))
    assert fm.data_root() == tmp_path
    x, y = fm.load_fashion_mnist("train")
    assert x.dtype == np.uint8 and x.shape == (7, 28, 28) and np.array_equal(x, train_x)
    assert y.dtype == np.int64 and np.array_equal(y, train_y)
    x, y = fm.load_fashion_mnist("test")
    assert np.array_equal(x, test_x) and y.tolist() == [9, 0, 4]


def test_missing_data_names_the_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEPRUNE_FASHION_MNIST", str(tmp_path / "nowhere"))
    with pytest.raises(EdgepruneError) as err:
        fm.load_fashion_mnist("test")
    msg = str(err.value)
    assert "apt-get install dataset-fashion-mnist" in msg and "EDGEPRUNE_FASHION_MNIST" in msg


def test_bad_split():
    with pytest.raises(ValueError):
        fm.load_fashion_mnist("val")


def test_to_rgb32():
    rng = np.random.default_rng(1)
    x = rng.integers(1, 256, (4, 28, 28), dtype=np.uint8)
    out = fm.to_rgb32(x)
    assert out.dtype == np.uint8 and out.shape == (4, 32, 32, 3)
    assert np.array_equal(out[:, 2:30, 2:30, 0], x)  # centred, unresized
    assert (out[..., 0] == out[..., 1]).all() and (out[..., 1] == out[..., 2]).all()  # grey replicated
    border = np.ones((32, 32), bool)
    border[2:30, 2:30] = False
    assert (out[:, border] == 0).all()  # zero padding (Fashion-MNIST's background is 0)


@pytest.mark.skipif(not REAL, reason=f"Fashion-MNIST not installed under {fm.DEFAULT_ROOT} (apt-get install dataset-fashion-mnist)")
def test_real_fashion_mnist(monkeypatch):
    monkeypatch.delenv("EDGEPRUNE_FASHION_MNIST", raising=False)
    for split, n in (("test", 10_000), ("train", 60_000)):
        x, y = fm.load_fashion_mnist(split)
        assert x.shape == (n, 28, 28) and x.dtype == np.uint8
        assert y.shape == (n,) and y.dtype == np.int64
        assert np.bincount(y, minlength=10).tolist() == [n // 10] * 10  # balanced classes
        assert x[:, 0, 0].mean() < 1 and (x.reshape(n, -1).max(1) > 0).all()  # black corners; no blank image
        assert 60 < x.mean() < 90
    assert len(fm.CLASSES) == 10
