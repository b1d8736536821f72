"""INT8 through the pipeline: the int8 profile, adapt --deploy-precision int8, export --int8, CLI errors."""

import json
import os
import shutil

import onnx
import pytest
import torch

from edgeprune.deploy.int8.config import Int8Config
from edgeprune.deploy.int8.quantize import depthwise_convs, float_ops
from edgeprune.errors import ProfileError, UsageError
from edgeprune.pipeline.adapt import adapt

from test_adapt import _stream
from test_cli_errors import cli  # noqa: F401 (the forking CLI runner fixture)
from test_tensorrt_fake import fake  # noqa: F401 (the fake tensorrt fixture)

FAST = {"budget_s": 0.3, "min_repeats": 3, "warmup_s": 0.05}


@pytest.fixture(scope="module")
def small(tmp_path_factory, random_fmnist_resnet):
    from edgeprune.latency.profiles import save_profile

    tmp = tmp_path_factory.mktemp("int8p")
    weights, prof = random_fmnist_resnet["weights"], random_fmnist_resnet["profile"]
    paths = {"fp32": save_profile(prof, tmp / "profile-fp32.json")}
    # The plan only reads the savings: the same measurement labelled int8 stands in for an INT8
    # profile here (test_int8_backend_times_quantised_graphs measures real INT8 variants).
    paths["int8"] = save_profile({**prof, "precision": "int8"}, tmp / "profile-int8.json")
    images = _stream(tmp / "stream", n=48)
    out = tmp / "adapted"
    result = adapt(images, out, **ADAPT, weights=weights, profile=paths["int8"])
    return {"tmp": tmp, "weights": weights, "profile": paths, "images": images, "out": out, "result": result}


ADAPT = dict(model="fmnist_resnet", blocks=2, prune_images=8, finetune_images=24, steps=2, batch=8, measure_latency=False,
             deploy_precision="int8", int8=Int8Config(timing=FAST))


def test_int8_backend_times_quantised_graphs(tmp_path):
    from edgeprune.latency.backends import get_backend
    from test_int8 import _net

    backend = get_backend("onnxruntime", precision="int8", threads=1)
    run = backend.prepare(_net(), torch.zeros(1, 3, 16, 16), tmp_path)
    run()
    ops = {n.op_type for n in onnx.load(str(tmp_path / "model.int8.onnx")).graph.node}
    assert "QuantizeLinear" in ops and "DequantizeLinear" in ops
    q = backend.describe()["quantisation"]
    assert q["format"] == "QDQ" and q["calibration_images"] == 8 and "random" in q["calibration"]
    (group,) = q["float_rule"]["groups"]  # the speed rule ran on the first variant: one depthwise conv
    assert group["group"] == "depthwise_conv" and group["nodes"] == 1 and isinstance(group["kept_float"], bool)
    assert all(isinstance(group[k], float) for k in ("median_ms", "saving_ms", "noise_ms")) and group["n"] >= 3
    assert q["float_groups"] == (["depthwise_conv"] if group["kept_float"] else [])
    assert bool(float_ops(tmp_path / "model.int8.onnx")) == group["kept_float"]  # the variant is quantised as decided
    with pytest.raises(UsageError, match="INT8 latency is not measured by the torch backend"):
        get_backend("torch", precision="int8")


@pytest.mark.parametrize("faster", [True, False])
def test_int8_profile_quantises_every_variant_with_the_groups_the_speed_rule_keeps_in_float(faster, monkeypatch, tmp_path):
    from edgeprune.deploy.int8 import rule
    from edgeprune.latency.measurement import run_profile
    from edgeprune.latency.profiles import load_profile, save_profile

    monkeypatch.setattr(rule, "faster", lambda a, b: faster)  # the decision is a measurement: fixed here to test both
    prof = run_profile("fmnist_mobilenetv2", precision="int8", budget_s=0.5, warmup_s=0.05, min_repeats=3, max_repeats=10,
                       threads=1, workdir=tmp_path / "work")
    rule_record = load_profile(save_profile(prof, tmp_path / "p.json"))["backend"]["quantisation"]["float_rule"]
    (group,) = rule_record["groups"]
    assert group["kept_float"] is faster and group["nodes"] > 0 and rule_record["budget_s"] == 1.0
    from edgeprune.cli.inspect_commands import float_rule_lines

    (line,) = float_rule_lines(prof)
    assert line.startswith(f"INT8 float rule: depthwise_conv ({group['nodes']} nodes) "
                           + ("kept in float in every variant: " if faster else "quantised: "))
    variants = sorted((tmp_path / "work").glob("*/model.int8.onnx"))
    assert len(variants) == len(prof["blocks"]) + 2  # base, every block removed, the additivity combination
    for graph in variants:
        depthwise = set(depthwise_convs(graph.with_name("model.pre.onnx")))
        assert depthwise and set(float_ops(graph)) == (depthwise if faster else set()), graph


