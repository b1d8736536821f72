"""The options of ``edgeprune watch``: one object, validated before any work.

The plan and recipe options are ``adapt``'s (``pipeline.options.AdaptOptions``): every cycle
that adapts builds one from them for the images it adapts on.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UsageError
from ..pipeline.options import AdaptOptions, adapt_recipe
from .rules import GateRules, Thresholds

WINDOW, MIN_NEW, MIN_ADAPT, SHADOW_FRACTION, SETTLE_S, KEEP, INTERVAL_S = 1000, 64, 128, 0.25, 2.0, 3, 60.0
MIN_SHADOW = 16  # held-out images the gate needs at the least


@dataclass
class WatchOptions:
    images: Path
    deploy: Path
    model: str | None = None  # None: the model of this device's recorded profile
    profile: str | os.PathLike | None = None
    weights: str | os.PathLike | None = None
    blocks: int | None = None
    target_saving: float | None = None
    latency_budget_ms: float | None = None
    steps: int | None = None  # None: adapt's default
    prune_images: int = 64
    finetune_images: int = 1000
    seed: int = 0
    measure_latency: bool = False  # each candidate's ONNX latency (slow on a busy device)
    window: int = WINDOW  # newest images kept
    min_new: int = MIN_NEW  # new images before a drift decision
    min_adapt: int = MIN_ADAPT  # images (since the drift point) before adapting
    shadow_fraction: float = SHADOW_FRACTION  # of the adapted images held out for the gate
    settle_s: float = SETTLE_S  # seconds a file must be unchanged before it is read
    keep: int = KEEP  # versions kept
    interval_s: float = INTERVAL_S
    once: bool = False
    recipe: dict = field(default_factory=dict)  # further DistillConfig overrides (Python API only)
    thresholds: Thresholds = field(default_factory=Thresholds)
    gate: GateRules = field(default_factory=GateRules)

    def __post_init__(self):
        self.images, self.deploy = Path(self.images), Path(self.deploy)

    def validate(self) -> None:
        for name in ("window", "min_new", "min_adapt", "keep", "prune_images", "finetune_images"):
            if getattr(self, name) < 1:
                raise UsageError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if self.min_adapt > self.window:
            raise UsageError(f"--min-adapt {self.min_adapt} is larger than --window {self.window}: it could never adapt")
        if not 0 < self.shadow_fraction < 1:
            raise UsageError(f"--shadow-fraction must be between 0 and 1, got {self.shadow_fraction}")
        if self.settle_s < 0 or self.interval_s < 0:
            raise UsageError("--settle and --interval must not be negative")
        if self.min_adapt < 2 * MIN_SHADOW:
            raise UsageError(f"--min-adapt must be at least {2 * MIN_SHADOW}: {MIN_SHADOW} images to adapt on and "
                             f"{MIN_SHADOW} held out for the gate, got {self.min_adapt}")
        self.adapt_options(self.min_adapt, self.deploy / "check").validate()

    def adapt_options(self, images: int, output: Path) -> AdaptOptions:
        """adapt's options for a cycle adapting on ``images`` images: a ``shadow_fraction`` of them held out."""
        shadow = max(math.ceil(self.shadow_fraction * images), MIN_SHADOW)
        finetune = max(min(self.finetune_images, images - shadow), 1)
        recipe = adapt_recipe(**({"steps": self.steps} if self.steps is not None else {}), **self.recipe)
        return AdaptOptions(self.images, output, model=self.model, profile=self.profile, weights=self.weights,
                            blocks=self.blocks, target_saving=self.target_saving, latency_budget_ms=self.latency_budget_ms,
                            prune_images=min(self.prune_images, finetune), finetune_images=finetune, seed=self.seed,
                            measure_latency=self.measure_latency, recipe=recipe)
