"""Stored pseudo-labels: the teacher's pre-GAP feature maps, computed once, kept as float16.

In memory below a budget, memory-mapped on disk above it (a scratch file removed on close).
Features the scoring pass already computed for the prune images are reused, not recomputed.
"""

from __future__ import annotations

import math
import os
import tempfile
from typing import Callable

import numpy as np
import torch
from torch import nn

from .images import normalise
from .zoo import ZooEntry, extract_features

DEFAULT_MEMORY_BUDGET = 1 << 30  # 1 GiB of float16 features before spilling to a memory map


class FeatureStore:
    """N feature maps of one shape, float16, indexable by position."""

    def __init__(self, n: int, shape: tuple[int, ...], memory_budget: int = DEFAULT_MEMORY_BUDGET, scratch_dir: str | None = None):
        self.shape = tuple(shape)
        nbytes = n * math.prod(shape) * 2
        self.memory_mapped = nbytes > memory_budget
        self._file = None
        if self.memory_mapped:
            fd, self._file = tempfile.mkstemp(prefix="edgeprune-labels-", suffix=".f16", dir=scratch_dir)
            os.close(fd)
            self._data = torch.from_numpy(np.memmap(self._file, dtype=np.float16, mode="w+", shape=(n, *shape)))
        else:
            self._data = torch.empty((n, *shape), dtype=torch.float16)
        self.filled = np.zeros(n, dtype=bool)

    def __len__(self) -> int:
        return self._data.shape[0]

    @property
    def nbytes(self) -> int:
        return self._data.numel() * 2

    def put(self, positions, features: torch.Tensor) -> None:
        self._data[positions] = features.detach().to(torch.float16)
        self.filled[positions] = True

    def get(self, positions) -> torch.Tensor:
        return self._data[positions]

    def close(self) -> None:
        self._data = None
        if self._file:
            try:
                os.unlink(self._file)
            except FileNotFoundError:
                pass
            self._file = None


def build_pseudo_labels(
    teacher: nn.Module,
    entry: ZooEntry,
    pixels: torch.Tensor,
    batch_size: int = 64,
    reuse: dict[int, torch.Tensor] | None = None,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
    progress: Callable[[int, int], None] | None = None,
) -> FeatureStore:
    """Teacher features for every image of ``pixels`` (uint8 N x 3 x R x R), in one batched pass.

    Args:
        reuse: position -> feature map already computed (the scoring pass's prune images).
    """
    n = pixels.shape[0]
    reuse = reuse or {}
    todo = [i for i in range(n) if i not in reuse]
    teacher.eval()
    with torch.no_grad():
        probe = reuse[next(iter(reuse))] if reuse else extract_features(teacher, entry, normalise(pixels[:1], entry.mean, entry.std))[0]
        store = FeatureStore(n, tuple(probe.shape), memory_budget)
        if reuse:
            pos = sorted(reuse)
            store.put(pos, torch.stack([reuse[i] for i in pos]))
        for start in range(0, len(todo), batch_size):
            chunk = todo[start : start + batch_size]
            x = normalise(pixels[chunk], entry.mean, entry.std)
            store.put(chunk, extract_features(teacher, entry, x))
            if progress:
                progress(min(start + batch_size, len(todo)), len(todo))
    return store