def test_adapt_int8_writes_the_gated_int8_graph_beside_the_fp32_one(small):
    out = small["out"]
    rep = json.loads((out / "report.json").read_text())
    assert {"model.onnx", "model.int8.onnx"} <= set(os.listdir(out))
    assert rep["deploy_precision"] == "int8" and rep["deployed"] == "model.int8.onnx" and "model.int8.onnx" in rep["artifacts"]
    q = rep["int8"]
    assert q["passed"] and q["path"] == "model.int8.onnx" and q["gate"]["agreement"] >= 0.97
    assert q["gate"]["inputs"] == f"{rep['images']['held_out']} held-out images"
    assert q["calibration"]["images"] == 24 and q["calibration"]["source"] == "24 fine-tune images of the stream"
    assert isinstance(q["keep_float"], list) and q["candidates"][0]["name"] == "all"
    md = (out / "report.md").read_text()
    assert "## INT8 deployment" in md and "calibration: 24 images" in md
    assert small["result"].report["int8"]["written"]


def test_without_tensorrt_the_report_says_how_to_build_both_engines_on_the_target(small):
    out = small["out"]
    trt = json.loads((out / "report.json").read_text())["tensorrt"]
    hint = f"edgeprune export --model {out}/model.pt --tensorrt"  # the published folder, not adapt's staging folder
    assert trt["built"] is False and trt["build_on_target"] == hint
    assert trt["int8"] == {"built": False, "reason": trt["reason"],
                           "build_on_target": f"{hint} --int8 --images DIR (DIR: the field images to calibrate on)"}
    assert not [f for f in os.listdir(out) if "engine" in f or "tensorrt" in f]
    assert "TensorRT INT8: not built" in (out / "report.md").read_text()


def test_adapt_with_tensorrt_builds_the_int8_engine_from_the_symmetric_graph(small, fake, tmp_path):
    fake(qdq_layers=8)
    out = tmp_path / "trt"
    adapt(small["images"], out, **ADAPT, weights=small["weights"], profile=small["profile"]["int8"], tensorrt=True,
          allow_device_mismatch=True)  # the fake GPU fingerprint is not the CPU profile's device
    rep = json.loads((out / "report.json").read_text())
    q = rep["tensorrt"]["int8"]
    assert rep["tensorrt"]["built"] and q["passed"] and q["path"] == "model.int8.tensorrt.onnx" and q["engine"] == "model.int8.engine"
    assert q["calibration"]["target"] == "tensorrt" and q["calibration"]["source"] == "24 fine-tune images of the stream"
    assert q["engine_build"]["precision"] == "int8" and q["engine_build"]["flags"] == ["INT8", "FP16"]
    assert {"model.engine", "model.int8.onnx", "model.int8.tensorrt.onnx", "model.int8.engine",
            "model.int8.engine.json"} <= set(rep["artifacts"]) <= set(os.listdir(out))
    assert "TensorRT INT8: `model.int8.tensorrt.onnx` (symmetric QDQ) passed" in (out / "report.md").read_text()


def test_export_int8_with_tensorrt(small, fake, tmp_path):
    from edgeprune.deploy.int8.tensorrt_qdq import tensorrt_qdq_problems
    from edgeprune.pipeline.export_manifest import export_manifest

    shutil.copy(small["out"] / "model.pt", tmp_path / "model.pt")
    fake(qdq_layers=8)
    result = export_manifest(tmp_path / "model.pt", tensorrt=True, fp16=False, images=small["images"],
                             int8=Int8Config(timing=FAST))
    assert result["engine"] == str(tmp_path / "model.int8.engine") and result["int8"]["engine_build"]["flags"] == ["INT8"]
    assert tensorrt_qdq_problems(tmp_path / "model.int8.tensorrt.onnx")[1] == []
    assert not (tmp_path / "model.int8.onnx").exists() and not (tmp_path / "model.engine").exists()


