"""Decoded uint8 pixels to the float tensors a model takes."""

from __future__ import annotations

from typing import Sequence

import torch

from ..errors import UsageError


def normalise(pixels: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """``(x / 255 - mean) / std`` as float32, for ``... x 3 x H x W`` uint8 (one image or a batch).

    With one-channel ``mean``/``std`` (``ZooEntry.in_chans == 1``) the RGB pixels are first turned
    into luminance exactly as Pillow's ``convert("L")`` does (ITU-R 601-2, integer arithmetic), so a
    greyscale source round-trips unchanged; the result then has one channel.
    """
    if not isinstance(pixels, torch.Tensor) or pixels.dtype != torch.uint8:
        raise UsageError("normalise expects a uint8 tensor (... x 3 x H x W)")
    if pixels.dim() < 3 or pixels.shape[-3] != 3:
        raise UsageError(f"normalise expects ... x 3 x H x W pixels, got shape {tuple(pixels.shape)}")
    mean_t = torch.as_tensor(mean, dtype=torch.float32).flatten()
    std_t = torch.as_tensor(std, dtype=torch.float32).flatten()
    if mean_t.numel() != std_t.numel() or mean_t.numel() not in (1, 3):
        raise UsageError("mean and std must both have 1 or 3 values")
    if not bool(torch.all(std_t != 0)):
        raise UsageError("std must not contain zeros")
    x = pixels
    if mean_t.numel() == 1:
        p = pixels.to(torch.int32)
        x = ((p.narrow(-3, 0, 1) * 19595 + p.narrow(-3, 1, 1) * 38470 + p.narrow(-3, 2, 1) * 7471 + 0x8000) >> 16)
    out = x.to(torch.float32).div_(255.0)
    shape = (-1, 1, 1)
    return out.sub_(mean_t.view(shape)).div_(std_t.view(shape))
