"""The one parity gate: does an exported artifact compute what the model it came from computes?

In the spirit of Polygraphy's comparator (``polygraphy run --onnxrt --atol --rtol``): both
sides run on the same inputs, the outputs are compared element-wise, and the result is a set of
error statistics plus a pass/fail verdict. ``adapt``, ``export`` and the GPU check all use it,
so an artifact means the same thing whichever command wrote it.

The verdict: every element within ``atol + rtol * max|reference|`` (one tolerance scaled by the
logits' range, because logits of different models differ by orders of magnitude) and the
top-1 class agreeing on at least ``min_top1`` of the inputs (what a classifier's user sees).
"""

from __future__ import annotations

import copy
import os
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from ..errors import ExportError

REFERENCE_CHUNK = 32  # images per eager reference forward (bounds its peak memory)
PARITY_IMAGES = 256  # held-out images a parity check uses at most


@dataclass(frozen=True)
class ParityGate:
    """Tolerances of the parity verdict (see the module docstring)."""

    atol: float = 1e-3
    rtol: float = 1e-3
    min_top1: float = 0.99


FP32_GATE = ParityGate()  # fp32 graph vs fp32 eager model: only kernel rounding differs
# Half-precision engines round every activation to 11 significant bits; the gate keeps the top-1
# requirement and widens the element tolerance. Not yet checked on a GPU (README, GPU check).
FP16_GATE = ParityGate(atol=1e-2, rtol=1e-2, min_top1=0.99)


def compare_outputs(reference: np.ndarray, candidate: np.ndarray, gate: ParityGate = FP32_GATE,
                    inputs: str = "") -> dict:
    """Error statistics of ``candidate`` against ``reference`` and the gate's verdict.

    Args:
        reference, candidate: outputs for the same inputs, same shape; 2-D (N, classes) outputs
            also get a top-1 agreement (other shapes count as agreeing).
        gate: the tolerances.
        inputs: what the inputs were (recorded in the result, e.g. "12 held-out images").
    Returns:
        dict(max_abs_diff, mean_abs_diff, median_abs_diff, max_rel_diff, max_abs_ref, top1_agreement,
        n, inputs, atol, rtol, min_top1, tolerance, passed, failures): ``failures`` lists in words
        what failed (empty when passed).
    Raises:
        ExportError: the shapes differ.
    """
    if candidate.shape != reference.shape:
        raise ExportError(f"output shape {candidate.shape} differs from the reference's {reference.shape}")
    ref = reference.astype(np.float64)
    diff = np.abs(candidate.astype(np.float64) - ref)
    max_ref = float(np.abs(ref).max()) if ref.size else 0.0
    tolerance = gate.atol + gate.rtol * max_ref
    top1 = float(np.mean(candidate.argmax(-1) == reference.argmax(-1))) if reference.ndim == 2 and len(reference) else 1.0
    stats = {
        "max_abs_diff": float(diff.max()) if diff.size else 0.0,
        "mean_abs_diff": float(diff.mean()) if diff.size else 0.0,
        "median_abs_diff": float(np.median(diff)) if diff.size else 0.0,
        "max_rel_diff": float((diff / np.maximum(np.abs(ref), 1e-12)).max()) if diff.size else 0.0,
        "max_abs_ref": max_ref,
        "top1_agreement": top1,
        "n": int(reference.shape[0]) if reference.ndim else 1,
        "inputs": inputs,
        **asdict(gate),
        "tolerance": tolerance,
    }
    failures = []
    if stats["max_abs_diff"] > tolerance:
        failures.append(f"max |diff| {stats['max_abs_diff']:.3g} > {gate.atol:g} + {gate.rtol:g} * {max_ref:.3g}")
    if top1 < gate.min_top1:
        failures.append(f"top-1 agreement {top1:.1%} < {gate.min_top1:.0%}")
    return {**stats, "passed": not failures, "failures": failures}


def check_parity(
    model: nn.Module,
    onnx_path: str | os.PathLike,
    inputs: torch.Tensor,
    gate: ParityGate = FP32_GATE,
    device: str = "cpu",
    inputs_label: str = "",
    raise_on_mismatch: bool = False,
) -> dict:
    """Compare the PyTorch model (fp32, CPU, eval) and its ONNX graph (ONNX Runtime on ``device``).

    Args:
        inputs: (N, C, H, W); a graph with a fixed batch is fed in chunks (N a multiple of it).
        inputs_label: what the inputs are, for the result ("256 held-out images", "random ...").
        raise_on_mismatch: raise ExportError instead of returning a failed result.
    Returns:
        ``compare_outputs``'s dict (reference = PyTorch, candidate = ONNX Runtime).
    """
    from .ort import ort_session, run_session

    x = inputs.detach().float().cpu()
    got = run_session(ort_session(onnx_path, device=device), x.numpy())
    result = compare_outputs(eager_outputs(model, x), got, gate, inputs_label or f"{len(x)} inputs")
    if raise_on_mismatch and not result["passed"]:
        raise ExportError(f"ONNX parity failed on {result['inputs']}: {'; '.join(result['failures'])}",
                          "try another exporter or opset; the PyTorch model itself is unaffected")
    return result


def eager_outputs(model: nn.Module, x: torch.Tensor) -> np.ndarray:
    """The model's fp32 CPU outputs for ``x``, in chunks; the caller's model is left as it was."""
    first = next(iter(model.parameters()), None)
    if first is not None and (first.device.type != "cpu" or first.dtype != torch.float32):
        model = copy.deepcopy(model).float().cpu()  # the reference is fp32 on CPU; leave theirs alone
    was_training = model.training
    try:
        with torch.no_grad():  # in chunks: one 256-image batch at 224 px costs gigabytes of activations
            return np.concatenate([model.eval()(c).numpy() for c in torch.split(x, REFERENCE_CHUNK)])
    finally:
        model.train(was_training)


def fit_to_batch(x: torch.Tensor, batch: int, dynamic_batch: bool) -> torch.Tensor:
    """``x`` trimmed (or repeated, when fewer) to a multiple of a static graph's ``batch``."""
    if dynamic_batch or not len(x) or len(x) % batch == 0:
        return x
    if len(x) >= batch:
        return x[: (len(x) // batch) * batch]
    return x.repeat(batch, 1, 1, 1)[:batch]