def test_a_deployed_graph_quantised_unlike_the_profiles_variants_is_warned(small):
    from edgeprune.pipeline.int8_artifact import _check_profile_groups
    from edgeprune.progress import CollectingReporter

    assert small["result"].report["int8"]["profile_float_groups"] is None  # a profile without the rule's record
    rep = CollectingReporter()
    prof = {"backend": {"quantisation": {"float_groups": ["depthwise_conv"]}}}
    assert _check_profile_groups(prof, {"chosen": "depthwise_conv_float"}, rep) == ["depthwise_conv"] and not rep.warnings
    _check_profile_groups(prof, {"chosen": "all"}, rep)
    assert len(rep.warnings) == 1 and "had depthwise_conv in float, the deployed graph has none (all)" in rep.warnings[0]


def test_precision_mismatch_is_refused_or_warned(small, tmp_path):
    from edgeprune.latency.profiles import check_profile_precision, load_profile

    for profile, deploy, text in (("fp32", "int8", "measured in fp32, this run deploys int8 \\(field: precision\\)"),
                                  ("int8", "fp32", "measured in int8, this run deploys fp32")):
        with pytest.raises(ProfileError, match=text):
            adapt(small["images"], tmp_path / deploy, **(ADAPT | {"deploy_precision": deploy}), weights=small["weights"],
                  profile=small["profile"][profile])
    warned = check_profile_precision(load_profile(small["profile"]["fp32"]), "int8", allow_mismatch=True)
    assert len(warned) == 1 and "field: precision" in warned[0]
    assert check_profile_precision(load_profile(small["profile"]["fp32"]), "fp32") == []


def test_export_int8_from_a_folder_and_its_refusals(small, tmp_path):
    from edgeprune.pipeline.export_manifest import export_manifest

    shutil.copy(small["out"] / "model.pt", tmp_path / "model.pt")
    manifest = tmp_path / "model.pt"
    result = export_manifest(manifest, images=small["images"], int8=Int8Config(timing=FAST))
    q = result["int8"]
    assert q["written"] and (tmp_path / "model.int8.onnx").is_file() and result["onnx_parity"]["passed"]
    assert q["gate"]["n"] == 16 and q["calibration"]["images"] == 32 and "held out for the gate" in q["calibration"]["source"]
    with pytest.raises(UsageError, match="--int8 quantises model.onnx: it needs --images"):
        export_manifest(manifest, int8=Int8Config())


@pytest.mark.parametrize("args,code,text", [
    (["export", "--model", "nowhere/model.pt", "--int8"], 2, "--int8 quantises model.onnx"),
    (["adapt", "--images", ".", "--model", "fmnist_resnet", "--deploy-precision", "int9"], 2, "unknown deploy precision"),
    (["adapt", "--images", ".", "--model", "fmnist_resnet", "--deploy-precision", "int8", "--calibration-method", "magic"], 2,
     "unknown calibration method"),
    (["profile", "--model", "fmnist_resnet", "--backend", "torch", "--precision", "int8"], 2, "INT8 latency is not measured"),
    (["export", "--model", "nowhere/model.pt", "--int8", "--tensorrt", "--images", "."], 7, "TensorRT is unavailable"),
    (["adapt", "--images", ".", "--model", "fmnist_resnet", "--deploy-precision", "int8", "--int8-min-agreement", "1.5"], 2,
     "minimum agreement is a fraction"),
])
def test_cli_int8_errors(args, code, text, cli, tmp_path):
    run = cli(*args, cwd=tmp_path)
    assert run.rc == code, run
    assert text in run.err and "Traceback" not in run.err


def test_registry_picks_the_profile_of_the_deployed_precision(small, tmp_path):
    from edgeprune.latency.profiles import load_profile, save_profile
    from edgeprune.latency.registry import ProfileKey, ProfileRegistry

    for precision in ("fp32", "int8"):
        prof = load_profile(small["profile"][precision])
        save_profile(prof, tmp_path / ProfileKey.of(prof).relpath)
    registry = ProfileRegistry(str(tmp_path))
    for precision in ("fp32", "int8"):
        assert registry.for_this_device("fmnist_resnet", deploy_precision=precision).key.precision == precision
    with pytest.raises(ProfileError, match="several profiles recorded for this device"):
        registry.for_this_device("fmnist_resnet")
