"""Which part of the student distillation runs and trains, and on which fine-tune images.

``train_scope="suffix"``: the stages before the first removed block (the prefix) are identical in
student and teacher; they are frozen and their output is read from a cache, so only the rest runs.
The validation slice (early stop, best weights) is taken from the fine-tune images here too.
"""

from __future__ import annotations

import torch
from torch import nn

from ..data.transforms import normalise
from ..models.features import head_parameters
from ..models.staging import Stage, run_stages, split
from ..models.zoo import ZooEntry
from .config import DistillConfig
from .hardware import to_layout
from .targets import FeatureStore, PrefixCache, prefix_stop


def trainable_parameters(student: nn.Module, entry: ZooEntry, freeze_head: bool = True,
                         frozen: set[int] | None = None) -> list[nn.Parameter]:
    head = head_parameters(student, entry) if freeze_head else set()
    frozen = (frozen or set()) | head
    params = []
    for p in student.parameters():
        p.requires_grad_(id(p) not in frozen)
        if id(p) not in frozen:
            params.append(p)
    return params


def validation_split(n: int, config: DistillConfig) -> tuple[list[int], list[int], str | None]:
    """(train positions, validation positions, why there is no validation slice or None)."""
    if not (config.early_stop or config.keep_best):
        return list(range(n)), [], "disabled"
    k = min(config.val_images, n // 10)
    if k < config.min_val_images:
        return list(range(n)), [], f"too few fine-tune images ({n}) for a validation slice of {config.min_val_images}"
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(config.seed + 7919)).tolist()
    return sorted(perm[k:]), sorted(perm[:k]), None


def identity_stop(stages: list[Stage]) -> int | None:
    idx = [i for i, (_, m) in enumerate(stages) if isinstance(m, nn.Identity)]
    return min(idx) if idx else None


def build_prefix_cache(stages: list[Stage], stop: int, entry: ZooEntry, pixels: torch.Tensor, batch_size: int = 64,
                       channels_last: bool = True) -> PrefixCache:
    """The prefix output for every image from the student's own (frozen) prefix: one batched pass.

    Used only when the caller did not build it together with the pseudo-labels.
    """
    store = None
    with torch.no_grad():
        for start in range(0, pixels.shape[0], batch_size):
            x = to_layout(normalise(pixels[start : start + batch_size], entry.mean, entry.std), channels_last)
            h = run_stages(stages, x, 0, stop)
            if store is None:
                store = FeatureStore(pixels.shape[0], tuple(h.shape[1:]))
            store.put(list(range(start, start + x.shape[0])), h)
    return PrefixCache(store, stop, stages[stop][0])


def resolve_suffix(student: nn.Module, entry: ZooEntry, pixels: torch.Tensor, config: DistillConfig,
                   prefix: PrefixCache | None, removed, notes: list[str]):
    """(stages, first trained stage, prefix cache) for the run; start 0 = the whole network trains."""
    if config.train_scope != "suffix":
        return None, 0, prefix
    stages = split(student, entry.staging)
    if stages is None:
        notes.append("no stage split for this model: suffix scope unavailable, training all stages")
        return None, 0, prefix
    if prefix is not None:
        start = prefix.stop
    elif removed:
        start = prefix_stop(stages, removed)
    else:
        start = identity_stop(stages) or 0
    if start > 0 and prefix is None:
        prefix = build_prefix_cache(stages, start, entry, pixels, config.batch_size, config.channels_last)
        notes.append("prefix cache built inside distill (pass it from build_distill_targets to share the teacher pass)")
    if start == 0:
        notes.append("the first removed block is the first stage: suffix = whole network")
    return stages, start, prefix
