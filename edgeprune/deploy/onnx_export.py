"""ONNX export of a model (one image tensor in, one tensor out), atomically.

The deploy package's other steps: ``ort`` (ONNX Runtime sessions and latency), ``parity`` (the
one parity gate), ``tensorrt_build`` / ``tensorrt_engine`` (TensorRT engines).

Exporter choice: both exporters give the same outputs, and the TorchScript-based legacy exporter
is many times faster here (a latency profile exports one graph per block) and correct for every
zoo family including timm's ``Conv2dSame`` and ViT, where the dynamo exporter fixed ViT's batch
to 1. So the legacy exporter is tried first; the dynamo exporter is the fallback for a model the
legacy tracer cannot handle (and for torch versions where the legacy exporter is gone). The
timings behind this: docs/benchmarks/design_measurements.md, "Exporter choice".
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
import warnings
from pathlib import Path

import torch
from torch import nn

from ..errors import ExportError
from .outputs import WRITE_ERRNOS, atomic_path, write_error

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
