"""Latency profile files: the schema, saving and loading (validated), where they live, and whether
one matches this model, resolution and device.

Profiles are JSON with a schema id and version; numbers are JSON numbers (never "a +- b"
strings). ``load_profile`` validates everything and raises ``ProfileError`` naming the problem.
They are measured by ``measurement.run_profile``.
"""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path

import torch

from ..deploy.outputs import atomic_write
from ..errors import OutputError, ProfileError
from ..models.zoo import canonical_name
from ..version import __version__
from .fingerprint import cpu_isa_flags, device_fingerprint, device_slug

SCHEMA = "edgeprune.latency-profile"
SCHEMA_VERSION = 1
NOISE_CV = 0.10  # a measurement whose robust CV is above this is noisy (profiles record their own)


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
    text = profile_text(profile)
    path = Path(path)
    try:
        atomic_write(path, text)
    except OSError as exc:
        raise OutputError(f"cannot write the profile {path}: {exc.strerror or exc}",
                          "give a .json file path you can write (--output), or free some disk space") from None
    return path


def profile_text(profile: dict) -> str:
    """The file contents of ``profile`` (validated first: ProfileError, so a bad file is never written)."""
    _validate(profile, "profile to save")
    return json.dumps(profile, indent=2, allow_nan=False) + "\n"


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
    return parse_profile(text, str(path))


def parse_profile(text: str, label: str) -> dict:
    """Validate the JSON ``text`` of a latency profile (``label`` names it in messages: a path or URL).

    Raises:
        ProfileError: as ``load_profile``.
    """
    if not text.strip():
        raise ProfileError(f"{label} is empty (an interrupted write?)", "re-run `edgeprune profile`")
    try:
        data = json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        # a cut file ends mid-token ("tru", "6.") or mid-string; 5 = the longest token's length
        at_end = exc.pos >= len(text.rstrip()) - 5 or exc.msg.startswith("Unterminated string")
        what = "truncated" if at_end else "corrupted"
        raise ProfileError(
            f"{label} is not valid JSON ({what}: {exc.msg} at line {exc.lineno}, column {exc.colno})",
            "re-run `edgeprune profile`",
        ) from None
    except ValueError as exc:
        raise ProfileError(f"{label}: {exc}", "re-run `edgeprune profile`") from None
    except RecursionError:
        raise ProfileError(f"{label} is not a latency profile (JSON nested too deeply)", "re-run `edgeprune profile`") from None
    _validate(data, label)
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
    msg = _device_mismatch(profile, device_slug, cpu_isa)
    if msg is not None:
        if not allow_device_mismatch:
            raise ProfileError(msg, "latency savings are device-specific: re-profile here, or pass --allow-device-mismatch")
        warns.append(msg + ": savings may not hold here")
    return warns + _measurement_warnings(profile, set(block_names))


def check_profile_precision(profile: dict, deploy_precision: str, allow_mismatch: bool = False) -> list[str]:
    """An INT8 deployment needs an INT8 profile and an fp32 one an fp32/fp16 profile: block savings
    differ by precision, so the plan must use the profile of the precision it deploys.

    Returns:
        A warning when they differ and ``allow_mismatch``; else [].
    Raises:
        ProfileError: they differ (field: precision).
    """
    have = profile["precision"]
    if (have == "int8") == (deploy_precision == "int8"):
        return []
    msg = (f"the latency profile was measured in {have}, this run deploys {deploy_precision} (field: precision): "
           "block savings differ by precision")
    if not allow_mismatch:
        raise ProfileError(msg, f"profile with `edgeprune profile --precision {deploy_precision}`, or pass --allow-precision-mismatch")
    return [msg + "; the plan may not hold for the deployed model"]


def _device_mismatch(profile: dict, device_slug: str, cpu_isa: list[str] | None) -> str | None:
    """Why the profile's device is not this one (slug, then a CPU's ISA flags), or None."""
    got_slug = profile_slug(profile)
    if got_slug != device_slug:
        return f"the latency profile was measured on {got_slug}, this device is {device_slug} (field: device)"
    if profile["device"].get("kind", "cpu") == "cpu" and isinstance(profile["device"].get("cpu_isa"), list):
        here = cpu_isa if cpu_isa is not None else cpu_isa_flags()
        theirs = profile["device"]["cpu_isa"]
        if sorted(theirs) != sorted(here):
            return (f"the latency profile was measured on a CPU with ISA flags {', '.join(theirs) or 'none'}, this one has "
                    f"{', '.join(here) or 'none'} (field: device.cpu_isa)")
    return None


def _measurement_warnings(profile: dict, used: set[str]) -> list[str]:
    """Noisy timings and savings within the noise, among the blocks this run uses."""
    warns = []
    limit = profile["measurement"].get("noise_cv", NOISE_CV)
    if isinstance(limit, bool) or not isinstance(limit, (int, float)) or not _finite(limit) or limit <= 0:
        limit = NOISE_CV
    cvs = [("full model", profile["base"]["cv"])] + [(b["name"], b["cv"]) for b in profile["blocks"] if b["name"] in used]
    noisy = sorted(((cv, name) for name, cv in cvs if cv > limit), reverse=True)
    if noisy:
        warns.append(f"the latency profile's timings are noisy: {len(noisy)} of {len(cvs)} measurements vary by more than "
                     f"{limit:.0%} (robust CV; worst {noisy[0][1]} {noisy[0][0]:.0%}), so its savings and the plan are uncertain: "
                     "re-run `edgeprune profile` on an idle device (it replaces the profile)")
    bad = [b["name"] for b in profile["blocks"] if b["name"] in used and ("negative_saving" in b["flags"] or "below_noise" in b["flags"])]
    if bad:
        warns.append(f"{len(bad)} block(s) have savings at or below the measurement noise in this profile ({', '.join(bad[:4])})")
    return warns
