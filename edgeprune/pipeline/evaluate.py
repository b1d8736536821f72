"""Fidelity on held-out images: agreement with the original model, accuracy when labelled."""

from __future__ import annotations

import torch
from torch import nn

from ..distill.normalisation import logits
from ..models.zoo import ZooEntry


def predict(model: nn.Module, entry: ZooEntry, pixels: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """Top-1 class of each image (uint8 N x 3 x R x R) with ``model`` in eval mode."""
    if pixels.shape[0] == 0:
        return torch.empty(0, dtype=torch.long)
    return logits(model, entry, pixels, batch_size).argmax(1)


def agreement(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a == b).float().mean()) if len(a) else float("nan")


def accuracy(pred: torch.Tensor, labels: torch.Tensor | None) -> float | None:
    if labels is None or len(pred) == 0:
        return None
    return float((pred == labels).float().mean())
