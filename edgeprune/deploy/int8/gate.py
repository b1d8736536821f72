"""The INT8 gate: does the quantised graph still give the fp32 model's answers on held-out images?

The reference is the fp32 ONNX graph of the same (adapted) model, which itself passed the fp32
parity gate against PyTorch (deploy/parity.py). Element-wise tolerances mean little after
quantisation, so the verdict is the top-1 agreement (what a classifier's user sees), with the
fidelity measures the adapt report uses beside it (top-5 overlap, agreement on the images where
the fp32 model is confident, KL(fp32 || int8); pipeline/fidelity.py).
"""

from __future__ import annotations

import os

import numpy as np

from ...errors import ExportError
from .config import Int8Gate

DEFAULT_GATE = Int8Gate()


def graph_logits(path: str | os.PathLike, inputs: np.ndarray, threads: int | None = None) -> np.ndarray:
    """The first output of the ONNX graph at ``path`` for ``inputs`` (ONNX Runtime, CPU)."""
    from ..ort import ort_session, run_session

    return run_session(ort_session(path, threads=threads), np.ascontiguousarray(inputs, dtype=np.float32))


def int8_verdict(reference: np.ndarray, candidate: np.ndarray, gate: Int8Gate = DEFAULT_GATE, inputs: str = "") -> dict:
    """Fidelity of ``candidate`` (int8) logits against ``reference`` (fp32) logits and the verdict.

    Returns:
        dict(agreement, top5_overlap, confident_images, confident_agreement, kl_original_adapted,
        max_abs_diff, n, inputs, min_agreement, passed, failures).
    Raises:
        ExportError: the shapes differ or there are no inputs.
    """
    import torch

    from ...pipeline.fidelity import fidelity_metrics

    if candidate.shape != reference.shape or reference.ndim != 2 or not len(reference):
        raise ExportError(f"INT8 gate: output shape {candidate.shape} vs the fp32 graph's {reference.shape} (2-D, non-empty expected)")
    metrics = fidelity_metrics(torch.from_numpy(reference.astype(np.float32)), torch.from_numpy(candidate.astype(np.float32)))
    failures = []
    if not metrics["agreement"] >= gate.min_agreement:
        failures.append(f"top-1 agreement with the fp32 model {metrics['agreement']:.1%} < {gate.min_agreement:.0%}")
    return {**metrics, "max_abs_diff": float(np.abs(candidate.astype(np.float64) - reference).max()),
            "n": len(reference), "inputs": inputs, "min_agreement": gate.min_agreement,
            "passed": not failures, "failures": failures}
