"""timing.py: robust statistics, interleaved round-robin order, stopping rules, warnings."""

import itertools
import math

import pytest

from edgeprune.latency.timing import (
    DEFAULTS,
    Stats,
    measure_interleaved,
    median,
    noise_warning,
    noise_warnings,
    noisy,
    percentile,
    robust_cv,
    run_interleaved,
    short_run_warning,
    stop_warning,
)


class FakeClock:
    """A clock the fake runners advance: timing tests run instantly and deterministically."""

    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def fake_runners(names, clock, cost_s, log):
    def make(name):
        def run():
            log.append(name)
            clock.t += cost_s[name] if isinstance(cost_s, dict) else cost_s

        return run

    return {n: make(n) for n in names}


# ------------------------------------------------------------------ statistics
def test_median_percentile_and_robust_cv():
    assert median([3, 1, 2]) == 2
    assert median([4, 1, 3, 2]) == 2.5
    assert percentile(list(range(1, 11)), 90) == pytest.approx(9.1)  # numpy's linear rule
    assert percentile([5.0], 90) == 5.0
    # median 3, absolute deviations [2, 1, 0, 1, 97] -> MAD 1: the outlier 100 does not count.
    assert robust_cv([1, 2, 3, 4, 100]) == pytest.approx(1.4826 / 3)
    assert robust_cv([7.0]) == 0.0
    assert robust_cv([5.0, 5.0, 5.0]) == 0.0


def test_robust_cv_matches_std_over_mean_for_normal_data():
    import random

    rng = random.Random(1)
    xs = [rng.gauss(10.0, 0.5) for _ in range(20000)]
    assert robust_cv(xs) == pytest.approx(0.05, rel=0.05)


def test_trtexec_summary_names_and_values():
    from edgeprune.latency.timing import trtexec_summary

    got = trtexec_summary([4.0, 1.0, 3.0, 2.0, 10.0])
    assert got == {"min": 1.0, "max": 10.0, "mean": 4.0, "median": 3.0, "percentile(90%)": pytest.approx(7.6),
                   "percentile(95%)": pytest.approx(8.8), "percentile(99%)": pytest.approx(9.76)}
    with pytest.raises(ValueError):
        trtexec_summary([])


def test_stats_from_samples():
    s = Stats.from_samples([1.0, 2.0, 3.0, 4.0, 100.0])
    assert (s.median_ms, s.n) == (3.0, 5)
    assert s.p90_ms == pytest.approx(61.6)
    assert s.cv == pytest.approx(1.4826 / 3)
    assert (s.p95_ms, s.p99_ms) == (pytest.approx(80.8), pytest.approx(96.16))  # numpy's linear percentiles
    assert s.to_dict() == {"median_ms": 3.0, "p90_ms": s.p90_ms, "cv": s.cv, "n": 5, "p95_ms": s.p95_ms, "p99_ms": s.p99_ms}
    assert s.median_se_ms == pytest.approx(1.2533 * s.cv * 3.0 / math.sqrt(5))
    with pytest.raises(ValueError):
        Stats.from_samples([])


# ------------------------------------------------------------------ interleaving
def test_every_round_runs_each_variant_once_in_shuffled_order():
    clock, log = FakeClock(), []
    names = ["a", "b", "c", "d"]
    run = run_interleaved(fake_runners(names, clock, 0.001, log), warmup_s=0.0, min_repeats=25, max_repeats=25,
                          budget_s=1e9, cv_target=1.0, clock=clock)
    assert run.warmup_rounds == 2 and run.rounds == 25
    rounds = [log[i:i + 4] for i in range(0, len(log), 4)]
    assert len(rounds) == 27  # 2 warm-up + 25 timed
    for r in rounds:
        assert sorted(r) == names  # each variant exactly once per round
    # Never all runs of one variant and then the next; the order changes between rounds.
    assert len({tuple(r) for r in rounds}) > 5
    # ... and every variant takes every position sometimes, so drift lands on all alike.
    for pos in range(4):
        assert {r[pos] for r in rounds} == set(names)
    assert all(s.n == 25 for s in run.stats.values())


def test_stops_at_max_repeats_when_targets_are_not_met():
    jitter = itertools.cycle([0.001, 0.0015, 0.002, 0.0025, 0.003])  # cv ~40%: never meets 5%
    clock = FakeClock()

    def run():
        clock.t += next(jitter)

    result = run_interleaved({"a": run, "b": run}, warmup_s=0, min_repeats=5, max_repeats=40, budget_s=1e9,
                             cv_target=0.05, clock=clock)
    assert (result.stop_reason, result.rounds) == ("max_repeats", 40)


