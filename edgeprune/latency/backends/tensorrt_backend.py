"""TensorRT latency: an engine per variant, built from its ONNX graph, run on CUDA buffers."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from ...deploy.onnx_export import export_onnx
from ...deploy.tensorrt_build import DEFAULT_WORKSPACE_GB, build_tensorrt_engine, needs_half_graph, tensorrt_status
from ...deploy.tensorrt_engine import EngineRunner, engine_runner, load_engine
from ...deploy.tensorrt_int8 import build_int8_engine
from ...errors import BackendUnavailable
from .base import BACKENDS, LatencyBackend, device_kind
from .int8_variants import tensorrt_int8_graph, tensorrt_int8_record


@BACKENDS.register("tensorrt")
class TensorRTBackend(LatencyBackend):
    """TensorRT engines (fp32, fp16 kernels, or INT8 from a symmetric QDQ graph), executed with ``execute_async_v3`` on a CUDA
    stream; torch CUDA tensors are the I/O buffers. All engines of one profile share a timing
    cache (``<workdir>/../tensorrt.cache``), so later builds reuse the kernel timings."""

    name = "tensorrt"
    devices = ("cuda",)
    int8_devices = ("cuda",)  # explicitly quantised engines from symmetric QDQ graphs (int8_variants.py)

    def __init__(self, device: str = "cuda", precision: str = "fp32", threads: int | None = None,
                 workspace_gb: float = DEFAULT_WORKSPACE_GB):
        if device_kind(device) == "cpu":
            raise BackendUnavailable("TensorRT runs on NVIDIA GPUs only, not on the CPU", "use --device cuda, or --backend onnxruntime")
        super().__init__(device, precision, threads)
        self.workspace_gb = workspace_gb
        self._keep: list[EngineRunner] = []  # engines/contexts must outlive their runners

    @classmethod
    def available(cls, device: str = "cuda") -> tuple[bool, str]:
        if device_kind(device) != "cuda":
            return False, "TensorRT runs on NVIDIA GPUs only"
        return tensorrt_status()

    @classmethod
    def unavailable_hint(cls, device: str) -> str | None:
        return "pip install tensorrt on a machine with an NVIDIA GPU, or use --backend onnxruntime"

    def prepare(self, model: nn.Module, example: torch.Tensor, workdir: str | os.PathLike) -> Callable[[], None]:
        workdir = Path(workdir)
        fp16 = self.precision == "fp16"
        if fp16 and needs_half_graph():  # TensorRT 11: the graph's own types decide the precision
            model, example = model.to(self.device).half(), example.to(self.device).half()
        onnx_path = export_onnx(model, example, workdir / "model.onnx")
        cache, batch = workdir.parent / "tensorrt.cache", int(example.shape[0])
        if self.precision == "int8":  # float layers in fp16 (TensorRT 10; 11: the graph's fp32)
            engine_path = build_int8_engine(tensorrt_int8_graph(onnx_path, example, workdir), workdir / "model.engine",
                                            timing_cache_path=cache, workspace_gb=self.workspace_gb, batch=batch)
        else:
            engine_path = build_tensorrt_engine(onnx_path, workdir / "model.engine", fp16=fp16, timing_cache_path=cache,
                                                workspace_gb=self.workspace_gb, batch=batch)
        runner = engine_runner(load_engine(engine_path, self.device), tuple(example.shape), self.device)
        (buf,) = runner.inputs.values()
        buf.copy_(example.to(buf.device, buf.dtype))
        self._keep.append(runner)
        return runner

    def describe(self, device: str | None = None) -> dict:
        import tensorrt as trt

        extra = {"quantisation": tensorrt_int8_record()} if self.precision == "int8" else {}
        return extra | {
            "name": self.name,
            "execution_provider": "TensorRT",
            "threads": 0,
            "workspace_gb": float(self.workspace_gb),
            "strongly_typed": needs_half_graph(),
            "versions": {"tensorrt": trt.__version__, "torch": torch.__version__, "cuda": torch.version.cuda},
        }

    def close(self) -> None:
        self._keep.clear()
