"""Eager PyTorch latency: what a plain ``model(x)`` costs, on CPU or CUDA."""

from __future__ import annotations

import os
from typing import Callable

import torch
from torch import nn

from .base import BACKENDS, LatencyBackend, device_kind


@BACKENDS.register("torch")
class TorchBackend(LatencyBackend):
    """Eager mode, ``torch.inference_mode``; on CUDA each call ends with a device synchronize so the
    wall-clock time is the GPU latency, not the launch time. fp16 = ``model.half()`` on CUDA."""

    name = "torch"
    devices = ("cpu", "cuda")

    def __init__(self, device: str = "cpu", precision: str = "fp32", threads: int | None = None):
        super().__init__(device, precision, threads)
        if threads:
            torch.set_num_threads(int(threads))  # process-wide: recorded by describe()

    @classmethod
    def available(cls, device: str = "cpu") -> tuple[bool, str]:
        if device_kind(device) == "cpu":
            return True, ""
        if device_kind(device) != "cuda":
            return False, f"unknown device {device!r}"
        if not torch.cuda.is_available():
            return False, "no CUDA GPU is visible to PyTorch (CPU-only build of torch, or no driver)"
        if ":" in device and int(device.split(":", 1)[1]) >= torch.cuda.device_count():
            return False, f"only {torch.cuda.device_count()} CUDA device(s) here"
        return True, ""

    @classmethod
    def unavailable_hint(cls, device: str) -> str | None:
        return "install a CUDA build of torch, or use --device cpu"

    def prepare(self, model: nn.Module, example: torch.Tensor, workdir: str | os.PathLike) -> Callable[[], None]:
        dtype = torch.float16 if self.precision == "fp16" else torch.float32
        model = model.eval().to(self.device, dtype=dtype)
        x = example.to(self.device, dtype=dtype)
        if device_kind(self.device) == "cuda":
            device = torch.device(self.device)

            def run() -> None:
                with torch.inference_mode():
                    model(x)
                torch.cuda.synchronize(device)  # wait for the kernels: latency, not launch time
        else:

            def run() -> None:
                with torch.inference_mode():
                    model(x)

        return run

    def describe(self, device: str | None = None) -> dict:
        device = device or self.device
        cuda = device_kind(device) == "cuda"
        return {
            "name": self.name,
            "execution_provider": "torch-eager-cuda" if cuda else "torch-eager-cpu",
            "threads": torch.get_num_threads(),
            "versions": {"torch": torch.__version__, **({"cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version()} if cuda else {})},
        }
