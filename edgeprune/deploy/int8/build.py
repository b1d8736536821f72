"""An INT8 graph ready to deploy: pre-processing, the float-node rule, the gate, one atomic file.

``build_int8`` is what ``adapt --deploy-precision int8``, ``export --int8`` and the benchmark run:

    record = build_int8("model.onnx", "model.int8.onnx", calibration, held, Int8Config())

The output file is written only when the chosen graph passes the gate; the record says why not
otherwise (callers raise or fall back, loudly).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from ..ort import DISABLED_OPTIMIZERS
from ..outputs import WRITE_ERRNOS, atomic_path, write_error
from .config import Int8Config
from .quantize import preprocess

DEFAULT_CONFIG = Int8Config()


def build_int8(fp32: str | os.PathLike, out_path: str | os.PathLike, calibration: np.ndarray, held: np.ndarray,
               config: Int8Config = DEFAULT_CONFIG, threads: int | None = None, calibration_source: str = "",
               failed_copy: str | os.PathLike | None = None) -> dict:
    """Quantise the fp32 graph ``fp32`` by the rule and write it to ``out_path`` if it passes the gate.

    Args:
        calibration: normalised (N, C, H, W) calibration inputs; the first
            ``config.calibration_images`` are used.
        held: normalised held-out inputs the gate compares on (never calibration images).
        calibration_source: what the calibration images are, for the record.
        failed_copy: where to copy the chosen graph when it FAILS the gate (a benchmark times it;
            ``record["failed_copy"]``); never ``out_path``.
    Returns:
        dict(written, path, passed, seconds, calibration {images, source, method, ...,
        bias_correction}, keep_float, candidates, fp32, sensitivity, gate, warnings, runtime
        {disabled_optimizers: what an ONNX Runtime session must switch off to run the graph as
        gated}, and for the TensorRT target tensorrt_qdq (``check_tensorrt_qdq``'s summary)):
        ``rule.choose``'s record. The TensorRT target's candidates are not timed (latency None).
    """
    from .rule import choose
    from .tensorrt_qdq import check_tensorrt_qdq

    config.validate()
    started = time.perf_counter()
    settings = config.settings.resolved()
    calib = np.ascontiguousarray(calibration[: config.calibration_images], dtype=np.float32)
    out_path = Path(out_path)
    with tempfile.TemporaryDirectory(prefix="edgeprune-int8-") as scratch:
        work = Path(scratch)
        pre = preprocess(fp32, work / "pre.onnx")
        record = choose(Path(fp32), pre, work, calib, np.asarray(held, dtype=np.float32), settings, config.gate,
                        config.keep_float, config.try_groups, threads, config.timing,
                        config.max_sensitive_float, config.bias_correction)
        if settings.target == "tensorrt":  # before any file is written: the graph must fit TensorRT
            record["tensorrt_qdq"] = check_tensorrt_qdq(record["path"])
        if record["passed"]:
            _copy(Path(record["path"]), out_path)
        elif failed_copy is not None:
            _copy(Path(record["path"]), Path(failed_copy))
            record["failed_copy"] = str(failed_copy)
    quant, corrected = record.pop("quantisation"), record.pop("bias_correction")
    return {**record, "written": record["passed"], "path": str(out_path) if record["passed"] else None,
            "calibration": {"images": quant["calibration_images"], "source": calibration_source, **quant["settings"],
                            "bias_correction": corrected},
            "warnings": quant["warnings"], "runtime": {"disabled_optimizers": list(DISABLED_OPTIMIZERS)},
            "seconds": time.perf_counter() - started}


def _copy(src: Path, dst: Path) -> None:
    try:
        with atomic_path(dst) as tmp:
            shutil.copyfile(src, tmp)
    except OSError as exc:
        if exc.errno in WRITE_ERRNOS:
            raise write_error(exc, dst) from exc
        raise
