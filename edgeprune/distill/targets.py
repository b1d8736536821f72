"""Stored pseudo-labels: the teacher's pre-GAP feature maps, computed once, kept as float16.

In memory below a budget, memory-mapped on disk above it (a scratch file removed on close).
Features the scoring pass already computed for the prune images are reused, not recomputed.

Suffix distillation (distill.py, ``train_scope="suffix"``) also needs, for every fine-tune
image, the output of the frozen prefix (every stage before the first removed block). The
pruned student's prefix *is* the teacher's prefix (same weights, eval-mode BatchNorm), so
:func:`build_distill_targets` computes both in ONE batched teacher pass: stages ``[0, stop)``
give the cached prefix activation, stages ``[stop, end)`` continue from it to the label. For the
prune images, whose labels the scoring pass already produced, only the prefix is run (the
scoring pass keeps block inputs one batch at a time and before the plan is known, so they are
not kept; the prefix of 64 images costs a fraction of one full pass).
Both stores share one memory budget: whatever does not fit is memory-mapped.
"""

from __future__ import annotations

import math
import os
import tempfile
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch import nn

from ..data.transforms import normalise
from ..models.features import extract_features
from ..models.staging import Stage, run_stages
from ..models.zoo import ZooEntry
from .hardware import to_layout

DEFAULT_MEMORY_BUDGET = 1 << 30  # 1 GiB of float16 features before spilling to a memory map


class FeatureStore:
    """N feature maps of one shape, float16, indexable by position."""

    def __init__(self, n: int, shape: tuple[int, ...], memory_budget: int = DEFAULT_MEMORY_BUDGET, scratch_dir: str | None = None):
        self.shape = tuple(shape)
        nbytes = n * math.prod(shape) * 2
        self._nbytes = nbytes  # still known after close()
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
        return self._nbytes

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
    return build_distill_targets(teacher, entry, pixels, batch_size=batch_size, reuse=reuse, memory_budget=memory_budget,
                                 progress=progress).labels


@dataclass
class PrefixCache:
    """Output of the frozen prefix ``stages[:stop]`` for each fine-tune image (float16, by position)."""

    store: FeatureStore
    stop: int  # index of the first stage NOT in the prefix (the first removed block)
    stage: str = ""  # that stage's name

    def close(self) -> None:
        self.store.close()


@dataclass
class DistillTargets:
    labels: FeatureStore
    prefix: PrefixCache | None = None
    teacher_images: int = 0  # images that went through the full teacher here (not reused)
    prefix_only_images: int = 0  # reused images for which only the prefix ran

    @property
    def nbytes(self) -> int:
        return self.labels.nbytes + (self.prefix.store.nbytes if self.prefix else 0)

    @property
    def memory_mapped(self) -> bool:
        return self.labels.memory_mapped or bool(self.prefix and self.prefix.store.memory_mapped)

    def close(self) -> None:
        self.labels.close()
        if self.prefix:
            self.prefix.close()


def suffix_stop(stages: list[Stage] | None, removed, train_scope: str) -> int | None:
    """Where the frozen prefix ends for ``train_scope`` ("suffix"), or None: no prefix to cache
    (scope "all", a model without a stage split, or nothing removed)."""
    return prefix_stop(stages, removed) if train_scope == "suffix" and stages is not None and removed else None


def prefix_stop(stages: list[Stage], removed) -> int:
    """Index of the first removed block in ``stages`` (the prefix is every stage before it)."""
    names = [n for n, _ in stages]
    idx = [names.index(r) for r in removed if r in names]
    if not idx:
        raise ValueError(f"none of the removed blocks {list(removed)} is a stage")
    return min(idx)


def build_distill_targets(
    teacher: nn.Module,
    entry: ZooEntry,
    pixels: torch.Tensor,
    stages: list[Stage] | None = None,
    stop: int | None = None,
    batch_size: int = 64,
    reuse: dict[int, torch.Tensor] | None = None,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
    progress: Callable[[int, int], None] | None = None,
    channels_last: bool = True,
    scratch_dir: str | None = None,
) -> DistillTargets:
    """Pseudo-labels and (with ``stages`` and ``stop``) the cached prefix output, in one batched pass.

    The teacher runs in eval mode, fp32 (labels are the reference the student is trained toward;
    they are stored as float16). ``channels_last`` only changes the input layout (oneDNN/cuDNN
    NHWC kernels; the teacher's own weights are not touched).

    Args:
        stages: ``staging.split(teacher, ...)``; needed for the prefix cache.
        stop: first stage not in the prefix; ``None`` or 0 = no prefix cache.
        reuse: position -> feature map already computed (the scoring pass's prune images).
    """
    n = pixels.shape[0]
    reuse = reuse or {}
    want_prefix = stages is not None and stop is not None and stop > 0
    todo = [i for i in range(n) if want_prefix or i not in reuse]
    teacher.eval()
    labels = prefix = None
    done_teacher = done_prefix = 0
    budget = memory_budget
    with torch.no_grad():
        for start in range(0, len(todo), batch_size):
            chunk = todo[start : start + batch_size]
            x = to_layout(normalise(pixels[chunk], entry.mean, entry.std), channels_last)
            need = [j for j, i in enumerate(chunk) if i not in reuse]
            if want_prefix:
                h, feats = _prefix_and_features(stages, stop, x, need)
                if prefix is None:
                    prefix = PrefixCache(FeatureStore(n, tuple(h.shape[1:]), budget, scratch_dir), stop, stages[stop][0])
                    budget = max(0, budget - prefix.store.nbytes) if not prefix.store.memory_mapped else budget
                prefix.store.put(chunk, h)
                done_prefix += len(chunk) - len(need)
            else:
                feats = extract_features(teacher, entry, x)
            if labels is None:
                shape = tuple(feats.shape[1:]) if feats is not None else tuple(reuse[next(iter(reuse))].shape)
                labels = FeatureStore(n, shape, budget, scratch_dir)
            if feats is not None:
                labels.put([chunk[j] for j in need], feats)
                done_teacher += len(need)
            if progress:
                progress(min(start + batch_size, len(todo)), len(todo))
        labels = _add_reused(labels, reuse, n, budget, scratch_dir)
    return DistillTargets(labels, prefix, done_teacher, done_prefix)


def _prefix_and_features(stages: list[Stage], stop: int, x: torch.Tensor, need: list[int]):
    """The prefix's output for the batch ``x``, and the teacher's features of its rows ``need`` (None: none)."""
    h = run_stages(stages, x, 0, stop)
    rest = h if len(need) == len(x) else h[need]
    return h, (run_stages(stages, rest, stop) if need else None)


def _add_reused(labels: "FeatureStore | None", reuse: dict[int, torch.Tensor], n: int, budget: int,
                scratch_dir: str | None) -> "FeatureStore":
    """``labels`` with the reused feature maps put in (a new store when every label was reused)."""
    if labels is None:
        labels = FeatureStore(n, tuple(reuse[next(iter(reuse))].shape), budget, scratch_dir)
    if reuse:
        pos = sorted(reuse)
        labels.put(pos, torch.stack([reuse[i] for i in pos]))
    return labels
