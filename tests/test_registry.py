"""The profile registry (latency/registry.py), `edgeprune profiles ...` and how adapt picks a profile.

Two device kinds: the shipped AMD EPYC profile of mobilenet_v2, and the same profile relabelled as
an Intel Xeon with AMX whose savings of three blocks are changed (no Intel machine is at hand:
the relabelling is what makes the second kind, and the test says so)."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edgeprune.errors import BackendUnavailable, OutputError, ProfileError
from edgeprune.latency.profile_diff import diff_profiles, latency_only_scores
from edgeprune.latency.profiles import load_profile, save_profile
from edgeprune.latency.registry import ProfileKey, ProfileRegistry

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "profiles" / "cpu-amd-epyc-2c" / "mobilenet_v2-onnxruntime-fp32-b1-r224.json"
XEON = "cpu-intel-xeon-platinum-8480-2c"
XEON_ISA = ["avx2", "fma", "avx512f", "avx512_vnni", "amx_tile", "amx_int8", "amx_bf16"]


@pytest.fixture
def epyc():
    return load_profile(SHIPPED)


def as_xeon(prof: dict) -> dict:
    """The profile as if measured on a 2-core Xeon with AMX: the three largest savings shrink."""
    x = copy.deepcopy(prof)
    x["device"].update(cpu="Intel(R) Xeon(R) Platinum 8480+", cpu_isa=XEON_ISA)
    x["device_slug"] = XEON
    for b in sorted(x["blocks"], key=lambda b: -b["saving"])[:3]:
        b["saving"] = 0.002
    return x


@pytest.fixture
def reg(tmp_path, epyc):
    r = ProfileRegistry(tmp_path / "reg")
    r.put(epyc)
    r.put(as_xeon(epyc))
    return r


def test_keys_layout_and_find(reg, epyc):
    key = ProfileKey.of(epyc)
    assert str(key) == "cpu-amd-epyc-2c/mobilenet_v2-onnxruntime-fp32-b1-r224"
    assert {e.key.device for e in reg.entries()} == {"cpu-amd-epyc-2c", XEON}
    assert [e.key.device for e in reg.find(device=XEON, model="mobilenetv2")] == [XEON]
    assert reg.find(resolution=160) == []
    assert reg.get(str(key)).profile == epyc and reg.get(str(key) + ".json").key == key
    assert reg.get(SHIPPED).key == key  # a file path works too
    with pytest.raises(ProfileError, match="no profile 'cpu-x/nothing'"):
        reg.get("cpu-x/nothing")


def test_put_refuses_to_replace_another_profile_unless_forced(reg, epyc):
    changed = copy.deepcopy(epyc)
    changed["base"]["median_ms"] = 9.0
    with pytest.raises(OutputError, match="already holds another profile"):
        reg.put(changed)
    reg.put(epyc)  # the same profile again is fine
    assert reg.put(changed, force=True).profile["base"]["median_ms"] == 9.0


def test_invalid_files_are_listed_not_fatal(reg):
    bad = Path(reg.location) / "cpu-amd-epyc-2c" / "broken.json"
    bad.write_text("{")
    entries, problems = reg.scan()
    assert len(entries) == 2 and len(problems) == 1 and "broken.json" in problems[0]


def test_this_device_matches_fingerprint_and_never_falls_back(reg, epyc):
    isa = ["avx2", "fma"]  # the shipped profile predates ISA flags in fingerprints: the slug decides
    assert reg.for_this_device("mobilenet_v2", slugs=["cpu-amd-epyc-2c"], cpu_isa=isa).key.device == "cpu-amd-epyc-2c"
    assert reg.for_this_device(None, slugs=[XEON], cpu_isa=XEON_ISA).key.device == XEON
    with pytest.raises(ProfileError, match=r"no latency profile of mobilenet_v2 for this device \(cpu-arm-9c\).*"
                                           r"other devices \(cpu-amd-epyc-2c, cpu-intel"):
        reg.for_this_device("mobilenet_v2", slugs=["cpu-arm-9c"], cpu_isa=[])
    # same CPU name, other ISA flags (a VM masking AMX): not this device's profile either
    with pytest.raises(ProfileError, match="ISA flags"):
        reg.for_this_device("mobilenet_v2", slugs=[XEON], cpu_isa=["avx2", "fma", "avx512f"])
    with pytest.raises(ProfileError, match="no latency profile of resnet34"):
        reg.for_this_device("resnet34", slugs=["cpu-amd-epyc-2c"], cpu_isa=isa)


def test_fsspec_memory_registry(epyc):
    pytest.importorskip("fsspec", reason="fsspec is the optional `fleet` extra")
    url = "memory://edgeprune-test-registry/profiles"
    reg = ProfileRegistry(url)
    entry = reg.put(epyc)
    assert entry.location == f"{url}/{ProfileKey.of(epyc).relpath}"
    again = ProfileRegistry(url)
    assert [e.key for e in again.entries()] == [ProfileKey.of(epyc)] and again.get(str(entry.key)).profile == epyc


def test_url_without_fsspec_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "fsspec", None)  # import fsspec -> ImportError
    with pytest.raises(BackendUnavailable, match=r"edgeprune\[fleet\]"):
        ProfileRegistry("s3://bucket/profiles")


def test_diff_per_block_and_plan_change(epyc):
    xeon = as_xeon(epyc)
    same = diff_profiles(epyc, epyc, k=3)
    assert not same["plan_changes"] and all(r["diff"] == 0 for r in same["blocks"])
    d = diff_profiles(epyc, xeon, k=3)
    top = sorted(epyc["blocks"], key=lambda b: -b["saving"])[:3]
    assert {r["name"] for r in d["blocks"][:3]} == {b["name"] for b in top}  # largest |difference| first
    assert d["plan_changes"] and d["plan_a"] != d["plan_b"]
    assert not set(d["plan_b"]) & {b["name"] for b in top}  # B's plan avoids the blocks that no longer save
    # the latency-only views: G_i / LS_i, or 1 / LS_i (the largest savings go first)
    s = latency_only_scores(epyc, "saving")
    assert diff_profiles(epyc, epyc, view="saving")["plan_a"] == sorted(s, key=lambda n: (s[n], n))[:3]
    other = copy.deepcopy(epyc)
    other["model"] = "resnet34"
    with pytest.raises(ProfileError, match="different models"):
        diff_profiles(epyc, other)


def _cli(*args):
    from edgeprune.cli import app

    return CliRunner().invoke(app, list(args), catch_exceptions=False)


def test_cli_list_show_import_export_diff(tmp_path, epyc):
    reg = str(tmp_path / "reg")
    save_profile(as_xeon(epyc), tmp_path / "incoming" / "x.json")
    r = _cli("profiles", "import", str(SHIPPED), str(tmp_path / "incoming"), "--registry", reg)
    assert r.exit_code == 0 and r.output.count("imported") == 2, r.output
    listing = json.loads(_cli("profiles", "list", "--registry", reg, "--json").output)
    assert {p["device"] for p in listing["profiles"]} == {"cpu-amd-epyc-2c", XEON}
    xkey = f"{XEON}/mobilenet_v2-onnxruntime-fp32-b1-r224"
    shown = _cli("profiles", "show", xkey, "--registry", reg)
    assert "Xeon" in shown.output and "features.3" in shown.output
    assert _cli("profiles", "export", xkey, str(tmp_path / "out.json"), "--registry", reg).exit_code == 0
    assert load_profile(tmp_path / "out.json")["device_slug"] == XEON
    assert _cli("profiles", "export", xkey, str(tmp_path / "other-reg"), "--registry", reg).exit_code == 0
    assert ProfileRegistry(tmp_path / "other-reg").get(xkey).key.device == XEON
    d = json.loads(_cli("profiles", "diff", "cpu-amd-epyc-2c/mobilenet_v2-onnxruntime-fp32-b1-r224", xkey,
                        "--registry", reg, "--json").output)
    assert d["plan_changes"] and len(d["blocks"]) == 10
    text = _cli("profiles", "diff", str(SHIPPED), xkey, "--registry", reg).output
    assert "the plan CHANGES" in text and "pp" in text


def test_cli_unknown_key_is_one_line_error(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "edgeprune.cli", "profiles", "show", "cpu-x/none", "--registry",
                           str(tmp_path)], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == ProfileError.exit_code and "Traceback" not in proc.stderr
    assert proc.stderr.strip().startswith("error: no profile 'cpu-x/none'")
