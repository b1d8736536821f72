"""Which BatchNorm statistics the teacher uses on this stream: ``--teacher-stats auto`` (beyond the paper).

A teacher with the training data's BatchNorm statistics is mismatched to a shifted stream (sensor
noise, blur, low contrast): re-estimating them on the stream recovers much of the lost accuracy.
On a stream of low diversity (one scene, a few objects) the same re-estimation damages the
model: the stream's statistics describe that scene, not the input distribution. No label says
which case a stream is. The decision uses what an unlabeled stream does give:

* candidates: the source statistics and prior-weighted blends with the stream's (Schneider et
  al. 2020: the source statistics count as ``N`` pseudo-samples against the ``n`` stream images;
  mean_b = (N mu_s + n mu_t) / (N + n), the variance blended likewise around the blended mean);
  ``N = 0`` is the plain stream statistics;
* per candidate, on a slice of the stream: the information-maximisation score
  IM = H(mean prediction) - mean H(prediction) (SHOT, Liang et al. 2020): high when the model is
  confident on each image *and* its answers are spread over classes. A shift that makes the
  model unsure (noise) or collapse onto one class (low contrast) lowers it; statistics that fit
  the stream raise it again;
* the rule: the candidate with the highest IM wins, but a blend must beat the source statistics
  by ``IM_MARGIN x ln(classes)`` nats, else the source statistics stay (an unshifted stream gives
  every candidate about the same score, and then the model as trained is kept).

Measured in docs/benchmarks/fidelity.md, sections 2 and 12 (labelled Fashion-MNIST-C streams and
the unlabeled photo stream), where the score is set against accuracy. Everything measured is
returned for the report (``normalisation.auto``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

from ..data.transforms import normalise
from ..models.zoo import ZooEntry
from .bn_stats import bn_layers, reestimate_bn_stats
from .hardware import to_layout

# Source statistics weighted as N pseudo-samples; 0 = stream statistics only, inf = source only.
PRIOR_WEIGHTS: tuple[float, ...] = (math.inf, 64.0, 16.0, 0.0)
IM_MARGIN = 0.02  # x ln(classes) nats a blend must gain over the source statistics
STREAM_IMAGES = 256  # images the stream statistics are estimated on (BatchNorm means need few)
# Images each candidate is scored on. 64 were too few: on a mixed stream the information score's
# sampling noise on 64 images hid a real gain from the margin (fidelity.md section 12).
CHECK_IMAGES = 256
MIN_CHECK_IMAGES = 32  # fewer images left after the fit images: score on the fit images instead


@dataclass
class StatsDecision:
    choice: str  # "source" | "stream" | "blend" | "not applicable"
    prior_weight: float  # N of the chosen candidate (inf = source)
    reason: str
    candidates: list[dict] = field(default_factory=list)
    layers: int = 0

    def to_dict(self) -> dict:
        n = None if math.isinf(self.prior_weight) else self.prior_weight
        return {"choice": self.choice, "prior_weight": n, "reason": self.reason, "bn_layers": self.layers,
                "rule": {"score": "IM = H(mean p) - mean H(p)", "margin_x_ln_classes": IM_MARGIN,
                         "stream_images": STREAM_IMAGES, "check_images": CHECK_IMAGES},
                "candidates": self.candidates}


def _snapshot(model: nn.Module) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(m.running_mean.clone(), m.running_var.clone()) for m in bn_layers(model)]


def _load(model: nn.Module, stats) -> None:
    for m, (mean, var) in zip(bn_layers(model), stats):
        m.running_mean.copy_(mean)
        m.running_var.copy_(var)


def blend(source, stream, prior_weight: float, n: int):
    """Schneider et al. 2020's prior-weighted statistics: source counted as ``prior_weight`` samples."""
    if math.isinf(prior_weight):
        return source
    a = prior_weight / (prior_weight + n)
    out = []
    for (ms, vs), (mt, vt) in zip(source, stream):
        mean = a * ms + (1 - a) * mt
        var = a * (vs + (ms - mean) ** 2) + (1 - a) * (vt + (mt - mean) ** 2)
        out.append((mean, var))
    return out


