"""The order in which training loops (distillation, Practise's adaptors, the fine-tuning baselines)
visit the images: seeded, so a run is repeatable."""

from __future__ import annotations

import torch


def batch_schedule(n: int, batch: int, steps: int, seed: int):
    """Index batches: a fresh seeded permutation per epoch, incomplete tails dropped."""
    g = torch.Generator().manual_seed(seed)
    batch = min(batch, n)
    done = 0
    while done < steps:
        perm = torch.randperm(n, generator=g)
        for start in range(0, n - batch + 1, batch):
            if done == steps:
                return
            yield perm[start : start + batch]
            done += 1
