"""``edgeprune export``, ``eval`` and ``demo``: artifacts for a target device, their quality, the embedded example."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from ..deploy.int8.config import Int8Config
from .adapt_command import int8_config, render_adapt_summary
from .console import RichReporter, emit_json, out

_INT8 = Int8Config()


def export(
    model: Path = typer.Option(..., "--model", "-m", help="A pruned model manifest (DIR/model.pt)."),
    onnx: bool = typer.Option(True, "--onnx/--no-onnx", help="Write model.onnx next to the manifest (with a parity check)."),
    tensorrt: bool = typer.Option(False, "--tensorrt", help="Build model.engine with TensorRT (needs tensorrt + CUDA); with "
                                  "--int8 model.int8.engine from a symmetric QDQ graph instead."),
    fp16: bool = typer.Option(True, "--fp16/--fp32", help="TensorRT precision (with --int8: of the layers left in float)."),
    batch: int = typer.Option(1, help="Static batch size of the exported graph."),
    dynamic_batch: bool = typer.Option(False, "--dynamic-batch", help="ONNX with a dynamic batch axis."),
    images: Optional[Path] = typer.Option(None, "--images", "-i", help="Field images for the ONNX parity check; with --int8 also the "
                                          "calibration images (a seeded quarter is held out for the gate).",
                                          show_default="random inputs"),
    int8: bool = typer.Option(False, "--int8", help="Also write model.int8.onnx: ONNX Runtime static QDQ quantisation "
                              "calibrated on --images, gated against model.onnx (top-1 agreement >= 97%); with --tensorrt "
                              "model.int8.tensorrt.onnx (symmetric, for TensorRT) and model.int8.engine."),
    calibration_images: int = typer.Option(_INT8.calibration_images, "--calibration-images", help="--int8: images used to calibrate."),
    calibration_method: str = typer.Option(_INT8.settings.method, "--calibration-method", help="--int8: minmax | entropy | percentile."),
    int8_min_agreement: float = typer.Option(_INT8.gate.min_agreement, "--int8-min-agreement", help="--int8: the gate's least "
                                             "top-1 agreement with model.onnx on the held-out images."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
):
    """Export a pruned model manifest to ONNX and/or a TensorRT engine (run this on the target device)."""
    from ..pipeline.export_manifest import export_manifest

    result = export_manifest(model, onnx=onnx, tensorrt=tensorrt, fp16=fp16, batch=batch, dynamic_batch=dynamic_batch,
                             images=images,
                             int8=int8_config(calibration_images, calibration_method, int8_min_agreement) if int8 else None)
    if as_json:
        emit_json(result)
        return
    for k, v in result.items():
        if k == "int8":
            v = (f"{v['path']} (top-1 agreement {v['gate']['agreement']:.1%} with model.onnx on {v['gate']['inputs']}; "
                 f"{len(v['keep_float'])} node(s) in float; calibrated on {v['calibration']['images']} images, {v['calibration']['method']})")
        out.print(f"{k}: {v}")


def evaluate(
    model: str = typer.Option(..., "--model", "-m", help="Zoo name (original model) or a pruned manifest DIR/model.pt."),
    images: Path = typer.Option(..., "--images", "-i", help="Folder of images (class sub-folders give accuracy)."),
    weights: Optional[Path] = typer.Option(None, help="State dict for a zoo model.", show_default="local pretrained weights"),
    resolution: Optional[int] = typer.Option(None, help="Input resolution.", show_default="the manifest's or the model's"),
    latency: bool = typer.Option(True, "--latency/--no-latency", help="Also time the model with ONNX Runtime on this machine."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
):
    """Accuracy on labelled folders, else top-1 agreement with the original model; plus latency."""
    from ..pipeline.evaluate_folder import evaluate_model

    with RichReporter(quiet=as_json) as rep:
        result = evaluate_model(model, images, weights=weights, resolution=resolution, latency=latency, reporter=rep)
    if as_json:
        emit_json(result)
        return
    table = Table("metric", "value")
    for k, v in result.items():
        if not isinstance(v, (dict, list)):
            table.add_row(k, f"{v:.4g}" if isinstance(v, float) else str(v))
    out.print(table)


def demo(
    workdir: Path = typer.Option(Path("edgeprune-demo"), help="Where the demo stream, profile and outputs go."),
    steps: int = typer.Option(300, help="Distillation steps."),
):
    """The embedded end-to-end example: a shifted stream of real labelled images, profile, adapt, before/after table."""
    from ..pipeline.demo import run_demo

    with RichReporter() as rep:
        result = run_demo(workdir, steps=steps, reporter=rep)
    render_adapt_summary(result.report, result.output)
