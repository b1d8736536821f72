"""What one distillation run did: its record in the report (``distillation``, ``early_stop``)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class DistillResult:
    steps_done: int
    losses: list[float] = field(default_factory=list)
    stopped_nonfinite: bool = False
    restored_step: int | None = None  # updates applied to the restored weights
    seconds: float = 0.0
    # --- fast path records
    train_scope: str = "all"
    prefix_stop: int = 0  # first trained stage (0 = the whole network)
    prefix_stage: str = ""
    precision: str = "fp32"
    hardware: dict = field(default_factory=dict)
    early_stop: dict = field(default_factory=dict)  # enabled, stopped_at, reason, checks, lr_events
    kept: dict = field(default_factory=dict)  # which weights were kept: step (0 = undistilled), validation losses
    train_images: int = 0
    batch: int = 0
    trained_forward_flops: int = 0  # forward FLOPs of the trained part for one image
    setup_seconds: float = 0.0  # precision probe and (when not given) prefix cache, inside `seconds`
    check_seconds: float = 0.0  # validation checks, inside `seconds`
    notes: list[str] = field(default_factory=list)
    student_bn: dict = field(default_factory=dict)  # student_bn="auto": the probe's decision and evidence
    time_budget: dict = field(default_factory=dict)  # budget.py's record ({} = no budget, or never reached)
    logit_term: dict = field(default_factory=dict)  # weight, temperature, head pattern ({} = feature loss only)

    @property
    def final_loss(self) -> float:
        return self.losses[-1] if self.losses else float("nan")

    def floor_flops(self) -> int:
        """Training FLOPs actually required: steps x batch x (forward + backward ~ 2x forward)."""
        return 3 * self.steps_done * self.batch * self.trained_forward_flops
