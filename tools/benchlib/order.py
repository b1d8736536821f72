"""The order methods run in: balanced across units so slow drift of a shared machine favours none.

Row r of the design is the list rotated by (r // 2) * stride and, for odd r, reversed (a Williams-
style design): in each pair of rows a method sits at positions p and n - 1 - p, so its mean position
over any whole pair is the middle, and which method follows which alternates. The stride is coprime
with n, so 2n consecutive rows put every method in every position exactly twice.
"""

from __future__ import annotations

import math
from typing import Sequence, TypeVar

T = TypeVar("T")


def _stride(n: int) -> int:
    """A step coprime with n near n / golden ratio^2, so consecutive pairs start far apart."""
    if n <= 2:
        return 1
    target = max(1, round(n * 0.382))
    return min((s for s in range(1, n) if math.gcd(s, n) == 1), key=lambda s: (abs(s - target), s))


def balanced_order(items: Sequence[T], row: int) -> list[T]:
    """Row ``row`` (0, 1, 2, ...) of the design for ``items``."""
    items = list(items)
    n = len(items)
    if n < 2:
        return items
    shift = (row // 2) * _stride(n) % n
    rotated = items[shift:] + items[:shift]
    return rotated[::-1] if row % 2 else rotated


def position_counts(items: Sequence[T], rows: int) -> dict[T, list[int]]:
    """item -> how often it ran at each position over rows 0..rows-1 (for checks and reports)."""
    counts = {item: [0] * len(items) for item in items}
    for r in range(rows):
        for pos, item in enumerate(balanced_order(items, r)):
            counts[item][pos] += 1
    return counts
