"""One static QDQ quantisation of an ONNX graph with ONNX Runtime, calibrated on given inputs.

Calibration is test-time: the inputs are the field images (adapt: the stream's fine-tune images;
``export --int8``: a folder), so the activation ranges are the ones the deployed model will see.
``onnxruntime.quantization`` needs only onnx, numpy and (for the symbolic shape inference of the
pre-processing) sympy, all of which the base install already brings.

Defaults follow ONNX Runtime's guidance for CPU inference (``quantize_static``'s docstring): QDQ
format, uint8 activations with int8 weights, per-channel weights, and ``reduce_range`` (7-bit
weights) on x86 CPUs without a VNNI dot-product instruction, where 8-bit products can saturate.
"""

from __future__ import annotations

import contextlib
import inspect
import io
import logging
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from onnxruntime.quantization import CalibrationDataReader

from ...errors import ExportError, UsageError
from ..outputs import WRITE_ERRNOS, atomic_path, write_error
from .config import QuantSettings

DEFAULT_SETTINGS = QuantSettings()


class ArrayCalibrationReader(CalibrationDataReader):
    """ONNX Runtime's calibration reader over an (N, C, H, W) float32 array.

    Yields the inputs in chunks of the graph's fixed batch (``batch``); a tail shorter than a batch
    is dropped. ``set_range`` (ONNX Runtime's strided calibration) limits it to a slice of the
    batches, so the calibrator keeps the activations of one stride at a time, not of all images.
    ``served`` counts the images handed out (the report's calibration count).
    """

    def __init__(self, inputs: np.ndarray, input_name: str, batch: int = 1):
        if inputs.ndim != 4 or len(inputs) < batch:
            raise UsageError(f"calibration needs at least {batch} image(s) of shape (C, H, W); got an array of shape {inputs.shape}")
        self.inputs, self.input_name, self.batch = np.ascontiguousarray(inputs, dtype=np.float32), input_name, int(batch)
        self.served = 0
        self._next, self._end = 0, len(self)

    def __len__(self) -> int:
        """Batches available."""
        return len(self.inputs) // self.batch

    def set_range(self, start_index: int, end_index: int) -> None:
        self._next, self._end = int(start_index), min(int(end_index), len(self))

    def get_next(self) -> dict | None:
        if self._next >= self._end:
            return None
        start = self._next * self.batch
        self._next += 1
        self.served += self.batch
        return {self.input_name: self.inputs[start:start + self.batch]}


def reader_for(inputs: np.ndarray, graph: Path) -> ArrayCalibrationReader:
    """A reader for ``graph``'s input name and fixed batch."""
    import onnx

    model = onnx.load(str(graph), load_external_data=False)
    inp = model.graph.input[0]
    dim0 = inp.type.tensor_type.shape.dim[0] if inp.type.tensor_type.shape.dim else None
    batch = dim0.dim_value if dim0 is not None and dim0.HasField("dim_value") and dim0.dim_value > 0 else 1
    return ArrayCalibrationReader(inputs, inp.name, batch)


