"""Running TensorRT engines: load (refusing an engine built for another device), bind CUDA
buffers, run, and time (host latency vs GPU compute time, trtexec's terms).

Written and type-checked against the TensorRT 10 API; the calls used here are unchanged in 11.
Not yet run on a GPU (README, "GPU check").
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import BackendError
from .tensorrt_build import dims, engine_sidecar_path, require_tensorrt, trt_logger

if TYPE_CHECKING:
    import tensorrt as trt
    import torch

# Fingerprint fields an engine is bound to: a serialized engine runs only on the GPU model
# (compute capability) and TensorRT version it was built with.
BINDING_FIELDS = ("gpu", "compute_capability")


def read_sidecar(engine_path: Path) -> dict:
    """The engine's ``.json`` sidecar (BackendError when missing or unreadable)."""
    path = engine_sidecar_path(engine_path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise BackendError(f"{engine_path.name} has no sidecar {path.name}: the device it was built for is unknown",
                           "rebuild it here with `edgeprune export --tensorrt`") from None
    except (OSError, ValueError) as exc:
        raise BackendError(f"cannot read the engine sidecar {path}: {exc}", "rebuild the engine") from None
    if not isinstance(data, dict) or not isinstance(data.get("device"), dict):
        raise BackendError(f"{path} is not an edgeprune engine sidecar", "rebuild the engine")
    return data


def device_mismatches(sidecar: dict, here: dict, tensorrt_version: str) -> list[str]:
    """How the device/TensorRT an engine was built for differ from this one (empty: it may run)."""
    built = sidecar.get("device", {})
    problems = [f"{key} {built.get(key)!r} (here {here.get(key)!r})" for key in BINDING_FIELDS
                if built.get(key) != here.get(key)]
    if sidecar.get("tensorrt_version") != tensorrt_version:
        problems.append(f"TensorRT {sidecar.get('tensorrt_version')} (here {tensorrt_version})")
    return problems


def check_engine_device(engine_path: Path, device: str = "cuda") -> dict:
    """The sidecar, after checking the engine was built for this GPU and TensorRT.

    Raises:
        BackendError: built for another device or TensorRT version (the message lists both).
    """
    import tensorrt as trt

    from ..latency.fingerprint import device_fingerprint

    sidecar = read_sidecar(engine_path)
    problems = device_mismatches(sidecar, device_fingerprint(device), trt.__version__)
    if problems:
        raise BackendError(f"{engine_path.name} was built for another device: {'; '.join(problems)}",
                           "an engine runs only where it was built; rebuild it here with `edgeprune export --tensorrt`")
    return sidecar


@dataclass
class LoadedEngine:
    runtime: "trt.Runtime"
    engine: "trt.ICudaEngine"
    sidecar: dict


def load_engine(engine_path: str | Path, device: str = "cuda") -> LoadedEngine:
    """Deserialize an engine built for this device (see ``check_engine_device``)."""
    trt_module = require_tensorrt()
    engine_path = Path(engine_path)
    sidecar = check_engine_device(engine_path, device)
    runtime = trt_module.Runtime(trt_logger())
    engine = runtime.deserialize_cuda_engine(engine_path.read_bytes())
    if engine is None:
        raise BackendError(f"TensorRT could not load the engine {engine_path}", "rebuild it with `edgeprune export --tensorrt`")
    return LoadedEngine(runtime, engine, sidecar)


@dataclass
class EngineRunner:
    """One execution context with torch CUDA tensors as its I/O buffers, for a fixed input shape."""

    loaded: LoadedEngine
    context: Any
    inputs: dict[str, "torch.Tensor"]
    outputs: dict[str, "torch.Tensor"]
    stream: Any
    _events: list = field(default_factory=list)

    def enqueue(self) -> None:
        """Launch one inference on the stream (no wait)."""
        if not self.context.execute_async_v3(self.stream.cuda_stream):
            raise BackendError("TensorRT execution failed (execute_async_v3 returned False)")

    def __call__(self) -> None:
        """One inference on the bound buffers, waited for (what latency timing calls)."""
        self.enqueue()
        self.stream.synchronize()

    def run(self, x: "torch.Tensor") -> "torch.Tensor":
        """Copy ``x`` in, run, return the first output on the CPU (float32)."""
        (buf,) = self.inputs.values()
        if tuple(x.shape) != tuple(buf.shape):
            raise BackendError(f"the engine runs input shape {tuple(buf.shape)}, got {tuple(x.shape)}")
        import torch

        with torch.cuda.stream(self.stream):
            buf.copy_(x.to(buf.device, buf.dtype), non_blocking=True)
            self.enqueue()
            out = next(iter(self.outputs.values())).float().cpu()
        self.stream.synchronize()
        return out


def engine_runner(loaded: LoadedEngine, input_shape: tuple[int, ...], device: str = "cuda", stream: Any = None) -> EngineRunner:
    """Bind CUDA buffers for ``input_shape`` (checking every TensorRT call that reports failure).

    ``stream``: a ``torch.cuda.Stream`` to run on (default: a new one on ``device``).
    """
    import tensorrt as trt
    import torch

    engine = loaded.engine
    context = engine.create_execution_context()
    if context is None:
        raise BackendError("TensorRT could not create an execution context (GPU memory?)")
    names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
    is_input = {n: engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT for n in names}
    for name in (n for n in names if is_input[n]):
        if not context.set_input_shape(name, input_shape):
            raise BackendError(f"the engine does not accept input shape {input_shape} for {name}")
    inputs: dict[str, torch.Tensor] = {}
    outputs: dict[str, torch.Tensor] = {}
    for name in names:
        dtype = torch_dtype(engine.get_tensor_dtype(name))
        shape = input_shape if is_input[name] else tuple(dims(context.get_tensor_shape(name)))
        buf = torch.zeros(shape, dtype=dtype, device=device)
        (inputs if is_input[name] else outputs)[name] = buf
        if not context.set_tensor_address(name, buf.data_ptr()):
            raise BackendError(f"TensorRT refused the buffer address of {name}")
    return EngineRunner(loaded, context, inputs, outputs, stream or torch.cuda.Stream(device=torch.device(device)))


def torch_dtype(dtype: "trt.DataType") -> "torch.dtype":
    import tensorrt as trt
    import torch

    table = {trt.float32: torch.float32, trt.float16: torch.float16, trt.int32: torch.int32, trt.int8: torch.int8,
             trt.bool: torch.bool, trt.int64: torch.int64, trt.bfloat16: torch.bfloat16, trt.uint8: torch.uint8}
    if dtype not in table:
        raise BackendError(f"TensorRT tensor type {dtype} has no torch equivalent")
    return table[dtype]


def time_engine(runner: EngineRunner, runs: int = 200, warmup: int = 20) -> dict:
    """Host latency and GPU compute time of ``runner``, trtexec-style.

    ``latency``: host wall time of one inference including the input copy to and the output copy
    from the GPU (trtexec's "Latency"). ``gpu_compute_time``: CUDA events around the enqueue only
    (trtexec's "GPU Compute Time"). ``enqueue_time``: host time to launch. Each: min/max/mean/
    median/percentile(90%|95%|99%) in ms.
    """
    import torch

    from ..latency.timing import trtexec_summary

    (x,) = [buf.detach().cpu() for buf in runner.inputs.values()]
    for _ in range(warmup):
        runner.run(x)
    host, device, enqueue = [], [], []
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    for _ in range(runs):
        t0 = time.perf_counter()
        runner.run(x)
        host.append((time.perf_counter() - t0) * 1e3)
        start.record(runner.stream)
        t1 = time.perf_counter()
        runner.enqueue()
        enqueue.append((time.perf_counter() - t1) * 1e3)
        end.record(runner.stream)
        end.synchronize()
        device.append(start.elapsed_time(end))
    return {"runs": runs, "latency": trtexec_summary(host), "gpu_compute_time": trtexec_summary(device),
            "enqueue_time": trtexec_summary(enqueue)}
