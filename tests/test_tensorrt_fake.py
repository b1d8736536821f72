"""TensorRT build and load steps against a fake ``tensorrt`` module (no GPU here).

The fake implements the calls edgeprune makes, with the return conventions of the real API
(``parse_from_file``/``set_timing_cache``/``set_input_shape`` -> bool, ``build_serialized_network``
-> None on failure, ``add_optimization_profile`` -> -1 on failure), so each failure path is shown
to raise a clear BackendError. That the calls match the real API is checked by mypy against
tensorrt-stubs (test_typecheck.py); that they work on a GPU, by tools/gpu_check.sh.
"""

from __future__ import annotations

import json
import sys
import types

import pytest
import torch

from edgeprune.errors import BackendError
from edgeprune.deploy import tensorrt_build as tb
from edgeprune.deploy import tensorrt_engine as te

GPU_HERE = {"kind": "cuda", "gpu": "NVIDIA H200", "compute_capability": "9.0", "driver": "570.1", "cuda": "12.8",
            "cpu_isa": ["avx2", "fma"]}


def fake_tensorrt(version: str = "10.13.0", fp16_flag: bool = True, fail: tuple[str, ...] = (), qdq_layers: int = 0):
    """``fp16_flag=False``: TensorRT 11 (no precision flags). ``qdq_layers``: Q/DQ layers in the parsed network."""
    trt = types.ModuleType("tensorrt")
    trt.__version__ = version
    trt.float32, trt.float16 = "float32", "float16"
    trt.calls = []
    trt.Logger = type("Logger", (), {"ERROR": 1, "__init__": lambda self, sev: None})
    trt.BuilderFlag = type("BuilderFlag", (), {"FP16": 0, "INT8": 1} if fp16_flag else {})
    trt.LayerType = type("LayerType", (), {"CONVOLUTION": 0, "QUANTIZE": 32, "DEQUANTIZE": 33})
    trt.NetworkDefinitionCreationFlag = type("NDCF", (), {"STRONGLY_TYPED": 1})
    trt.MemoryPoolType = type("MemoryPoolType", (), {"WORKSPACE": 0})
    trt.Dims = list

    class Tensor:
        name, dtype, shape = "input", "float32", [-1, 3, 8, 8]

    class Layer:
        def __init__(self, kind):
            self.type = kind

    class Network:
        num_inputs = 1
        layers = [32, 33] * (qdq_layers // 2) + [32] * (qdq_layers % 2) + [0, 0]  # Q/DQ pairs + two convolutions
        num_layers = len(layers)

        def get_input(self, i):
            return Tensor()

        def get_layer(self, i):
            return Layer(self.layers[i])

    class Parser:
        num_errors = 1

        def __init__(self, network, logger):
            pass

        def parse_from_file(self, path):
            return "parse" not in fail

        def get_error(self, i):
            return "In node 3 (Conv): unsupported attribute"

    class Cache:
        def __init__(self, data):
            self.data = data

        def serialize(self):
            return memoryview(b"cache:" + self.data)

    class Config:
        def set_memory_pool_limit(self, pool, size):
            trt.calls.append(("workspace", size))

        def set_flag(self, flag):
            trt.calls.append(("flag", flag))

        def add_optimization_profile(self, profile):
            trt.calls.append(("profile", profile.shapes))
            return -1 if "profile" in fail else 0

        def create_timing_cache(self, data):
            return Cache(bytes(data))

        def set_timing_cache(self, cache, ignore_mismatch):
            trt.calls.append(("cache", cache.data))
            self.cache = cache
            return not ("cache" in fail or ("stale-cache" in fail and cache.data))

        def get_timing_cache(self):
            return self.cache

    class Profile:
        def __init__(self):
            self.shapes = {}

        def set_shape(self, name, low, opt, high):
            self.shapes[name] = (list(low), list(opt), list(high))

    class Builder:
        def __init__(self, logger):
            pass

        def create_network(self, flags):
            trt.calls.append(("network_flags", flags))
            return Network()

        def create_builder_config(self):
            return Config()

        def create_optimization_profile(self):
            return Profile()

        def build_serialized_network(self, network, config):
            return None if "build" in fail else memoryview(b"ENGINE")

    trt.Builder, trt.OnnxParser = Builder, Parser
    return trt


@pytest.fixture
def fake(monkeypatch):
    def install(**kw):
        trt = fake_tensorrt(**kw)
        monkeypatch.setitem(sys.modules, "tensorrt", trt)
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr("edgeprune.latency.fingerprint.device_fingerprint", lambda device="cpu": dict(GPU_HERE))
        monkeypatch.setattr(tb, "_LOGGER", None)
        return trt

    return install


def _onnx(tmp_path):
    path = tmp_path / "model.onnx"
    path.write_bytes(b"graph")
    return path


def test_tensorrt10_build_writes_engine_cache_and_device_bound_sidecar(fake, tmp_path):
    trt = fake()
    cache = tmp_path / "trt.cache"
    engine = tb.build_tensorrt_engine(_onnx(tmp_path), tmp_path / "model.engine", fp16=True, timing_cache_path=cache, batch=4)
    assert engine.read_bytes() == b"ENGINE" and cache.read_bytes() == b"cache:"
    assert ("flag", 0) in trt.calls and ("network_flags", 0) in trt.calls  # weakly typed + FP16 flag
    assert ("profile", {"input": ([1, 3, 8, 8], [4, 3, 8, 8], [4, 3, 8, 8])}) in trt.calls
    side = json.loads(tb.engine_sidecar_path(engine).read_text())
    assert side["precision"] == "fp16" and not side["strongly_typed"] and side["tensorrt_version"] == "10.13.0"
    assert side["device"]["gpu"] == "NVIDIA H200" and side["device"]["cpu_isa"] == ["avx2", "fma"]
    tb.build_tensorrt_engine(_onnx(tmp_path), tmp_path / "model.engine", timing_cache_path=cache)
    assert ("cache", b"cache:") in trt.calls  # the second build is seeded with the first's cache


@pytest.mark.parametrize("failure, needle", [
    ("parse", "ONNX parser rejected model.onnx (In node 3 (Conv): unsupported attribute)"),
    ("build", "could not build an engine for model.onnx"),
    ("profile", "refused the optimization profile"),
    ("cache", "refused the timing cache"),
])
def test_every_reported_failure_is_a_backend_error(fake, tmp_path, failure, needle):
    fake(fail=(failure,))
    with pytest.raises(BackendError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        tb.build_tensorrt_engine(_onnx(tmp_path), tmp_path / "model.engine", timing_cache_path=tmp_path / "c")
    assert not (tmp_path / "model.engine").exists() and not (tmp_path / "model.engine.json").exists()


def test_a_cache_from_another_gpu_is_replaced_by_an_empty_one(fake, tmp_path):
    trt = fake(fail=("stale-cache",))
    cache = tmp_path / "trt.cache"
    cache.write_bytes(b"other-gpu")
    tb.build_tensorrt_engine(_onnx(tmp_path), tmp_path / "model.engine", timing_cache_path=cache)
    assert [c for c in trt.calls if c[0] == "cache"] == [("cache", b"other-gpu"), ("cache", b"")]


def test_tensorrt11_is_strongly_typed_and_needs_a_half_graph_for_fp16(fake, tmp_path):
    trt = fake(version="11.0.0", fp16_flag=False)
    assert tb.needs_half_graph()
    with pytest.raises(BackendError, match="no FP16 builder flag.*model.half"):
        tb.build_tensorrt_engine(_onnx(tmp_path), tmp_path / "model.engine", fp16=True)
    assert ("network_flags", 2) in trt.calls  # 1 << STRONGLY_TYPED
    engine = tb.build_tensorrt_engine(_onnx(tmp_path), tmp_path / "model.engine", fp16=False)
    assert json.loads(tb.engine_sidecar_path(engine).read_text())["strongly_typed"] is True


def test_engine_for_another_device_is_refused(fake, tmp_path):
    fake()
    engine = tb.build_tensorrt_engine(_onnx(tmp_path), tmp_path / "model.engine")
    assert te.check_engine_device(engine)["precision"] == "fp16"  # built here: accepted
    side_path = tb.engine_sidecar_path(engine)
    side = json.loads(side_path.read_text())
    side["device"].update(gpu="NVIDIA A100-SXM4-80GB", compute_capability="8.0")
    side_path.write_text(json.dumps(side))
    with pytest.raises(BackendError, match="built for another device: gpu 'NVIDIA A100-SXM4-80GB'.*compute_capability '8.0'"):
        te.load_engine(engine)
    side["device"] = dict(GPU_HERE)
    side["tensorrt_version"] = "10.3.0"
    side_path.write_text(json.dumps(side))
    with pytest.raises(BackendError, match=r"TensorRT 10.3.0 \(here 10.13.0\)"):
        te.load_engine(engine)
    side_path.unlink()
    with pytest.raises(BackendError, match="has no sidecar"):
        te.load_engine(engine)


def test_type_stubs_alone_are_not_tensorrt(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", types.ModuleType("tensorrt"))  # what tensorrt-stubs installs
    ok, reason = tb.tensorrt_status()
    assert not ok and "only TensorRT's type stubs" in reason


def fake_engine(trt, fail=()):
    """An engine with one input and one output whose context reports failures as the real one does."""
    trt.TensorIOMode = type("TensorIOMode", (), {"INPUT": "in", "OUTPUT": "out"})
    for name in ("int32", "int8", "bool", "int64", "bfloat16", "uint8"):
        setattr(trt, name, name)

    class Context:
        executed = 0

        def set_input_shape(self, name, shape):
            return "shape" not in fail

        def get_tensor_shape(self, name):
            return [1, 10]

        def set_tensor_address(self, name, ptr):
            return "address" not in fail

        def execute_async_v3(self, stream):
            Context.executed += 1
            return "execute" not in fail

    class Engine:
        num_io_tensors = 2

        def create_execution_context(self):
            return None if "context" in fail else Context()

        def get_tensor_name(self, i):
            return ["input", "output"][i]

        def get_tensor_mode(self, name):
            return "in" if name == "input" else "out"

        def get_tensor_dtype(self, name):
            return "int4" if "dtype" in fail else trt.float32

    return te.LoadedEngine(runtime=None, engine=Engine(), sidecar={}), Context


class FakeStream:
    cuda_stream, synced = 7, 0

    def synchronize(self):
        FakeStream.synced += 1


def test_engine_runner_binds_buffers_and_runs(fake):
    loaded, context = fake_engine(fake())
    runner = te.engine_runner(loaded, (1, 3, 8, 8), device="cpu", stream=FakeStream())
    assert runner.inputs["input"].shape == (1, 3, 8, 8) and runner.outputs["output"].shape == (1, 10)
    runner()
    assert context.executed == 1 and FakeStream.synced >= 1


@pytest.mark.parametrize("failure, needle", [
    ("context", "could not create an execution context"),
    ("shape", r"does not accept input shape \(1, 3, 8, 8\) for input"),
    ("address", "refused the buffer address of input"),
    ("dtype", "tensor type int4 has no torch equivalent"),
])
def test_engine_runner_failures_are_backend_errors(fake, failure, needle):
    loaded, _ = fake_engine(fake(), fail=(failure,))
    with pytest.raises(BackendError, match=needle):
        te.engine_runner(loaded, (1, 3, 8, 8), device="cpu", stream=FakeStream())


def test_failed_execution_is_a_backend_error(fake):
    loaded, _ = fake_engine(fake(), fail=("execute",))
    runner = te.engine_runner(loaded, (1, 3, 8, 8), device="cpu", stream=FakeStream())
    with pytest.raises(BackendError, match="execute_async_v3 returned False"):
        runner()
