"""Values made printable: percentages for the CLI tables, report.md and the benchmark tables, and
JSON-safe copies of results for report.json, ``--json`` output and history lines (no torch import)."""

from __future__ import annotations

import math
from pathlib import Path


def percent(value: float | None, missing: str = "n/a") -> str:
    """A fraction as a percentage with one decimal (0.1234 -> '12.3%'); ``missing`` for None."""
    return missing if value is None else f"{100 * value:.1f}%"


def json_safe(obj):
    """A JSON-safe copy: NaN/inf become null (strict JSON has neither), tuples lists, paths strings."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj
