"""The classifier head as a function of the pre-GAP feature map, found by probing the model.

Turning the pre-GAP map into logits differs between model families (timm ``forward_head``;
global-average-pool + flatten + head module; pool + head; class token + head; token mean + head).
:func:`find_head` tries each on a few images and keeps the one that reproduces ``model(x)``.
Used by the CURL criterion (block removal scored from cached prefixes) and by distillation's
logit term (teacher logits from the stored teacher features).
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .features import get_module
from .zoo import ZooEntry

PROBE_RTOL = 1e-4
PROBE_ATOL = 1e-5

HeadFn = Callable[[torch.Tensor], torch.Tensor]


def logits_and_features(model: nn.Module, entry: ZooEntry, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``model(x)`` and its pre-GAP feature map from ONE forward pass."""
    if entry.feature_layer == "forward_features":
        feats = model.forward_features(x)
        logits = model.forward_head(feats) if hasattr(model, "forward_head") else model(x)
        return logits, feats
    captured: list[torch.Tensor] = []
    handle = get_module(model, entry.feature_layer).register_forward_hook(lambda _m, _i, out: captured.append(out))
    try:
        logits = model(x)
    finally:
        handle.remove()
    return logits, captured[0]


def _head_candidates(model: nn.Module, entry: ZooEntry, module_only: bool) -> list[tuple[str, HeadFn]]:
    out: list[tuple[str, HeadFn]] = []
    if hasattr(model, "forward_head") and not module_only:
        out.append(("forward_head", lambda f: model.forward_head(f)))
    try:
        head = get_module(model, entry.head)
    except AttributeError:
        return out
    out += [
        ("gap+flatten+head", lambda f: head(torch.flatten(F.adaptive_avg_pool2d(f, 1), 1))),
        ("gap+head", lambda f: head(F.adaptive_avg_pool2d(f, 1))),
        ("class_token+head", lambda f: head(f[:, 0])),
        ("token_mean+head", lambda f: head(f.mean(1))),
    ]
    return out


def find_head(model: nn.Module, entry: ZooEntry, probe: torch.Tensor, module_only: bool = False) -> tuple[str, HeadFn] | None:
    """The function mapping the pre-GAP map to ``model``'s logits, verified on ``probe``; or None.

    ``module_only``: only patterns that go through the ``entry.head`` module, so that putting that
    module in eval mode is enough to make the head deterministic while the rest of the model trains
    (timm's ``forward_head`` applies dropout by the root module's training flag).
    """
    with torch.no_grad():
        logits, feats = logits_and_features(model, entry, probe)
        for name, fn in _head_candidates(model, entry, module_only):
            try:
                got = fn(feats)
            except Exception:  # wrong rank/shape for this model: try the next pattern
                continue
            if isinstance(got, torch.Tensor) and got.shape == logits.shape and torch.allclose(
                got, logits, rtol=PROBE_RTOL, atol=PROBE_ATOL + PROBE_RTOL * float(logits.abs().max())
            ):
                return name, fn
    return None
