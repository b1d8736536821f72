"""Make torchvision (and timm, which imports it) importable next to a CPU-only torch.

Why: the torchvision wheel that matches torch 2.13.0 on PyPI is a CUDA build. With the CPU
torch its C++ extension cannot load, so the ``torchvision::nms`` / ``qnms`` operator schemas
are never registered and ``import torchvision`` fails with "operator torchvision::nms does not
exist" while importing its meta registrations. The model definitions edgeprune needs are pure
Python, so defining the two missing schemas is enough. Where the extension loads normally
(any matching CPU or CUDA install) this module does nothing.
"""

from __future__ import annotations

import importlib.util
import os

_PATCHED = False


def _extension_loads() -> bool:
    """True when torchvision's C++ extension is present and loads with this torch."""
    import torch

    spec = importlib.util.find_spec("torchvision")
    if spec is None or spec.submodule_search_locations is None:
        return True  # no torchvision at all: nothing to patch, let the import fail clearly
    for folder in spec.submodule_search_locations:
        for name in os.listdir(folder):
            if name.startswith("_C") and name.endswith((".so", ".pyd")):
                try:
                    torch.ops.load_library(os.path.join(folder, name))
                    return True
                except (OSError, RuntimeError):
                    return False
    return False


def _schema_missing(op: str) -> bool:
    import torch

    try:
        torch._C._dispatch_find_schema_or_throw(f"torchvision::{op}", "")
        return False
    except RuntimeError:
        return True


def ensure_torchvision() -> None:
    """Define torchvision's ``nms``/``qnms`` schemas if (and only if) its extension can't load."""
    global _PATCHED
    if _PATCHED:
        return
    _PATCHED = True
    if _extension_loads():
        return
    import torch

    # One library fragment; schemas only (no kernels): detection ops stay unusable, models work.
    lib = torch.library.Library("torchvision", "FRAGMENT")
    if _schema_missing("nms"):
        lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    if _schema_missing("qnms"):
        lib.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    # Keep the fragment alive for the life of the process.
    globals()["_LIB"] = lib


def import_torchvision():
    ensure_torchvision()
    import torchvision

    return torchvision


def import_timm():
    ensure_torchvision()
    import timm

    return timm
