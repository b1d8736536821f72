"""Latency measurement: robust statistics and interleaved (round-robin) timing.

Why interleaved: on a shared or thermally throttled machine the speed drifts over seconds. Timing
all runs of variant A and then all runs of variant B turns that drift into a fake difference
between A and B (docs/benchmarks/design_measurements.md, "Interleaved timing", has an example
where the order alone nearly halved a variant's time). Here every *round* runs each variant once, in an order shuffled per round by a
seeded RNG, so drift lands on all variants alike and cancels in their differences.

Why robust statistics: a single preemption adds tens of milliseconds to one run. The median and
a MAD-based coefficient of variation ignore such outliers; a mean and a standard deviation do not.

The helpers here are pure: no printing, nothing model-specific. ``latency/measurement.py`` uses them.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Mapping, Sequence

# Measurement defaults in one place (measurement.py and the CLI read them from here).
# Tuned on a 2-core shared CPU (onnxruntime, 2 threads): run_profile("mobilenet_v2", resolution=160)
# takes 19-25 s wall, and in three pairs of runs in a row every block's saving agreed within
# 0.32-1.0 points (savings are 3-8%).
DEFAULTS: dict[str, float | int] = {
    "warmup_s": 2.0,  # total warm-up, spent in round-robin rounds (at least 2 rounds)
    "min_repeats": 30,  # rounds before the targets below may stop the measurement
    "max_repeats": 1000,  # rounds at most
    "budget_s": 60.0,  # wall-clock limit of the measured rounds (warm-up not counted)
    "cv_target": 0.04,  # robust CV (see robust_cv) every variant must reach to stop early
    # ... and the standard error of every median, relative to it. Why: the CV of the samples does
    # not shrink with more runs, so a quiet machine met the CV target after 30 rounds and two
    # mobilenet_v2 profiles then differed by up to 2.5 points of saving. 0.2% needs ~160 rounds at
    # a 2% CV; savings are then good to about +-0.5 point.
    "precision_target": 0.002,
    "seed": 0,  # seeds the per-round order, so a profile's order can be reproduced
}

MAD_TO_SIGMA = 1.4826  # MAD * 1.4826 estimates the standard deviation of a normal distribution

ProgressFn = Callable[[int, int], None]
"""``progress(done, total)``, the project's convention: timed rounds done of ``max_repeats``;
when the run stops earlier the last call is ``(rounds, rounds)`` so a progress bar completes."""


def median(values: Sequence[float]) -> float:
    """The median of ``values`` (non-empty)."""
    s = sorted(values)
    n = len(s)
    mid = n // 2
    return float(s[mid]) if n % 2 else (s[mid - 1] + s[mid]) / 2.0


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100), linear interpolation between ranks (numpy's default)."""
    s = sorted(values)
    if len(s) == 1:
        return float(s[0])
    pos = (len(s) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(s) - 1)
    return float(s[lo] + (s[hi] - s[lo]) * (pos - lo))


def trtexec_summary(samples_ms: Sequence[float]) -> dict[str, float]:
    """min/max/mean/median/percentile(90%|95%|99%) of ``samples_ms`` under trtexec's names."""
    if not samples_ms:
        raise ValueError("no latency samples")
    summary = {"min": float(min(samples_ms)), "max": float(max(samples_ms)),
               "mean": float(sum(samples_ms) / len(samples_ms)), "median": median(samples_ms)}
    return summary | {f"percentile({q}%)": percentile(samples_ms, q) for q in (90, 95, 99)}


def robust_cv(values: Sequence[float]) -> float:
    """Robust coefficient of variation: ``1.4826 * MAD / median``.

    MAD is the median absolute deviation from the median; times 1.4826 it estimates the standard
    deviation of normally distributed data, so this equals the usual CV (std/mean) for well
    behaved samples while a few preempted runs barely move it. 0.0 for fewer than 2 samples.
    """
    if len(values) < 2:
        return 0.0
    m = median(values)
    if m <= 0:
        return 0.0
    mad = median([abs(v - m) for v in values])
    return MAD_TO_SIGMA * mad / m


