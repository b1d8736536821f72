"""Per-device latency profile: what removing each block saves (method.md, Eq. 3).

``LS_i = (T - T_-i) / T``: T is the full model's latency, T_-i the latency with block i replaced
by identity, both medians measured on random inputs at the test resolution on the target
device. The full model and every single-block-removed variant are timed in the SAME interleaved
run (``timing.run_interleaved``), so slow drift of the machine lands on all of them alike.

A second, shorter interleaved run checks ADDITIVITY: the three blocks with the largest savings,
removed together, against the sum of their single savings measured in that same run. A plan
that removes k blocks predicts its latency from the sum; this says how far to trust it.

Profiles are JSON with a schema id and version; numbers are JSON numbers (never "a +- b"
strings). ``load_profile`` validates everything and raises ``ProfileError`` naming the problem.
"""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import torch

from ..deploy.outputs import atomic_write
from ..errors import ModelError, OutputError, ProfileError, UsageError
from ..models.blocks import find_blocks
from ..models.surgery import remove_blocks
from ..models.zoo import canonical_name, load_model
from ..version import __version__
from .backends import get_backend
from .backends.base import workdir_for
from .fingerprint import cpu_isa_flags, device_fingerprint, device_slug
from .timing import DEFAULTS as TIMING_DEFAULTS
from .timing import InterleavedRun, Stats, noise_warnings, run_interleaved, short_run_warning, stop_warning

SCHEMA = "edgeprune.latency-profile"
SCHEMA_VERSION = 1