def logits(model: nn.Module, entry: ZooEntry, pixels: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """Float logits of ``model`` (eval mode, no grad) for uint8 images N x 3 x R x R, in batches.

    The one batched inference helper: the pipeline's fidelity and predictions use it too. Inputs
    go in channels-last (NHWC): the same math, faster convolutions on CPU (1.6x for lite0 here).
    """
    model.eval()
    out = []
    with torch.no_grad():
        for i in range(0, pixels.shape[0], batch_size):
            x = to_layout(normalise(pixels[i : i + batch_size], entry.mean, entry.std), True)
            out.append(model(x).float())
    return torch.cat(out) if out else torch.empty(0, 0)


def information_score(logits: torch.Tensor) -> dict:
    """Mean per-image entropy, entropy of the mean prediction, and IM = the second minus the first."""
    p = logits.softmax(1)
    per_image = float(-(p * p.clamp_min(1e-12).log()).sum(1).mean())
    m = p.mean(0)
    marginal = float(-(m * m.clamp_min(1e-12).log()).sum())
    return {"entropy": per_image, "marginal_entropy": marginal, "im": marginal - per_image}


def choose_teacher_stats(model: nn.Module, entry: ZooEntry, stream: torch.Tensor, batch: int = 64) -> StatsDecision:
    """Decide, and leave ``model``'s BatchNorm statistics set to, the chosen candidate.

    ``stream``: uint8 fine-tune images; the statistics come from the first ``STREAM_IMAGES`` of a
    fixed spread over them, the score from up to ``CHECK_IMAGES`` others (from the fit images when
    fewer than ``MIN_CHECK_IMAGES`` are left)."""
    layers = len(bn_layers(model))
    if not layers:
        return StatsDecision("not applicable", math.inf, "the model has no BatchNorm running statistics")
    order = torch.randperm(stream.shape[0], generator=torch.Generator().manual_seed(0))
    fit = stream[order[:STREAM_IMAGES]]
    rest = order[STREAM_IMAGES : STREAM_IMAGES + CHECK_IMAGES]
    check = stream[rest] if len(rest) >= MIN_CHECK_IMAGES else stream[order[:CHECK_IMAGES]]
    source = _snapshot(model)
    source_scores = logits(model, entry, check, batch)
    original = source_scores.argmax(1)
    reestimate_bn_stats(model, entry, fit, batch)
    fitted = _snapshot(model)
    rows = []
    for weight in PRIOR_WEIGHTS:
        _load(model, blend(source, fitted, weight, fit.shape[0]))
        scores = source_scores if math.isinf(weight) else logits(model, entry, check, batch)  # source: already run
        row = information_score(scores) | {"prior_weight": None if math.isinf(weight) else weight,
                                            "agreement_with_source": float((scores.argmax(1) == original).float().mean())}
        rows.append((weight, row))
    margin = IM_MARGIN * math.log(max(2, scores.shape[1]))
    base = rows[0][1]["im"]
    weight, best = max(rows[1:], key=lambda r: r[1]["im"])
    if best["im"] >= base + margin:
        choice = "stream" if weight == 0 else "blend"
        reason = (f"the stream's statistics (N={weight:g}) raise the information score {base:.3f} -> {best['im']:.3f} "
                  f"(margin {margin:.3f})")
    else:
        weight, choice = math.inf, "source"
        reason = (f"no blend raised the information score by the margin {margin:.3f} over the source statistics' "
                  f"{base:.3f} (best {best['im']:.3f})")
    _load(model, blend(source, fitted, weight, fit.shape[0]))
    return StatsDecision(choice, weight, reason, [r for _, r in rows], layers)

