"""How two profiles' block savings differ, and whether the k-block plan changes between them.

A plan needs block scores, and TT-MPD's importance I_i = L_i G_i / LS_i needs images for the
noise term L_i. A diff of two profiles has none, so it plans with the latency-only view of the
same formula, through the plan stage's own ``make_plan``:

- ``gap`` (default): I_i = G_i / LS_i, i.e. L_i = 1 for every block (the capacity gap G_i is in
  the profile and the same on every device, so any change of plan comes from latency alone);
- ``saving``: I_i = 1 / LS_i, the k blocks with the largest saving.

LS_i <= 0 is floored as in ``adapt`` (``plan.floor_savings``).
"""

from __future__ import annotations

from ..errors import ProfileError, UsageError
from ..models.zoo import canonical_name
from ..pruning.plan import floor_savings, make_plan
from .profiles import block_savings

VIEWS = ("gap", "saving")


def latency_only_scores(profile: dict, view: str = "gap") -> dict[str, float]:
    """Block -> importance with the noise term left out (module docstring); lower = removed first."""
    if view not in VIEWS:
        raise UsageError(f"--scores must be one of {', '.join(VIEWS)}, got {view!r}")
    savings, _ = floor_savings(block_savings(profile))
    gaps = {b["name"]: float(b["capacity_gap"]) for b in profile["blocks"]}
    return {n: (gaps[n] if view == "gap" else 1.0) / s for n, s in savings.items()}


def _ranks(values: dict[str, float]) -> dict[str, int]:
    order = sorted(values, key=lambda n: (-values[n], n))
    return {n: i + 1 for i, n in enumerate(order)}


def diff_profiles(a: dict, b: dict, k: int = 3, view: str = "gap") -> dict:
    """Per-block savings of two profiles of one model and the k-block plan on each.

    Returns:
        {model, k, view, blocks [{name, saving_a, saving_b, diff, rank_a, rank_b}] (largest |diff|
        first), plan_a, plan_b, plan_changes, only_in_a, only_in_b, base_ms_a, base_ms_b}.
    Raises:
        ProfileError: the profiles are of different models or share fewer than k + 1 blocks.
    """
    if canonical_name(a["model"]) != canonical_name(b["model"]):
        raise ProfileError(f"the profiles are of different models ({a['model']} vs {b['model']}); diff compares one model "
                           "on two devices")
    sa, sb = block_savings(a), block_savings(b)
    common = [n for n in sa if n in sb]
    if len(common) <= k:
        raise ProfileError(f"the profiles share {len(common)} blocks, too few for a plan of k = {k}")
    scores_a = {n: v for n, v in latency_only_scores(a, view).items() if n in sb}
    scores_b = {n: v for n, v in latency_only_scores(b, view).items() if n in sa}
    plan_a = make_plan(scores_a, floor_savings(sa)[0], k=k).removed
    plan_b = make_plan(scores_b, floor_savings(sb)[0], k=k).removed
    ra, rb = _ranks({n: sa[n] for n in common}), _ranks({n: sb[n] for n in common})
    rows = [{"name": n, "saving_a": sa[n], "saving_b": sb[n], "diff": sb[n] - sa[n], "rank_a": ra[n], "rank_b": rb[n]}
            for n in common]
    rows.sort(key=lambda r: (-abs(r["diff"]), r["name"]))
    return {"model": canonical_name(a["model"]), "k": k, "view": view, "blocks": rows,
            "plan_a": plan_a, "plan_b": plan_b, "plan_changes": sorted(plan_a) != sorted(plan_b),
            "only_in_a": [n for n in sa if n not in sb], "only_in_b": [n for n in sb if n not in sa],
            "base_ms_a": a["base"]["median_ms"], "base_ms_b": b["base"]["median_ms"]}
