"""The distillation recipe as one object: the only place its defaults are written.

``DistillConfig()`` is what ``edgeprune adapt`` runs; ``DistillConfig.paper()`` is method.md's
recipe exactly. The CLI, the pipeline and the benchmarks read their defaults from here.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import UsageError

TRAIN_SCOPES = ("all", "suffix")


STUDENT_BN = ("auto", "frozen", "train", "reestimate")
TEACHER_STATS = ("auto", "source", "stream")


@dataclass
class DistillConfig:
    """The distillation recipe, and the one place its defaults live.

    ``DistillConfig()`` is what ``edgeprune adapt`` runs (the CLI, the pipeline and the benchmarks
    read their defaults from here); ``DistillConfig.paper()`` is method.md's recipe exactly.
    """

    steps: int = 500
    batch_size: int = 64
    lr: float = 0.02
    momentum: float = 0.9
    weight_decay: float = 1e-4
    # Fraction of the steps between x gamma. The paper's 0.4 decays too early at the step counts a CPU
    # affords: 0.7 keeps 0.02 for most of a short run (docs/benchmarks/fidelity.md, sections 7-8).
    decay_every: float = 0.7
    gamma: float = 0.1
    seed: int = 0
    freeze_head: bool = True  # method.md: every weight but the classifier head is trained
    # --- beyond the paper (paper() turns each off)
    train_scope: str = "suffix"  # "all" | "suffix"
    precision: str = "auto"  # "fp32" | "bf16" | "fp16" | "auto" (hardware.py)
    channels_last: bool = True  # same math, faster kernels: paper() keeps it
    device: str = "cpu"
    # Student BatchNorm while distilling: "frozen" = eval mode (running statistics stay the
    # teacher's, affine weights train); "train" = the paper (batch statistics, running averages
    # drift to the stream); "reestimate" = "train", then statistics re-estimated on the stream;
    # "auto" = both of frozen and train for bn_probe_steps, the lower validation loss continues
    # (bn_probe.py): frozen wins on efficientnet_lite0, train on the Fashion-MNIST models
    # (docs/benchmarks/fidelity.md).
    student_bn: str = "auto"
    bn_probe_steps: int = 10
    # Teacher BatchNorm statistics: "source" (as trained), "stream" (re-estimated on the fine-tune
    # images) or "auto" (decided from the stream, normalisation.py).
    teacher_stats: str = "auto"
    keep_best: bool = True  # restore the weights with the lowest validation loss (the undistilled ones count)
    # Logit term (logit_term.py): loss = feature MSE + logit_weight * T^2 * KL(teacher || student) of
    # the class outputs at T = logit_temperature, teacher logits from the stored features through the
    # frozen head. 0 = the paper's feature loss only.
    logit_weight: float = 0.0
    logit_temperature: float = 1.0
    local_steps: int = 0  # steps of local gap reconstruction per window before the global phase (local.py)
    early_stop: bool = True
    # Wall-time budget of the distillation phase (budget.py): after the first steps the step count is
    # lowered to what fits, and the schedule laid out over it. None = exactly ``steps`` (the paper).
    time_budget_minutes: float | None = 5.0
    check_every: int = 25  # steps between validation checks
    patience: int = 2  # checks without improvement before the lr steps down (or training stops)
    min_rel_improvement: float = 0.01  # an improvement below 1% of the best loss does not count
    val_images: int = 64  # validation slice taken from the fine-tune set (at most 10% of it)
    min_val_images: int = 8  # fewer: no validation slice (early stop and keep-best off, reason recorded)
    micro_batch: int | None = 32  # images per forward/backward; gradients accumulate to batch_size (None = whole batch)

    @classmethod
    def paper(cls, **overrides) -> "DistillConfig":
        """method.md's recipe: all stages, fp32, train-mode BatchNorm, source statistics, 500 plain steps."""
        base = dict(decay_every=0.4, train_scope="all", precision="fp32", student_bn="train", teacher_stats="source",
                    keep_best=False, local_steps=0, early_stop=False, time_budget_minutes=None, micro_batch=None,
                    logit_weight=0.0)
        return cls(**(base | overrides))

    def validate(self) -> None:
        """Raise UsageError naming the first bad field (the CLI's option names)."""
        for flag, value in (("--steps", self.steps), ("--batch", self.batch_size), ("--lr", self.lr)):
            if not value > 0:
                raise UsageError(f"{flag} must be positive, got {value}")
        if self.time_budget_minutes is not None and not self.time_budget_minutes >= 0:
            raise UsageError(f"--time-budget must be >= 0 minutes (0 = none), got {self.time_budget_minutes}")
        if not 0 < self.decay_every <= 1:
            raise UsageError(f"--decay-every is a fraction of the steps in (0, 1], got {self.decay_every}")
        if self.train_scope not in TRAIN_SCOPES:
            raise UsageError(f"--train-scope must be {' or '.join(TRAIN_SCOPES)}, got {self.train_scope!r}")
        if self.student_bn not in STUDENT_BN:
            raise UsageError(f"--student-bn must be {' or '.join(STUDENT_BN)}, got {self.student_bn!r}")
        if self.teacher_stats not in TEACHER_STATS:
            raise UsageError(f"--teacher-stats must be {' or '.join(TEACHER_STATS)}, got {self.teacher_stats!r}")
        if self.micro_batch is not None and self.micro_batch <= 0:
            raise UsageError(f"--micro-batch must be positive (or 0 for the whole batch), got {self.micro_batch}")
        if self.bn_probe_steps < 0:
            raise UsageError(f"--bn-probe-steps must be >= 0, got {self.bn_probe_steps}")
        if self.logit_weight < 0:
            raise UsageError(f"--logit-weight must be >= 0, got {self.logit_weight}")
        if not self.logit_temperature > 0:
            raise UsageError(f"--logit-temperature must be positive, got {self.logit_temperature}")
        if self.local_steps < 0:
            raise UsageError(f"--local-steps must be >= 0, got {self.local_steps}")
