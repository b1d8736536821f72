"""ONNX export, ONNX Runtime sessions, a Polygraphy-style parity check, TensorRT engines.

Exporter choice: both exporters give the same outputs, and the TorchScript-based legacy exporter
is many times faster here (a latency profile exports one graph per block) and correct for every
zoo family including timm's ``Conv2dSame`` and ViT, where the dynamo exporter fixed ViT's batch
to 1. So the legacy exporter is tried first; the dynamo exporter is the fallback for a model the
legacy tracer cannot handle (and for torch versions where the legacy exporter is gone). The
timings behind this: docs/benchmarks/design_measurements.md, "Exporter choice".
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import io
import json
import os
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import BackendUnavailable, ExportError, UsageError
from .outputs import WRITE_ERRNOS, atomic_path, atomic_write, write_error

INPUT_NAME = "input"
OUTPUT_NAME = "output"
DEFAULT_OPSET = 17
EXPORTERS = ("legacy", "dynamo")  # tried in this order, see the module docstring


# ------------------------------------------------------------------ ONNX export
def export_onnx(
    model: nn.Module,
    example: torch.Tensor,
    path: str | os.PathLike,
    dynamic_batch: bool = False,
    opset: int = DEFAULT_OPSET,
    exporters: tuple[str, ...] = EXPORTERS,
) -> Path:
    """Export ``model`` (eval mode, one image tensor in, one tensor out) to ONNX, atomically.

    Args:
        model: the module to export; it is put in eval mode.
        example: an input batch; fixes every dimension except the batch when ``dynamic_batch``.
        path: where the ``.onnx`` file goes (parent folders are created). The file is written
            to a temporary name beside it and renamed, so a crash never leaves half a graph.
        dynamic_batch: make dimension 0 of input and output symbolic (``batch``).
        opset: ONNX opset for the legacy exporter (the dynamo exporter needs >= 18 and picks
            its own when ``opset`` is lower).
        exporters: which exporters to try, in order ("legacy", "dynamo").
    Returns:
        The path written.
    Raises:
        ExportError: every exporter failed (the messages of each are included).
        OutputError: the file cannot be written (disk full, read-only, permissions).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    errors = []
    for name in exporters:
        try:
            with atomic_path(path) as tmp:
                try:
                    _EXPORTERS[name](model, example, tmp, dynamic_batch, opset)
                finally:
                    _remove_external_data(tmp)
            return path
        except OSError as exc:
            if exc.errno in WRITE_ERRNOS:  # disk full / read-only: another exporter would fail too
                raise write_error(exc, path) from exc
            errors.append(f"{name}: {type(exc).__name__}: {str(exc).strip()[:300]}")
        except Exception as exc:  # exporter internals raise many types; report them all
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            errors.append(f"{name}: {type(exc).__name__}: {first[:300]}")
    raise ExportError(f"ONNX export of {type(model).__name__} failed", "; ".join(errors))


def _export_legacy(model, example, tmp: Path, dynamic_batch: bool, opset: int) -> None:
    axes = {INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}} if dynamic_batch else None
    # enable_grad, not no_grad: under no_grad nn.MultiheadAttention takes its fused fast path
    # (aten::_native_multi_head_attention), which this exporter cannot convert (ViT failed).
    with _quiet(), torch.enable_grad():
        torch.onnx.export(
            model, (example,), str(tmp), dynamo=False, opset_version=opset,
            input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], dynamic_axes=axes, do_constant_folding=True,
        )


def _export_dynamo(model, example, tmp: Path, dynamic_batch: bool, opset: int) -> None:
    shapes = ({0: torch.export.Dim("batch", min=1, max=4096)},) if dynamic_batch else None
    with _quiet(), torch.no_grad():
        program = torch.onnx.export(
            model, (example,), dynamo=True, opset_version=max(opset, 18), dynamic_shapes=shapes,
            input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], optimize=True,
        )
        # One self-contained file: profiles and engines expect a single .onnx.
        program.save(str(tmp), external_data=False)


