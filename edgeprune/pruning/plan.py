"""Which blocks to remove: the k lowest scores, one shot (method.md: no greedy re-scoring).

Three ways to say how many: ``k`` blocks; ``target_saving`` F (the fewest blocks, in score
order, whose predicted saving — the sum of single-block profile savings — reaches F); or a
``latency_budget_ms`` M, turned into F = (T - M) / T with T the profiled full-model median.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import UsageError

LS_FLOOR = 1e-3  # LS_i <= 0 (timing noise) is raised to 0.1% so Eq. 4 stays finite; named in the report


@dataclass(frozen=True)
class Plan:
    removed: list[str]
    predicted_saving: float  # sum of single-block savings (additivity assumption)
    mode: str  # "blocks" | "target_saving" | "latency_budget"
    target: float | None = None


def floor_savings(savings: dict[str, float], floor: float = LS_FLOOR) -> tuple[dict[str, float], list[str]]:
    """Savings with LS_i <= floor raised to ``floor``; also the names that were floored."""
    floored = [n for n, s in savings.items() if s <= floor]
    return {n: max(s, floor) for n, s in savings.items()}, floored


def order_blocks(scores: dict[str, float]) -> list[str]:
    """Ascending score; ties broken by name so the same inputs give the same plan."""
    return sorted(scores, key=lambda n: (scores[n], n))


def check_block_count(k: int | None, n: int | None = None) -> None:
    """UsageError unless ``k`` (--blocks) is at least 1 and, when the model's ``n`` removable blocks
    are known, leaves at least one of them."""
    if k is None:
        return
    if n is None:
        if k <= 0:
            raise UsageError(f"--blocks must be at least 1, got {k}")
    elif not 1 <= k < n:
        raise UsageError(f"--blocks must be between 1 and {n - 1} (the model has {n} removable blocks), got {k}")


def make_plan(
    scores: dict[str, float],
    savings: dict[str, float],
    k: int | None = None,
    target_saving: float | None = None,
    latency_budget_ms: float | None = None,
    base_ms: float | None = None,
) -> Plan:
    given = [v is not None for v in (k, target_saving, latency_budget_ms)]
    if sum(given) != 1:
        raise UsageError("give exactly one of --blocks, --target-saving, --latency-budget-ms")
    order = order_blocks(scores)
    n = len(order)
    if n < 2:
        raise UsageError(f"the model has {n} removable block(s); nothing can be pruned while keeping one")
    if k is not None:
        check_block_count(k, n)
        removed = order[:k]
        return Plan(removed, sum(savings[b] for b in removed), "blocks", float(k))
    mode = "target_saving"
    if latency_budget_ms is not None:
        if base_ms is None or base_ms <= 0:
            raise UsageError("--latency-budget-ms needs the profile's full-model latency")
        if latency_budget_ms <= 0:
            raise UsageError(f"--latency-budget-ms must be positive, got {latency_budget_ms}")
        if latency_budget_ms >= base_ms:
            raise UsageError(f"the full model already meets {latency_budget_ms:g} ms (profiled {base_ms:.2f} ms): nothing to prune")
        target_saving = (base_ms - latency_budget_ms) / base_ms
        mode = "latency_budget"
    if not 0 < target_saving < 1:
        raise UsageError(f"--target-saving is a fraction between 0 and 1, got {target_saving}")
    total = 0.0
    for i, name in enumerate(order[: n - 1]):
        total += savings[name]
        if total >= target_saving:
            removed = order[: i + 1]
            return Plan(removed, total, mode, target_saving)
    best = sum(sorted(savings.values(), reverse=True)[: n - 1])
    what = f"{latency_budget_ms:g} ms" if mode == "latency_budget" else f"a saving of {target_saving:.1%}"
    reach = f"{best:.1%}" + (f" ({base_ms * (1 - best):.2f} ms)" if base_ms else "")
    raise UsageError(f"{what} is unreachable: removing {n - 1} of {n} blocks saves at most {reach} by the profile")
