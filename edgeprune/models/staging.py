"""Split a model's feature path into a flat list of stages.

``features(x) == stage_n(...stage_1(x))`` and every removable block is one stage. Scoring uses
this to run the network once, keep each block's input, and evaluate "block i removed" by
running only the stages after block i from that kept input (cheaper than the paper's full
forward per block). Suffix distillation uses it to freeze and cache the unchanged prefix.
A model without a splitter still works everywhere; it just pays full forward passes.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

Stage = tuple[str, nn.Module]
_SPLITTERS: dict[str, Callable[[nn.Module], list[Stage]]] = {}


def splitter(name: str):
    def deco(fn):
        _SPLITTERS[name] = fn
        return fn

    return deco


def split(model: nn.Module, staging: str) -> list[Stage] | None:
    """Stages of ``model``'s feature path, or None when no splitter is known for it."""
    fn = _SPLITTERS.get(staging)
    return fn(model) if fn else None


def run_stages(stages: list[Stage], x: torch.Tensor, start: int = 0, stop: int | None = None) -> torch.Tensor:
    for _, module in stages[start:stop]:
        x = module(x)
    return x


def stage_positions(stages: list[Stage], names) -> dict[str, int]:
    """Index of each named block in ``stages`` (every removable block is one stage)."""
    index = {name: i for i, (name, _) in enumerate(stages)}
    missing = [n for n in names if n not in index]
    if missing:
        raise ValueError(f"blocks not in the stage split: {missing}")
    return {n: index[n] for n in names}


def run_keeping_inputs(stages: list[Stage], x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
    """The input of every stage and the final output, in one pass (for cached-prefix scoring)."""
    inputs = []
    for _, module in stages:
        inputs.append(x)
        x = module(x)
    return inputs, x


def _flatten_sequential(prefix: str, seq: nn.Module) -> list[Stage]:
    out: list[Stage] = []
    for name, child in seq.named_children():
        path = f"{prefix}.{name}" if prefix else name
        # Expand plain Sequential containers only; subclasses (Conv2dNormActivation) are units.
        if type(child) is nn.Sequential:
            out.extend(_flatten_sequential(path, child))
        else:
            out.append((path, child))
    return out


@splitter("resnet")
def _resnet(model: nn.Module) -> list[Stage]:
    stem = nn.Sequential(model.conv1, model.bn1, model.relu, model.maxpool)
    stages: list[Stage] = [("stem", stem)]
    for layer in ("layer1", "layer2", "layer3", "layer4"):
        if hasattr(model, layer):  # CIFAR-style ResNets stop at layer3
            stages.extend(_flatten_sequential(layer, getattr(model, layer)))
    return stages


@splitter("features")
def _features(model: nn.Module) -> list[Stage]:
    return _flatten_sequential("features", model.features)


@splitter("timm_efficientnet")
def _timm_efficientnet(model: nn.Module) -> list[Stage]:
    return [("conv_stem", model.conv_stem), ("bn1", model.bn1), *_flatten_sequential("blocks", model.blocks),
            ("conv_head", model.conv_head), ("bn2", model.bn2)]


class _TorchvisionVitStem(nn.Module):
    """Patchify, prepend the class token, add position embeddings (torchvision ViT)."""

    def __init__(self, vit: nn.Module):
        super().__init__()
        self.__dict__["vit"] = vit  # not registered: parameters stay owned by the model

    def forward(self, x):
        vit = self.vit
        x = vit._process_input(x)
        cls = vit.class_token.expand(x.shape[0], -1, -1)
        x = torch.cat([cls, x], dim=1)
        return vit.encoder.dropout(x + vit.encoder.pos_embedding)


@splitter("torchvision_vit")
def _torchvision_vit(model: nn.Module) -> list[Stage]:
    return [("stem", _TorchvisionVitStem(model)), *_flatten_sequential("encoder.layers", model.encoder.layers),
            ("encoder.ln", model.encoder.ln)]


class _TimmVitStem(nn.Module):
    def __init__(self, vit: nn.Module):
        super().__init__()
        self.__dict__["vit"] = vit

    def forward(self, x):
        vit = self.vit
        x = vit._pos_embed(vit.patch_embed(x))
        return vit.norm_pre(vit.patch_drop(x))


@splitter("timm_vit")
def _timm_vit(model: nn.Module) -> list[Stage]:
    return [("stem", _TimmVitStem(model)), *_flatten_sequential("blocks", model.blocks), ("norm", model.norm)]
