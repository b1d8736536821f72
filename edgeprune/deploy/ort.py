"""ONNX Runtime: execution providers, sessions, batched runs, and the one latency measurement.

``measure_onnx_latency`` is how edgeprune times ONNX graphs everywhere (adapt's measured saving,
``edgeprune eval``, the benchmark): the same session options, the same interleaved timing.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable, Mapping

import numpy as np
import torch
from torch import nn

from ..errors import BackendUnavailable, ExportError, UsageError
from ..latency.timing import Stats, measure_interleaved

# Device -> execution providers, best first (like Model-Optimizer's ort_client mapping).
EXECUTION_PROVIDERS: dict[str, tuple[str, ...]] = {
    "cpu": ("CPUExecutionProvider",),
    "cuda": ("CUDAExecutionProvider",),
    "tensorrt": ("TensorrtExecutionProvider", "CUDAExecutionProvider"),
}


def execution_providers(device: str = "cpu") -> list[str]:
    """The ONNX Runtime execution providers for ``device`` ("cpu", "cuda", "tensorrt").

    Raises:
        UsageError: unknown device.
        BackendUnavailable: the provider is not in this onnxruntime build (no silent fallback to
            CPU: a profile recorded on the CPU would be mistaken for a GPU one).
    """
    import onnxruntime as ort

    key = device.split(":")[0].lower()
    if key not in EXECUTION_PROVIDERS:
        raise UsageError(f"unknown onnxruntime device {device!r}", f"choose from {', '.join(EXECUTION_PROVIDERS)}")
    wanted = EXECUTION_PROVIDERS[key]
    have = ort.get_available_providers()
    if wanted[0] not in have:
        raise BackendUnavailable(
            f"onnxruntime here has no {wanted[0]} (available: {', '.join(have)})",
            "pip uninstall onnxruntime && pip install onnxruntime-gpu (with a matching CUDA), or use --device cpu",
        )
    providers = [p for p in wanted if p in have]
    if key != "cpu":
        providers.append("CPUExecutionProvider")  # for the few ops a GPU provider lacks (shape ops)
    return providers


# ONNX Runtime (>= 1.20) quantises the weights of a float Conv/Gemm fed by a DequantizeLinear itself,
# per tensor, at load time: the nodes an INT8 graph keeps in float would run in int8 (depthwise
# convolutions then lose most of their precision). Off in every session (no effect on fp32 graphs).
DISABLED_OPTIMIZERS = ["WeightBiasQuantization"]


def ort_session(path: str | os.PathLike, device: str = "cpu", threads: int | None = None, spinning: bool = False):
    """An ONNX Runtime inference session for ``path`` on ``device``.

    Args:
        path: the .onnx file.
        device: "cpu", "cuda" or "cuda:N", or "tensorrt" (TensorRT execution provider).
        threads: intra-op threads (CPU); None lets onnxruntime choose (all physical cores).
        spinning: let idle worker threads spin. Off by default: when several sessions are timed
            in turn (a profile), spinning threads of one session steal cores from the next
            (several times slower: docs/benchmarks/design_measurements.md, "ONNX Runtime idle
            threads").
    Returns:
        ``onnxruntime.InferenceSession``.
    Raises:
        BackendUnavailable: the device's execution provider is missing.
        ExportError: onnxruntime cannot load the graph.
    """
    import onnxruntime as ort

    providers = execution_providers(device)
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.inter_op_num_threads = 1
    if threads:
        opts.intra_op_num_threads = int(threads)
    opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    opts.log_severity_level = 3  # errors only: no console chatter from library code
    provider_options = None
    if ":" in device:
        idx = device.split(":", 1)[1]
        provider_options = [{"device_id": idx} if p != "CPUExecutionProvider" else {} for p in providers]
    try:
        return ort.InferenceSession(str(path), sess_options=opts, providers=providers, provider_options=provider_options,
                                    disabled_optimizers=DISABLED_OPTIMIZERS)
    except Exception as exc:
        raise ExportError(f"onnxruntime cannot load {path}: {str(exc).strip().splitlines()[0][:300]}") from None


def run_session(session, inputs: np.ndarray) -> np.ndarray:
    """The first output of ``session`` for ``inputs`` (N, ...); a graph with a fixed batch is fed
    in chunks of that batch.

    Raises:
        UsageError: N is not a multiple of the graph's fixed batch.
    """
    inp = session.get_inputs()[0]
    fixed = inp.shape[0] if isinstance(inp.shape[0], int) else None
    if fixed is not None and len(inputs) % fixed:
        raise UsageError(f"the graph has a fixed batch of {fixed}; give a multiple of it ({len(inputs)} inputs)")
    chunks = [inputs] if fixed is None else np.split(inputs, len(inputs) // fixed)
    return np.concatenate([session.run(None, {inp.name: np.ascontiguousarray(c)})[0] for c in chunks])


def measure_onnx_latency(
    variants: Mapping[str, nn.Module | str | os.PathLike],
    example: torch.Tensor,
    threads: int | None = None,
    device: str = "cpu",
    progress: Callable[[int, int], None] | None = None,
    **timing,
) -> dict[str, Stats]:
    """Latency of each variant on ONNX Runtime, measured together in interleaved rounds.

    Args:
        variants: name -> an ``.onnx`` path, or a module (exported to a scratch folder first).
        example: the input every variant runs on (its batch is the measured batch).
        threads: intra-op threads per session (None: onnxruntime's choice).
        device: "cpu" (host input) or "cuda"/"tensorrt" providers (input copied per run).
        progress: ``progress(done, total)`` of the timed rounds.
        timing: passed to ``latency.timing.measure_interleaved`` (budget_s, warmup_s, ...).
    Returns:
        name -> ``Stats`` (median, p90/p95/p99, robust CV, runs).
    """
    from .onnx_export import export_onnx

    feed = example.detach().cpu().numpy()
    with tempfile.TemporaryDirectory(prefix="edgeprune-latency-") as scratch:
        runners = {}
        for i, (name, variant) in enumerate(variants.items()):
            path = variant if not isinstance(variant, nn.Module) else export_onnx(variant, example, Path(scratch) / f"v{i}.onnx")
            session = ort_session(path, device=device, threads=threads)
            runners[name] = _runner(session, feed)
        return measure_interleaved(runners, progress=progress, **timing)


def _runner(session, feed: np.ndarray) -> Callable[[], None]:
    feeds = {session.get_inputs()[0].name: feed}
    return lambda: session.run(None, feeds)
