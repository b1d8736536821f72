"""Has the stream drifted from what the deployed model was adapted on? Label-free evidence.

Three signals, each compared with the same measurement taken when the deployed version was
promoted (its ``Reference``, kept in the version folder):

1. **BatchNorm input statistics** (the primary signal). For every BatchNorm layer of the deployed
   model, the per-channel mean and variance of its *input* over the newest images, against the
   same statistics over the images the model was adapted on. Per channel the divergence is the
   symmetric KL divergence of the two Gaussians, ``J = (KL(a||b) + KL(b||a)) / 2``; the score is
   the mean over channels, then over layers. Variances are floored at 1% of the layer's median
   reference variance (dead channels would divide by ~0). Drift when the score exceeds
   ``bn`` (default ``rules.BN_DIVERGENCE``).
2. **The original model's uncertainty**: its mean prediction entropy (divided by ln C, so 0..1)
   on the newest images against the adapted-on images. Drift when it rose or fell by more than
   ``entropy`` (``rules.ENTROPY_SHIFT``).
3. **Deployed vs original agreement** on a shadow sample (up to ``SHADOW_SAMPLE`` newest images):
   top-1 agreement of the deployed model with the original against the agreement measured at
   promotion on all the images of its window (adapted-on and held out). Drift when it fell by
   more than ``agreement`` (``rules.AGREEMENT_DROP``).

Drift is declared when any signal crosses its threshold; the evidence (every value, threshold and
the layers that moved most) goes into the cycle's JSON line and history.jsonl. The BatchNorm
threshold sits well above the divergence of unchanged chunks of a stream and below that of a
changed condition: docs/benchmarks/watch.md records both on Fashion-MNIST.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from ..models.zoo import ZooEntry
from ..pipeline.fidelity import logits
from .rules import Thresholds

SHADOW_SAMPLE = 512
VAR_FLOOR = 0.01  # x the layer's median reference variance


@dataclass
class Reference:
    """What the deployed version looked like on the images it was adapted on (drift compares with it)."""

    bn: dict[str, tuple[torch.Tensor, torch.Tensor]]  # layer -> (mean, var) of its input
    entropy: float  # the original's mean normalised entropy on the adapted-on images
    confidence: float  # the original's mean max softmax on them
    agreement: float  # deployed vs original top-1 agreement on the version's window at promotion


@dataclass
class Evidence:
    images: int
    bn_divergence: float
    entropy: float
    entropy_reference: float
    confidence: float
    confidence_reference: float
    agreement: float
    agreement_reference: float
    shadow_images: int
    thresholds: dict
    moved_layers: dict = field(default_factory=dict)  # the 3 layers with the largest divergence
    drift: bool = False
    reasons: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def bn_input_stats(model: nn.Module, entry: ZooEntry, pixels: torch.Tensor, batch: int = 64) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Per-channel (mean, var) of every BatchNorm layer's input over ``pixels`` (eval mode)."""
    sums: dict[str, list] = {}

    def hook(name):
        def record(_module, inputs, _output):
            x = inputs[0].detach().double().transpose(0, 1).flatten(1)  # C x (N * spatial)
            acc = sums.setdefault(name, [0.0, 0.0, 0])
            acc[0] = acc[0] + x.sum(1)
            acc[1] = acc[1] + (x * x).sum(1)
            acc[2] += x.shape[1]
        return record

    handles = [m.register_forward_hook(hook(n)) for n, m in model.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    try:
        logits(model, entry, pixels, batch)
    finally:
        for h in handles:
            h.remove()
    stats = {}
    for name, (s, sq, n) in sums.items():
        mean = s / n
        stats[name] = (mean.float(), (sq / n - mean * mean).clamp_min(0).float())
    return stats


def bn_divergence(reference: dict, new: dict) -> tuple[float, dict[str, float]]:
    """(score, per-layer divergence): module docstring, signal 1."""
    per_layer = {}
    for name, (m_ref, v_ref) in reference.items():
        if name not in new:
            continue
        m_new, v_new = new[name]
        floor = VAR_FLOOR * float(v_ref.median()) + 1e-12
        a, b = v_ref.clamp_min(floor), v_new.clamp_min(floor)
        d2 = (m_ref - m_new) ** 2
        j = 0.25 * (a / b + b / a + d2 * (1 / a + 1 / b) - 2)
        per_layer[name] = float(j.mean())
    score = sum(per_layer.values()) / len(per_layer) if per_layer else 0.0
    return score, per_layer


def uncertainty(lg: torch.Tensor) -> tuple[float, float]:
    """(mean entropy / ln C, mean max softmax) of logits."""
    if lg.numel() == 0:
        return float("nan"), float("nan")
    p = lg.softmax(1)
    ent = -(p * p.clamp_min(1e-12).log()).sum(1) / math.log(lg.shape[1])
    return float(ent.mean()), float(p.amax(1).mean())


def evaluate(deployed: nn.Module, original: nn.Module, entry: ZooEntry, pixels: torch.Tensor, ref: Reference,
             thresholds: Thresholds, batch: int = 64) -> Evidence:
    """The evidence on the newest ``pixels`` (uint8) and the decision (module docstring)."""
    score, per_layer = bn_divergence(ref.bn, bn_input_stats(deployed, entry, pixels, batch))
    orig_logits = logits(original, entry, pixels, batch)
    entropy, confidence = uncertainty(orig_logits)
    shadow = torch.linspace(0, len(pixels) - 1, min(SHADOW_SAMPLE, len(pixels))).round().long() if len(pixels) else torch.tensor([], dtype=torch.long)
    dep = logits(deployed, entry, pixels[shadow], batch)
    agreement = float((dep.argmax(1) == orig_logits[shadow].argmax(1)).float().mean()) if len(shadow) else float("nan")
    moved = dict(sorted(per_layer.items(), key=lambda kv: -kv[1])[:3])
    ev = Evidence(len(pixels), score, entropy, ref.entropy, confidence, ref.confidence, agreement, ref.agreement, len(shadow),
                  asdict(thresholds), moved)
    if score > thresholds.bn:
        ev.reasons.append(f"BatchNorm input statistics moved: divergence {score:.3f} > {thresholds.bn}")
    if abs(entropy - ref.entropy) > thresholds.entropy:
        ev.reasons.append(f"the original's entropy changed: {ref.entropy:.3f} -> {entropy:.3f} (more than {thresholds.entropy})")
    if ref.agreement - agreement > thresholds.agreement:
        ev.reasons.append(f"deployed-original agreement fell: {ref.agreement:.3f} -> {agreement:.3f} (more than {thresholds.agreement})")
    ev.drift = bool(ev.reasons)
    return ev


def reference_of(deployed: nn.Module, original: nn.Module, entry: ZooEntry, adapted_on: torch.Tensor,
                 agreement: float, batch: int = 64) -> Reference:
    """The Reference of a version about to be promoted: measured on the images it was adapted on."""
    entropy, confidence = uncertainty(logits(original, entry, adapted_on, batch))
    return Reference(bn_input_stats(deployed, entry, adapted_on, batch), entropy, confidence, agreement)

