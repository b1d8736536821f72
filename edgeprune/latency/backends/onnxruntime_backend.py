"""ONNX Runtime latency: each variant exported to ONNX and run in its own session."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from ...deploy.onnx_export import export_onnx
from ...deploy.ort import execution_providers, ort_session
from ...errors import BackendUnavailable
from ..fingerprint import available_cpus
from .base import BACKENDS, LatencyBackend, device_kind
from .int8_variants import Int8Variants


def default_cpu_threads() -> int:
    """Intra-op threads when none are given: every core this process may use.

    Fixed and recorded rather than left to onnxruntime, so two profiles of one machine are
    comparable and the profile says what it measured.
    """
    return max(1, available_cpus())


@BACKENDS.register("onnxruntime")
class OnnxRuntimeBackend(LatencyBackend):
    """ONNX Runtime with the CPU or CUDA execution provider (never a silent fallback to CPU).

    CPU: a fixed intra-op thread count, idle threads do not spin (several sessions are timed in
    turn; spinning threads of one would steal cores from the next). CUDA: input and output stay
    on the GPU through I/O binding, so host copies are not timed; fp16 = a graph exported from
    ``model.half()``. INT8 (CPU): each variant's graph quantised as ``adapt --deploy-precision int8``
    quantises (deploy/int8), calibrated on seeded random inputs (the ranges differ from real
    images'; the latency does not depend on them), with the op groups adapt's speed rule keeps in
    float kept in float (decided once, on the full model: ``int8_variants.py``).
    """

    name = "onnxruntime"
    devices = ("cpu", "cuda")
    int8_devices = ("cpu",)

    def __init__(self, device: str = "cpu", precision: str = "fp32", threads: int | None = None):
        super().__init__(device, precision, threads)
        if device_kind(device) == "cpu" and self.threads is None:
            self.threads = default_cpu_threads()
        self._providers = execution_providers(device)
        self._int8 = Int8Variants(self.threads) if precision == "int8" else None

    def plan_timing(self, timing: dict) -> None:
        if self._int8 is not None:  # the float-node rule's measurement is sized from the profile's budget
            self._int8.timing = dict(timing)

    @classmethod
    def available(cls, device: str = "cpu") -> tuple[bool, str]:
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            return False, "onnxruntime is not installed (pip install onnxruntime)"
        if device_kind(device) not in cls.devices:
            return False, f"unknown device {device!r}"
        try:
            execution_providers(device)
        except BackendUnavailable as exc:
            return False, exc.args[0]  # the message; the hint comes from unavailable_hint
        if device_kind(device) == "cuda" and not torch.cuda.is_available():
            return False, "onnxruntime-gpu is installed but PyTorch sees no CUDA GPU to export on"
        return True, ""

    @classmethod
    def unavailable_hint(cls, device: str) -> str | None:
        return "pip install onnxruntime-gpu for CUDA, or use --device cpu"

    def prepare(self, model: nn.Module, example: torch.Tensor, workdir: str | os.PathLike) -> Callable[[], None]:
        half = self.precision == "fp16"
        if half:  # exported on the GPU: half-precision kernels are a GPU thing
            model, example = model.to(self.device).half(), example.to(self.device).half()
        path = export_onnx(model, example, Path(workdir) / "model.onnx")
        if self._int8 is not None:
            path = self._int8.quantise(path, example, Path(workdir))
        session = ort_session(path, device=self.device, threads=self.threads)
        input_name = session.get_inputs()[0].name
        if device_kind(self.device) == "cpu":
            feed = {input_name: example.detach().cpu().numpy()}

            def run() -> None:
                session.run(None, feed)

            return run
        import onnxruntime as ort

        device_id = int(self.device.split(":", 1)[1]) if ":" in self.device else 0
        x = ort.OrtValue.ortvalue_from_numpy(example.detach().cpu().numpy().astype(np.float16 if half else np.float32), "cuda", device_id)
        binding = session.io_binding()
        binding.bind_ortvalue_input(input_name, x)
        for out in session.get_outputs():
            binding.bind_output(out.name, "cuda", device_id)

        def run_cuda() -> None:
            session.run_with_iobinding(binding)  # returns after the CUDA stream is synchronized

        return run_cuda

    def describe(self, device: str | None = None) -> dict:
        import onnxruntime as ort

        extra = {"quantisation": self._int8.describe()} if self._int8 is not None else {}
        return extra | {
            "name": self.name,
            "execution_provider": self._providers[0],
            "providers": list(self._providers),
            "threads": int(self.threads) if self.threads else 0,  # 0 = onnxruntime's default (GPU)
            "spinning": False,
            "versions": {"onnxruntime": ort.__version__, "torch": torch.__version__},
        }
