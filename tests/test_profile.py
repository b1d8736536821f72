"""latency/measurement.py and profiles.py (+ backends, fingerprint): a real tiny profile, its schema, files and matching."""

import copy
import json
import math

import pytest

from edgeprune.errors import BackendUnavailable, ProfileError, UsageError
from edgeprune.latency.backends import BACKENDS, get_backend
from edgeprune.latency.fingerprint import device_fingerprint, device_slug
from edgeprune.latency.measurement import run_profile
from edgeprune.latency.profiles import (
    SCHEMA,
    SCHEMA_VERSION,
    block_savings,
    check_profile_matches,
    default_profile_path,
    find_device_profiles,
    load_profile,
    save_profile,
)

TINY = dict(resolution=32, budget_s=0.5, min_repeats=3, max_repeats=50, warmup_s=0.05)


@pytest.fixture(scope="module")
def ort_profile():
    phases = []
    profile = run_profile("resnet18", backend="onnxruntime", threads=1, progress=lambda d, t: phases.append((d, t)), **TINY)
    profile["_progress"] = phases
    return profile


@pytest.fixture(scope="module")
def torch_profile():
    return run_profile("resnet18", backend="torch", **TINY)


def clean(profile):
    return {k: v for k, v in profile.items() if not k.startswith("_")}


def saved(profile, tmp_path, name="p.json"):
    return save_profile(clean(profile), tmp_path / name)


# ------------------------------------------------------------------ a real profile
@pytest.mark.parametrize("which", ["ort_profile", "torch_profile"])
def test_profile_contents(which, request):
    p = request.getfixturevalue(which)
    assert p["schema"] == SCHEMA and p["schema_version"] == SCHEMA_VERSION
    assert p["model"] == "resnet18" and p["weights_source"] == "random"
    assert (p["resolution"], p["batch"], p["precision"]) == (32, 1, "fp32")
    assert p["backend"]["name"] in ("onnxruntime", "torch") and p["backend"]["execution_provider"]
    assert p["device"]["kind"] == "cpu" and p["device_slug"] == device_slug(p["device"])
    m = p["measurement"]
    assert m["order"] == "interleaved-round-robin" and m["budget_s"] == 0.5 and m["rounds"] >= 1
    assert p["base"]["median_ms"] > 0 and p["base"]["n"] >= 1
    names = [b["name"] for b in p["blocks"]]
    assert names == ["layer1.0", "layer1.1", "layer2.1", "layer3.1", "layer4.1"]
    base = p["base"]["median_ms"]
    for b in p["blocks"]:
        assert b["saving_ms"] == pytest.approx(base - b["median_ms"])
        assert b["saving"] == pytest.approx(b["saving_ms"] / base)
        assert isinstance(b["flags"], list)
        assert ("negative_saving" in b["flags"]) == (b["saving_ms"] < 0)
    add = p["additivity"]
    assert len(add["blocks"]) == 3 and set(add["blocks"]) <= set(names)
    assert add["error"] == pytest.approx(add["measured_saving"] - add["predicted_saving"])
    assert isinstance(p["warnings"], list) and p["created"].endswith("Z")


def test_numbers_are_json_numbers(ort_profile, tmp_path):
    raw = json.loads(saved(ort_profile, tmp_path).read_text())
    for key in ("median_ms", "p90_ms", "cv", "n"):
        assert isinstance(raw["base"][key], (int, float))
    for b in raw["blocks"]:
        for key in ("params", "capacity_gap", "median_ms", "p90_ms", "saving_ms", "saving", "cv", "n"):
            assert isinstance(b[key], (int, float)) and not isinstance(b[key], bool), key
            assert math.isfinite(b[key])


def test_progress_is_one_monotone_percentage(ort_profile):
    calls = ort_profile["_progress"]
    assert all(t == 100 for _, t in calls)
    done = [d for d, _ in calls]
    assert done == sorted(done) and done[-1] == 100 and len(done) > 3


def test_round_trip_and_savings(ort_profile, tmp_path):
    path = saved(ort_profile, tmp_path)
    loaded = load_profile(path)
    assert loaded == clean(ort_profile)
    savings = block_savings(loaded)
    assert list(savings) == [b["name"] for b in loaded["blocks"]]
    assert all(isinstance(v, float) for v in savings.values())


def test_save_is_atomic_and_creates_folders(ort_profile, tmp_path):
    path = save_profile(clean(ort_profile), tmp_path / "a" / "b" / "p.json")
    assert path.is_file() and [f.name for f in path.parent.iterdir()] == ["p.json"]
    bad = clean(ort_profile) | {"base": dict(ort_profile["base"], cv=float("nan"))}
    with pytest.raises(ProfileError, match="base.cv"):
        save_profile(bad, tmp_path / "nan.json")
    assert not (tmp_path / "nan.json").exists()


