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
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..outputs import WRITE_ERRNOS, atomic_path, write_error
from .gate import Int8Gate
from .quantize import QuantSettings, preprocess

DEFAULT_CALIBRATION_IMAGES = 256  # fine-tune images of the stream used to calibrate (at most)


@dataclass(frozen=True)
class Int8Config:
    """How an INT8 graph is made and judged (defaults documented in the README, "INT8 deployment")."""

    settings: QuantSettings = field(default_factory=QuantSettings)
    calibration_images: int = DEFAULT_CALIBRATION_IMAGES
    gate: Int8Gate = field(default_factory=Int8Gate)
    keep_float: tuple[str, ...] = ()  # nodes that stay in float whatever the rule finds
    try_groups: bool = True  # the measured per-op-group speed rule (rule.py)
    max_sensitive_float: int = 16  # nodes the accuracy rule may keep in float (0: none)
    timing: dict = field(default_factory=dict)  # the candidates' latency measurement (budget_s, ...)

    def validate(self) -> "Int8Config":
        from ...errors import UsageError

        self.settings.resolved()  # unknown method
        if self.calibration_images < 1:
            raise UsageError(f"--calibration-images must be >= 1, got {self.calibration_images}")
        if not 0 < self.gate.min_agreement <= 1:
            raise UsageError(f"the INT8 gate's minimum agreement is a fraction in (0, 1], got {self.gate.min_agreement}")
        return self


def build_int8(fp32: str | os.PathLike, out_path: str | os.PathLike, calibration: np.ndarray, held: np.ndarray,
               config: Int8Config = Int8Config(), threads: int | None = None, calibration_source: str = "") -> dict:
    """Quantise the fp32 graph ``fp32`` by the rule and write it to ``out_path`` if it passes the gate.

    Args:
        calibration: normalised (N, C, H, W) calibration inputs; the first
            ``config.calibration_images`` are used.
        held: normalised held-out inputs the gate compares on (never calibration images).
        calibration_source: what the calibration images are, for the record.
    Returns:
        dict(written, path, passed, seconds, calibration {images, source, method, ...},
        keep_float, candidates, fp32, sensitivity, gate, warnings): ``rule.choose``'s record.
    """
    from .rule import choose

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
                        config.max_sensitive_float)
        if record["passed"]:
            _copy(Path(record["path"]), out_path)
    quant = record.pop("quantisation")
    return {**record, "written": record["passed"], "path": str(out_path) if record["passed"] else None,
            "calibration": {"images": quant["calibration_images"], "source": calibration_source, **quant["settings"]},
            "warnings": quant["warnings"], "seconds": time.perf_counter() - started}


def _copy(src: Path, dst: Path) -> None:
    try:
        with atomic_path(dst) as tmp:
            shutil.copyfile(src, tmp)
    except OSError as exc:
        if exc.errno in WRITE_ERRNOS:
            raise write_error(exc, dst) from exc
        raise
