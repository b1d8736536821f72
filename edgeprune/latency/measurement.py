"""Measuring a per-device latency profile: what removing each block saves (method.md, Eq. 3).

``LS_i = (T - T_-i) / T``: T is the full model's latency, T_-i the latency with block i replaced
by identity, both medians measured on random inputs at the test resolution on the target
device. The full model and every single-block-removed variant are timed in the SAME interleaved
run (``timing.run_interleaved``), so slow drift of the machine lands on all of them alike.

A second, shorter interleaved run checks ADDITIVITY: the three blocks with the largest savings,
removed together, against the sum of their single savings measured in that same run. A plan
that removes k blocks predicts its latency from the sum; this says how far to trust it.

The profile's schema, files and matching live in ``profiles.py``.
"""

from __future__ import annotations

import math
import os
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import torch

from ..errors import ModelError, UsageError
from ..models.blocks import find_blocks
from ..models.surgery import remove_blocks
from ..models.zoo import load_model
from ..version import __version__
from .backends import get_backend
from .backends.base import workdir_for
from .fingerprint import device_fingerprint, device_slug
from .profiles import NOISE_CV, SCHEMA, SCHEMA_VERSION
from .timing import DEFAULTS as TIMING_DEFAULTS
from .timing import InterleavedRun, Stats, noise_warnings, run_interleaved, short_run_warning, stop_warning

# Profile defaults in one place. The measured run's budget grows with the number of variants
# (seconds per variant), within [min, max]; the additivity run gets a fraction of it.
PROFILE_DEFAULTS: dict[str, float | int] = {
    **TIMING_DEFAULTS,
    "budget_per_variant_s": 5.0,
    "budget_min_s": 20.0,
    "budget_max_s": 240.0,
    "additivity_budget_fraction": 0.3,
    "additivity_blocks": 3,
    "noise_cv": NOISE_CV,  # a variant whose robust CV is above this is flagged "noisy"
    "additivity_tolerance": 0.03,  # |measured - predicted| saving above this (3 points) warns
    "input_seed": 0,
}

ProgressFn = Callable[[int, int], None]
"""``progress(done, total)`` (the project's convention), here in percent of the whole profile:
export/build of the variants 0-30, the main timed rounds 30-85, the additivity check 85-100."""


class _OverallProgress:
    """Maps each phase's own progress onto one monotone 0-100 scale (a bar never goes back).

    A timed phase advances by rounds done of ``max_repeats`` or by time used of its budget,
    whichever is further, since either may end it.
    """

    SPANS = {"prepare": (0, 30), "measure": (30, 85), "additivity": (85, 100)}

    def __init__(self, progress: ProgressFn | None):
        self.progress, self.last = progress, 0
        self.budget_s, self.started = 1.0, 0.0

    def timed(self, phase: str, budget_s: float) -> ProgressFn | None:
        """A ``progress(done, total)`` for one timed phase."""
        if self.progress is None:
            return None
        self.budget_s, self.started = budget_s, time.perf_counter()

        def report(done: int, total: int) -> None:
            used = (time.perf_counter() - self.started) / self.budget_s
            self.step(phase, max(done / total if total else 1.0, used))

        return report

    def step(self, phase: str, fraction: float) -> None:
        if self.progress is None:
            return
        lo, hi = self.SPANS[phase]
        pct = int(lo + (hi - lo) * min(max(fraction, 0.0), 1.0))
        if pct > self.last or pct == 100:
            self.last = pct
            self.progress(pct, 100)