# ------------------------------------------------------------------ load_profile refuses bad files
def edited(profile, tmp_path, edit):
    data = json.loads(json.dumps(clean(profile)))
    edit(data)
    path = tmp_path / "edited.json"
    path.write_text(json.dumps(data))
    return path


def test_truncated_json(ort_profile, tmp_path):
    path = saved(ort_profile, tmp_path)
    text = path.read_text()
    path.write_text(text[: len(text) // 2])
    with pytest.raises(ProfileError, match="not valid JSON \\(truncated") as err:
        load_profile(path)
    assert err.value.exit_code == 5 and "re-run" in str(err.value)


def test_corrupted_and_empty_and_missing(tmp_path):
    (tmp_path / "c.json").write_text('{"schema": "edgeprune.latency-profile", oops}')
    with pytest.raises(ProfileError, match="not valid JSON"):
        load_profile(tmp_path / "c.json")
    (tmp_path / "e.json").write_text("")
    with pytest.raises(ProfileError, match="empty"):
        load_profile(tmp_path / "e.json")
    (tmp_path / "b.json").write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ProfileError, match="not a text file"):
        load_profile(tmp_path / "b.json")
    with pytest.raises(ProfileError, match="no latency profile at"):
        load_profile(tmp_path / "missing.json")
    (tmp_path / "l.json").write_text("[1, 2]")
    with pytest.raises(ProfileError, match="JSON object is expected"):
        load_profile(tmp_path / "l.json")


@pytest.mark.parametrize("version,word", [(2, "newer"), (0, "older")])
def test_wrong_schema_version(ort_profile, tmp_path, version, word):
    path = edited(ort_profile, tmp_path, lambda d: d.update(schema_version=version))
    with pytest.raises(ProfileError, match=f"schema version {version}, {word} than this edgeprune .* reads \\(1\\)"):
        load_profile(path)


def test_other_schema(ort_profile, tmp_path):
    path = edited(ort_profile, tmp_path, lambda d: d.update(schema="nn-meter.lut"))
    with pytest.raises(ProfileError, match="not an edgeprune latency profile"):
        load_profile(path)


def test_strings_instead_of_numbers(ort_profile, tmp_path):
    def edit(d):
        d["blocks"][1]["saving"] = "4.2 +- 0.3"

    with pytest.raises(ProfileError, match=r"'blocks\[1\]\.saving' must be a finite number, got a string"):
        load_profile(edited(ort_profile, tmp_path, edit))
    with pytest.raises(ProfileError, match="'base.median_ms' must be a finite number"):
        load_profile(edited(ort_profile, tmp_path, lambda d: d["base"].update(median_ms="3.1")))
    with pytest.raises(ProfileError, match="'resolution' must be an integer"):
        load_profile(edited(ort_profile, tmp_path, lambda d: d.update(resolution=32.5)))
    nan = tmp_path / "nan.json"
    nan.write_text(json.dumps(dict(clean(ort_profile), base=dict(ort_profile["base"], cv=float("nan")))))
    with pytest.raises(ProfileError, match="NaN is not a number"):
        load_profile(nan)


@pytest.mark.parametrize("drop,field", [
    (lambda d: d.pop("base"), "'base' is missing"),
    (lambda d: d["blocks"][0].pop("capacity_gap"), r"'blocks\[0\]\.capacity_gap' is missing"),
    (lambda d: d["backend"].pop("execution_provider"), "'backend.execution_provider' is missing"),
    (lambda d: d["measurement"].pop("cv_target"), "'measurement.cv_target' is missing"),
    (lambda d: d["additivity"].pop("measured_saving"), "'additivity.measured_saving' is missing"),
])
def test_missing_fields(ort_profile, tmp_path, drop, field):
    with pytest.raises(ProfileError, match=field):
        load_profile(edited(ort_profile, tmp_path, drop))


# ------------------------------------------------------------------ paths and matching
def test_default_profile_path_layout(ort_profile):
    path = default_profile_path(ort_profile, root="profiles")
    slug = device_slug(device_fingerprint("cpu"))
    assert path.as_posix() == f"profiles/{slug}/resnet18-onnxruntime-fp32-b1-r32.json"
    timm = dict(clean(ort_profile), model="timm:tf_efficientnet_lite0", batch=8, resolution=224)
    assert default_profile_path(timm, "p").name == "timm-tf_efficientnet_lite0-onnxruntime-fp32-b8-r224.json"


def test_find_device_profiles(ort_profile, tmp_path):
    mine = save_profile(clean(ort_profile), default_profile_path(ort_profile, tmp_path))
    other = dict(clean(ort_profile), device_slug="cpu-other-machine-64c")
    save_profile(other, default_profile_path(other, tmp_path))
    assert find_device_profiles(tmp_path) == [mine]
    assert len(find_device_profiles(tmp_path, slug="cpu-other-machine-64c")) == 1
    assert find_device_profiles(tmp_path / "nothing") == []


def test_check_profile_matches(ort_profile):
    p = copy.deepcopy(clean(ort_profile))
    p["base"]["cv"] = 0.01  # this test's tiny measuring budget is noisy: make the timings quiet
    for b in p["blocks"]:
        b["cv"], b["flags"] = 0.01, []
    names = [b["name"] for b in p["blocks"]]
    slug = p["device_slug"]
    assert check_profile_matches(p, "resnet18", names, 32, slug) == []  # everything matches: nothing to warn about
    p["blocks"][0]["cv"] = 0.5
    assert any("noisy" in w for w in check_profile_matches(p, "resnet18", names, 32, slug))
    with pytest.raises(ProfileError, match="field: model"):
        check_profile_matches(p, "resnet34", names, 32, slug)
    with pytest.raises(ProfileError, match="field: resolution"):
        check_profile_matches(p, "resnet18", names, 224, slug)
    with pytest.raises(ProfileError, match="field: blocks"):
        check_profile_matches(p, "resnet18", names + ["layer9.9"], 32, slug)
    with pytest.raises(ProfileError, match="field: device") as err:
        check_profile_matches(p, "resnet18", names, 32, "cuda-nvidia-h100-sm90")
    assert "--allow-device-mismatch" in str(err.value)
    warns = check_profile_matches(p, "resnet18", names, 32, "cuda-nvidia-h100-sm90", allow_device_mismatch=True)
    assert any("cuda-nvidia-h100-sm90" in w for w in warns)
    assert any("does not have" in w for w in check_profile_matches(p, "resnet18", names[:2], 32, slug))


def test_profile_bound_to_the_cpu_isa(ort_profile):
    from edgeprune.latency.fingerprint import cpu_isa_flags

    p = clean(ort_profile)
    names, slug = [b["name"] for b in p["blocks"]], p["device_slug"]
    assert p["device"]["cpu_isa"] == cpu_isa_flags()  # recorded with the fingerprint
    check_profile_matches(p, "resnet18", names, 32, slug)  # this CPU: accepted
    p["device"]["cpu_isa"] = ["avx2", "fma", "avx512f", "avx512_vnni", "amx_tile", "amx_int8"]
    with pytest.raises(ProfileError, match="field: device.cpu_isa"):  # same model name, other ISA
        check_profile_matches(p, "resnet18", names, 32, slug, cpu_isa=["avx2", "fma"])
    warns = check_profile_matches(p, "resnet18", names, 32, slug, allow_device_mismatch=True, cpu_isa=["avx2", "fma"])
    assert any("avx512_vnni" in w for w in warns)
    del p["device"]["cpu_isa"]  # profiles recorded before the flags were: the slug alone decides
    check_profile_matches(p, "resnet18", names, 32, slug, cpu_isa=["avx2"])


def test_cpu_isa_flags_from_cpuinfo():
    from edgeprune.latency.fingerprint import cpu_isa_flags

    x86 = "processor: 0\nflags\t\t: fpu sse avx2 fma avx512f avx512_vnni avx512_bf16 amx_bf16 amx_tile amx_int8\n"
    assert cpu_isa_flags(x86) == ["avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_int8", "amx_bf16"]
    arm = "processor: 0\nFeatures\t: fp asimd asimddp sve i8mm bf16\n"
    assert cpu_isa_flags(arm) == ["asimd", "asimddp", "sve", "i8mm", "bf16"]
    assert cpu_isa_flags("") == []


# ------------------------------------------------------------------ refusals
def test_refusals():
    with pytest.raises(UsageError, match="fp16"):
        run_profile("resnet18", backend="torch", precision="fp16", **TINY)
    with pytest.raises(UsageError, match="fp16"):
        get_backend("onnxruntime", precision="fp16")
    with pytest.raises(UsageError, match="unknown latency backend"):
        run_profile("resnet18", backend="openvino", **TINY)
    with pytest.raises(UsageError, match="batch"):
        run_profile("resnet18", batch=0, **TINY)
    with pytest.raises(BackendUnavailable):
        if BACKENDS.get("tensorrt").available("cuda")[0]:
            pytest.skip("TensorRT usable here")
        run_profile("resnet18", backend="tensorrt", device="cuda", **TINY)
    assert set(BACKENDS.names()) == {"onnxruntime", "torch", "tensorrt"}


def test_device_slug_is_filesystem_safe():
    fp = {"kind": "cpu", "cpu": "Intel(R) Xeon(R) CPU E5-2690 v4 @ 2.60GHz", "logical_cores": 8}
    assert device_slug(fp) == "cpu-intel-xeon-e5-2690-v4-8c"
    assert device_slug({"kind": "cpu", "cpu": "AMD EPYC 7B13 64-Core Processor", "logical_cores": 2}) == "cpu-amd-epyc-7b13-2c"
    gpu = {"kind": "cuda", "gpu": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0"}
    assert device_slug(gpu) == "cuda-nvidia-h100-80gb-hbm3-sm90"
    here = device_fingerprint("cpu")
    assert here["logical_cores"] >= 1 and here["libraries"]["torch"]
