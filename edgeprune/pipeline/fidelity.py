"""How much of the original model's answers the adapted model keeps, on an unlabeled stream.

Top-1 agreement alone says little on a 1000-class model looking at ambiguous field images: two
near-tied classes swap without harm. So the report also gives the top-5 overlap, the agreement on
the images where the original is confident (max softmax >= ``CONFIDENT``: the answers a user
relies on) and the mean KL divergence KL(original || adapted) of the predicted distributions.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..distill.normalisation import logits  # noqa: F401 (the stages import it from here)

CONFIDENT = 0.5  # max softmax of the original at or above which an image counts as "confident"


def fidelity_metrics(original: torch.Tensor, adapted: torch.Tensor, k: int = 5) -> dict:
    """Agreement keys of ``adapted`` logits against ``original`` logits (same images, same order)."""
    n = original.shape[0]
    if n == 0:
        return {"agreement": float("nan"), "top5_overlap": float("nan"), "confident_images": 0,
                "confident_agreement": float("nan"), "kl_original_adapted": float("nan")}
    same = adapted.argmax(1) == original.argmax(1)
    k = min(k, original.shape[1])
    top_o, top_a = original.topk(k, 1).indices, adapted.topk(k, 1).indices
    overlap = (top_o.unsqueeze(2) == top_a.unsqueeze(1)).any(2).float().sum(1) / k
    confident = original.softmax(1).amax(1) >= CONFIDENT
    kl = F.kl_div(adapted.log_softmax(1), original.log_softmax(1), log_target=True, reduction="batchmean")
    return {
        "agreement": float(same.float().mean()),
        "top5_overlap": float(overlap.mean()),  # top-min(5, classes)
        "confident_images": int(confident.sum()),
        "confident_agreement": float(same[confident].float().mean()) if int(confident.sum()) else float("nan"),
        "kl_original_adapted": float(kl),
    }
