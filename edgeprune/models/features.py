"""Reaching inside a model: sub-modules by path, the pre-GAP feature map, the classifier head.

The zoo entry (``models/zoo.py``) says *which* layer is the feature layer and which is the head;
these helpers use that to reach them in a built model.
"""

from __future__ import annotations

import torch
from torch import nn

from .zoo import ZooEntry


def get_module(model: nn.Module, path: str) -> nn.Module:
    return model.get_submodule(path) if path else model


def set_module(model: nn.Module, path: str, new: nn.Module) -> None:
    parent_path, _, leaf = path.rpartition(".")
    setattr(get_module(model, parent_path), leaf, new)


def extract_features(model: nn.Module, entry: ZooEntry, x: torch.Tensor) -> torch.Tensor:
    """The pre-global-average-pool feature map (method.md) of ``model`` for batch ``x``."""
    if entry.feature_layer == "forward_features":
        return model.forward_features(x)
    captured: list[torch.Tensor] = []

    class _Done(Exception):
        pass

    def hook(_m, _i, out):
        captured.append(out)
        raise _Done  # the head is not needed: stop the forward here

    handle = get_module(model, entry.feature_layer).register_forward_hook(hook)
    try:
        model(x)
    except _Done:
        pass
    finally:
        handle.remove()
    return captured[0]


def head_parameters(model: nn.Module, entry: ZooEntry) -> set[int]:
    """ids of the classifier head's parameters (kept frozen when distilling)."""
    return {id(p) for p in get_module(model, entry.head).parameters()}