_EXPORTERS = {"legacy": _export_legacy, "dynamo": _export_dynamo}


@contextlib.contextmanager
def _quiet():
    """Exporters print progress and warnings; library code must not (the CLI renders output).

    Python-level output is captured, and so is output of the C++ side written straight to file
    descriptors 1 and 2 (the legacy exporter dumps its whole TorchScript graph there on failure).
    """
    buf = io.StringIO()
    with warnings.catch_warnings(), contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf), _quiet_fds():
        warnings.simplefilter("ignore")
        yield


@contextlib.contextmanager
def _quiet_fds():
    saved = []
    try:
        sink = tempfile.TemporaryFile()
        for fd in (1, 2):
            try:
                saved.append((fd, os.dup(fd)))
                os.dup2(sink.fileno(), fd)
            except OSError:
                pass
    except OSError:
        sink = None
    try:
        yield
    finally:
        for fd, copy in saved:
            os.dup2(copy, fd)
            os.close(copy)
        if sink is not None:
            sink.close()


def _remove_external_data(tmp: Path) -> None:
    data = tmp.with_name(tmp.name + ".data")
    data.unlink(missing_ok=True)


# ------------------------------------------------------------------ ONNX Runtime
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
        return ort.InferenceSession(str(path), sess_options=opts, providers=providers, provider_options=provider_options)
    except Exception as exc:
        raise ExportError(f"onnxruntime cannot load {path}: {str(exc).strip().splitlines()[0][:300]}") from None


# ------------------------------------------------------------------ parity (Polygraphy-style)
REFERENCE_CHUNK = 32  # images per eager reference forward in check_parity (bounds its peak memory)


def check_parity(
    model: nn.Module,
    onnx_path: str | os.PathLike,
    inputs: torch.Tensor,
    atol: float = 1e-3,
    rtol: float = 1e-3,
    device: str = "cpu",
    raise_on_mismatch: bool = False,
) -> dict:
    """Compare the PyTorch model and its ONNX graph on the same inputs (like ``polygraphy run
    --onnxrt --atol --rtol``).

    Args:
        model: the eager model (run on CPU in fp32, eval mode, no grad).
        onnx_path: its exported graph (run with onnxruntime on ``device``).
        inputs: a batch of inputs (N, C, H, W); a graph with a fixed batch is fed in chunks.
        atol, rtol: pass when ``max|a - b| <= atol + rtol * max|reference|``.
        raise_on_mismatch: raise ExportError instead of returning a failed result.
    Returns:
        dict(max_abs_diff, mean_abs_diff, max_abs_ref, top1_agreement (fraction of rows whose
        argmax agrees; 1.0 for outputs that are not 2-D), n, atol, rtol, passed).
    """
    session = ort_session(onnx_path, device=device)
    inp = session.get_inputs()[0]
    fixed = inp.shape[0] if isinstance(inp.shape[0], int) else None
    x = inputs.detach().float().cpu()
    chunks = [x] if fixed is None else list(torch.split(x, fixed))
    if fixed is not None and chunks and chunks[-1].shape[0] != fixed:
        raise UsageError(f"the graph has a fixed batch of {fixed}; give a multiple of it ({x.shape[0]} inputs)")
    got = np.concatenate([session.run(None, {inp.name: c.numpy()})[0] for c in chunks])
    first = next(iter(model.parameters()), None)
    if first is not None and (first.device.type != "cpu" or first.dtype != torch.float32):
        model = copy.deepcopy(model).float().cpu()  # the reference is fp32 on CPU; leave theirs alone
    was_training = model.training
    with torch.no_grad():  # in chunks: one 256-image batch at 224 px costs gigabytes of activations
        ref = np.concatenate([model.eval()(c).numpy() for c in torch.split(x, REFERENCE_CHUNK)])
    model.train(was_training)
    if got.shape != ref.shape:
        raise ExportError(f"ONNX output shape {got.shape} differs from PyTorch's {ref.shape}")
    diff = np.abs(got.astype(np.float64) - ref.astype(np.float64))
    max_ref = float(np.abs(ref).max()) if ref.size else 0.0
    top1 = float(np.mean(got.argmax(-1) == ref.argmax(-1))) if ref.ndim == 2 else 1.0
    result = {
        "max_abs_diff": float(diff.max()) if diff.size else 0.0,
        "mean_abs_diff": float(diff.mean()) if diff.size else 0.0,
        "max_abs_ref": max_ref,
        "top1_agreement": top1,
        "n": int(x.shape[0]),
        "atol": float(atol),
        "rtol": float(rtol),
    }
    result["passed"] = bool(result["max_abs_diff"] <= atol + rtol * max_ref)
    if raise_on_mismatch and not result["passed"]:
        raise ExportError(
            f"ONNX parity failed: max |diff| {result['max_abs_diff']:.3g} > {atol:g} + {rtol:g} * {max_ref:.3g}, "
            f"top-1 agreement {top1:.1%} on {result['n']} inputs",
            "try another exporter or opset; the PyTorch model itself is unaffected",
        )
    return result


