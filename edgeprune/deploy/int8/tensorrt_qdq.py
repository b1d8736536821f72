"""Is a QDQ graph one TensorRT can build an explicitly quantised INT8 engine from?

TensorRT quantises symmetrically only: its Q/DQ layers take signed int8 with zero point 0
(weights in [-127, 127]), per-tensor scales for activations and per-channel scales for weights
along the output-channel axis, and it has no int32 DequantizeLinear for biases (they stay float).
``QuantSettings.tensorrt()`` asks ONNX Runtime's quantiser for exactly that; ``tensorrt_qdq_problems``
checks the written graph, so a setting ONNX Runtime ignores or changes is caught here, on the CPU,
rather than by TensorRT's parser on the target.
"""

from __future__ import annotations

import os

import numpy as np

from ...errors import ExportError

QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")
WEIGHTED_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
MIN_OPSET = 13  # per-channel QuantizeLinear/DequantizeLinear (the axis attribute)


def tensorrt_qdq_problems(graph: str | os.PathLike) -> tuple[dict, list[str]]:
    """(summary, problems) of the QDQ graph at ``graph`` for TensorRT; no problems: it fits.

    summary: qdq_nodes, quantised_layers (weighted layers whose weight comes from a
    DequantizeLinear), opset.
    """
    import onnx

    model = onnx.load(str(graph), load_external_data=False)
    init = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    problems = [] if opset >= MIN_OPSET else [f"opset {opset} < {MIN_OPSET} (per-channel Q/DQ needs the axis attribute)"]
    qdq = [n for n in model.graph.node if n.op_type in QDQ_OPS]
    for node in qdq:
        problems += _node_problems(node, init)
    dq_outputs = {n.output[0]: n for n in qdq if n.op_type == "DequantizeLinear"}
    quantised = [n for n in model.graph.node
                 if n.op_type in WEIGHTED_OPS and len(n.input) > 1 and n.input[1] in dq_outputs]
    problems += [p for n in quantised if (p := _axis_problem(n, dq_outputs[n.input[1]], init))]
    if not quantised:
        problems.append("no weighted layer (Conv/Gemm/MatMul) takes a dequantised weight: nothing runs in int8")
    return {"qdq_nodes": len(qdq), "quantised_layers": len(quantised), "opset": int(opset)}, problems


def check_tensorrt_qdq(graph: str | os.PathLike) -> dict:
    """``tensorrt_qdq_problems``'s summary; ExportError listing the problems when there are any."""
    summary, problems = tensorrt_qdq_problems(graph)
    if problems:
        shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
        raise ExportError(f"the INT8 graph for TensorRT is not symmetric int8 QDQ: {shown}",
                          "this is a bug in edgeprune's quantisation settings: please report it")
    return summary


def _node_problems(node, init: dict[str, np.ndarray]) -> list[str]:
    where = f"{node.op_type} {node.name or node.output[0]}"
    if node.domain not in ("", "ai.onnx"):
        return [f"{where} is in domain {node.domain!r}, not the standard ONNX one"]
    problems = []
    zero = init.get(node.input[2]) if len(node.input) > 2 and node.input[2] else None
    if zero is None:  # without a zero point ONNX means uint8
        problems.append(f"{where} has no int8 zero point (uint8 is implied)")
    elif zero.dtype != np.int8 or np.any(zero != 0):
        problems.append(f"{where} zero point is {zero.dtype} {zero.ravel()[:3].tolist()}, not int8 0")
    scale = init.get(node.input[1])
    if scale is not None and scale.size > 1 and node.input[0] not in init:
        problems.append(f"{where} has per-channel scales on an activation (TensorRT: per-tensor only)")
    data = init.get(node.input[0])
    if node.op_type == "DequantizeLinear" and data is not None:
        if data.dtype != np.int8:
            problems.append(f"{where} dequantises a {data.dtype} constant (a quantised bias?): TensorRT takes int8 only")
        elif data.size and int(data.min()) < -127:
            problems.append(f"{where} has weights at -128 (TensorRT's int8 weights are in [-127, 127])")
    return problems


def _axis_problem(layer, dq, init: dict[str, np.ndarray]) -> str | None:
    """A per-channel weight scale must run along the layer's output channels."""
    scale = init.get(dq.input[1])
    if scale is None or scale.size <= 1:
        return None
    axis = next((a.i for a in dq.attribute if a.name == "axis"), 1)
    attrs = {a.name: a.i for a in layer.attribute}
    want = {"Conv": 0, "ConvTranspose": 1, "MatMul": 1, "Gemm": 0 if attrs.get("transB", 0) else 1}[layer.op_type]
    if axis != want:
        return f"{layer.op_type} {layer.name}: per-channel weight scales along axis {axis}, not the output channels ({want})"
    return None
