"""The latency-backend interface and its registry."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from ...errors import BackendUnavailable, UsageError
from ...registry import Registry

PRECISIONS = ("fp32", "fp16", "int8")


class LatencyBackend:
    """Runs one inference of a model variant, for timing.

    A backend object is built for one device and precision (``get_backend``); ``prepare`` turns
    each model variant into a zero-argument callable that runs ONE inference and returns only
    when its result is ready (so wall-clock timing around it is the latency).
    """

    name = "base"
    devices: tuple[str, ...] = ("cpu",)  # device kinds this backend can use ("cpu", "cuda")
    int8_devices: tuple[str, ...] = ()  # device kinds where it times INT8 graphs

    def __init__(self, device: str = "cpu", precision: str = "fp32", threads: int | None = None):
        """Args:
            device: "cpu", "cuda" or "cuda:N".
            precision: "fp32", "fp16" or "int8".
            threads: CPU threads for inference (None = the backend's choice, recorded by describe).
        Raises:
            UsageError: unknown precision, or a precision this backend cannot run on ``device``.
            BackendUnavailable: the backend cannot run on ``device`` here.
        """
        if precision not in PRECISIONS:
            raise UsageError(f"unknown precision {precision!r}", f"choose from {', '.join(PRECISIONS)}")
        if threads is not None and threads < 1:
            raise UsageError(f"threads must be >= 1, got {threads}")
        ok, reason = self.available(device)
        if not ok:
            raise BackendUnavailable(f"the {self.name} backend cannot run on {device}: {reason}", self.unavailable_hint(device))
        if precision == "fp16" and device_kind(device) == "cpu":
            raise UsageError(
                f"fp16 latency on the CPU is not supported by the {self.name} backend",
                "CPUs run half precision through slow emulation; profile with --precision fp32 on CPU, fp16 on a GPU",
            )
        if precision == "int8" and device_kind(device) not in self.int8_devices:
            raise UsageError(
                f"INT8 latency is not measured by the {self.name} backend on {device}",
                "profile INT8 with --backend onnxruntime --device cpu (static QDQ) or --backend tensorrt --device cuda",
            )
        self.device = device
        self.precision = precision
        self.threads = threads

    @classmethod
    def available(cls, device: str = "cpu") -> tuple[bool, str]:
        """(True, "") when this backend can run on ``device`` here, else (False, why)."""
        if device_kind(device) not in cls.devices:
            return False, f"it runs on {', '.join(cls.devices)} only"
        return True, ""

    @classmethod
    def unavailable_hint(cls, device: str) -> str | None:
        return "use --backend onnxruntime or torch, or --device cpu"

    def prepare(self, model: nn.Module, example: torch.Tensor, workdir: str | os.PathLike) -> Callable[[], None]:
        """Make ``model`` ready to run and return a callable running one inference on ``example``.

        Args:
            model: the variant (eval mode; it may be moved or converted: pass a copy).
            example: the input batch (CPU, float32).
            workdir: a folder for this variant's files (ONNX graph, engine); it exists.
        Returns:
            A zero-argument callable; each call runs one inference and waits for it.
        """
        raise NotImplementedError

    def plan_timing(self, timing: dict) -> None:
        """The profile's timing settings (budget_s, warmup_s, min_repeats, seed), given before the
        first ``prepare``: a backend that measures something of its own while preparing sizes it
        from them (optional)."""

    def describe(self, device: str | None = None) -> dict:
        """What runs the inference, for the profile: ``{"name", "execution_provider", "versions", ...}``."""
        raise NotImplementedError

    def close(self) -> None:
        """Release sessions/engines (optional)."""


BACKENDS: Registry[type[LatencyBackend]] = Registry("latency backend")


def device_kind(device: str) -> str:
    """"cuda:1" -> "cuda"; "CPU" -> "cpu"."""
    return device.split(":", 1)[0].lower()


def get_backend(name: str, device: str = "cpu", precision: str = "fp32", threads: int | None = None) -> LatencyBackend:
    """Build the latency backend ``name`` for ``device`` and ``precision``.

    Raises:
        UsageError: unknown backend name or precision (the error lists the choices).
        BackendUnavailable: the backend cannot run on this machine (the message says why).
    """
    if device_kind(device) not in ("cpu", "cuda"):
        raise UsageError(f"unknown device {device!r}", "choose cpu, cuda or cuda:N")
    return BACKENDS.get(name)(device=device, precision=precision, threads=threads)


def workdir_for(root: str | os.PathLike, tag: str) -> Path:
    """A fresh subfolder of ``root`` for one variant's files."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in tag) or "variant"
    path = Path(root) / safe
    path.mkdir(parents=True, exist_ok=True)
    return path
