"""TensorRT INT8: the symmetric QDQ graph (checked and gated on the CPU), and the engine build's
flags per TensorRT version against the fake ``tensorrt`` module of test_tensorrt_fake.py."""

import json

import numpy as np
import onnx
import pytest
import torch

from edgeprune.deploy.int8.build import build_int8
from edgeprune.deploy.int8.config import Int8Config, QuantSettings
from edgeprune.deploy.int8.gate import graph_logits
from edgeprune.deploy.int8.quantize import preprocess, quantise
from edgeprune.deploy.int8.tensorrt_qdq import check_tensorrt_qdq, tensorrt_qdq_problems
from edgeprune.deploy.onnx_export import export_onnx
from edgeprune.deploy import tensorrt_build as tb
from edgeprune.deploy.tensorrt_int8 import build_int8_engine
from edgeprune.errors import BackendError, ExportError, UsageError

from test_int8 import _images, _net
from test_tensorrt_fake import fake  # noqa: F401 (the fake tensorrt fixture)

FAST = {"budget_s": 0.3, "min_repeats": 3, "warmup_s": 0.05}


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("trt-int8")
    fp32 = export_onnx(_net(), torch.zeros(1, 3, 16, 16), tmp / "model.onnx")
    rec = build_int8(fp32, tmp / "model.int8.tensorrt.onnx", _images(32, 0), _images(64, 1), Int8Config().for_tensorrt(),
                     calibration_source="32 test images")
    return {"tmp": tmp, "fp32": fp32, "record": rec, "graph": tmp / "model.int8.tensorrt.onnx"}


def _arrays(path):
    model = onnx.load(str(path))
    return model, {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}


