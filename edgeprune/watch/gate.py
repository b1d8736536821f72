"""The promotion gate: a shadow evaluation of the candidate against the deployed model.

The shadow images are the candidate's held-out images (adapt's split keeps them out of scoring
and distillation), minus any the deployed version was adapted on: neither model has seen them.
No labels: both models are compared with the **reference**, the candidate's teacher (the
original model with the BatchNorm statistics ``adapt`` chose for this window; with
``--teacher-stats auto`` that is the label-free best of the source and stream statistics),
using the fidelity keys of the adapt report (``pipeline.fidelity.fidelity_metrics``: top-1
agreement, top-5 overlap, agreement on the reference's confident images, KL(reference || model)).

The candidate is promoted only if all hold:

1. its top-1 agreement with the reference is at least ``min_agreement`` (``rules.MIN_AGREEMENT``):
   guards a collapsed or diverged distillation, the failure TENT shows on long mixed streams;
2. with a model deployed: its agreement is at least the deployed model's plus ``min_gain``
   (``rules.MIN_GAIN``), so an unchanged stream does not churn versions;
3. with a model deployed: its KL(reference || candidate) is not larger than the deployed model's
   (plus ``max_kl_increase``, default 0).

(and, checked by the cycle, its ONNX export passed adapt's parity gate). Otherwise the deployed
model stays and every failed rule is logged. The source model's figures on the same images are
recorded for comparison, not gated on.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch

from ..pipeline.fidelity import fidelity_metrics
from .rules import GateRules


@dataclass
class Verdict:
    passed: bool
    shadow_images: int
    candidate: dict
    deployed: dict | None
    source: dict
    rules: dict
    reasons: list[str] = field(default_factory=list)  # why it failed (empty when passed)

    def to_dict(self) -> dict:
        return asdict(self)


def shadow_gate(reference: torch.Tensor, candidate: torch.Tensor, deployed: torch.Tensor | None, source: torch.Tensor,
                rules: GateRules) -> Verdict:
    """Apply the rules (module docstring) to logits of the same shadow images."""
    cand = fidelity_metrics(reference, candidate)
    dep = fidelity_metrics(reference, deployed) if deployed is not None else None
    reasons = []
    if not len(reference):
        reasons.append("no shadow images: nothing to compare on")
    elif cand["agreement"] < rules.min_agreement:
        reasons.append(f"candidate agrees with the reference on {cand['agreement']:.3f} of the shadow images, "
                       f"below the floor {rules.min_agreement}")
    if dep is not None and len(reference):
        if cand["agreement"] < dep["agreement"] + rules.min_gain:
            reasons.append(f"candidate agreement {cand['agreement']:.3f} is not {rules.min_gain} above the deployed model's "
                           f"{dep['agreement']:.3f}")
        if cand["kl_original_adapted"] > dep["kl_original_adapted"] + rules.max_kl_increase:
            reasons.append(f"candidate KL {cand['kl_original_adapted']:.3f} is larger than the deployed model's "
                           f"{dep['kl_original_adapted']:.3f}")
    return Verdict(not reasons, int(len(reference)), cand, dep, fidelity_metrics(reference, source), asdict(rules), reasons)
