"""The seeded split of the usable images into prune / fine-tune / held-out sets."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

import numpy as np

from ..errors import ImageError, UsageError

MIN_USABLE_IMAGES = 16  # fewer usable images than this are refused (scoring and held-out need some)
HELD_OUT_FRACTION = 0.10  # when images are short, at least this share is kept held out
FEW_HELD_OUT = 20  # warn when fewer held-out images than this remain for the report


@dataclass
class Split:
    """Disjoint index lists into the usable images, and what was cut short."""

    prune: list[int]
    finetune: list[int]
    held_out: list[int]
    warnings: list[str] = field(default_factory=list)


def split_indices(n: int, prune: int = 64, finetune: int = 1000, seed: int = 0, minimum: int = MIN_USABLE_IMAGES) -> Split:
    """Seeded split of ``n`` usable images into prune / fine-tune / held-out index lists.

    A ``random.Random(seed)`` permutation of ``range(n)`` (the same on every platform and Python
    version) is cut in order: the first ``prune`` indices score blocks, the next ``finetune`` are
    distilled on, the rest are held out for the report. Each list keeps permutation order, so any
    prefix is itself a random subset.

    Too few images: refused with :class:`ImageError` below ``minimum`` (default 16). Otherwise, if
    ``prune + finetune`` would leave fewer than ``ceil(10% of n)`` images held out, that 10% is
    reserved first; of the remaining ``a`` images the prune set gets
    ``min(prune, max(a - finetune, ceil(a / 2)))`` (at most half unless fine-tuning needs less) and
    fine-tuning gets the rest up to ``finetune``; a warning says so. A warning is also added when
    fewer than 20 images end up held out (the report's estimates will be noisy).
    """
    for name, v in (("n", n), ("prune", prune), ("finetune", finetune), ("minimum", minimum)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
            raise UsageError(f"{name} must be a non-negative int, got {v!r}")
    n, prune, finetune = int(n), int(prune), int(finetune)
    if n < minimum:
        raise ImageError(
            f"only {n} usable image{'s' if n != 1 else ''}, need at least {minimum} to prune, fine-tune and hold some out",
            "add more images to the stream folder",
        )
    order = list(range(n))
    random.Random(seed).shuffle(order)
    notes: list[str] = []
    reserve = math.ceil(HELD_OUT_FRACTION * n)
    if prune + finetune <= n - reserve:
        p, f = prune, finetune
    else:
        a = n - reserve
        p = min(prune, max(a - finetune, (a + 1) // 2))
        f = min(finetune, a - p)
        notes.append(
            f"only {n} usable images: using {p} to prune and {f} to fine-tune (asked {prune} and {finetune}), "
            f"keeping {n - p - f} held out for the report"
        )
    held = n - p - f
    if held < FEW_HELD_OUT:
        notes.append(f"only {held} held-out image{'s' if held != 1 else ''}: the report's estimates will be noisy")
    return Split(prune=order[:p], finetune=order[p : p + f], held_out=order[p + f :], warnings=notes)