def test_tensorrt_graph_is_symmetric_int8_with_float_biases_and_float_logits(small):
    rec, (model, init) = small["record"], _arrays(small["graph"])
    onnx.checker.check_model(model, full_check=True)  # a valid ONNX graph with its shapes inferred (what TensorRT parses)
    assert rec["written"] and rec["passed"] and rec["gate"]["agreement"] >= 0.97
    cal = rec["calibration"]
    assert cal["target"] == "tensorrt" and cal["symmetric"] and not cal["reduce_range"] and cal["images"] == 32
    assert cal["activation_type"] == cal["weight_type"] == "int8" and not cal["quantize_bias"]
    qdq = [n for n in model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    assert qdq and all(init[n.input[2]].dtype == np.int8 and not init[n.input[2]].any() for n in qdq)  # zero points: int8 0
    weights = [init[n.input[0]] for n in qdq if n.input[0] in init]
    assert len(weights) == 4 and all(w.dtype == np.int8 and w.min() >= -127 for w in weights)
    assert all(init[n.input[2]].dtype == np.float32 for n in model.graph.node if n.op_type in ("Conv", "Gemm"))  # biases
    producers = {o: n.op_type for n in model.graph.node for o in n.output}
    assert producers[model.graph.output[0].name] == "Gemm"  # the logits are not quantised
    assert not any(producers.get(n.input[0]) == "Conv" for n in qdq)  # Q/DQ on the convolutions' inputs only
    assert rec["tensorrt_qdq"] == {"qdq_nodes": len(qdq), "quantised_layers": 4, "opset": rec["tensorrt_qdq"]["opset"]}
    assert rec["candidates"][0]["median_ms"] is None and rec["fp32"] is None  # not timed on the CPU


def test_tensorrt_graph_agrees_with_fp32_on_fmnist_resnet(random_fmnist_resnet, tmp_path):
    from edgeprune.models.zoo import load_model

    model, entry, _ = load_model("fmnist_resnet", weights=random_fmnist_resnet["weights"])
    fp32 = export_onnx(model.eval(), torch.zeros(1, entry.in_chans, 32, 32), tmp_path / "model.onnx")
    gen = torch.Generator().manual_seed(0)
    calib, held = (torch.randn(n, entry.in_chans, 32, 32, generator=gen).numpy() for n in (32, 96))
    rec = build_int8(fp32, tmp_path / "t.onnx", calib, held, Int8Config(max_sensitive_float=0).for_tensorrt())
    assert rec["tensorrt_qdq"]["quantised_layers"] >= 10 and tensorrt_qdq_problems(tmp_path / "t.onnx")[1] == []
    ref, got = graph_logits(fp32, held), graph_logits(tmp_path / "t.onnx", held)
    agreement = float((ref.argmax(1) == got.argmax(1)).mean())
    assert agreement == pytest.approx(rec["gate"]["agreement"]) and rec["passed"], rec["gate"]  # the 97% gate


def test_the_cpu_graph_is_not_one_for_tensorrt(small, tmp_path):
    pre = preprocess(small["fp32"], tmp_path / "pre.onnx")
    cpu = quantise(pre, tmp_path / "cpu.onnx", _images(16, 0), QuantSettings(reduce_range=False))["path"]
    _, problems = tensorrt_qdq_problems(cpu)
    assert any("uint8" in p for p in problems) and any("int32" in p for p in problems), problems
    with pytest.raises(ExportError, match="not symmetric int8 QDQ"):
        check_tensorrt_qdq(cpu)
    with pytest.raises(UsageError, match="unknown INT8 target"):
        QuantSettings(target="tflite").resolved()


def test_tensorrt10_sets_int8_and_fp16_flags_on_a_weakly_typed_network(fake, small, tmp_path):
    trt = fake(qdq_layers=12)
    engine = build_int8_engine(small["graph"], tmp_path / "model.int8.engine", fp16=True, timing_cache_path=tmp_path / "c")
    assert ("network_flags", 0) in trt.calls and [c for c in trt.calls if c[0] == "flag"] == [("flag", 1), ("flag", 0)]
    side = json.loads(tb.engine_sidecar_path(engine).read_text())
    assert side["precision"] == "int8" and side["float_layers"] == "fp16" and side["flags"] == ["INT8", "FP16"]
    assert side["qdq_layers"] == 12 and not side["strongly_typed"] and side["onnx"] == "model.int8.tensorrt.onnx"
    trt.calls.clear()
    build_int8_engine(small["graph"], tmp_path / "fp32-float.engine", fp16=False)
    assert [c for c in trt.calls if c[0] == "flag"] == [("flag", 1)]  # INT8 only: float layers in fp32


def test_tensorrt11_takes_the_graphs_types_without_flags(fake, small, tmp_path):
    trt = fake(version="11.0.0", fp16_flag=False, qdq_layers=12)
    engine = build_int8_engine(small["graph"], tmp_path / "model.int8.engine", fp16=True)
    assert ("network_flags", 2) in trt.calls and not [c for c in trt.calls if c[0] == "flag"]  # STRONGLY_TYPED, no flags
    side = json.loads(tb.engine_sidecar_path(engine).read_text())
    assert side["strongly_typed"] and side["flags"] == [] and side["float_layers"] == "fp32" and side["fp16_requested"]


def test_a_graph_without_qdq_layers_is_refused(fake, small, tmp_path):
    fake(qdq_layers=0)
    with pytest.raises(BackendError, match="model.onnx has no Quantize/Dequantize layers"):
        build_int8_engine(small["fp32"], tmp_path / "model.int8.engine")
    assert not (tmp_path / "model.int8.engine").exists()


def test_tensorrt_int8_profile_variants_are_symmetric_qdq_engines(fake, monkeypatch, tmp_path):
    from edgeprune.latency.backends import get_backend
    from edgeprune.latency.backends import tensorrt_backend

    fake(qdq_layers=8)

    class Runner:
        def __init__(self, loaded, shape, device):
            self.inputs, self.sidecar = {"input": torch.zeros(shape)}, loaded

    monkeypatch.setattr(tensorrt_backend, "load_engine", lambda path, device: json.loads(tb.engine_sidecar_path(path).read_text()))
    monkeypatch.setattr(tensorrt_backend, "engine_runner", Runner)  # CUDA buffers: not on this machine
    backend = get_backend("tensorrt", device="cuda", precision="int8")
    runner = backend.prepare(_net(), torch.zeros(1, 3, 16, 16), tmp_path / "v")
    assert runner.sidecar["precision"] == "int8" and runner.sidecar["onnx"] == "model.int8.tensorrt.onnx"
    assert tensorrt_qdq_problems(tmp_path / "v" / "model.int8.tensorrt.onnx")[1] == []
    q = backend.describe()["quantisation"]
    assert q["target"] == "tensorrt" and q["symmetric"] and q["float_groups"] == [] and q["calibration_images"] == 8