# ------------------------------------------------------------------ measuring
def run_profile(
    model_name: str,
    backend: str = "onnxruntime",
    device: str = "cpu",
    resolution: int | None = None,
    batch: int = 1,
    precision: str = "fp32",
    weights: str | os.PathLike | None = "random",
    budget_s: float | None = None,
    cv_target: float = PROFILE_DEFAULTS["cv_target"],
    progress: ProgressFn | None = None,
    threads: int | None = None,
    min_repeats: int = PROFILE_DEFAULTS["min_repeats"],
    max_repeats: int = PROFILE_DEFAULTS["max_repeats"],
    warmup_s: float = PROFILE_DEFAULTS["warmup_s"],
    seed: int = PROFILE_DEFAULTS["seed"],
    workdir: str | os.PathLike | None = None,
    precision_target: float | None = PROFILE_DEFAULTS["precision_target"],
) -> dict:
    """Measure the latency profile of ``model_name`` on this machine.

    Args:
        model_name: a zoo name (``edgeprune models``).
        backend: latency backend: "onnxruntime", "torch" or "tensorrt".
        device: "cpu", "cuda" or "cuda:N".
        resolution: input height = width; None = the model's own (the test resolution).
        batch: inference batch size.
        precision: "fp32" or "fp16" (fp16 needs a GPU).
        weights: "random" (latency does not depend on weight values; recorded), a state-dict
            path, or None for the pretrained weights.
        budget_s: wall-clock limit of the main timed rounds; None = 5 s per variant within
            [20, 240] s. The additivity run gets 30% of it (at least min(5 s, budget)) on top;
            export and warm-up are extra.
        cv_target: stop early once every variant's robust CV is at most this (after
            ``min_repeats`` rounds).
        progress: optional ``progress(done, total)`` callback, in percent (see ``ProgressFn``).
        threads: CPU inference threads (None = every usable core, recorded in the profile).
        min_repeats, max_repeats, warmup_s, seed, precision_target: see
            ``timing.measure_interleaved``.
        workdir: where exported graphs/engines go; None = a temporary folder, removed after.
    Returns:
        The profile dict (schema ``edgeprune.latency-profile`` version 1); save it with
        ``save_profile``.
    Raises:
        UsageError: bad option values; ModelError: unknown model or no removable block;
        BackendUnavailable: the backend cannot run here; ExportError: export/build failed.
    """
    _check_options(batch, budget_s, cv_target)
    runner_backend = get_backend(backend, device=device, precision=precision, threads=threads)
    model, entry, source = load_model(model_name, weights=weights)
    res = int(resolution or entry.resolution)
    example, blocks = _example_and_blocks(model, entry, res, batch)
    timing = dict(warmup_s=warmup_s, min_repeats=min_repeats, max_repeats=max_repeats,
                  budget_s=budget_s if budget_s is not None else _default_budget(1 + len(blocks)),
                  cv_target=cv_target, seed=seed, precision_target=precision_target)
    runner_backend.plan_timing(timing)
    with _workdir(workdir) as root:
        measured = _measure_variants(model, example, blocks, runner_backend, root, timing, _OverallProgress(progress))
        backend_info = runner_backend.describe(device)
        runner_backend.close()
    run = {"model": entry.name, "weights_source": source, "resolution": res, "batch": int(batch), "precision": precision,
           "backend": backend_info}
    return _profile_record(run, device, timing, *measured)


def _default_budget(variants: int) -> float:
    """5 s per timed variant, within [20, 240] s."""
    return min(max(PROFILE_DEFAULTS["budget_per_variant_s"] * variants, PROFILE_DEFAULTS["budget_min_s"]),
               PROFILE_DEFAULTS["budget_max_s"])


def _measure_variants(model, example, blocks, backend, root: Path, timing: dict, overall: "_OverallProgress"):
    """Every variant timed interleaved, then the additivity check: (main run, block rows, additivity, its run)."""
    runners = _prepare_variants(model, example, blocks, backend, root, overall)
    t = timing
    main = run_interleaved(runners, t["warmup_s"], t["min_repeats"], t["max_repeats"], t["budget_s"], t["cv_target"], t["seed"],
                           overall.timed("measure", t["budget_s"]), precision_target=t["precision_target"])
    rows = _block_rows(blocks, main)
    additivity, add_run = _measure_additivity(model, example, backend, root, runners, rows, timing, overall)
    overall.step("additivity", 1.0)
    return main, rows, additivity, add_run


def _profile_record(run: dict, device: str, timing: dict, main: InterleavedRun, rows: list[dict],
                    additivity: dict | None, add_run: InterleavedRun | None) -> dict:
    """The profile dict (schema ``edgeprune.latency-profile``) of one measured run."""
    fp = device_fingerprint(device)
    return {
        "schema": SCHEMA,
        "schema_version": SCHEMA_VERSION,
        **run,
        "device": fp,
        "device_slug": device_slug(fp),
        "measurement": _measurement_record(timing, main),
        "base": main.stats["base"].to_dict(),
        "blocks": rows,
        "additivity": additivity,
        "warnings": _warnings(main, rows, additivity, add_run),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "edgeprune_version": __version__,
    }