# ------------------------------------------------------------------ TensorRT
def tensorrt_status() -> tuple[bool, str]:
    """(usable, reason): TensorRT needs its Python package and a visible CUDA GPU."""
    try:
        import tensorrt as trt  # noqa: F401
    except ImportError:
        return False, "the tensorrt Python package is not installed (pip install tensorrt, on a machine with an NVIDIA GPU)"
    except Exception as exc:  # e.g. libnvinfer missing or mismatched
        return False, f"the tensorrt package does not load: {type(exc).__name__}: {str(exc)[:200]}"
    if not torch.cuda.is_available():
        return False, "no CUDA GPU is visible to PyTorch (TensorRT needs one; check the driver and a CUDA build of torch)"
    return True, f"tensorrt {trt.__version__}"


def tensorrt_available() -> bool:
    """True when TensorRT can build and run engines here (package + CUDA GPU)."""
    return tensorrt_status()[0]


def _require_tensorrt():
    ok, reason = tensorrt_status()
    if not ok:
        raise BackendUnavailable(f"TensorRT is unavailable: {reason}", "use --backend onnxruntime or torch")
    import tensorrt as trt

    return trt


def trt_logger(trt):
    """The process-wide TensorRT logger (errors only)."""
    # One logger per process: TensorRT warns when several are created.
    global _TRT_LOGGER
    if _TRT_LOGGER is None:
        _TRT_LOGGER = trt.Logger(trt.Logger.ERROR)
    return _TRT_LOGGER


_TRT_LOGGER = None
DEFAULT_WORKSPACE_GB = 2.0


