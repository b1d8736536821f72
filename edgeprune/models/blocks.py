"""Removable-block discovery.

A block is removable when its input and output shapes are equal and replacing it with identity
keeps the network valid: residual blocks without downsampling. Known block types are decided
by their own flags (``use_res_connect``, ``has_skip``, ``downsample is None``); any other
module is judged by a generic rule from one traced example input, so an unlisted model works.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from .features import get_module, set_module
from .zoo import ZooEntry


@dataclass(frozen=True)
class Block:
    name: str  # module path in the model, e.g. "features.3"
    kind: str  # class name; "generic:" prefix when found by the generic rule
    params: int
    capacity_gap: float  # G_i = (S - S_-i) / S, Eq. 2
    shape: tuple[int, ...]  # input (= output) shape for the traced example, batch 1

    def to_dict(self) -> dict:
        d = asdict(self)
        d["shape"] = list(self.shape)
        return d


_CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)


def _known_rule(module: nn.Module) -> bool | None:
    """True/False for a known block type, None when the type is not known."""
    cls = type(module).__name__
    pkg = type(module).__module__
    if pkg.startswith("torchvision.models"):
        if cls in ("BasicBlock", "Bottleneck"):
            return module.downsample is None
        if cls in ("InvertedResidual", "MBConv", "FusedMBConv"):
            return bool(module.use_res_connect)
        if cls in ("CNBlock", "EncoderBlock"):
            return True
    if pkg.startswith("timm."):
        if hasattr(module, "has_skip") and cls in (
            "DepthwiseSeparableConv", "InvertedResidual", "EdgeResidual", "CondConvResidual", "UniversalInvertedResidual",
        ):
            return bool(module.has_skip)
        if cls in ("Block", "ConvNeXtBlock", "ResidualAttentionBlock"):
            return True  # shapes are still checked below
    return None


def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def trace_shapes(model: nn.Module, example: torch.Tensor) -> dict[str, tuple[tuple, tuple]]:
    """(input shape, output shape) of every module that takes and returns one tensor."""
    shapes: dict[str, tuple[tuple, tuple]] = {}
    handles = []
    for name, module in model.named_modules():
        if not name:
            continue

        def hook(m, inputs, output, name=name):
            if len(inputs) == 1 and isinstance(inputs[0], torch.Tensor) and isinstance(output, torch.Tensor):
                shapes.setdefault(name, (tuple(inputs[0].shape), tuple(output.shape)))

        handles.append(module.register_forward_hook(hook))
    try:
        with torch.no_grad():
            model(example)
    finally:
        for h in handles:
            h.remove()
    return shapes


def find_blocks(model: nn.Module, entry: ZooEntry, example: torch.Tensor | None = None) -> list[Block]:
    """All removable blocks of ``model`` in forward order."""
    if example is None:
        example = torch.randn(1, entry.in_chans, entry.resolution, entry.resolution)
    was_training = model.training
    model.eval()
    shapes = trace_shapes(model, example)
    total = _count(model)
    modules = dict(model.named_modules())
    chosen: list[str] = []
    decided: list[str] = []  # known block types: their insides are never candidates
    for name, module in modules.items():
        if not name or any(name.startswith(d + ".") for d in decided):
            continue
        rule = _known_rule(module)
        if rule is not None:
            decided.append(name)
        if name not in shapes or shapes[name][0] != shapes[name][1]:
            continue
        if rule is None:
            parent = modules.get(name.rpartition(".")[0] if "." in name else "")
            rule = (
                not isinstance(module, _CONTAINERS)
                and any(True for _ in module.children())
                and _count(module) > 0
                and isinstance(parent, _CONTAINERS)
                and _identity_keeps_valid(model, name, example)
            )
            if rule:
                decided.append(name)
        if rule:
            chosen.append(name)
    model.train(was_training)
    order = {n: i for i, n in enumerate(shapes)}  # forward order (hooks fire in call order)
    chosen.sort(key=lambda n: order[n])
    out = []
    for name in chosen:
        module = modules[name]
        rule_kind = _known_rule(module)
        kind = type(module).__name__ if rule_kind is not None else f"generic:{type(module).__name__}"
        params = _count(module)
        out.append(Block(name, kind, params, params / total if total else 0.0, shapes[name][0][1:]))
    return out


def _identity_keeps_valid(model: nn.Module, name: str, example: torch.Tensor) -> bool:
    original = get_module(model, name)
    out_shape = None
    set_module(model, name, nn.Identity())
    try:
        with torch.no_grad():
            out = model(example)
        out_shape = tuple(out.shape) if isinstance(out, torch.Tensor) else None
    except Exception:
        return False
    finally:
        set_module(model, name, original)
    with torch.no_grad():
        ref = model(example)
    return out_shape == tuple(ref.shape)