@dataclass(frozen=True)
class Stats:
    """Summary of one variant's latency samples (milliseconds)."""

    median_ms: float
    p90_ms: float
    cv: float  # robust CV, see robust_cv
    n: int
    p95_ms: float | None = None  # tail percentiles (None when built by hand without samples)
    p99_ms: float | None = None

    @classmethod
    def from_samples(cls, samples_ms: Sequence[float]) -> "Stats":
        """Args: samples_ms: one latency per run, in ms (non-empty). Returns: the summary."""
        if not samples_ms:
            raise ValueError("no latency samples")
        return cls(median(samples_ms), percentile(samples_ms, 90), robust_cv(samples_ms), len(samples_ms),
                   percentile(samples_ms, 95), percentile(samples_ms, 99))

    @property
    def median_se_ms(self) -> float:
        """Standard error of the median (normal approximation: 1.2533 * sigma / sqrt(n))."""
        return 1.2533 * self.cv * self.median_ms / math.sqrt(self.n) if self.n else math.inf

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class InterleavedRun:
    """Everything one interleaved measurement produced."""

    stats: dict[str, Stats]
    samples_ms: dict[str, list[float]]  # per variant, in round order (round r = index r)
    rounds: int
    stop_reason: str  # "targets" (CV and precision targets met) | "max_repeats" | "budget"
    elapsed_s: float  # measured rounds only
    warmup_rounds: int
    settings: dict = field(default_factory=dict)


