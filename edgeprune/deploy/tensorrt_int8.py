"""An explicitly quantised INT8 TensorRT engine from a symmetric QDQ ONNX graph.

The graph comes from ``deploy/int8`` with ``Int8Config().for_tensorrt()``: calibrated on the
field images, symmetric int8 Q/DQ that TensorRT accepts (``int8/tensorrt_qdq.py``). TensorRT
takes the scales from the Q/DQ layers; no calibrator runs here (TensorRT's calibrators are
deprecated since 10.1 and gone in 11).

TensorRT 10 vs 11 (the loaders are ``tensorrt_build``'s):
* TensorRT 10, weakly typed network: ``BuilderFlag.INT8`` lets the Q/DQ layers run in int8;
  ``BuilderFlag.FP16`` (``fp16=True``) lets the layers left in float (the float-node rule's, the
  pooling, the logits) pick fp16 kernels.
* TensorRT 11 removed the precision flags: the network is strongly typed and the QDQ graph's own
  types decide; the float layers run in the graph's float type (fp32 for edgeprune's graphs;
  ``fp16`` is then recorded as not applied).

Written and type-checked (mypy) against the TensorRT 10 API (``tensorrt-stubs``); the 11 path
follows NVIDIA's migration guide. Neither has run on a GPU yet (README, "TensorRT and the GPU check").
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import BackendError
from .tensorrt_build import DEFAULT_WORKSPACE_GB, ParsedNetwork, build_engine

if TYPE_CHECKING:
    import tensorrt as trt

INT8_ENGINE_FILE = "model.int8.engine"


def build_int8_engine(
    qdq_onnx: str | Path,
    engine_path: str | Path,
    fp16: bool = True,
    timing_cache_path: str | Path | None = None,
    workspace_gb: float = DEFAULT_WORKSPACE_GB,
    batch: int = 1,
) -> Path:
    """Build an INT8 engine (with its device-bound ``.json`` sidecar) from a symmetric QDQ graph.

    Args:
        qdq_onnx: the QDQ graph (``deploy.int8.build.build_int8`` with the TensorRT settings).
        engine_path: where the engine goes (written atomically).
        fp16: TensorRT 10: the float layers may run in fp16 (module docstring).
        timing_cache_path, workspace_gb, batch: as ``build_tensorrt_engine``.
    Returns:
        The engine path; the sidecar records precision "int8", the float layers' precision and
        the number of Q/DQ layers TensorRT parsed.
    Raises:
        BackendUnavailable: tensorrt or CUDA missing. BackendError: the graph has no Q/DQ layers
        (not explicitly quantised) or a build step failed.
    """
    name = Path(qdq_onnx).name
    return build_engine(qdq_onnx, engine_path, lambda config, parsed: set_int8_precision(config, parsed, fp16, name),
                        timing_cache_path, workspace_gb, batch)


def set_int8_precision(config: "trt.IBuilderConfig", parsed: ParsedNetwork, fp16: bool, name: str = "the graph") -> dict:
    """The INT8 flags per TensorRT version (module docstring); what the sidecar records."""
    import tensorrt as trt

    qdq = count_qdq_layers(parsed.network)
    if qdq == 0:
        raise BackendError(f"{name} has no Quantize/Dequantize layers: it is not an explicitly quantised INT8 graph",
                           "build it with `edgeprune export --int8 --tensorrt --images DIR` (symmetric QDQ calibrated on DIR)")
    record = {"precision": "int8", "quantisation": "explicit (Q/DQ)", "qdq_layers": qdq, "fp16_requested": fp16}
    if parsed.strongly_typed:  # TensorRT 11: no flags; the Q/DQ and float types are the graph's
        network = parsed.network
        graph_float = "fp16" if network.num_inputs and network.get_input(0).dtype == trt.float16 else "fp32"
        return record | {"float_layers": graph_float, "flags": []}
    config.set_flag(trt.BuilderFlag.INT8)
    if fp16:
        config.set_flag(trt.BuilderFlag.FP16)
    return record | {"float_layers": "fp16" if fp16 else "fp32", "flags": ["INT8", "FP16"] if fp16 else ["INT8"]}


def count_qdq_layers(network: "trt.INetworkDefinition") -> int:
    """Quantize and Dequantize layers in the parsed network."""
    import tensorrt as trt

    kinds = (trt.LayerType.QUANTIZE, trt.LayerType.DEQUANTIZE)
    return sum(1 for i in range(network.num_layers) if network.get_layer(i).type in kinds)
