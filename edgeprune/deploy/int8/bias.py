"""Bias correction: remove the mean shift that rounding the weights to int8 adds to each channel.

Rounding a convolution's weights W to Wq changes its output by conv(x, Wq - W). Its mean over the
field images is a per-channel offset, conv(E[x], Wq - W) averaged over positions (the convolution
is linear, so the mean input map E[x] gives it exactly), and it accumulates through a deep network
of thin layers (EfficientNet-Lite's projection convolutions, with 7-bit weights where
``reduce_range`` applies). Subtracting it from the float bias before quantising removes it
(Nagel et al., "Data-Free Quantization Through Weight Equalization and Bias Correction", ICCV
2019, section 4.2, with the input means measured on the calibration images instead of derived
from BatchNorm). ``Wq`` is read from a graph ONNX Runtime quantised, so it is exactly what runs.

    corrector = BiasCorrector(pre, quantised_all, calibration)
    corrector.write(out, keep_float=("conv3",))   # nodes kept in float keep their own bias
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..outputs import atomic_path

COMPUTE_OPS = ("Conv", "Gemm")


class BiasCorrector:
    """The bias corrections of ``pre`` (fp32, pre-processed) for the weights of ``quantised``.

    Args:
        pre: the fp32 graph that was quantised.
        quantised: its QDQ graph with every compute node quantised (the weights' rounding).
        calibration: normalised (N, C, H, W) inputs whose mean input maps the correction uses.
    """

    def __init__(self, pre: str | os.PathLike, quantised: str | os.PathLike, calibration: np.ndarray,
                 threads: int | None = None):
        import onnx

        self.pre = Path(pre)
        model = onnx.load(str(self.pre), load_external_data=False)
        rounded = quantised_weights(quantised)
        nodes = [n for n in model.graph.node if n.name in rounded]
        means = mean_inputs(self.pre, calibration, sorted({n.input[0] for n in nodes}), threads)
        weights = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
        self.shifts = {n.name: _shift(n, weights[n.input[1]], rounded[n.name], means[n.input[0]]) for n in nodes}
        self.images = len(calibration)

    def write(self, out_path: str | os.PathLike, keep_float: tuple[str, ...] | list[str] = ()) -> Path:
        """``pre`` with every quantised node's bias corrected (not those in ``keep_float``), atomically."""
        import onnx

        model = onnx.load(str(self.pre), load_external_data=False)
        init = {t.name: t for t in model.graph.initializer}
        skip = set(keep_float)
        for node in model.graph.node:
            shift = self.shifts.get(node.name)
            if shift is None or node.name in skip:
                continue
            if len(node.input) > 2 and node.input[2] in init:
                bias = onnx.numpy_helper.to_array(init[node.input[2]]).astype(np.float64)
                init[node.input[2]].CopyFrom(onnx.numpy_helper.from_array((bias - shift).astype(np.float32), node.input[2]))
            else:  # no bias yet (or one computed at run time, which quantisation does not produce)
                name = f"{node.name}/corrected_bias"
                model.graph.initializer.append(onnx.numpy_helper.from_array((-shift).astype(np.float32), name))
                while len(node.input) < 3:
                    node.input.append("")
                node.input[2] = name
        out_path = Path(out_path)
        with atomic_path(out_path) as tmp:
            onnx.save(model, str(tmp))
        return out_path

    def summary(self) -> dict:
        """What the report says: how many nodes, on how many images, the largest mean shifts."""
        size = {n: float(np.abs(s).mean()) for n, s in self.shifts.items()}
        top = sorted(size.items(), key=lambda kv: -kv[1])[:5]
        return {"nodes": len(self.shifts), "images": self.images,
                "largest_mean_abs_shift": [{"name": n, "mean_abs_shift": v} for n, v in top]}


def quantised_weights(graph: str | os.PathLike) -> dict[str, np.ndarray]:
    """Node name -> the dequantised weight of each Conv/Gemm of a QDQ graph (what runs)."""
    import onnx

    model = onnx.load(str(graph), load_external_data=False)
    init = {t.name: t for t in model.graph.initializer}
    dq = {n.output[0]: n for n in model.graph.node if n.op_type == "DequantizeLinear"}
    out = {}
    for node in model.graph.node:
        d = dq.get(node.input[1]) if node.op_type in COMPUTE_OPS and len(node.input) > 1 else None
        if d is None or d.input[0] not in init:
            continue
        q = onnx.numpy_helper.to_array(init[d.input[0]]).astype(np.float64)
        scale = onnx.numpy_helper.to_array(init[d.input[1]]).astype(np.float64)
        zero = (onnx.numpy_helper.to_array(init[d.input[2]]).astype(np.float64)
                if len(d.input) > 2 and d.input[2] in init else np.zeros_like(scale))
        shape = [1] * q.ndim
        if scale.ndim:  # per channel along the DequantizeLinear's axis
            shape[next((a.i for a in d.attribute if a.name == "axis"), 1)] = -1
        out[node.name] = (q - zero.reshape(shape)) * scale.reshape(shape)
    return out


def mean_inputs(graph: Path, inputs: np.ndarray, tensors: list[str], threads: int | None = None) -> dict[str, np.ndarray]:
    """Tensor name -> its mean over ``inputs`` (one map per tensor, the batch averaged out)."""
    import onnx

    from ..ort import ort_session
    from .quantize import reader_for

    model = onnx.load(str(graph), load_external_data=False)
    present = {o.name for o in model.graph.output}
    model.graph.output.extend(onnx.helper.make_empty_tensor_value_info(t) for t in tensors if t not in present)
    augmented = graph.with_name(graph.stem + ".means.onnx")
    onnx.save(model, str(augmented))
    session = ort_session(augmented, threads=threads)
    reader = reader_for(inputs, graph)  # the graph's fixed batch
    sums: list = [0.0] * len(tensors)
    count = 0
    while (feed := reader.get_next()) is not None:
        outs = session.run(tensors, feed)
        sums = [s + o.astype(np.float64).sum(0) for s, o in zip(sums, outs)]
        count += len(next(iter(feed.values())))
    augmented.unlink()
    return {t: s / count for t, s in zip(tensors, sums)}


def _shift(node, weight: np.ndarray, rounded: np.ndarray, mean_input: np.ndarray) -> np.ndarray:
    """The per-channel mean of (Wq - W) applied to the mean input of ``node``."""
    import torch
    import torch.nn.functional as F

    delta = torch.from_numpy(rounded - weight.astype(np.float64))
    x = torch.from_numpy(np.asarray(mean_input, dtype=np.float64))
    attrs = {a.name: a for a in node.attribute}
    if node.op_type == "Gemm":  # y = x @ W^T + b (the exporter's Linear); other layouts are left alone
        trans_b = attrs["transB"].i if "transB" in attrs else 0
        trans_a = attrs["transA"].i if "transA" in attrs else 0
        if trans_a or not trans_b:
            return np.zeros(weight.shape[1 if not trans_b else 0])
        return (delta @ x.reshape(-1)).numpy()
    pads = list(attrs["pads"].ints) if "pads" in attrs else [0] * 4
    strides = list(attrs["strides"].ints) if "strides" in attrs else [1, 1]
    dilations = list(attrs["dilations"].ints) if "dilations" in attrs else [1, 1]
    if x.ndim != 3 or len(pads) != 4 or ("auto_pad" in attrs and attrs["auto_pad"].s not in (b"NOTSET", b"")):
        return np.zeros(weight.shape[0])  # not a 2-D convolution with explicit padding: left uncorrected
    padded = F.pad(x[None], (pads[1], pads[3], pads[0], pads[2]))
    group = attrs["group"].i if "group" in attrs else 1
    return F.conv2d(padded, delta, stride=strides, dilation=dilations, groups=group)[0].mean((1, 2)).numpy()
