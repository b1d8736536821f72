"""Property: ``load_profile`` on any file either returns a dict or raises ``ProfileError`` -- never
another exception -- and a profile it accepts does not crash what adapt does with it next
(block savings, device slug, default path, ``check_profile_matches``).

Inputs: random bytes, random JSON (``st.recursive``), and mutations of a valid profile (a key
deleted, a number made a string / NaN / infinite / huge, a value replaced by another JSON value).
The default suite runs a modest number of examples; ``-m slow`` runs a few thousand per strategy.
"""

from __future__ import annotations

import copy
import json
import math

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from edgeprune.errors import ProfileError
from edgeprune.latency.profiles import (
    SCHEMA,
    SCHEMA_VERSION,
    block_savings,
    check_profile_matches,
    default_profile_path,
    load_profile,
    profile_slug,
)

FAST = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SLOW = settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _block(name: str, saving: float) -> dict:
    return {"name": name, "kind": "BasicBlock", "params": 147_584, "capacity_gap": 0.08, "median_ms": 6.0 * (1 - saving),
            "p90_ms": 6.4, "cv": 0.02, "n": 40, "saving_ms": 6.0 * saving, "saving": saving, "noise_ms": 0.05, "flags": []}


VALID = {
    "schema": SCHEMA,
    "schema_version": SCHEMA_VERSION,
    "model": "resnet18",
    "weights_source": "random",
    "resolution": 32,
    "batch": 1,
    "precision": "fp32",
    "backend": {"name": "torch", "execution_provider": "cpu", "versions": {"torch": "2.13.0"}},
    "device": {"kind": "cpu", "cpu": "Test CPU", "logical_cores": 2},
    "device_slug": "cpu-test-cpu-2c",
    "measurement": {"warmup_s": 0.1, "min_repeats": 3, "max_repeats": 40, "budget_s": 0.5, "cv_target": 0.04,
                    "order": "interleaved-round-robin", "noise_cv": 0.1},
    "base": {"median_ms": 6.0, "p90_ms": 6.4, "cv": 0.02, "n": 40},
    "blocks": [_block(n, s) for n, s in (("layer1.0", 0.05), ("layer1.1", 0.06), ("layer2.1", 0.04), ("layer3.1", 0.03))],
    "additivity": {"blocks": ["layer1.1", "layer1.0"], "predicted_saving": 0.11, "measured_saving": 0.1, "error": -0.01},
    "warnings": [],
    "created": "2026-01-01T00:00:00Z",
    "edgeprune_version": "0.1.0",
}


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


def check(scratch, raw: bytes) -> dict | None:
    """Write ``raw`` as a profile file and load it: a dict, or None for a ProfileError."""
    path = scratch / "profile.json"
    path.write_bytes(raw)
    try:
        prof = load_profile(path)
    except ProfileError as exc:
        assert str(exc).strip() and "\n" not in str(exc)  # one line for the CLI's "error:" line
        return None
    assert isinstance(prof, dict)
    # What adapt does next with an accepted profile must work, or fail as a ProfileError.
    names = [b["name"] for b in prof["blocks"]]
    savings = block_savings(prof)
    assert all(math.isfinite(v) for v in savings.values())
    assert profile_slug(prof)
    default_profile_path(prof, root=scratch / "profiles")
    try:
        check_profile_matches(prof, prof["model"], names, prof["resolution"], "cpu-test-cpu-2c", allow_device_mismatch=True)
    except ProfileError:
        pass
    return prof


def dump(obj) -> bytes:
    return json.dumps(obj, allow_nan=True).encode()


def test_the_valid_profile_loads(scratch):
    assert check(scratch, dump(VALID)) == VALID


def test_every_cut_of_a_valid_profile_is_reported_truncated(scratch):
    text = json.dumps(VALID, indent=2)
    path = scratch / "cut.json"
    for cut in range(1, len(text) - 1, 3):
        path.write_text(text[:cut])
        with pytest.raises(ProfileError, match="truncated|is empty"):
            load_profile(path)


# ------------------------------------------------------------------ random bytes
BYTES = st.one_of(st.binary(max_size=3000), st.text(max_size=1000).map(str.encode))