# Profile defaults in one place. The measured run's budget grows with the number of variants
# (seconds per variant), within [min, max]; the additivity run gets a fraction of it.
PROFILE_DEFAULTS: dict[str, float | int] = {
    **TIMING_DEFAULTS,
    "budget_per_variant_s": 5.0,
    "budget_min_s": 20.0,
    "budget_max_s": 240.0,
    "additivity_budget_fraction": 0.3,
    "additivity_blocks": 3,
    "noise_cv": 0.10,  # a variant whose robust CV is above this is flagged "noisy"
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
    if batch < 1:
        raise UsageError(f"batch must be >= 1, got {batch}")
    if budget_s is not None and budget_s <= 0:
        raise UsageError(f"budget must be > 0 seconds, got {budget_s}")
    if not 0 < cv_target < 1:
        raise UsageError(f"cv_target is a fraction (e.g. 0.04 = 4%), got {cv_target}")
    runner_backend = get_backend(backend, device=device, precision=precision, threads=threads)
    model, entry, source = load_model(model_name, weights=weights)
    res = int(resolution or entry.resolution)
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

    names = ["base"] + [b.name for b in blocks]
    if budget_s is None:
        budget_s = min(max(PROFILE_DEFAULTS["budget_per_variant_s"] * len(names), PROFILE_DEFAULTS["budget_min_s"]),
                       PROFILE_DEFAULTS["budget_max_s"])
    overall = _OverallProgress(progress)
    with _workdir(workdir) as root:
        runners: dict[str, Callable[[], None]] = {}
        for i, name in enumerate(names):
            variant = remove_blocks(model, [] if name == "base" else [name])
            runners[name] = runner_backend.prepare(variant, example, workdir_for(root, f"{i:03d}-{name}"))
            overall.step("prepare", (i + 1) / (len(names) + 1))
        main = run_interleaved(runners, warmup_s, min_repeats, max_repeats, budget_s, cv_target, seed,
                               overall.timed("measure", budget_s), precision_target=precision_target)
        rows = _block_rows(blocks, main)
        additivity, add_run = _measure_additivity(
            model, example, runner_backend, root, runners, rows, budget_s, warmup_s, min_repeats, max_repeats, cv_target,
            seed, overall, precision_target,
        )
        overall.step("additivity", 1.0)
        backend_info = runner_backend.describe(device)
        runner_backend.close()

    fp = device_fingerprint(device)
    profile = {
        "schema": SCHEMA,
        "schema_version": SCHEMA_VERSION,
        "model": entry.name,
        "weights_source": source,
        "resolution": res,
        "batch": int(batch),
        "precision": precision,
        "backend": backend_info,
        "device": fp,
        "device_slug": device_slug(fp),
        "measurement": {
            "warmup_s": float(warmup_s), "min_repeats": int(min_repeats), "max_repeats": int(max_repeats),
            "budget_s": float(budget_s), "cv_target": float(cv_target), "order": "interleaved-round-robin",
            "precision_target": float(precision_target or 0.0),
            "seed": int(seed), "rounds": main.rounds, "stop_reason": main.stop_reason,
            "elapsed_s": round(main.elapsed_s, 3), "robust_cv": "1.4826*MAD/median",
            "noise_cv": float(PROFILE_DEFAULTS["noise_cv"]),
        },
        "base": main.stats["base"].to_dict(),
        "blocks": rows,
        "additivity": additivity,
        "warnings": _warnings(main, rows, additivity, add_run),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "edgeprune_version": __version__,
    }
    return profile


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


def _measure_additivity(model, example, backend, root, runners, rows, budget_s, warmup_s, min_repeats, max_repeats,
                        cv_target, seed, overall, precision_target):
    """Base, the top singles and their union in one interleaved run; None with < 2 blocks."""
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
    run = run_interleaved(subset, min(warmup_s, 1.0), min_repeats, max_repeats, add_budget, cv_target, seed + 1,
                          overall.timed("additivity", add_budget), precision_target=precision_target)
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


# ------------------------------------------------------------------ files
def save_profile(profile: dict, path: str | os.PathLike) -> Path:
    """Write ``profile`` as JSON atomically (temp file + rename), creating parent folders.

    Returns:
        The path written.
    Raises:
        ProfileError: the profile does not validate (e.g. a NaN), so a bad file is never written.
        OutputError: the file cannot be written (a folder there, disk full, read-only); an earlier
            profile at ``path`` is left as it was.
    """
    _validate(profile, "profile to save")
    path = Path(path)
    text = json.dumps(profile, indent=2, allow_nan=False) + "\n"
    try:
        atomic_write(path, text)
    except OSError as exc:
        raise OutputError(f"cannot write the profile {path}: {exc.strerror or exc}",
                          "give a .json file path you can write (--output), or free some disk space") from None
    return path


def load_profile(path: str | os.PathLike) -> dict:
    """Read and validate a latency profile.

    Raises:
        ProfileError: missing file, unreadable/truncated/corrupted JSON, another schema, an older
            or newer schema version, a missing field or a field of the wrong type; the message
            names the problem (and the field).
    """
    path = Path(path)
    if path.is_dir():
        raise ProfileError(f"{path} is a folder, not a latency profile", "give the .json file (see `edgeprune profile`)")
    if not path.is_file():
        raise ProfileError(f"no latency profile at {path}", "run `edgeprune profile MODEL` on the target device first")
    try:
        if path.stat().st_size > MAX_PROFILE_BYTES:
            raise ProfileError(f"{path} is too large to be a latency profile ({path.stat().st_size:,} bytes)",
                               "pass the .json file written by `edgeprune profile`")
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ProfileError(f"{path} is not a text file (corrupted?)", "re-run `edgeprune profile`") from None
    except OSError as exc:
        raise ProfileError(f"cannot read {path}: {exc.strerror or exc}") from None
    if not text.strip():
        raise ProfileError(f"{path} is empty (an interrupted write?)", "re-run `edgeprune profile`")
    try:
        data = json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        # a cut file ends mid-token ("tru", "6.") or mid-string; 5 = the longest token's length
        at_end = exc.pos >= len(text.rstrip()) - 5 or exc.msg.startswith("Unterminated string")
        what = "truncated" if at_end else "corrupted"
        raise ProfileError(
            f"{path} is not valid JSON ({what}: {exc.msg} at line {exc.lineno}, column {exc.colno})",
            "re-run `edgeprune profile`",
        ) from None
    except ValueError as exc:
        raise ProfileError(f"{path}: {exc}", "re-run `edgeprune profile`") from None
    except RecursionError:
        raise ProfileError(f"{path} is not a latency profile (JSON nested too deeply)", "re-run `edgeprune profile`") from None
    _validate(data, str(path))
    return data


MAX_PROFILE_BYTES = 64 << 20  # real profiles are a few KB


def _reject_constant(name: str):
    raise ValueError(f"{name} is not a number a profile may hold")


# Required fields and their types. "number" = int or float (never bool, never a string).
_NUMBER = "number"
_STATS = {"median_ms": _NUMBER, "p90_ms": _NUMBER, "cv": _NUMBER, "n": int}
_TOP = {
    "schema": str, "schema_version": int, "model": str, "weights_source": str, "resolution": int, "batch": int,
    "precision": str, "backend": dict, "device": dict, "measurement": dict, "base": dict, "blocks": list,
    "additivity": (dict, type(None)), "warnings": list, "created": str, "edgeprune_version": str,
}
_BACKEND = {"name": str, "execution_provider": str, "versions": dict}
_MEASUREMENT = {"warmup_s": _NUMBER, "min_repeats": int, "max_repeats": int, "budget_s": _NUMBER, "cv_target": _NUMBER, "order": str}
_BLOCK = {"name": str, "params": int, "capacity_gap": _NUMBER, **_STATS, "saving_ms": _NUMBER, "saving": _NUMBER, "flags": list}
_ADDITIVITY = {"blocks": list, "predicted_saving": _NUMBER, "measured_saving": _NUMBER, "error": _NUMBER}


def _type_name(value) -> str:
    return {str: "a string", bool: "a boolean", type(None): "null", list: "a list", dict: "an object"}.get(
        type(value), "a number" if isinstance(value, (int, float)) else type(value).__name__)


def _finite(value: int | float) -> bool:
    try:
        return math.isfinite(float(value))
    except OverflowError:  # an int too large for a float
        return False


def _check_fields(obj: dict, spec: dict, where: str, label: str) -> None:
    for key, kind in spec.items():
        field = f"{where}.{key}" if where else key
        if key not in obj:
            raise ProfileError(f"{label}: required field {field!r} is missing", "re-run `edgeprune profile`")
        value = obj[key]
        if kind is _NUMBER:
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and _finite(value)
            want = "a finite number"
        elif kind is int:
            ok = isinstance(value, int) and not isinstance(value, bool)
            want = "an integer"
        else:
            ok = isinstance(value, kind) and not (kind is not bool and isinstance(value, bool))
            want = {str: "a string", dict: "an object", list: "a list"}.get(kind, "an object or null")
        if not ok:
            shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + "..."
            raise ProfileError(f"{label}: field {field!r} must be {want}, got {_type_name(value)} ({shown})",
                               "the file was edited or written by another tool; re-run `edgeprune profile`")


def _validate(data, label: str) -> None:
    if not isinstance(data, dict):
        raise ProfileError(f"{label} is not a latency profile (a JSON object is expected, got {_type_name(data)})")
    if data.get("schema") != SCHEMA:
        raise ProfileError(f"{label} is not an edgeprune latency profile (schema {data.get('schema')!r}, expected {SCHEMA!r})")
    version = data.get("schema_version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise ProfileError(f"{label}: schema_version must be an integer, got {_type_name(version)}")
    if version > SCHEMA_VERSION:
        raise ProfileError(
            f"{label} has profile schema version {version}, newer than this edgeprune {__version__} reads ({SCHEMA_VERSION})",
            "upgrade edgeprune, or re-run `edgeprune profile` with this version",
        )
    if version < SCHEMA_VERSION:
        raise ProfileError(
            f"{label} has profile schema version {version}, older than this edgeprune {__version__} reads ({SCHEMA_VERSION})",
            "re-run `edgeprune profile` to record it again",
        )
    _check_fields(data, _TOP, "", label)
    for key, low in (("resolution", 8), ("batch", 1)):
        if not low <= data[key] <= 1 << 20:
            raise ProfileError(f"{label}: field {key!r} must be between {low} and {1 << 20}, got {data[key]}",
                               "the file was edited or written by another tool; re-run `edgeprune profile`")
    _check_fields(data["backend"], _BACKEND, "backend", label)
    _check_fields(data["measurement"], _MEASUREMENT, "measurement", label)
    _check_fields(data["base"], _STATS, "base", label)
    if data["base"]["median_ms"] <= 0:
        raise ProfileError(f"{label}: base.median_ms must be > 0, got {data['base']['median_ms']}")
    for i, block in enumerate(data["blocks"]):
        if not isinstance(block, dict):
            raise ProfileError(f"{label}: blocks[{i}] must be an object, got {_type_name(block)}")
        _check_fields(block, _BLOCK, f"blocks[{i}]", label)
        if not all(isinstance(f, str) for f in block["flags"]):
            raise ProfileError(f"{label}: blocks[{i}].flags must be a list of strings")
    names = [b["name"] for b in data["blocks"]]
    if len(set(names)) != len(names):
        raise ProfileError(f"{label}: a block is listed twice")
    if data["additivity"] is not None:
        _check_fields(data["additivity"], _ADDITIVITY, "additivity", label)
    if not all(isinstance(w, str) for w in data["warnings"]):
        raise ProfileError(f"{label}: warnings must be a list of strings")


# ------------------------------------------------------------------ finding and matching profiles
def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-") or "model"


def profile_slug(profile: dict) -> str:
    """The device slug a profile was recorded on."""
    slug = profile.get("device_slug")
    if isinstance(slug, str) and slug:
        return slug
    try:
        return device_slug(profile.get("device", {}))
    except (TypeError, ValueError, AttributeError, OverflowError):  # a hand-edited device record
        return "unknown-device"


def default_profile_path(profile: dict, root: str | os.PathLike = "profiles") -> Path:
    """``<root>/<device-slug>/<model>-<backend>-<precision>-b<batch>-r<resolution>.json``
    (``timm:NAME`` becomes ``timm-NAME``)."""
    name = f"{_safe(profile['model'])}-{_safe(profile['backend']['name'])}-{profile['precision']}-b{profile['batch']}-r{profile['resolution']}.json"
    return Path(root) / profile_slug(profile) / name


def block_savings(profile: dict) -> dict[str, float]:
    """Block name -> latency saving LS_i (fraction of the full model's latency), as measured."""
    return {b["name"]: float(b["saving"]) for b in profile["blocks"]}


def current_device_slugs() -> list[str]:
    """Slugs of the devices of this machine: the CPU, and the GPU when CUDA is available."""
    slugs = [device_slug(device_fingerprint("cpu"))]
    if torch.cuda.is_available():
        slugs.append(device_slug(device_fingerprint("cuda")))
    return slugs


def find_device_profiles(root: str | os.PathLike = "profiles", slug: str | None = None) -> list[Path]:
    """Profiles recorded for this device (or for ``slug``), newest first.

    Args:
        root: the profiles folder.
        slug: a device slug; None = this machine's CPU and GPU slugs.
    Returns:
        ``<root>/<slug>/*.json`` paths (not validated: ``load_profile`` each), newest first.
    """
    slugs = [slug] if slug else current_device_slugs()
    found = [p for s in slugs for p in (Path(root) / s).glob("*.json") if p.is_file()]
    return sorted(found, key=lambda p: (p.stat().st_mtime, str(p)), reverse=True)


def check_profile_matches(
    profile: dict,
    model_name: str,
    block_names: list[str],
    resolution: int,
    device_slug: str,
    allow_device_mismatch: bool = False,
    cpu_isa: list[str] | None = None,
) -> list[str]:
    """Check that ``profile`` describes this model, its blocks, this resolution and this device.

    The device check compares the slug and, for a CPU profile that recorded them, the CPU's ISA
    flags (``cpu_isa``; default: this CPU's): the same CPU model without AVX512-VNNI or AMX runs
    INT8/bf16 at another speed.

    Returns:
        Warnings (e.g. measured on another device when allowed, blocks in the profile this model
        does not have, random weights are fine and not warned about).
    Raises:
        ProfileError: naming the field that differs (model, resolution, blocks, device).
    """
    warns: list[str] = []
    want_model = canonical_name(model_name)
    if canonical_name(profile["model"]) != want_model:
        raise ProfileError(f"the latency profile is for model {profile['model']!r}, not {want_model!r} (field: model)",
                           f"profile {want_model} first: `edgeprune profile {want_model}`")
    if int(profile["resolution"]) != int(resolution):
        raise ProfileError(
            f"the latency profile was measured at resolution {profile['resolution']}, this run uses {resolution} (field: resolution)",
            f"re-profile with --resolution {resolution}",
        )
    have = set(block_savings(profile))
    missing = [n for n in block_names if n not in have]
    if missing:
        raise ProfileError(
            f"the latency profile has no saving for block(s) {', '.join(missing[:5])} (field: blocks)",
            "it was recorded for another version of this model: re-run `edgeprune profile`",
        )
    extra = sorted(have - set(block_names))
    if extra:
        warns.append(f"the profile lists {len(extra)} block(s) this model does not have ({', '.join(extra[:5])}); ignored")
    got_slug = profile_slug(profile)
    msg = None
    if got_slug != device_slug:
        msg = f"the latency profile was measured on {got_slug}, this device is {device_slug} (field: device)"
    elif profile["device"].get("kind", "cpu") == "cpu" and isinstance(profile["device"].get("cpu_isa"), list):
        here = cpu_isa if cpu_isa is not None else cpu_isa_flags()
        theirs = profile["device"]["cpu_isa"]
        if sorted(theirs) != sorted(here):
            msg = (f"the latency profile was measured on a CPU with ISA flags {', '.join(theirs) or 'none'}, this one has "
                   f"{', '.join(here) or 'none'} (field: device.cpu_isa)")
    if msg is not None:
        if not allow_device_mismatch:
            raise ProfileError(msg, "latency savings are device-specific: re-profile here, or pass --allow-device-mismatch")
        warns.append(msg + ": savings may not hold here")
    limit = profile["measurement"].get("noise_cv", PROFILE_DEFAULTS["noise_cv"])
    if isinstance(limit, bool) or not isinstance(limit, (int, float)) or not _finite(limit) or limit <= 0:
        limit = PROFILE_DEFAULTS["noise_cv"]
    cvs = [("full model", profile["base"]["cv"])] + [(b["name"], b["cv"]) for b in profile["blocks"] if b["name"] in set(block_names)]
    noisy = sorted(((cv, name) for name, cv in cvs if cv > limit), reverse=True)
    if noisy:
        warns.append(f"the latency profile's timings are noisy: {len(noisy)} of {len(cvs)} measurements vary by more than "
                     f"{limit:.0%} (robust CV; worst {noisy[0][1]} {noisy[0][0]:.0%}), so its savings and the plan are uncertain: "
                     "re-run `edgeprune profile` on an idle device (it replaces the profile)")
    bad = [b["name"] for b in profile["blocks"] if b["name"] in set(block_names) and ("negative_saving" in b["flags"] or "below_noise" in b["flags"])]
    if bad:
        warns.append(f"{len(bad)} block(s) have savings at or below the measurement noise in this profile ({', '.join(bad[:4])})")
    return warns