def test_order_is_reproducible_from_the_seed():
    logs = []
    for seed in (3, 3, 4):
        clock, log = FakeClock(), []
        run_interleaved(fake_runners("abc", clock, 0.001, log), warmup_s=0, min_repeats=10, max_repeats=10, budget_s=1e9,
                        cv_target=1.0, seed=seed, clock=clock)
        logs.append(log)
    assert logs[0] == logs[1]
    assert logs[0] != logs[2]


def test_measured_latency_per_variant():
    clock, log = FakeClock(), []
    stats = run_interleaved(fake_runners(["fast", "slow"], clock, {"fast": 0.002, "slow": 0.005}, log), warmup_s=0,
                            min_repeats=5, max_repeats=5, budget_s=1e9, cv_target=1.0, clock=clock).stats
    assert stats["fast"].median_ms == pytest.approx(2.0)
    assert stats["slow"].median_ms == pytest.approx(5.0)
    assert stats["slow"].cv == 0.0


def test_stops_on_time_budget():
    clock, log = FakeClock(), []
    # 3 variants x 10 ms = 30 ms per round; 1 s budget -> 34 rounds (the round in progress ends).
    run = run_interleaved(fake_runners("abc", clock, 0.010, log), warmup_s=0.05, min_repeats=100, max_repeats=1000,
                          budget_s=1.0, cv_target=0.5, clock=clock)
    assert run.stop_reason == "budget"
    assert run.rounds == 34
    assert run.elapsed_s == pytest.approx(1.02)
    assert stop_warning(run) and "raise --budget" in stop_warning(run)


def test_stops_early_once_targets_are_met():
    clock, log = FakeClock(), []
    run = run_interleaved(fake_runners("ab", clock, 0.001, log), warmup_s=0, min_repeats=12, max_repeats=1000,
                          budget_s=1e9, cv_target=0.05, clock=clock)  # constant latency: cv 0
    assert run.stop_reason == "targets" and run.rounds == 12
    assert stop_warning(run) is None


def test_precision_target_needs_more_rounds_than_the_cv_target():
    jitter = itertools.cycle([0.0010, 0.00102, 0.00098])  # cv ~2-3%: meets a 4% CV target at once

    def runners(clock):
        def run():
            clock.t += next(jitter)

        return {"a": run, "b": run}

    results = {}
    for target in (None, 0.002):
        clock = FakeClock()
        results[target] = run_interleaved(runners(clock), warmup_s=0, min_repeats=10, max_repeats=5000, budget_s=1e9,
                                          cv_target=0.04, precision_target=target, clock=clock).rounds
    assert results[None] == 10
    assert results[0.002] > 100


def test_measure_interleaved_returns_stats_and_reports_progress():
    calls = []
    stats = measure_interleaved({"x": lambda: None, "y": lambda: None}, warmup_s=0, min_repeats=3, max_repeats=3,
                                budget_s=10, cv_target=1.0, progress=lambda *a: calls.append(a))
    assert set(stats) == {"x", "y"} and all(isinstance(s, Stats) for s in stats.values())
    assert calls == [(0, 3), (1, 3), (2, 3), (3, 3)]  # progress(done, total) in timed rounds


def test_progress_completes_when_stopping_early():
    clock, calls = FakeClock(), []
    run_interleaved(fake_runners("ab", clock, 0.001, []), warmup_s=0, min_repeats=4, max_repeats=100, budget_s=1e9,
                    cv_target=0.5, clock=clock, progress=lambda d, t: calls.append((d, t)))
    assert calls[-1] == (4, 4)


def test_bad_arguments():
    with pytest.raises(ValueError):
        run_interleaved({}, warmup_s=0)
    with pytest.raises(ValueError):
        run_interleaved({"a": lambda: None}, min_repeats=10, max_repeats=5)


def test_defaults_in_one_dict():
    assert {"warmup_s", "min_repeats", "max_repeats", "budget_s", "cv_target", "precision_target"} <= set(DEFAULTS)
    assert 0.03 <= DEFAULTS["cv_target"] <= 0.05


# ------------------------------------------------------------------ warnings
def test_noise_warnings_say_what_to_do():
    quiet, loud = Stats(10.0, 10.5, 0.02, 50), Stats(10.0, 14.0, 0.23, 15)
    assert not noisy(quiet, 0.05) and noisy(loud, 0.05)
    assert noise_warning("base", quiet, 0.05) is None
    msg = noise_warning("base", loud, 0.05)
    assert msg == "base: spread 23% over 15 runs (target 5%): close other programs or raise --budget"
    many = noise_warnings({f"v{i}": loud for i in range(8)} | {"ok": quiet}, 0.05, max_listed=5)
    assert len(many) == 6 and many[-1].startswith("3 more variants")
    assert short_run_warning(Stats(0.05, 0.06, 0.01, 100)) and short_run_warning(quiet) is None