def build_tensorrt_engine(
    onnx_path: str | os.PathLike,
    engine_path: str | os.PathLike,
    fp16: bool = True,
    timing_cache_path: str | os.PathLike | None = None,
    workspace_gb: float = DEFAULT_WORKSPACE_GB,
    batch: int = 1,
) -> Path:
    """Build a serialized TensorRT engine from an ONNX graph, and its ``<engine>.json`` sidecar.

    Args:
        onnx_path: the graph (one input; a symbolic batch dimension is allowed).
        engine_path: where the engine goes (written to a temporary name, then renamed).
        fp16: allow FP16 kernels. TensorRT 10: ``BuilderFlag.FP16`` on a weakly typed network.
            TensorRT 11 removed that flag: the network is strongly typed and the precision is the
            graph's own, so pass an ONNX exported from a half-precision model.
        timing_cache_path: a timing cache file reused and updated across builds (a profile builds
            one engine per block: the cache makes the later builds fast).
        workspace_gb: builder workspace memory pool limit.
        batch: the batch used for a symbolic batch dimension (min 1, opt = max = batch).
    Returns:
        The engine path. The sidecar ``<engine_path>.json`` records the device fingerprint,
        the TensorRT version, the precision and the ONNX file's sha256: an engine only runs on
        the GPU model and TensorRT version it was built for.
    Raises:
        BackendUnavailable: tensorrt or CUDA missing.
        ExportError: the parser or the builder failed (their messages included).
    """
    trt = _require_tensorrt()
    onnx_path, engine_path = Path(onnx_path), Path(engine_path)
    logger = trt_logger(trt)
    t0 = time.perf_counter()
    builder = trt.Builder(logger)
    has_fp16_flag = hasattr(trt.BuilderFlag, "FP16")
    # Explicit batch is the only mode since TensorRT 10 (EXPLICIT_BATCH is deprecated and ignored).
    flags = 0
    if not has_fp16_flag and hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED"):
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errs = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise ExportError(f"TensorRT's ONNX parser rejected {onnx_path.name}", "; ".join(errs)[:800] or None)

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gb * (1 << 30)))
    precision = "fp32"
    if fp16:
        if has_fp16_flag:
            config.set_flag(trt.BuilderFlag.FP16)
            precision = "fp16"
        elif _network_input_dtype(trt, network) == trt.float16:
            precision = "fp16"  # strongly typed: the half-precision graph sets it
        else:
            raise ExportError(
                f"TensorRT {trt.__version__} has no FP16 builder flag and {onnx_path.name} is float32",
                "export the model in half precision (model.half()) for an fp16 engine",
            )
    _add_batch_profile(trt, builder, network, config, batch)

    cache_bytes = b""
    if timing_cache_path is not None and Path(timing_cache_path).is_file():
        cache_bytes = Path(timing_cache_path).read_bytes()
    cache = config.create_timing_cache(cache_bytes)
    config.set_timing_cache(cache, ignore_mismatch=False)  # a cache from another GPU is ignored

    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ExportError(f"TensorRT could not build an engine for {onnx_path.name}", "rerun with a larger --workspace or fp32")
    atomic_write(engine_path, bytes(serialized))
    if timing_cache_path is not None:
        atomic_write(Path(timing_cache_path), bytes(config.get_timing_cache().serialize()))

    from ..latency.fingerprint import device_fingerprint

    sidecar = {
        "format": "edgeprune.tensorrt-engine",
        "version": 1,
        "engine": engine_path.name,
        "onnx": onnx_path.name,
        "onnx_sha256": _sha256(onnx_path),
        "tensorrt_version": trt.__version__,
        "precision": precision,
        "strongly_typed": not has_fp16_flag,
        "batch": int(batch),
        "workspace_gb": float(workspace_gb),
        "build_s": round(time.perf_counter() - t0, 3),
        "device": device_fingerprint("cuda"),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    atomic_write(engine_sidecar_path(engine_path), json.dumps(sidecar, indent=2).encode())
    return engine_path


def engine_sidecar_path(engine_path: str | os.PathLike) -> Path:
    """``model.engine`` -> ``model.engine.json``."""
    engine_path = Path(engine_path)
    return engine_path.with_name(engine_path.name + ".json")


def _network_input_dtype(trt, network):
    return network.get_input(0).dtype if network.num_inputs else trt.float32


def _add_batch_profile(trt, builder, network, config, batch: int) -> None:
    """An optimization profile for symbolic batch dimensions; other symbolic dims are refused."""
    profile = None
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        shape = list(tensor.shape)
        if all(d >= 0 for d in shape):
            continue
        if any(d < 0 for d in shape[1:]):
            raise ExportError(f"input {tensor.name} has symbolic dimensions beyond the batch: {shape}")
        profile = profile or builder.create_optimization_profile()
        lo, opt = [1] + shape[1:], [batch] + shape[1:]
        profile.set_shape(tensor.name, lo, opt, opt)
    if profile is not None:
        config.add_optimization_profile(profile)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()