def run_interleaved(
    runners: Mapping[str, Callable[[], None]],
    warmup_s: float = DEFAULTS["warmup_s"],
    min_repeats: int = DEFAULTS["min_repeats"],
    max_repeats: int = DEFAULTS["max_repeats"],
    budget_s: float = DEFAULTS["budget_s"],
    cv_target: float = DEFAULTS["cv_target"],
    seed: int = DEFAULTS["seed"],
    progress: ProgressFn | None = None,
    clock: Callable[[], float] = time.perf_counter,
    precision_target: float | None = DEFAULTS["precision_target"],
) -> InterleavedRun:
    """Time every runner in interleaved rounds; see ``measure_interleaved`` for the arguments.

    Returns:
        An ``InterleavedRun`` with per-variant stats and raw samples, the number of rounds, why
        it stopped, and the settings used.
    """
    if not runners:
        raise ValueError("no runners to measure")
    if min_repeats < 1 or max_repeats < min_repeats:
        raise ValueError(f"need 1 <= min_repeats <= max_repeats, got {min_repeats}, {max_repeats}")
    names = list(runners)
    rng = random.Random(seed)

    warmup_rounds = _warm_up(runners, names, rng, warmup_s, clock)
    samples: dict[str, list[float]] = {n: [] for n in names}
    stop_reason = "max_repeats"
    start = clock()
    rounds = 0
    if progress:
        progress(0, max_repeats)
    while rounds < max_repeats:
        for name in _round_order(names, rng):
            t0 = clock()
            runners[name]()
            samples[name].append((clock() - t0) * 1000.0)
        rounds += 1
        if progress:
            progress(rounds, max_repeats)
        # Checking sorts every sample list: every round at first, then every ~2% of the rounds.
        if rounds >= min_repeats and rounds % max(1, rounds // 50) == 0 and _targets_met(samples, cv_target, precision_target):
            stop_reason = "targets"
            break
        if clock() - start >= budget_s:
            stop_reason = "budget" if rounds < max_repeats else "max_repeats"
            break
    elapsed = clock() - start
    if progress and rounds < max_repeats:
        progress(rounds, rounds)  # stopped early: complete the bar
    settings = {
        "warmup_s": float(warmup_s), "min_repeats": int(min_repeats), "max_repeats": int(max_repeats),
        "budget_s": float(budget_s), "cv_target": float(cv_target), "seed": int(seed),
        "precision_target": float(precision_target or 0.0), "order": "interleaved-round-robin",
    }
    return InterleavedRun(
        {n: Stats.from_samples(s) for n, s in samples.items()}, samples, rounds, stop_reason, elapsed, warmup_rounds, settings
    )


def _warm_up(runners: Mapping[str, Callable[[], None]], names: list[str], rng: random.Random, warmup_s: float,
             clock: Callable[[], float]) -> int:
    """Warm-up in rounds too (at least 2): caches, allocator pools and CPU frequency settle for all variants."""
    rounds = 0
    start = clock()
    while rounds < 2 or clock() - start < warmup_s:
        for name in _round_order(names, rng):
            runners[name]()
        rounds += 1
    return rounds


def _targets_met(samples: Mapping[str, list[float]], cv_target: float, precision_target: float | None) -> bool:
    for s in samples.values():
        cv = robust_cv(s)
        if cv > cv_target:
            return False
        if precision_target and 1.2533 * cv / math.sqrt(len(s)) > precision_target:
            return False
    return True


def measure_interleaved(
    runners: Mapping[str, Callable[[], None]],
    warmup_s: float = DEFAULTS["warmup_s"],
    min_repeats: int = DEFAULTS["min_repeats"],
    max_repeats: int = DEFAULTS["max_repeats"],
    budget_s: float = DEFAULTS["budget_s"],
    cv_target: float = DEFAULTS["cv_target"],
    progress: ProgressFn | None = None,
    seed: int = DEFAULTS["seed"],
    precision_target: float | None = DEFAULTS["precision_target"],
) -> dict[str, Stats]:
    """Latency of several variants, measured in interleaved rounds.

    Every round runs each variant exactly once, in an order shuffled per round by an RNG seeded
    with ``seed`` (never all runs of one variant and then the next), so slow drift of the
    machine's speed affects all variants alike.

    Args:
        runners: variant name -> a callable that runs ONE inference (and waits for it).
        warmup_s: warm-up time, spent in untimed rounds (at least two rounds).
        min_repeats: rounds before the CV target may end the measurement.
        max_repeats: rounds at most.
        budget_s: wall-clock limit of the timed rounds; the round in progress is finished.
        cv_target: stop once every variant's robust CV (1.4826*MAD/median) is at most this,
            after ``min_repeats`` rounds, and
        precision_target: ... every median's relative standard error (1.2533 * cv / sqrt(n))
            is at most this (None: the CV target alone decides).
        progress: optional ``progress(done, total)`` callback, called after each timed round.
        seed: seeds the per-round order.
    Returns:
        variant name -> ``Stats`` (median, p90, robust CV, number of runs).
    """
    return run_interleaved(
        runners, warmup_s, min_repeats, max_repeats, budget_s, cv_target, seed, progress, precision_target=precision_target
    ).stats


def _round_order(names: list[str], rng: random.Random) -> list[str]:
    order = list(names)
    rng.shuffle(order)
    return order


# ------------------------------------------------------------------ warnings a user can act on
def noisy(stats: Stats, threshold: float) -> bool:
    """True when the robust CV of ``stats`` is above ``threshold`` (e.g. 0.05 = 5%)."""
    return stats.cv > threshold


def noise_warning(label: str, stats: Stats, threshold: float) -> str | None:
    """A warning naming what to do when ``stats`` is too spread out, else None.

    Like TensorRT's trtexec report: say the spread, the number of runs, and the remedy.
    """
    if not noisy(stats, threshold):
        return None
    return (
        f"{label}: spread {stats.cv:.0%} over {stats.n} runs (target {threshold:.0%}): "
        "close other programs or raise --budget"
    )


def noise_warnings(stats: Mapping[str, Stats], threshold: float, max_listed: int = 5) -> list[str]:
    """Warnings for the noisy variants of one measurement, the worst first, at most ``max_listed``
    named (then one line counting the rest)."""
    bad = sorted((s.cv, name) for name, s in stats.items() if noisy(s, threshold))
    bad.reverse()
    out = [noise_warning(name, stats[name], threshold) for _, name in bad[:max_listed]]
    if len(bad) > max_listed:
        out.append(f"{len(bad) - max_listed} more variants above {threshold:.0%} spread")
    return [w for w in out if w]


def stop_warning(run: InterleavedRun) -> str | None:
    """A warning when the measurement ended on its time budget before ``min_repeats`` rounds."""
    min_rep = run.settings.get("min_repeats", 0)
    if run.stop_reason == "budget" and run.rounds < min_rep:
        return (
            f"only {run.rounds} rounds fit in the {run.settings.get('budget_s', 0):g} s budget "
            f"(wanted at least {min_rep}): raise --budget or profile fewer variants"
        )
    return None


def short_run_warning(stats: Stats, min_ms: float = 0.2) -> str | None:
    """Warn when one run is so short that timer and Python call overhead weigh in."""
    if stats.median_ms < min_ms:
        return (
            f"one inference takes only {stats.median_ms:.3f} ms: call overhead is a large part of it; "
            "profile with a larger --batch or resolution for trustworthy savings"
        )
    return None
