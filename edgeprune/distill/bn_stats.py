"""Normalisation statistics from the field stream (beyond the paper).

A teacher whose BatchNorm statistics come from the training data is mismatched to a shifted
stream; distilling toward its features carries the mismatch into the student. Re-estimating
the running mean/variance on the fine-tune images (no labels, no gradient: one forward pass)
gives field-matched features. Models without running statistics (LayerNorm-only, e.g. ViT)
are reported as "not applicable".
"""

from __future__ import annotations

import torch
from torch import nn

from ..data.transforms import normalise
from ..models.zoo import ZooEntry

_BN = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


def bn_layers(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, _BN) and m.track_running_stats]


def freeze_batchnorm(model: nn.Module) -> int:
    """Put every BatchNorm with running statistics in eval mode (affine weights still train).

    Distilling with frozen statistics keeps the student normalising exactly as the teacher whose
    features it is trained toward; train mode lets its running averages drift to the stream.
    """
    layers = bn_layers(model)
    for m in layers:
        m.eval()
    return len(layers)


def reestimate_bn_stats(model: nn.Module, entry: ZooEntry, pixels: torch.Tensor, batch_size: int = 64) -> int:
    """Replace every BatchNorm's running statistics by their exact average over ``pixels``.

    Returns the number of BatchNorm layers updated (0 = not applicable). Weights are untouched;
    the model is left in eval mode.
    """
    layers = bn_layers(model)
    if not layers:
        return 0
    saved = [(m.momentum, m.training) for m in layers]
    model.eval()
    for m in layers:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over all batches, not an exponential one
        m.train()
    try:
        with torch.no_grad():
            for i in range(0, pixels.shape[0], batch_size):
                chunk = pixels[i : i + batch_size]
                if chunk.shape[0] < 2:
                    continue  # a batch of one has no variance
                model(normalise(chunk, entry.mean, entry.std).contiguous(memory_format=torch.channels_last))  # faster, same math
    finally:
        for m, (momentum, _) in zip(layers, saved):
            m.momentum = momentum
        model.eval()
    return len(layers)
