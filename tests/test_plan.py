import pytest

from edgeprune.errors import UsageError
from edgeprune.pruning.plan import LS_FLOOR, floor_savings, make_plan

SCORES = {"a": 3.0, "b": 1.0, "c": 2.0, "d": 4.0}
SAVINGS = {"a": 0.10, "b": 0.05, "c": 0.08, "d": -0.01}


def test_k_smallest_one_shot():
    plan = make_plan(SCORES, SAVINGS, k=2)
    assert plan.removed == ["b", "c"] and plan.predicted_saving == pytest.approx(0.13)


def test_target_saving_takes_fewest_in_importance_order():
    plan = make_plan(SCORES, SAVINGS, target_saving=0.12)
    assert plan.removed == ["b", "c"]
    plan = make_plan(SCORES, SAVINGS, target_saving=0.2)
    assert plan.removed == ["b", "c", "a"]


def test_latency_budget_and_unreachable_targets():
    plan = make_plan(SCORES, SAVINGS, latency_budget_ms=9.0, base_ms=10.0)
    assert plan.removed == ["b", "c"] and plan.mode == "latency_budget"
    with pytest.raises(UsageError, match="unreachable.*at most 23.0%"):
        make_plan(SCORES, SAVINGS, target_saving=0.5)
    with pytest.raises(UsageError, match="already meets"):
        make_plan(SCORES, SAVINGS, latency_budget_ms=11, base_ms=10.0)


@pytest.mark.parametrize("k", [0, -1, 4, 10])
def test_k_out_of_range(k):
    with pytest.raises(UsageError, match="between 1 and 3"):
        make_plan(SCORES, SAVINGS, k=k)


def test_exactly_one_plan_and_floor():
    with pytest.raises(UsageError):
        make_plan(SCORES, SAVINGS, k=1, target_saving=0.1)
    floored, names = floor_savings(SAVINGS)
    assert names == ["d"] and floored["d"] == LS_FLOOR
