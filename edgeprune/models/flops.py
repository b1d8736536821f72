"""FLOP counts from PyTorch's own counter, used to express costs in forward-pass equivalents."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from .staging import Stage


def count_flops(fn, *args) -> int:
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        fn(*args)
    return int(counter.get_total_flops())


def stage_flops(stages: list[Stage], example: torch.Tensor) -> list[int]:
    """FLOPs of each stage for ``example`` (batch 1 is enough: cost scales with batch)."""
    out = []
    x = example
    for _, module in stages:
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            y = module(x)
        out.append(int(counter.get_total_flops()))
        x = y
    return out


def model_flops(model: nn.Module, example: torch.Tensor) -> int:
    return count_flops(model, example)
