"""TensorRT engine building as small composable steps (in the spirit of Polygraphy's loaders):
network from ONNX -> builder config -> timing cache -> serialized engine -> files.

Every TensorRT call that reports failure through its return value is checked and turned into a
``BackendError`` that says which step failed. The code is written and type-checked (mypy) against
the TensorRT 10 API (``tensorrt-stubs``) and has not run on a GPU yet (README, "GPU check").

TensorRT 10 vs 11:
* TensorRT 10 (weakly typed network): fp16 = ``BuilderFlag.FP16`` on an fp32 graph.
* TensorRT 11 removed the precision flags: every network is strongly typed and the precision is
  the graph's own, so an fp16 engine needs a graph exported from a half-precision model
  (``needs_half_graph()`` tells callers which).
* ``NetworkDefinitionCreationFlag.STRONGLY_TYPED`` is set only where the FP16 flag is gone
  (TensorRT 11 accepts and ignores it; on 10 it would forbid the FP16 flag).
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, Callable

from ..errors import BackendError, BackendUnavailable
from .outputs import atomic_write

if TYPE_CHECKING:
    import tensorrt as trt

DEFAULT_WORKSPACE_GB = 2.0
SIDECAR_FORMAT = "edgeprune.tensorrt-engine"
SIDECAR_VERSION = 2  # 2: device fingerprint checked on load; TensorRT 10/11 typing recorded


# ------------------------------------------------------------------ availability
def tensorrt_status() -> tuple[bool, str]:
    """(usable, reason): TensorRT needs its Python package (not only its type stubs) and a CUDA GPU."""
    try:
        import tensorrt
    except ImportError:
        return False, "the tensorrt Python package is not installed (pip install tensorrt, on a machine with an NVIDIA GPU)"
    except Exception as exc:  # e.g. libnvinfer missing or mismatched
        return False, f"the tensorrt package does not load: {type(exc).__name__}: {str(exc)[:200]}"
    if not hasattr(tensorrt, "Builder"):  # tensorrt-stubs alone make an empty namespace package
        return False, "only TensorRT's type stubs are installed, not TensorRT (pip install tensorrt, on a machine with an NVIDIA GPU)"
    import torch

    if not torch.cuda.is_available():
        return False, "no CUDA GPU is visible to PyTorch (TensorRT needs one; check the driver and a CUDA build of torch)"
    return True, f"tensorrt {tensorrt.__version__}"


def tensorrt_available() -> bool:
    """True when TensorRT can build and run engines here (package + CUDA GPU)."""
    return tensorrt_status()[0]


def require_tensorrt() -> ModuleType:
    """The tensorrt module, or BackendUnavailable saying why it cannot be used here."""
    ok, reason = tensorrt_status()
    if not ok:
        raise BackendUnavailable(f"TensorRT is unavailable: {reason}", "use --backend onnxruntime or torch")
    import tensorrt

    return tensorrt


_LOGGER: Any = None


def trt_logger() -> "trt.ILogger":
    """The process-wide TensorRT logger (errors only); TensorRT warns when several are created."""
    global _LOGGER
    import tensorrt as trt

    if _LOGGER is None:
        _LOGGER = trt.Logger(trt.Logger.ERROR)
    return _LOGGER


def needs_half_graph() -> bool:
    """True on TensorRT 11+: no FP16 builder flag, so an fp16 engine needs an fp16 ONNX graph."""
    import tensorrt as trt

    return not hasattr(trt.BuilderFlag, "FP16")


# ------------------------------------------------------------------ loaders
@dataclass
class ParsedNetwork:
    """A network definition with the builder and parser that must outlive it."""

    builder: "trt.Builder"
    network: "trt.INetworkDefinition"
    parser: "trt.OnnxParser"
    strongly_typed: bool


def network_from_onnx(onnx_path: Path) -> ParsedNetwork:
    """Parse ``onnx_path`` into a new network (explicit batch: the only mode since TensorRT 10)."""
    import tensorrt as trt

    builder = trt.Builder(trt_logger())
    strongly_typed = needs_half_graph()
    flags = 0
    if strongly_typed and hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED"):
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    if network is None:
        raise BackendError("TensorRT could not create a network definition", "check the GPU and driver with nvidia-smi")
    parser = trt.OnnxParser(network, trt_logger())
    if not parser.parse_from_file(str(onnx_path)):
        errs = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise BackendError(f"TensorRT's ONNX parser rejected {onnx_path.name}", errs[:800] or None)
    return ParsedNetwork(builder, network, parser, strongly_typed)


def new_config(parsed: ParsedNetwork, workspace_gb: float, batch: int) -> "trt.IBuilderConfig":
    """A builder config with the workspace limit and an optimization profile for a symbolic batch;
    no precision set (callers do: fp32/fp16 here, int8 in tensorrt_int8.py)."""
    import tensorrt as trt

    config = parsed.builder.create_builder_config()
    if config is None:
        raise BackendError("TensorRT could not create a builder config")
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gb * (1 << 30)))
    _add_batch_profile(parsed, config, batch)
    return config


def _set_precision(config: "trt.IBuilderConfig", parsed: ParsedNetwork, fp16: bool) -> str:
    import tensorrt as trt

    if not fp16:
        return "fp32"
    if not parsed.strongly_typed:  # TensorRT 10: let the builder pick fp16 kernels
        config.set_flag(trt.BuilderFlag.FP16)
        return "fp16"
    network = parsed.network
    if network.num_inputs and network.get_input(0).dtype == trt.float16:
        return "fp16"  # TensorRT 11: the half-precision graph sets it
    raise BackendError(f"TensorRT {trt.__version__} has no FP16 builder flag and the ONNX graph is float32",
                       "export the model in half precision (model.half()) for an fp16 engine")


def _add_batch_profile(parsed: ParsedNetwork, config: "trt.IBuilderConfig", batch: int) -> None:
    """An optimization profile for symbolic batch dimensions; other symbolic dims are refused."""
    import tensorrt as trt

    profile = None
    for i in range(parsed.network.num_inputs):
        tensor = parsed.network.get_input(i)
        shape = dims(tensor.shape)
        if all(d >= 0 for d in shape):
            continue
        if any(d < 0 for d in shape[1:]):
            raise BackendError(f"input {tensor.name} has symbolic dimensions beyond the batch: {shape}")
        profile = profile or parsed.builder.create_optimization_profile()
        low, opt = trt.Dims([1] + shape[1:]), trt.Dims([batch] + shape[1:])
        profile.set_shape(tensor.name, low, opt, opt)
    if profile is not None and config.add_optimization_profile(profile) < 0:
        raise BackendError(f"TensorRT refused the optimization profile for batch {batch}")


def dims(shape: "trt.Dims") -> list[int]:
    """A TensorRT ``Dims`` as a list (-1 = symbolic)."""
    return [int(shape[i]) for i in range(len(shape))]


def attach_timing_cache(config: "trt.IBuilderConfig", path: Path | None) -> None:
    """Give ``config`` a timing cache, seeded from ``path`` when that file exists.

    A cache from another GPU or TensorRT version does not match: it is refused by TensorRT
    (``ignore_mismatch=False``) and the build starts from an empty cache instead.
    """
    data = path.read_bytes() if path is not None and path.is_file() else b""
    cache = config.create_timing_cache(data)
    if cache is not None and config.set_timing_cache(cache, ignore_mismatch=False):
        return
    if data:  # the file's cache did not match this GPU: start an empty one
        cache = config.create_timing_cache(b"")
        if cache is not None and config.set_timing_cache(cache, ignore_mismatch=False):
            return
    raise BackendError("TensorRT refused the timing cache" + (f" {path}" if path else ""),
                       "delete the cache file and build again")


def build_serialized(parsed: ParsedNetwork, config: "trt.IBuilderConfig", name: str) -> bytes:
    """The serialized engine (TensorRT returns None when the build fails)."""
    serialized = parsed.builder.build_serialized_network(parsed.network, config)
    if serialized is None or serialized.nbytes == 0:
        raise BackendError(f"TensorRT could not build an engine for {name}", "rerun with a larger --workspace or fp32")
    return bytes(serialized)


def save_timing_cache(config: "trt.IBuilderConfig", path: Path) -> None:
    cache = config.get_timing_cache()
    if cache is None:
        raise BackendError("TensorRT returned no timing cache after the build")
    atomic_write(path, bytes(cache.serialize()))


# ------------------------------------------------------------------ the composed build
def build_tensorrt_engine(
    onnx_path: str | Path,
    engine_path: str | Path,
    fp16: bool = True,
    timing_cache_path: str | Path | None = None,
    workspace_gb: float = DEFAULT_WORKSPACE_GB,
    batch: int = 1,
) -> Path:
    """Build a serialized TensorRT engine from an ONNX graph, with its ``<engine>.json`` sidecar.

    Args:
        onnx_path: the graph (one input; a symbolic batch dimension is allowed).
        engine_path: where the engine goes (written atomically).
        fp16: fp16 kernels (module docstring: how TensorRT 10 and 11 differ).
        timing_cache_path: a timing cache file reused and updated across builds.
        workspace_gb: builder workspace memory pool limit.
        batch: the batch for a symbolic batch dimension (min 1, opt = max = batch).
    Returns:
        The engine path. The sidecar records the device fingerprint (the engine runs only on
        that GPU model with that TensorRT), the precision and the ONNX file's sha256.
    Raises:
        BackendUnavailable: tensorrt or CUDA missing. BackendError: a build step failed.
    """
    return build_engine(onnx_path, engine_path, lambda config, parsed: {"precision": _set_precision(config, parsed, fp16)},
                        timing_cache_path, workspace_gb, batch)


PrecisionFn = Callable[["trt.IBuilderConfig", ParsedNetwork], dict]
"""Sets a config's precision for a parsed network; returns what the sidecar records of it."""