def _check_options(batch: int, budget_s: float | None, cv_target: float) -> None:
    if batch < 1:
        raise UsageError(f"batch must be >= 1, got {batch}")
    if budget_s is not None and budget_s <= 0:
        raise UsageError(f"budget must be > 0 seconds, got {budget_s}")
    if not 0 < cv_target < 1:
        raise UsageError(f"cv_target is a fraction (e.g. 0.04 = 4%), got {cv_target}")


def _example_and_blocks(model, entry, res: int, batch: int):
    """The seeded random input at ``res`` and the model's removable blocks (refused when none)."""
    if res < 8:
        raise UsageError(f"resolution must be >= 8 pixels, got {res}")
    gen = torch.Generator().manual_seed(int(PROFILE_DEFAULTS["input_seed"]))
    example = torch.randn(batch, entry.in_chans, res, res, generator=gen)
    try:
        blocks = find_blocks(model, entry, example[:1])
    except RuntimeError as exc:
        raise UsageError(f"{entry.name} does not run at resolution {res}: {str(exc).splitlines()[0][:200]}") from None
    if not blocks:
        raise ModelError(f"{entry.name} has no removable block (no residual block keeps its shape): nothing to profile")
    return example, blocks


def _prepare_variants(model, example, blocks, backend, root: Path, overall: "_OverallProgress") -> dict[str, Callable[[], None]]:
    """One runner per variant: the full model ("base") and each single block removed."""
    names = ["base"] + [b.name for b in blocks]
    runners: dict[str, Callable[[], None]] = {}
    for i, name in enumerate(names):
        variant = remove_blocks(model, [] if name == "base" else [name])
        runners[name] = backend.prepare(variant, example, workdir_for(root, f"{i:03d}-{name}"))
        overall.step("prepare", (i + 1) / (len(names) + 1))
    return runners


def _measurement_record(timing: dict, main: InterleavedRun) -> dict:
    return {
        "warmup_s": float(timing["warmup_s"]), "min_repeats": int(timing["min_repeats"]),
        "max_repeats": int(timing["max_repeats"]), "budget_s": float(timing["budget_s"]),
        "cv_target": float(timing["cv_target"]), "order": "interleaved-round-robin",
        "precision_target": float(timing["precision_target"] or 0.0),
        "seed": int(timing["seed"]), "rounds": main.rounds, "stop_reason": main.stop_reason,
        "elapsed_s": round(main.elapsed_s, 3), "robust_cv": "1.4826*MAD/median",
        "noise_cv": float(PROFILE_DEFAULTS["noise_cv"]),
    }


class _workdir:
    """The given folder, or a temporary one removed afterwards."""

    def __init__(self, path):
        self.path, self._tmp = path, None

    def __enter__(self) -> Path:
        if self.path is not None:
            Path(self.path).mkdir(parents=True, exist_ok=True)
            return Path(self.path)
        self._tmp = tempfile.TemporaryDirectory(prefix="edgeprune-profile-")
        return Path(self._tmp.name)

    def __exit__(self, *exc):
        if self._tmp is not None:
            self._tmp.cleanup()


def _saving(base: Stats, variant: Stats) -> tuple[float, float, float]:
    """(saving_ms, saving fraction, noise_ms): noise = 2 standard errors of the difference of
    the two medians; a saving smaller than that is within the measurement noise."""
    saving_ms = base.median_ms - variant.median_ms
    noise_ms = 2.0 * math.hypot(base.median_se_ms, variant.median_se_ms)
    return saving_ms, saving_ms / base.median_ms, noise_ms


