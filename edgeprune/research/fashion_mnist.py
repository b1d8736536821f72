"""Fashion-MNIST, the real labelled images available here (Debian package dataset-fashion-mnist).

Used by the demo and the benchmarks: 60k train / 10k test grey 28x28 images, turned into
3-channel 32x32 uint8 (zero-padded by 2 px, grey replicated) so they flow through the same
RGB pipeline as field photos.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np

from ..errors import EdgepruneError

DEFAULT_ROOT = Path("/usr/share/datasets/fashion-mnist")
CLASSES = ("t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle-boot")
INSTALL_HINT = "install it with `apt-get install dataset-fashion-mnist` (tools/setup.sh does), or set EDGEPRUNE_FASHION_MNIST"


def data_root() -> Path:
    return Path(os.environ.get("EDGEPRUNE_FASHION_MNIST", DEFAULT_ROOT))


def _read_idx(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def _find(root: Path, stem: str) -> Path:
    for name in (f"{stem}.gz", stem):
        if (root / name).is_file():
            return root / name
    raise EdgepruneError(f"Fashion-MNIST file {stem} not found under {root}", INSTALL_HINT)


def load_fashion_mnist(split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """(uint8 N x 28 x 28 images, int64 labels) of the ``train`` (60k) or ``test`` (10k) split."""
    prefix = {"train": "train", "test": "t10k"}.get(split)
    if prefix is None:
        raise ValueError(f"split must be train or test, got {split!r}")
    root = data_root()
    images = _read_idx(_find(root, f"{prefix}-images-idx3-ubyte"))
    labels = _read_idx(_find(root, f"{prefix}-labels-idx1-ubyte")).astype(np.int64)
    return images, labels


def to_rgb32(images: np.ndarray) -> np.ndarray:
    """uint8 N x 28 x 28 -> uint8 N x 32 x 32 x 3 (zero-pad 2 px, replicate grey)."""
    padded = np.pad(images, ((0, 0), (2, 2), (2, 2)))
    return np.repeat(padded[..., None], 3, axis=-1)
