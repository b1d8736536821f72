"""Remove blocks (replace by identity) and save/load pruned models as plain manifests.

A manifest is a ``torch.save`` of a dict holding only strings, numbers, lists and tensors, so
it loads with ``torch.load(weights_only=True)`` and never unpickles a class.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path

import torch
from torch import nn

from ..deploy.outputs import atomic_path
from ..errors import ModelError, UsageError
from .features import get_module, set_module
from .zoo import build_architecture, get_entry

MANIFEST_FORMAT = "edgeprune.manifest"
MANIFEST_VERSION = 1


def remove_blocks(model: nn.Module, names: list[str] | tuple[str, ...], copy_model: bool = True) -> nn.Module:
    """The model with each named block replaced by ``nn.Identity`` (a plain nn.Module)."""
    pruned = copy.deepcopy(model) if copy_model else model
    for name in names:
        try:
            get_module(pruned, name)
        except AttributeError:
            raise UsageError(f"no block named {name!r} in this model") from None
        set_module(pruned, name, nn.Identity())
    return pruned


def manifest_dict(model: nn.Module, model_name: str, weights_source: str, removed: list[str], **extra) -> dict:
    return {
        "format": MANIFEST_FORMAT,
        "version": MANIFEST_VERSION,
        "model": model_name,
        "weights_source": weights_source,
        "removed_blocks": list(removed),
        **extra,
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
    }


def save_manifest(path: str | os.PathLike, model: nn.Module, model_name: str, weights_source: str, removed: list[str], **extra) -> None:
    """Write atomically (temp file + rename) so a crash never leaves half a manifest."""
    with atomic_path(path) as tmp:
        torch.save(manifest_dict(model, model_name, weights_source, removed, **extra), tmp)


def read_manifest(path: str | os.PathLike) -> dict:
    path = Path(path)
    if path.is_dir():
        path = path / "model.pt"
    if not path.is_file():
        raise ModelError(f"no pruned-model manifest at {path}")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ModelError(f"refused to read {path}: not an edgeprune manifest ({type(exc).__name__})") from None
    if not isinstance(data, dict) or data.get("format") != MANIFEST_FORMAT:
        raise ModelError(f"{path} is not an edgeprune manifest")
    if data.get("version") != MANIFEST_VERSION:
        raise ModelError(f"{path} has manifest version {data.get('version')}, this edgeprune reads {MANIFEST_VERSION}")
    return data


def load_manifest(path: str | os.PathLike) -> tuple[nn.Module, dict]:
    """Rebuild the pruned model exactly: architecture, identity blocks, then the saved weights."""
    data = read_manifest(path)
    entry = get_entry(data["model"])
    model = remove_blocks(build_architecture(entry), data["removed_blocks"], copy_model=False)
    try:
        model.load_state_dict(data["state_dict"], strict=True)
    except RuntimeError as exc:
        raise ModelError(f"manifest weights do not fit {data['model']}: {str(exc).splitlines()[0]}") from None
    return model.eval(), data
