"""TensorRT latency: an engine per variant, built from its ONNX graph, run on CUDA buffers."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from ...deploy.onnx_export import DEFAULT_WORKSPACE_GB, build_tensorrt_engine, export_onnx, tensorrt_status, trt_logger
from ...errors import BackendUnavailable, ExportError
from .base import BACKENDS, LatencyBackend, device_kind


@BACKENDS.register("tensorrt")
class TensorRTBackend(LatencyBackend):
    """TensorRT engines (fp32, or fp16 kernels allowed), executed with ``execute_async_v3`` on a
    CUDA stream; torch CUDA tensors are the I/O buffers. All engines of one profile share a
    timing cache (``<workdir>/../tensorrt.cache``), so later builds reuse the kernel timings."""

    name = "tensorrt"
    devices = ("cuda",)

    def __init__(self, device: str = "cuda", precision: str = "fp32", threads: int | None = None,
                 workspace_gb: float = DEFAULT_WORKSPACE_GB):
        if device_kind(device) == "cpu":
            raise BackendUnavailable("TensorRT runs on NVIDIA GPUs only, not on the CPU", "use --device cuda, or --backend onnxruntime")
        super().__init__(device, precision, threads)
        self.workspace_gb = workspace_gb
        self._keep: list = []  # engines/contexts must outlive their runners

    @classmethod
    def available(cls, device: str = "cuda") -> tuple[bool, str]:
        if device_kind(device) != "cuda":
            return False, "TensorRT runs on NVIDIA GPUs only"
        return tensorrt_status()

    @classmethod
    def unavailable_hint(cls, device: str) -> str | None:
        return "pip install tensorrt on a machine with an NVIDIA GPU, or use --backend onnxruntime"

    def prepare(self, model: nn.Module, example: torch.Tensor, workdir: str | os.PathLike) -> Callable[[], None]:
        import tensorrt as trt

        workdir = Path(workdir)
        fp16 = self.precision == "fp16"
        if fp16 and not hasattr(trt.BuilderFlag, "FP16"):
            # TensorRT 11: strongly typed networks take their precision from the graph itself.
            model, example = model.to(self.device).half(), example.to(self.device).half()
        onnx_path = export_onnx(model, example, workdir / "model.onnx")
        engine_path = build_tensorrt_engine(
            onnx_path, workdir / "model.engine", fp16=fp16, timing_cache_path=workdir.parent / "tensorrt.cache",
            workspace_gb=self.workspace_gb, batch=int(example.shape[0]),
        )
        runtime = trt.Runtime(trt_logger(trt))
        engine = runtime.deserialize_cuda_engine(engine_path.read_bytes())
        if engine is None:
            raise ExportError(f"TensorRT could not load the engine it just built ({engine_path})")
        context = engine.create_execution_context()
        device = torch.device(self.device)
        stream = torch.cuda.Stream(device=device)
        buffers = {}
        for i in range(engine.num_io_tensors):
            name = engine.get_tensor_name(i)
            if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT:
                context.set_input_shape(name, tuple(example.shape))
        for i in range(engine.num_io_tensors):
            name = engine.get_tensor_name(i)
            dtype = _TORCH_DTYPES[engine.get_tensor_dtype(name)]
            if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT:
                buf = example.to(device=device, dtype=dtype).contiguous()
            else:
                buf = torch.empty(tuple(context.get_tensor_shape(name)), dtype=dtype, device=device)
            buffers[name] = buf
            context.set_tensor_address(name, buf.data_ptr())
        self._keep.append((runtime, engine, context, buffers, stream))

        def run() -> None:
            if not context.execute_async_v3(stream.cuda_stream):
                raise ExportError("TensorRT execution failed")
            stream.synchronize()

        return run

    def describe(self, device: str | None = None) -> dict:
        import tensorrt as trt

        return {
            "name": self.name,
            "execution_provider": "TensorRT",
            "threads": 0,
            "workspace_gb": float(self.workspace_gb),
            "versions": {"tensorrt": trt.__version__, "torch": torch.__version__, "cuda": torch.version.cuda},
        }

    def close(self) -> None:
        self._keep.clear()


def _torch_dtypes():
    try:
        import tensorrt as trt
    except Exception:
        return {}
    table = {trt.float32: torch.float32, trt.float16: torch.float16, trt.int32: torch.int32, trt.int8: torch.int8, trt.bool: torch.bool}
    for trt_name, torch_dtype in (("int64", torch.int64), ("bfloat16", torch.bfloat16), ("uint8", torch.uint8)):
        if hasattr(trt, trt_name):
            table[getattr(trt, trt_name)] = torch_dtype
    return table


class _LazyDtypes(dict):
    def __missing__(self, key):
        if not self:
            self.update(_torch_dtypes())
            if key in self:
                return self[key]
        raise ExportError(f"TensorRT tensor type {key} has no torch equivalent")


_TORCH_DTYPES = _LazyDtypes()