def _block_rows(blocks, run: InterleavedRun) -> list[dict]:
    base = run.stats["base"]
    rows = []
    for b in blocks:
        s = run.stats[b.name]
        saving_ms, saving, noise_ms = _saving(base, s)
        flags = []
        if saving_ms < 0:
            flags.append("negative_saving")  # kept as measured: the criterion guards LS <= 0
        if abs(saving_ms) < noise_ms:
            flags.append("below_noise")
        if s.cv > PROFILE_DEFAULTS["noise_cv"]:
            flags.append("noisy")
        rows.append({
            "name": b.name, "kind": b.kind, "params": int(b.params), "capacity_gap": float(b.capacity_gap),
            "median_ms": s.median_ms, "p90_ms": s.p90_ms, "p95_ms": s.p95_ms, "p99_ms": s.p99_ms,
            "saving_ms": saving_ms, "saving": saving,
            "noise_ms": noise_ms, "cv": s.cv, "n": s.n, "flags": flags,
        })
    return rows


def _measure_additivity(model, example, backend, root, runners, rows, timing: dict, overall):
    """Base, the top singles and their union in one interleaved run; None with < 2 blocks."""
    budget_s = timing["budget_s"]
    k = int(PROFILE_DEFAULTS["additivity_blocks"])
    top = [r["name"] for r in sorted(rows, key=lambda r: r["saving"], reverse=True)[:k]]
    if len(top) < 2:
        return None, None
    combo = remove_blocks(model, top)
    combo_runner = backend.prepare(combo, example, workdir_for(root, "combo"))
    overall.step("prepare", 1.0)
    subset = {"base": runners["base"], **{n: runners[n] for n in top}, "combo": combo_runner}
    # 30% of the main budget, at least 5 s (or the whole main budget when that is shorter).
    add_budget = max(budget_s * PROFILE_DEFAULTS["additivity_budget_fraction"], min(5.0, budget_s))
    run = run_interleaved(subset, min(timing["warmup_s"], 1.0), timing["min_repeats"], timing["max_repeats"], add_budget,
                          timing["cv_target"], timing["seed"] + 1, overall.timed("additivity", add_budget),
                          precision_target=timing["precision_target"])
    base = run.stats["base"]
    singles = {n: _saving(base, run.stats[n]) for n in top}
    measured_ms, measured, noise_ms = _saving(base, run.stats["combo"])
    predicted_ms = sum(v[0] for v in singles.values())
    predicted = sum(v[1] for v in singles.values())
    return {
        "blocks": top,
        "predicted_saving": predicted,
        "measured_saving": measured,
        "error": measured - predicted,
        "predicted_saving_ms": predicted_ms,
        "measured_saving_ms": measured_ms,
        "single_savings": {n: v[1] for n, v in singles.items()},
        "combo_median_ms": run.stats["combo"].median_ms,
        "base_median_ms": base.median_ms,
        "noise_ms": noise_ms,
        "n": run.rounds,
        "stop_reason": run.stop_reason,
    }, run


def _warnings(main: InterleavedRun, rows: list[dict], additivity: dict | None, add_run: InterleavedRun | None) -> list[str]:
    """Warnings in words a user can act on (TensorRT trtexec-style)."""
    out = noise_warnings(main.stats, PROFILE_DEFAULTS["noise_cv"])
    for w in (stop_warning(main), short_run_warning(main.stats["base"])):
        if w:
            out.append(w)
    neg = [r["name"] for r in rows if "negative_saving" in r["flags"]]
    below = [r["name"] for r in rows if "below_noise" in r["flags"]]
    if neg:
        out.append(
            f"{len(neg)} block(s) measured slower when removed ({', '.join(neg[:4])}{', ...' if len(neg) > 4 else ''}): "
            "kept as measured; the TT-MPD criterion treats LS <= 0 as 'no saving'"
        )
    if below:
        out.append(
            f"{len(below)} block(s) save less than the measurement noise ({', '.join(below[:4])}"
            f"{', ...' if len(below) > 4 else ''}): raise --budget, or close other programs, for firmer numbers"
        )
    if additivity is not None:
        tol = PROFILE_DEFAULTS["additivity_tolerance"]
        if abs(additivity["error"]) > tol:
            out.append(
                f"savings are not additive here: removing {', '.join(additivity['blocks'])} together saves "
                f"{additivity['measured_saving']:.1%}, the sum of single savings predicts {additivity['predicted_saving']:.1%}; "
                "a plan's predicted latency is approximate: measure the pruned model"
            )
        if add_run is not None and (w := stop_warning(add_run)):
            out.append("additivity check: " + w)
    return out
