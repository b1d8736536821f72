"""The paper's data layouts: ImageNet-1k val, ImageNet-C and ImageNet-R class folders.

    imagenet_wnids() -> list[str]                 the 1000 wnids, standard (sorted) logit order
    wnid_to_index() -> dict[str, int]             wnid -> logit index
    imagenet_val(root) -> {"class_to_index", "root"}            <root>/<wnid>/*.JPEG
    imagenet_c(root, corruption, severity) -> Path              <root>/<corruption>/<severity>/<wnid>/*.JPEG
    imagenet_r(root) -> {"class_to_index", "root", "logit_indices"}   <root>/<wnid>/*.jpg (200 wnids)
    imagenet_r_logit_indices(root) -> list[int]   1000-way indices of the classes present, sorted
    restrict_logits(logits, indices) -> logits[:, indices]

Use the mapping with :func:`edgeprune.data.images.load_images`::

    val = imagenet_val("/data/imagenet/val")
    images = load_images(val["root"], 224, 0.875, class_to_index=val["class_to_index"])
    c = imagenet_c("/data/imagenet-c", "fog", 3)
    images = load_images(c, 224, 0.875, class_to_index=wnid_to_index())

Labels are then the 1000-way ImageNet indices (the classifier's logit indices).

ImageNet-R has 200 of the 1000 classes. Its labels from ``load_images(..., class_to_index=
wnid_to_index())`` are still 1000-way indices. Evaluate a 1000-way model on the 200 classes
present (as in Hendrycks et al.) with ``idx = imagenet_r_logit_indices(root)`` and
``sub = restrict_logits(logits, idx)``: column ``j`` of ``sub`` is logit ``idx[j]``, so the
prediction in 1000-way terms is ``idx[sub.argmax(1)]``, compared with the 1000-way label. (Or
map labels into the 200-way space: ``position = {k: j for j, k in enumerate(idx)}``.)

The wnid lists come from timm (``timm/data/_info/imagenet_synsets.txt`` and
``imagenet_r_synsets.txt``), copied into ``edgeprune/resources/`` so timm is not needed; timm
is only a fallback when the resource file is missing.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..data.files import display_path
from ..errors import ImageError, UsageError
from .corruptions import CORRUPTIONS

_RESOURCES = Path(__file__).resolve().parent / "resources"

# ImageNet-C also ships four "extra" corruptions (held out in the paper's protocol).
IMAGENET_C_EXTRA: tuple[str, ...] = ("speckle_noise", "gaussian_blur", "spatter", "saturate")


def _read_list(name: str, timm_name: str, expected: int) -> tuple[str, ...]:
    path = _RESOURCES / name
    try:
        text = path.read_text(encoding="ascii")
    except OSError:
        from ..compat import import_timm

        timm = import_timm()
        text = (Path(timm.data.__file__).parent / "_info" / timm_name).read_text(encoding="ascii")
    items = tuple(line.strip() for line in text.splitlines() if line.strip())
    if len(items) != expected or len(set(items)) != expected:
        raise ImageError(f"{path} should list {expected} distinct wnids, found {len(set(items))}")
    return items


@functools.lru_cache(maxsize=None)
def _wnids() -> tuple[str, ...]:
    return _read_list("imagenet_wnids.txt", "imagenet_synsets.txt", 1000)


@functools.lru_cache(maxsize=None)
def _r_wnids() -> frozenset[str]:
    return frozenset(_read_list("imagenet_r_wnids.txt", "imagenet_r_synsets.txt", 200))


def imagenet_wnids() -> list[str]:
    """The 1000 ImageNet-1k wnids in the standard logit order (sorted, ``n01440764`` first)."""
    return list(_wnids())


def wnid_to_index() -> dict[str, int]:
    """wnid -> ImageNet-1k logit index."""
    return {w: i for i, w in enumerate(_wnids())}


def _check_dir(root: str | os.PathLike, what: str) -> Path:
    path = Path(root)
    if not path.is_dir():
        raise ImageError(
            f"{what} folder not found: {display_path(path)}",
            "expected one sub-folder per class, named by wnid (e.g. n01440764)",
        )
    return path


def _class_folders(path: Path, allowed: set[str] | frozenset[str], what: str) -> list[str]:
    """Sub-folder names of ``path`` (hidden ones ignored); error on any not in ``allowed``."""
    names = sorted(e.name for e in os.scandir(path) if e.is_dir() and not e.name.startswith("."))
    if not names:
        raise ImageError(f"no class folders in {display_path(path)}", f"{what} needs <root>/<wnid>/ image folders")
    unknown = [n for n in names if n not in allowed]
    if unknown:
        few = ", ".join(repr(display_path(n)) for n in unknown[:5])
        more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
        raise ImageError(
            f"{len(unknown)} folder(s) in {display_path(path)} are not {what} wnids: {few}{more}",
            "class folders must be named by ImageNet wnid, e.g. n01440764",
        )
    return names


def imagenet_val(root: str | os.PathLike) -> dict[str, Any]:
    """ImageNet-1k val in class folders ``<root>/<wnid>/*.JPEG``.

    Returns ``{"class_to_index": wnid -> logit index (all 1000), "root": Path}``. Raises
    :class:`ImageError` when the folder is missing, empty, or has a folder that is not a wnid.
    """
    path = _check_dir(root, "ImageNet val")
    _class_folders(path, set(_wnids()), "ImageNet-1k")
    return {"class_to_index": wnid_to_index(), "root": path}


def imagenet_c(root: str | os.PathLike, corruption: str, severity: int) -> Path:
    """The folder ``<root>/<corruption>/<severity>`` of ImageNet-C (class folders by wnid).

    ``corruption``: one of :data:`edgeprune.research.corruptions.CORRUPTIONS` (or ImageNet-C's extras
    :data:`IMAGENET_C_EXTRA`); ``severity`` 1..5 (else :class:`UsageError`). Missing folder or
    non-wnid class folders: :class:`ImageError`. Load with ``class_to_index=wnid_to_index()``.
    """
    if corruption not in CORRUPTIONS + IMAGENET_C_EXTRA:
        raise UsageError(
            f"unknown ImageNet-C corruption {corruption!r}; choose one of: {', '.join(CORRUPTIONS + IMAGENET_C_EXTRA)}"
        )
    if isinstance(severity, bool) or not isinstance(severity, (int, np.integer)) or not 1 <= int(severity) <= 5:
        raise UsageError(f"ImageNet-C severity must be an int in 1..5, got {severity!r}")
    base = Path(root)
    if not base.is_dir():
        raise ImageError(f"ImageNet-C folder not found: {display_path(base)}", "expected <root>/<corruption>/<severity>/<wnid>/")
    path = base / corruption / str(int(severity))
    if not path.is_dir():
        present = sorted(e.name for e in os.scandir(base) if e.is_dir() and not e.name.startswith("."))
        hint = f"folders present: {', '.join(present[:6])}" + (" ..." if len(present) > 6 else "") if present else "the folder is empty"
        raise ImageError(f"ImageNet-C folder not found: {display_path(path)}", hint)
    _class_folders(path, set(_wnids()), "ImageNet-1k")
    return path


def imagenet_r_logit_indices(root: str | os.PathLike) -> list[int]:
    """1000-way logit indices of the ImageNet-R classes present under ``root`` (sorted).

    The full dataset gives 200 indices; a subset of the class folders gives fewer. Folders that
    are not ImageNet-R wnids raise :class:`ImageError`.
    """
    path = _check_dir(root, "ImageNet-R")
    names = _class_folders(path, _r_wnids(), "ImageNet-R")
    index = wnid_to_index()
    return sorted(index[n] for n in names)


def imagenet_r(root: str | os.PathLike) -> dict[str, Any]:
    """ImageNet-R ``<root>/<wnid>/*.jpg``: ``{"class_to_index", "root", "logit_indices"}``.

    ``class_to_index`` maps the wnids present to their 1000-way indices, so labels from
    ``load_images`` are 1000-way; ``logit_indices`` is :func:`imagenet_r_logit_indices`.
    """
    indices = imagenet_r_logit_indices(root)
    wnids = _wnids()
    return {"class_to_index": {wnids[i]: i for i in indices}, "root": Path(root), "logit_indices": indices}


def restrict_logits(logits, indices):
    """``logits[:, indices]`` (numpy array or torch tensor, N x 1000).

    Column ``j`` of the result is 1000-way logit ``indices[j]``: a 1000-way prediction is
    ``indices[restricted.argmax(1)]``. See the module docstring.
    """
    if getattr(logits, "ndim", None) != 2:
        raise UsageError(f"logits must be N x C, got shape {tuple(getattr(logits, 'shape', ()))}")
    idx = [int(i) for i in indices]
    if not idx:
        raise UsageError("indices is empty")
    if min(idx) < 0 or max(idx) >= logits.shape[1]:
        raise UsageError(f"indices must be in 0..{logits.shape[1] - 1}, got {min(idx)}..{max(idx)}")
    try:
        import torch

        if isinstance(logits, torch.Tensor):
            return logits[:, torch.as_tensor(idx, dtype=torch.long, device=logits.device)]
    except ImportError:  # pragma: no cover
        pass
    return logits[:, idx]
