"""Logit term of the distillation loss (beyond the paper): KL(teacher || student) of the class outputs.

The paper's loss is the MSE between pre-GAP feature maps. The classifier head is frozen while
distilling, so the teacher's logits follow from its stored features through that same head: the
term costs no storage and no teacher pass, only the head (pool + one linear layer) on the stored
features of each batch. It targets what fidelity measures, the original's answers, where the
feature MSE weighs every channel alike. Loss = MSE + weight * T^2 * KL(softmax(t/T) || softmax(s/T))
(Hinton et al. 2015's T^2 keeps the gradient scale across temperatures).

The head is found by probing (models/head.py) among the patterns that go through the zoo entry's
head module, which is kept in eval mode (no dropout) while the rest trains. Off, with the reason in
the run's notes, when the head is trained (the teacher's head would move with the student's) or
when no pattern reproduces the model's logits.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..data.transforms import normalise
from ..models.features import get_module
from ..models.head import HeadFn, find_head
from ..models.zoo import ZooEntry
from .config import DistillConfig

PROBE_IMAGES = 2


class LogitTerm:
    """``weight * T^2 * KL(teacher || student)`` at temperature ``T``, both logits through the frozen head."""

    def __init__(self, head: HeadFn, head_module: nn.Module, pattern: str, weight: float, temperature: float):
        self.head, self.head_module, self.pattern = head, head_module, pattern
        self.weight, self.temperature = weight, temperature

    @classmethod
    def build(cls, student: nn.Module, entry: ZooEntry, pixels: torch.Tensor, config: DistillConfig,
              notes: list[str]) -> "LogitTerm | None":
        """The term for ``config``, or None (off, or unavailable: the reason goes to ``notes``)."""
        if config.logit_weight <= 0:
            return None
        if not config.freeze_head:
            notes.append("logit term off: the head is trained, so the stored features no longer give the teacher's logits")
            return None
        was = student.training
        student.eval()
        try:
            probe = normalise(pixels[:PROBE_IMAGES], entry.mean, entry.std).to(next(student.parameters()).device)
            found = find_head(student, entry, probe, module_only=True)
        finally:
            student.train(was)
        if found is None:
            notes.append("logit term off: no pooling pattern through the head module reproduces the model's logits")
            return None
        return cls(found[1], get_module(student, entry.head), found[0], config.logit_weight, config.logit_temperature)

    def loss(self, student_features: torch.Tensor, teacher_features: torch.Tensor, reduction: str = "batchmean") -> torch.Tensor:
        """The weighted KL of one batch (``reduction="sum"``: summed over images, for validation)."""
        t = self.temperature
        s = self.head(student_features.float()) / t
        with torch.no_grad():
            target = self.head(teacher_features.float()) / t
        kl = F.kl_div(F.log_softmax(s, 1), F.log_softmax(target, 1), log_target=True, reduction=reduction)
        return self.weight * t * t * kl

    def record(self) -> dict:
        return {"weight": self.weight, "temperature": self.temperature, "head": self.pattern}