def _bytes_property(scratch, raw):
    check(scratch, raw)


@FAST
@given(raw=BYTES)
@example(raw=b"[" * 100_000)  # nesting deeper than the JSON parser's recursion limit
@example(raw=b'{"a":' * 50_000)
@example(raw=b"\xef\xbb\xbf{}")  # UTF-8 BOM
@example(raw=b"\xff\xfe{\x00}\x00")  # UTF-16
@example(raw=b"1" * 5000)  # an integer longer than Python parses by default
@example(raw=b"NaN")
@example(raw=b"")
def test_random_bytes(scratch, raw):
    _bytes_property(scratch, raw)


@pytest.mark.slow
@SLOW
@given(raw=BYTES)
def test_random_bytes_many(scratch, raw):
    _bytes_property(scratch, raw)


# ------------------------------------------------------------------ random JSON
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.integers(min_value=-(10**400), max_value=10**400),
                    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=20))
JSON = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5),
                    max_leaves=25)
KEYS = sorted(set(VALID) | {k for v in VALID.values() if isinstance(v, dict) for k in v} | set(VALID["blocks"][0]))
# dicts that pass the schema gate, so the field validation behind it is exercised too
SCHEMA_DICTS = st.builds(lambda extra: {"schema": SCHEMA, "schema_version": SCHEMA_VERSION, **extra},
                         st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=8), JSON, max_size=20))


@FAST
@given(obj=JSON | SCHEMA_DICTS)
def test_random_json(scratch, obj):
    check(scratch, dump(obj))


@pytest.mark.slow
@SLOW
@given(obj=JSON | SCHEMA_DICTS)
def test_random_json_many(scratch, obj):
    check(scratch, dump(obj))


# ------------------------------------------------------------------ mutations of a valid profile
def _paths(obj, prefix=()):
    yield prefix
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _paths(v, prefix + (i,))


PATHS = [p for p in _paths(VALID) if p]
REPLACEMENTS = st.one_of(
    st.sampled_from([None, True, False, 0, -1, 1, 10**400, -(10**400), float("nan"), float("inf"), float("-inf"), 1e308,
                     "", "6.0", "nan", "1 +- 0.2", [], {}, [1, 2], {"a": 1}]),
    JSON,
)


def _mutate(data, draw_op, path, value):
    obj = copy.deepcopy(data)
    parent = obj
    for key in path[:-1]:
        parent = parent[key]
    key = path[-1]
    if draw_op == "delete":
        del parent[key]
    elif draw_op == "number-to-string":
        parent[key] = str(parent[key]) if isinstance(parent[key], (int, float)) else parent[key]
    elif draw_op == "nan":
        parent[key] = float("nan")
    else:
        parent[key] = value
    return obj


MUTATIONS = st.lists(st.tuples(st.sampled_from(["delete", "number-to-string", "nan", "replace"]), st.sampled_from(PATHS),
                               REPLACEMENTS), min_size=1, max_size=3)


def _mutations_property(scratch, steps):
    obj = VALID
    for op, path, value in steps:
        try:
            obj = _mutate(obj, op, path, value)
        except (KeyError, IndexError, TypeError):  # an earlier step removed or replaced that path
            continue
    check(scratch, dump(obj))


@FAST
@given(steps=MUTATIONS)
@example(steps=[("replace", ("base", "median_ms"), 10**400)])
@example(steps=[("replace", ("resolution",), 10**400)])
@example(steps=[("delete", ("device_slug",), None), ("replace", ("device", "logical_cores"), "many")])
@example(steps=[("delete", ("device_slug",), None), ("replace", ("device",), {"kind": "cuda", "gpu": []})])
@example(steps=[("replace", ("measurement", "noise_cv"), "high")])
@example(steps=[("replace", ("blocks", 0, "name"), "layer1.1")])
def test_mutated_profile(scratch, steps):
    _mutations_property(scratch, steps)


@pytest.mark.slow
@SLOW
@given(steps=MUTATIONS)
def test_mutated_profile_many(scratch, steps):
    _mutations_property(scratch, steps)