def build_engine(onnx_path: str | Path, engine_path: str | Path, set_precision: PrecisionFn,
                 timing_cache_path: str | Path | None = None, workspace_gb: float = DEFAULT_WORKSPACE_GB,
                 batch: int = 1) -> Path:
    """The composed build (``build_tensorrt_engine``'s steps) with the precision set by ``set_precision``."""
    trt = require_tensorrt()
    onnx_path, engine_path = Path(onnx_path), Path(engine_path)
    cache_path = Path(timing_cache_path) if timing_cache_path is not None else None
    t0 = time.perf_counter()
    parsed = network_from_onnx(onnx_path)
    config = new_config(parsed, workspace_gb, batch)
    precision = set_precision(config, parsed)
    attach_timing_cache(config, cache_path)
    atomic_write(engine_path, build_serialized(parsed, config, onnx_path.name))
    if cache_path is not None:
        save_timing_cache(config, cache_path)
    build = {**precision, "strongly_typed": parsed.strongly_typed, "batch": int(batch),
             "workspace_gb": float(workspace_gb), "build_s": round(time.perf_counter() - t0, 3)}
    write_sidecar(engine_path, onnx_path, trt.__version__, build)
    return engine_path


def engine_sidecar_path(engine_path: str | Path) -> Path:
    """``model.engine`` -> ``model.engine.json``."""
    engine_path = Path(engine_path)
    return engine_path.with_name(engine_path.name + ".json")


def write_sidecar(engine_path: Path, onnx_path: Path, tensorrt_version: str, build: dict) -> None:
    """The engine's sidecar: what it was built from and for which device (checked on load)."""
    from ..latency.fingerprint import device_fingerprint

    sidecar = {
        "format": SIDECAR_FORMAT,
        "version": SIDECAR_VERSION,
        "engine": engine_path.name,
        "onnx": onnx_path.name,
        "onnx_sha256": _sha256(onnx_path),
        "tensorrt_version": tensorrt_version,
        **build,
        "device": device_fingerprint("cuda"),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    atomic_write(engine_sidecar_path(engine_path), json.dumps(sidecar, indent=2) + "\n")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