def preprocess(fp32_path: str | os.PathLike, out_path: str | os.PathLike) -> Path:
    """ONNX Runtime's quantisation pre-processing (symbolic shape inference, graph optimisation),
    written atomically. Its output is still an fp32 graph computing the same function."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    out_path = Path(out_path)
    try:
        with quiet_logs(), atomic_path(out_path) as tmp:
            quant_pre_process(str(fp32_path), str(tmp), skip_symbolic_shape=False)
    except OSError as exc:
        if exc.errno in WRITE_ERRNOS:
            raise write_error(exc, out_path) from exc
        raise ExportError(f"INT8 pre-processing of {fp32_path} failed: {exc}") from None
    except Exception as exc:  # onnx/onnxruntime raise many types on a graph they cannot handle
        raise ExportError(f"INT8 pre-processing of {fp32_path} failed: {type(exc).__name__}: {_first_line(exc)}") from None
    return out_path


def quantise(
    graph: str | os.PathLike,
    out_path: str | os.PathLike,
    calibration: np.ndarray,
    settings: QuantSettings = DEFAULT_SETTINGS,
    keep_float: Iterable[str] = (),
    cache: str | os.PathLike | None = None,
) -> dict:
    """Quantise ``graph`` (a pre-processed fp32 ONNX file) to a QDQ INT8 graph at ``out_path``.

    Args:
        calibration: (N, C, H, W) float32 inputs, normalised as the model expects.
        settings: method, per-channel weights, reduce_range (``QuantSettings``).
        keep_float: node names that stay in float (not quantised).
        cache: a JSON calibration cache (ONNX Runtime >= 1.2x's ``calibration_cache_path``):
            written on first use, read afterwards, so several quantisations of one graph with
            different float nodes calibrate once. Ignored by an onnxruntime without it.
    Returns:
        dict(path, calibration_images, settings, keep_float, warnings): ``warnings`` holds the
        messages onnxruntime logged (e.g. a bias that does not fit int32).
    Raises:
        UsageError: an unknown method or too few inputs. ExportError: quantisation failed.
        OutputError: the file cannot be written.
    """
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    s = settings.resolved()
    reader = reader_for(calibration, Path(graph))
    method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
              "percentile": CalibrationMethod.Percentile}[s.method]
    types = {"uint8": QuantType.QUInt8, "int8": QuantType.QInt8}
    kwargs = dict(quant_format=QuantFormat.QDQ, per_channel=s.per_channel, reduce_range=bool(s.reduce_range),
                  activation_type=types[s.activation_type], weight_type=types[s.weight_type],
                  nodes_to_exclude=sorted(set(keep_float)), calibrate_method=method,
                  extra_options=_extra_options(s, len(reader)))
    if s.op_types:
        kwargs["op_types_to_quantize"] = list(s.op_types)
    if cache is not None and "calibration_cache_path" in inspect.signature(quantize_static).parameters:
        kwargs["calibration_cache_path"] = str(cache)
    out_path = Path(out_path)
    logged: list[str] = []
    try:
        with quiet_logs(logged), atomic_path(out_path) as tmp:
            quantize_static(str(graph), str(tmp), reader, **kwargs)
    except OSError as exc:
        if exc.errno in WRITE_ERRNOS:
            raise write_error(exc, out_path) from exc
        raise ExportError(f"INT8 quantisation of {graph} failed: {exc}") from None
    except Exception as exc:
        raise ExportError(f"INT8 quantisation of {graph} failed: {type(exc).__name__}: {_first_line(exc)}") from None
    return {"path": str(out_path), "calibration_images": reader.served, "settings": s.to_dict(),
            "keep_float": sorted(set(keep_float)), "warnings": _dedupe(logged)}


CALIBRATION_STRIDE = 16  # batches whose activations the calibrator holds at once


def _extra_options(s: QuantSettings, batches: int) -> dict:
    """quantize_static's extra_options for ``s``; the stride bounds the calibrator's memory."""
    options: dict = {"CalibStridedMinMax": _stride(batches)}
    if s.symmetric:  # zero point 0 for activations too (weights are symmetric by default)
        options |= {"ActivationSymmetric": True, "WeightSymmetric": True}
    if not s.quantize_bias:  # float biases: no int32 DequantizeLinear (TensorRT has none)
        options["QuantizeBias"] = False
    if not s.quantize_outputs:
        options["OpTypesToExcludeOutputQuantization"] = list(s.op_types)
    return options


def _stride(batches: int) -> int:
    """The largest divisor of ``batches`` up to CALIBRATION_STRIDE (ONNX Runtime requires one).

    Not ``CalibMaxIntermediateOutputs``: in onnxruntime 1.32 the MinMax calibrator drops (never
    merges) the outputs collected when that limit is reached.
    """
    return max(d for d in range(1, min(batches, CALIBRATION_STRIDE) + 1) if batches % d == 0)


def depthwise_convs(graph: str | os.PathLike) -> list[str]:
    """Names of the depthwise convolutions (Conv with group == input channels > 1) of ``graph``."""
    import onnx

    model = onnx.load(str(graph), load_external_data=False)
    weights = {t.name: list(t.dims) for t in model.graph.initializer}
    out = []
    for node in model.graph.node:
        if node.op_type != "Conv":
            continue
        group = next((a.i for a in node.attribute if a.name == "group"), 1)
        shape = weights.get(node.input[1]) if len(node.input) > 1 else None
        if group > 1 and shape is not None and shape[1] == 1:  # one input channel per group
            out.append(node.name)
    return out


def float_ops(graph: str | os.PathLike) -> dict[str, str]:
    """Node name -> op type of the compute nodes that are NOT quantised in a QDQ ``graph``
    (Conv/Gemm/MatMul whose weight does not come from a DequantizeLinear)."""
    import onnx

    model = onnx.load(str(graph), load_external_data=False)
    dq_outputs = {o for n in model.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    return {n.name: n.op_type for n in model.graph.node
            if n.op_type in ("Conv", "Gemm", "MatMul") and len(n.input) > 1 and n.input[1] not in dq_outputs}


@contextlib.contextmanager
def quiet_logs(sink: list[str] | None = None):
    """onnxruntime.quantization logs through the root logger (and prints); library code must not.
    The messages are collected into ``sink`` instead."""

    class _Collect(logging.Handler):
        def emit(self, record):
            if sink is not None:
                sink.append(record.getMessage())

    root = logging.getLogger()
    handler, old_level, old_handlers = _Collect(), root.level, root.handlers[:]
    root.handlers = [handler]
    root.setLevel(logging.WARNING)
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # the histogram calibrators print()
            yield
    finally:
        root.handlers = old_handlers
        root.setLevel(old_level)


def _dedupe(messages: list[str], limit: int = 20) -> list[str]:
    seen: dict[str, None] = {}
    for m in messages:
        seen.setdefault(m.strip().splitlines()[0][:300], None)
    return list(seen)[:limit]


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else ""
