"""The ``edgeprune`` command line: parses options, calls the Python API, renders with rich.

No logic lives here beyond option parsing and display: each command is one API call.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import sys
import traceback
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from .errors import EdgepruneError, Interrupted
from .deploy.int8.config import Int8Config, Int8Gate, QuantSettings
from .pipeline.options import AdaptOptions, adapt_recipe
from .progress import Reporter
from .version import __version__

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Make a pretrained image classifier faster on the device where it runs, using the images it sees there "
                       "(TT-MPD: test-time block pruning and distillation).")
out = Console()  # results
err = Console(stderr=True)  # progress, warnings, errors
STATE = {"debug": False}


class RichReporter(Reporter):
    """Progress bars on stderr (one per task), warnings in yellow."""

    def __init__(self, quiet: bool = False):
        self.quiet = quiet
        self.progress_ui = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                    TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                                    console=err, transient=False, disable=quiet)
        self.tasks: dict[str, int] = {}

    def __enter__(self):
        self.progress_ui.__enter__()
        return self

    def __exit__(self, *exc):
        self.progress_ui.__exit__(*exc)

    def stage(self, name):
        pass

    def progress(self, task, done, total, **info):
        text = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in info.items())
        if task not in self.tasks:
            self.tasks[task] = self.progress_ui.add_task(task, total=total, info=text)
        self.progress_ui.update(self.tasks[task], completed=done, total=total, info=text)

    def warn(self, message):
        self.progress_ui.console.print(f"[yellow]warning:[/] {escape(str(message))}", highlight=False, soft_wrap=True)

    def info(self, message):
        if not self.quiet:
            self.progress_ui.console.print(f"[cyan]info:[/] {escape(str(message))}", highlight=False, soft_wrap=True)


def _version(value: bool):
    if value:
        out.print(f"edgeprune {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks for errors."),
):
    STATE["debug"] = debug


def _emit_json(data) -> None:
    from .pipeline.report import _clean

    sys.stdout.write(json.dumps(_clean(data), indent=2) + "\n")


# ------------------------------------------------------------------ models / blocks
@app.command()
def models(as_json: bool = typer.Option(False, "--json", help="Machine-readable output.")):
    """List the model zoo (torchvision names, efficientnet_lite0/1/2 with real weights; timm:NAME also works)."""
    from .models.zoo import get_entry, names

    rows = [get_entry(n) for n in names()]
    if as_json:
        _emit_json([{"name": e.name, "family": e.family, "resolution": e.resolution, "feature_layer": e.feature_layer,
                     "head": e.head, "notes": e.notes} for e in rows])
        return
    table = Table("model", "family", "resolution", "pre-GAP feature layer", "head", "notes")
    for e in rows:
        table.add_row(e.name, e.family, str(e.resolution), e.feature_layer, e.head, e.notes)
    out.print(table)


@app.command()
def blocks(
    model: str = typer.Option(..., "--model", "-m", help="Zoo name (e.g. mobilenet_v2, resnet34, efficientnet_lite0, timm:NAME)."),
    resolution: Optional[int] = typer.Option(None, help="Input size used to trace shapes [default: the model's]."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
):
    """List the removable blocks of a model with parameter count and capacity gap G_i = (S - S_-i)/S."""
    import torch

    from .models.blocks import find_blocks
    from .models.zoo import load_model

    net, entry, _ = load_model(model, weights="random")
    res = resolution or entry.resolution
    found = find_blocks(net, entry, torch.zeros(1, entry.in_chans, res, res))
    if as_json:
        _emit_json({"model": entry.name, "resolution": res, "count": len(found), "blocks": [b.to_dict() for b in found]})
        return
    table = Table("#", "block", "type", "params", "capacity gap", "shape", title=f"{entry.name}: {len(found)} removable blocks")
    for i, b in enumerate(found):
        table.add_row(str(i), b.name, b.kind, f"{b.params:,}", f"{b.capacity_gap:.4f}", "x".join(map(str, b.shape)))
    out.print(table)


# ------------------------------------------------------------------ profile
@app.command()
def profile(
    model: str = typer.Option(..., "--model", "-m", help="Zoo name; profiling uses random weights (latency does not depend on values)."),
    backend: str = typer.Option("onnxruntime", help="Latency backend: onnxruntime | torch | tensorrt."),
    device: str = typer.Option("cpu", help="cpu | cuda."),
    resolution: Optional[int] = typer.Option(None, help="Input resolution [default: the model's]; must match the field images' resolution used by adapt."),
    batch: int = typer.Option(1, help="Batch size of the timed inference."),
    precision: str = typer.Option("fp32", help="fp32 | fp16 (fp16 needs CUDA) | int8 (onnxruntime on the CPU: each variant "
                                  "statically quantised as adapt --deploy-precision int8 deploys it, calibrated on random inputs)."),
    budget: Optional[float] = typer.Option(None, "--budget", help="Seconds of timing after warm-up [default: scaled to the model]."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Profile JSON path [default: profiles/<device>/<model>-<backend>-<precision>-b<batch>-r<res>.json]."),
    as_json: bool = typer.Option(False, "--json", help="Print the profile JSON instead of a table."),
):
    """Measure the latency saving of removing each block on THIS device (run once per target device)."""
    from .errors import OutputError
    from .latency.measurement import run_profile
    from .latency.profiles import default_profile_path, save_profile

    if output is not None and output.is_dir():  # before minutes of timing, not after
        raise OutputError(f"--output {output} is a folder", "give the path of the profile's .json file")
    with RichReporter(quiet=as_json) as rep:
        prof = run_profile(model, backend=backend, device=device, resolution=resolution, batch=batch, precision=precision,
                           budget_s=budget, progress=lambda d, t: rep.progress("timing variants", d, t))
        for w in prof.get("warnings", []):
            rep.warn(w)
    path = output or default_profile_path(prof, root=os.environ.get("EDGEPRUNE_PROFILES", "profiles"))
    save_profile(prof, path)
    if as_json:
        _emit_json(prof)
        return
    table = Table("block", "params", "median ms", "saving", "cv", "n", "flags",
                  title=f"{prof['model']} on {prof['backend']['name']} ({prof['device'].get('cpu', '')}), "
                        f"full model {prof['base']['median_ms']:.2f} ms (cv {prof['base']['cv']:.1%})")
    for b in sorted(prof["blocks"], key=lambda b: -b["saving"]):
        table.add_row(b["name"], f"{b['params']:,}", f"{b['median_ms']:.2f}", f"{b['saving']:.1%}", f"{b['cv']:.1%}", str(b["n"]),
                      ", ".join(b.get("flags", [])))
    out.print(table)
    add = prof.get("additivity") or {}
    if add:
        out.print(f"additivity ({', '.join(add['blocks'])}): predicted {add['predicted_saving']:.1%}, measured {add['measured_saving']:.1%}")
    out.print(f"profile written to {path}")


# ------------------------------------------------------------------ adapt
_OPT = {f.name: f.default for f in dataclasses.fields(AdaptOptions)}  # the defaults live in pipeline/options.py
_RECIPE = adapt_recipe()
_INT8 = Int8Config()


def _int8_config(images: int, method: str, min_agreement: float) -> Int8Config:
    return dataclasses.replace(Int8Config(), calibration_images=images, settings=QuantSettings(method=method),
                               gate=Int8Gate(min_agreement))


@app.command()
def adapt(
    images: Path = typer.Option(..., "--images", "-i", help="Folder of field images (searched recursively; class sub-folders add accuracy)."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Zoo name [default: from this device's recorded profile]."),
    weights: Optional[Path] = typer.Option(None, help="State dict of the pretrained model [default: the zoo's local pretrained weights]."),
    profile: Optional[Path] = typer.Option(None, help="Latency profile JSON [default: the one recorded for this device]."),
    blocks: Optional[int] = typer.Option(None, "--blocks", "-k", help="Remove K blocks [default: 3 when no other plan is given]."),
    target_saving: Optional[float] = typer.Option(None, help="Remove the fewest blocks whose predicted saving reaches F (0-1)."),
    latency_budget_ms: Optional[float] = typer.Option(None, help="Remove blocks until the predicted latency is within M ms."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Artifact folder [default: edgeprune-out/<model>-<time>]."),
    criterion: str = typer.Option(_OPT["criterion"], help="Block-scoring criterion plug-in."),
    prune_images: int = typer.Option(_OPT["prune_images"], help="Images used to score blocks (also part of the fine-tune set)."),
    finetune_images: int = typer.Option(_OPT["finetune_images"], help="Images whose teacher features are stored as pseudo-labels."),
    steps: int = typer.Option(_RECIPE.steps, help="Distillation SGD steps."),
    batch: int = typer.Option(_RECIPE.batch_size, help="Batch size (scoring, pseudo-labels, distillation)."),
    lr: float = typer.Option(_RECIPE.lr, help="Learning rate (x0.1 every 40% of the steps)."),
    seed: int = typer.Option(_OPT["seed"], help="Seed of the image split and the training order."),
    force: bool = typer.Option(False, "--force", help="Replace a non-empty output folder (only once the new run succeeded)."),
    dynamic_batch: bool = typer.Option(False, "--dynamic-batch", help="Export ONNX with a dynamic batch axis."),
    allow_device_mismatch: bool = typer.Option(False, "--allow-device-mismatch", help="Accept a profile measured on another device (warns)."),
    no_latency: bool = typer.Option(False, "--no-latency", help="Skip measuring the exported models' latency."),
    teacher_stats: str = typer.Option(_RECIPE.teacher_stats, help="auto (default): decide from the stream whether the teacher's "
                                      "BatchNorm statistics should move toward the stream's (a label-free score on a slice, "
                                      "recorded in report.json); source: the teacher as trained (the paper); stream: re-estimate "
                                      "them on the fine-tune images first."),
    student_bn: str = typer.Option(_RECIPE.student_bn, help="auto (default): train the two modes below a few steps each "
                                   "(--bn-probe-steps) and continue with the one of lower validation loss (recorded in "
                                   "report.json); train (the paper): batch statistics while distilling, running averages "
                                   "drift to the stream; frozen: the student's BatchNorm stays in eval mode (the teacher's "
                                   "statistics; scale/shift still train) - far better on pretrained ImageNet models, worse "
                                   "on small Fashion-MNIST ones (README); reestimate: train, then one final pass over the "
                                   "fine-tune images sets them."),
    bn_probe_steps: int = typer.Option(_RECIPE.bn_probe_steps, help="Steps each student BatchNorm mode trains before "
                                       "--student-bn auto decides (the loser's steps are the probe's cost)."),
    local_steps: int = typer.Option(_RECIPE.local_steps, "--local-steps", help="Steps of local gap reconstruction per removed "
                                    "block before the global distillation (0 = off, the default; README)."),
    train_head: bool = typer.Option(False, "--train-head", help="Also train the classifier head (the paper keeps it frozen)."),
    train_scope: str = typer.Option(_RECIPE.train_scope, "--train-scope", help="suffix (default): freeze the layers before the first removed "
                                    "block and train the rest from their output, cached with the pseudo-labels (same accuracy, "
                                    "several times faster); all: train every layer from the pixels (the paper's recipe)."),
    precision: str = typer.Option(_RECIPE.precision, "--precision", help="auto (default): bf16 autocast where the CPU has native bf16 and a "
                                  "short probe of the real training step finds it faster than fp32, else fp32; fp32; bf16 "
                                  "(falls back to fp32 without native support)."),
    early_stop: bool = typer.Option(_RECIPE.early_stop, "--early-stop/--no-early-stop", help="Default on: hold out a slice of the fine-tune "
                                    "images (<=64), check its loss every 25 steps; on a plateau step the learning rate down "
                                    "early, and stop at a plateau of the last rate. Off: exactly --steps steps (paper)."),
    micro_batch: int = typer.Option(_RECIPE.micro_batch or 0, "--micro-batch", help="Images per forward/backward in distillation; gradients "
                                    "accumulate to --batch (same loss; BatchNorm per chunk). Bounds peak memory and is faster "
                                    "on CPU (32, default); 0 = the whole batch at once (the paper)."),
    deploy_precision: str = typer.Option(_OPT["deploy_precision"], "--deploy-precision", help="fp32 (default): model.onnx; "
                                         "int8: also model.int8.onnx, ONNX Runtime static QDQ quantisation calibrated on the "
                                         "fine-tune images and gated against model.onnx on held-out images (top-1 agreement "
                                         ">= 97%); needs an int8 profile. Not --precision, which is the distillation's."),
    calibration_images: int = typer.Option(_INT8.calibration_images, "--calibration-images", help="INT8: fine-tune images used to calibrate."),
    calibration_method: str = typer.Option(_INT8.settings.method, "--calibration-method", help="INT8: minmax | entropy | percentile."),
    int8_min_agreement: float = typer.Option(_INT8.gate.min_agreement, "--int8-min-agreement", help="INT8 gate: the least "
                                             "held-out top-1 agreement with model.onnx (README: on a stream where the model is "
                                             "rarely confident, near-ties flip and this counts them)."),
    allow_precision_mismatch: bool = typer.Option(False, "--allow-precision-mismatch", help="Accept a profile of another "
                                                  "precision than --deploy-precision (warns: savings differ by precision)."),
    as_json: bool = typer.Option(False, "--json", help="Print report.json to stdout."),
):
    """Prune and distil a pretrained model on unlabeled field images; write ONNX/TensorRT artifacts and a report."""
    if "torch" not in sys.modules:  # OpenMP reads this once, when torch loads: idle threads sleep instead of spinning,
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # which keeps training fast on a shared CPU (hardware.py)
    from .pipeline.adapt import run_adapt

    recipe = adapt_recipe(steps=steps, batch_size=batch, lr=lr, freeze_head=not train_head, train_scope=train_scope,
                          precision=precision, early_stop=early_stop, micro_batch=micro_batch or None,
                          teacher_stats=teacher_stats, student_bn=student_bn, local_steps=local_steps,
                          bn_probe_steps=bn_probe_steps)
    options = AdaptOptions(images, output, model=model, profile=profile, weights=weights, blocks=blocks,
                           target_saving=target_saving, latency_budget_ms=latency_budget_ms, criterion=criterion,
                           prune_images=prune_images, finetune_images=finetune_images, seed=seed, force=force,
                           dynamic_batch=dynamic_batch, allow_device_mismatch=allow_device_mismatch,
                           measure_latency=not no_latency, recipe=recipe, deploy_precision=deploy_precision,
                           int8=_int8_config(calibration_images, calibration_method, int8_min_agreement),
                           allow_precision_mismatch=allow_precision_mismatch)
    with RichReporter(quiet=as_json) as rep:
        result = run_adapt(options, reporter=rep)
    if as_json:
        _emit_json(result.report)
        return
    render_adapt_summary(result.report, result.output)


def _pct(v):
    return "n/a" if v is None else f"{100 * v:.1f}%"


def render_adapt_summary(r: dict, output: Path) -> None:
    f = r["fidelity"]
    table = Table("", "original", "pruned", "pruned + distilled", title=f"{r['model']}: removed {', '.join(r['removed_blocks'])}")
    table.add_row("agreement with original (held out)", "100.0%", _pct(f["agreement_before"]), _pct(f["agreement_after"]))
    if "after" in f:
        b, a = f["before"], f["after"]
        table.add_row(f"  on the original's confident images ({a['confident_images']})", "100.0%",
                      _pct(b["confident_agreement"]), _pct(a["confident_agreement"]))
        table.add_row("  top-5 overlap", "100.0%", _pct(b["top5_overlap"]), _pct(a["top5_overlap"]))
        table.add_row("  KL(original || model)", "0", f"{b['kl_original_adapted']:.3f}", f"{a['kl_original_adapted']:.3f}")
    if f["accuracy_original"] is not None:
        table.add_row("accuracy (held out)", _pct(f["accuracy_original"]), _pct(f["accuracy_before"]), _pct(f["accuracy_after"]))
    lat = r.get("measured_latency") or {}
    if lat:
        table.add_row("latency, ONNX Runtime median", f"{lat['original_ms']:.2f} ms", "", f"{lat['adapted_ms']:.2f} ms")
        if "int8_adapted_ms" in lat:
            table.add_row("  int8 (model.int8.onnx)", "", "", f"{lat['int8_adapted_ms']:.2f} ms")
    table.add_row("latency saving (predicted / measured)", "", _pct(r["predicted_saving"]), _pct(r["measured_saving"]))
    out.print(table)
    t = r["timings"]
    out.print("time: " + ", ".join(f"{k} {v:.1f}s" for k, v in t.items()) +
              f"; scoring cost {r['scoring_forward_equivalents']:.2f} forward equivalents")
    if "train_scope" in r:
        es, d = r.get("early_stop") or {}, r.get("distillation") or {}
        stop = f"early stop at step {es['stopped_at']}" if es.get("stopped_at") else f"{d.get('steps')} steps ({es.get('reason')})"
        eff = (r.get("efficiency") or {}).get("distillation")
        out.print(f"distillation: {r['train_scope']} scope, {r.get('precision')}, {stop}; compute floor {r.get('compute_floor_s', 0):.0f}s"
                  + (f", distillation at {eff:.0%} of it" if eff else "") + f"; peak memory {r.get('peak_memory_mb', 0):.0f} MB")
    out.print(f"artifacts in {output}: {', '.join(r['artifacts'])} + report.json, report.md")


# ------------------------------------------------------------------ export / eval
@app.command()
def export(
    model: Path = typer.Option(..., "--model", "-m", help="A pruned model manifest (DIR/model.pt)."),
    onnx: bool = typer.Option(True, "--onnx/--no-onnx", help="Write model.onnx next to the manifest (with a parity check)."),
    tensorrt: bool = typer.Option(False, "--tensorrt", help="Build model.engine with TensorRT (needs tensorrt + CUDA)."),
    fp16: bool = typer.Option(True, "--fp16/--fp32", help="TensorRT precision."),
    batch: int = typer.Option(1, help="Static batch size of the exported graph."),
    dynamic_batch: bool = typer.Option(False, "--dynamic-batch", help="ONNX with a dynamic batch axis."),
    images: Optional[Path] = typer.Option(None, "--images", "-i", help="Field images for the ONNX parity check [default: random "
                                          "inputs]; with --int8 also the calibration images (a seeded quarter is held out for the gate)."),
    int8: bool = typer.Option(False, "--int8", help="Also write model.int8.onnx: ONNX Runtime static QDQ quantisation "
                              "calibrated on --images, gated against model.onnx (top-1 agreement >= 97%)."),
    calibration_images: int = typer.Option(_INT8.calibration_images, "--calibration-images", help="--int8: images used to calibrate."),
    calibration_method: str = typer.Option(_INT8.settings.method, "--calibration-method", help="--int8: minmax | entropy | percentile."),
    int8_min_agreement: float = typer.Option(_INT8.gate.min_agreement, "--int8-min-agreement", help="--int8: the gate's least "
                                             "top-1 agreement with model.onnx on the held-out images."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
):
    """Export a pruned model manifest to ONNX and/or a TensorRT engine (run this on the target device)."""
    from .pipeline.export_manifest import export_manifest

    result = export_manifest(model, onnx=onnx, tensorrt=tensorrt, fp16=fp16, batch=batch, dynamic_batch=dynamic_batch,
                             images=images,
                             int8=_int8_config(calibration_images, calibration_method, int8_min_agreement) if int8 else None)
    if as_json:
        _emit_json(result)
        return
    for k, v in result.items():
        if k == "int8":
            v = (f"{v['path']} (top-1 agreement {v['gate']['agreement']:.1%} with model.onnx on {v['gate']['inputs']}; "
                 f"{len(v['keep_float'])} node(s) in float; calibrated on {v['calibration']['images']} images, {v['calibration']['method']})")
        out.print(f"{k}: {v}")


@app.command(name="eval")
def evaluate(
    model: str = typer.Option(..., "--model", "-m", help="Zoo name (original model) or a pruned manifest DIR/model.pt."),
    images: Path = typer.Option(..., "--images", "-i", help="Folder of images (class sub-folders give accuracy)."),
    weights: Optional[Path] = typer.Option(None, help="State dict for a zoo model [default: local pretrained weights]."),
    resolution: Optional[int] = typer.Option(None, help="Input resolution [default: the manifest's or the model's]."),
    latency: bool = typer.Option(True, "--latency/--no-latency", help="Also time the model with ONNX Runtime on this machine."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
):
    """Accuracy on labelled folders, else top-1 agreement with the original model; plus latency."""
    from .pipeline.evaluate_folder import evaluate_model

    with RichReporter(quiet=as_json) as rep:
        result = evaluate_model(model, images, weights=weights, resolution=resolution, latency=latency, reporter=rep)
    if as_json:
        _emit_json(result)
        return
    table = Table("metric", "value")
    for k, v in result.items():
        if not isinstance(v, (dict, list)):
            table.add_row(k, f"{v:.4g}" if isinstance(v, float) else str(v))
    out.print(table)


# ------------------------------------------------------------------ demo
@app.command()
def demo(
    workdir: Path = typer.Option(Path("edgeprune-demo"), help="Where the demo stream, profile and outputs go."),
    steps: int = typer.Option(300, help="Distillation steps."),
):
    """The embedded end-to-end example: a shifted stream of real labelled images, profile, adapt, before/after table."""
    from .pipeline.demo import run_demo

    with RichReporter() as rep:
        result = run_demo(workdir, steps=steps, reporter=rep)
    render_adapt_summary(result.report, result.output)


# fleet scale, each in its own module: the profile registry and sweeps
from .fleet.sweep_command import sweep as _sweep  # noqa: E402
from .latency.profiles_command import app as _profiles_app  # noqa: E402

app.add_typer(_profiles_app, name="profiles")
app.command(name="sweep")(_sweep)

from .watch.command import register as _register_watch  # noqa: E402 (edgeprune watch, in its own module)

_register_watch(app, RichReporter)


def _on_signal(signum, frame):
    STATE["interrupted"] = True
    raise KeyboardInterrupt


def _exit_interrupted() -> None:
    err.print("[red]interrupted:[/] stopped; no partial output was left and earlier output is intact",
              highlight=False, soft_wrap=True)
    sys.exit(Interrupted.exit_code)


def main() -> None:
    signal.signal(signal.SIGTERM, _on_signal)
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:  # an ignored SIGINT stays ignored
        signal.signal(signal.SIGINT, _on_signal)
    try:
        # typer turns KeyboardInterrupt into a *returned* 130 when not standalone: check the result.
        rc = app(standalone_mode=False)
    except EdgepruneError as exc:
        if STATE["debug"]:
            traceback.print_exc()
        err.print(f"[red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        _exit_interrupted()
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        _exit_interrupted()
    except Exception as exc:  # click usage errors and the unexpected
        # click's, or the copy of click that typer >= 0.2x vendors (typer._click): duck-typed
        if callable(getattr(exc, "show", None)) and isinstance(getattr(exc, "exit_code", None), int):
            exc.show()
            sys.exit(exc.exit_code)
        if STATE["debug"]:
            raise
        err.print(f"[red]internal error:[/] {type(exc).__name__}: {escape(str(exc))} (rerun with --debug for the traceback and report it)",
                  highlight=False, soft_wrap=True)
        sys.exit(70)
    if STATE.get("interrupted") or rc == Interrupted.exit_code:
        _exit_interrupted()
    if isinstance(rc, int) and rc:
        sys.exit(rc)


if __name__ == "__main__":
    main()
