"""The options of one ``adapt`` run: one object, validated once, before any work.

``AdaptOptions`` holds what the pipeline decides (images, model, profile, plan, split, outputs)
and ``recipe``, the distillation recipe (``distill.config.DistillConfig``). The CLI builds one from
its flags (its defaults are read from here), ``adapt(images, output, **kwargs)`` from keywords
(``AdaptOptions.from_kwargs``), and a benchmark may build one directly. No torch import: the CLI
reads the defaults at start-up.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field

from ..deploy.int8.config import DEPLOY_PRECISIONS, Int8Config
from ..distill.config import DistillConfig
from ..errors import UsageError

DEFAULT_BLOCKS = 3  # the short form's plan when no --blocks/--target-saving/--latency-budget-ms
# adapt's keyword -> the recipe's field
RECIPE_KEYWORDS = {"steps": "steps", "batch": "batch_size", "lr": "lr", "decay_every": "decay_every",
                   "time_budget_minutes": "time_budget_minutes", "train_scope": "train_scope",
                   "precision": "precision", "early_stop": "early_stop", "micro_batch": "micro_batch",
                   "teacher_stats": "teacher_stats", "student_bn": "student_bn", "local_steps": "local_steps",
                   "bn_probe_steps": "bn_probe_steps", "logit_weight": "logit_weight",
                   "logit_temperature": "logit_temperature"}


def adapt_recipe(**overrides) -> DistillConfig:
    """The distillation recipe ``edgeprune adapt`` runs unless told otherwise: ``DistillConfig()``,
    which owns every default (the paper's recipe is ``DistillConfig.paper()``)."""
    return DistillConfig(**overrides)


@dataclass
class AdaptOptions:
    """Everything one adaptation run needs to know (see ``pipeline.adapt.adapt`` for each option)."""

    images: str | os.PathLike
    output: str | os.PathLike | None = None  # None: edgeprune-out/<model>-<time>
    model: str | None = None  # None: the model of the profile recorded for this device
    profile: str | os.PathLike | None = None  # None: the profile recorded for this device
    weights: str | os.PathLike | None = None
    blocks: int | None = None  # the plan: one of blocks / target_saving / latency_budget_ms (none: DEFAULT_BLOCKS)
    target_saving: float | None = None
    latency_budget_ms: float | None = None
    criterion: str = "ttmpd"
    prune_images: int = 64
    finetune_images: int = 1000  # prune images included
    seed: int = 0  # the split, the scoring and the training order (the recipe's seed is set from it)
    force: bool = False
    dynamic_batch: bool = False
    allow_device_mismatch: bool = False
    tensorrt: bool | None = None  # None: when tensorrt and CUDA are present
    measure_latency: bool = True
    recipe: DistillConfig = field(default_factory=adapt_recipe)  # incl. teacher_stats, student_bn, local_steps
    deploy_precision: str = "fp32"  # "int8": also model.int8.onnx, calibrated on the fine-tune images (deploy/int8)
    int8: Int8Config = field(default_factory=Int8Config)  # calibration and gate of the INT8 graph
    allow_precision_mismatch: bool = False  # accept a profile of another precision than the deployed one (warns)

    @classmethod
    def from_kwargs(cls, images, output=None, train_head: bool = False, **kwargs) -> "AdaptOptions":
        """From ``adapt``'s keywords: the recipe's (RECIPE_KEYWORDS; train_head = not
        freeze_head) go into ``recipe``."""
        recipe = {RECIPE_KEYWORDS[k]: kwargs.pop(k) for k in list(kwargs) if k in RECIPE_KEYWORDS}
        unknown = set(kwargs) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise TypeError(f"adapt() got unexpected keyword argument(s): {', '.join(sorted(unknown))}")
        return cls(images, output, recipe=adapt_recipe(freeze_head=not train_head, **recipe), **kwargs)

    def plan_blocks(self) -> int | None:
        """--blocks, or DEFAULT_BLOCKS when no plan was given at all."""
        if self.blocks is None and self.target_saving is None and self.latency_budget_ms is None:
            return DEFAULT_BLOCKS
        return self.blocks

    def distill_config(self) -> DistillConfig:
        """The recipe as distillation runs it: this run's seed; micro-batches only below the batch."""
        micro = self.recipe.micro_batch
        return dataclasses.replace(self.recipe, seed=self.seed,
                                   micro_batch=micro if micro and micro < self.recipe.batch_size else None)

    def validate(self) -> None:
        """Every check that needs no file: UsageError/ModelError naming the option, before any work."""
        from ..distill.hardware import check_precision
        from ..models.zoo import get_entry
        from ..pruning.criteria import CRITERIA
        from ..pruning.plan import check_block_count

        r = self.recipe
        r.validate()  # steps/batch/lr, scope, BatchNorm choices, micro-batch, local steps
        if self.prune_images <= 0 or self.finetune_images <= 0:
            raise UsageError("--prune-images and --finetune-images must be positive")
        check_block_count(self.blocks)
        check_precision(r.precision)
        CRITERIA.get(self.criterion)  # unknown criterion: "did you mean ..."
        if self.deploy_precision not in DEPLOY_PRECISIONS:
            raise UsageError(f"unknown deploy precision {self.deploy_precision!r}", f"choose from {', '.join(DEPLOY_PRECISIONS)}")
        self.int8.validate()
        if self.model is not None:
            get_entry(self.model)  # unknown model: "did you mean ..." before any profile lookup

