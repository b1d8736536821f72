"""The distillation recipe as one object (no torch import: the CLI reads its defaults)."""

from __future__ import annotations

from dataclasses import dataclass

TRAIN_SCOPES = ("all", "suffix")


@dataclass
class DistillConfig:
    steps: int = 500
    batch_size: int = 64
    lr: float = 0.02
    momentum: float = 0.9
    weight_decay: float = 1e-4
    decay_every: float = 0.4  # fraction of the steps between x gamma
    gamma: float = 0.1
    seed: int = 0
    freeze_head: bool = True  # method.md: every weight but the classifier head is trained
    # --- fast path (defaults = the paper's recipe, except the layout, which is the same math)
    train_scope: str = "all"  # "all" | "suffix"
    precision: str = "fp32"  # "fp32" | "bf16" | "fp16" | "auto" (hardware.py)
    channels_last: bool = True
    device: str = "cpu"
    early_stop: bool = False
    check_every: int = 25  # steps between validation checks
    patience: int = 2  # checks without improvement before the lr steps down (or training stops)
    min_rel_improvement: float = 0.01  # an improvement below 1% of the best loss does not count
    val_images: int = 64  # validation slice taken from the fine-tune set (at most 10% of it)
    min_val_images: int = 8  # fewer: early stop is off (reason recorded)
    micro_batch: int | None = None  # images per forward/backward; gradients accumulate to batch_size (None = whole batch)
