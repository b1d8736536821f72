"""``edgeprune adapt``: its options, the one call into ``pipeline.adapt.run_adapt``, the summary table.

The options are module constants so that the command's signature reads as a list; their defaults
come from ``AdaptOptions``, ``DistillConfig`` and ``Int8Config`` (the only places they are written).
"""

from __future__ import annotations

import dataclasses
import os
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from ..deploy.int8.config import Int8Config, Int8Gate, QuantSettings
from ..formatting import percent
from ..pipeline.options import AdaptOptions, adapt_recipe
from .console import RichReporter, emit_json, out

_OPT = {f.name: f.default for f in dataclasses.fields(AdaptOptions)}  # the defaults live in pipeline/options.py
_RECIPE = adapt_recipe()
_INT8 = Int8Config()

_IMAGES = typer.Option(..., "--images", "-i", help="Folder of field images (searched recursively; class sub-folders add accuracy).")
_MODEL = typer.Option(None, "--model", "-m", help="Zoo name.", show_default="from this device's recorded profile")
_WEIGHTS = typer.Option(None, help="State dict of the pretrained model.", show_default="the zoo's local pretrained weights")
_PROFILE = typer.Option(None, help="Latency profile JSON.", show_default="the one recorded for this device")
_BLOCKS = typer.Option(None, "--blocks", "-k", help="Remove K blocks.", show_default="3 when no other plan is given")
_TARGET_SAVING = typer.Option(None, help="Remove the fewest blocks whose predicted saving reaches F (0-1).")
_LATENCY_BUDGET_MS = typer.Option(None, help="Remove blocks until the predicted latency is within M ms.")
_OUTPUT = typer.Option(None, "--output", "-o", help="Artifact folder.", show_default="edgeprune-out/<model>-<time>")
_CRITERION = typer.Option(_OPT["criterion"], help="Block-scoring criterion plug-in.")
_PRUNE_IMAGES = typer.Option(_OPT["prune_images"], help="Images used to score blocks (also part of the fine-tune set).")
_FINETUNE_IMAGES = typer.Option(_OPT["finetune_images"], help="Images whose teacher features are stored as pseudo-labels.")
_STEPS = typer.Option(_RECIPE.steps, help="Distillation SGD steps.")
_BATCH = typer.Option(_RECIPE.batch_size, help="Batch size (scoring, pseudo-labels, distillation).")
_LR = typer.Option(_RECIPE.lr, help="Learning rate (x0.1 every --decay-every of the steps).")
_TIME_BUDGET = typer.Option(_RECIPE.time_budget_minutes or 0, "--time-budget", help="Minutes the distillation may take: "
    "after its first steps the step count is lowered to what fits on this device (never raised; README). 0 = run "
    "exactly --steps steps.")
_DECAY_EVERY = typer.Option(_RECIPE.decay_every, "--decay-every", help="Fraction of the steps between learning-rate "
    "decays (x0.1); the paper's is 0.4 (README, \"Distillation recipe\").")
_SEED = typer.Option(_OPT["seed"], help="Seed of the image split and the training order.")
_FORCE = typer.Option(False, "--force", help="Replace a non-empty output folder (only once the new run succeeded).")
_DYNAMIC_BATCH = typer.Option(False, "--dynamic-batch", help="Export ONNX with a dynamic batch axis.")
_ALLOW_DEVICE_MISMATCH = typer.Option(False, "--allow-device-mismatch", help="Accept a profile measured on another device (warns).")
_NO_LATENCY = typer.Option(False, "--no-latency", help="Skip measuring the exported models' latency.")
_TEACHER_STATS = typer.Option(_RECIPE.teacher_stats, help="auto (default): decide from the stream whether the teacher's "
    "BatchNorm statistics should move toward the stream's (a label-free score on a slice, "
    "recorded in report.json); source: the teacher as trained (the paper); stream: re-estimate "
    "them on the fine-tune images first.")
_STUDENT_BN = typer.Option(_RECIPE.student_bn, help="auto (default): train the two modes below a few steps each "
    "(--bn-probe-steps) and continue with the one of lower validation loss (recorded in "
    "report.json); train (the paper): batch statistics while distilling, running averages "
    "drift to the stream; frozen: the student's BatchNorm stays in eval mode (the teacher's "
    "statistics; scale/shift still train) - far better on pretrained ImageNet models, worse "
    "on small Fashion-MNIST ones (README); reestimate: train, then one final pass over the "
    "fine-tune images sets them.")
_BN_PROBE_STEPS = typer.Option(_RECIPE.bn_probe_steps, help="Steps each student BatchNorm mode trains before "
    "--student-bn auto decides (the loser's steps are the probe's cost).")
_LOCAL_STEPS = typer.Option(_RECIPE.local_steps, "--local-steps", help="Steps of local gap reconstruction per removed "
    "block before the global distillation (0 = off, the default; README).")
_LOGIT_WEIGHT = typer.Option(_RECIPE.logit_weight, "--logit-weight", help="Weight of a KL term between the original's "
    "and the student's class outputs added to the feature loss (teacher logits from the stored features through the "
    "frozen head; 0 = feature loss only, the default; README).")
_LOGIT_TEMPERATURE = typer.Option(_RECIPE.logit_temperature, "--logit-temperature", help="Softmax temperature of that "
    "term (the term is scaled by T^2).")
_TRAIN_HEAD = typer.Option(False, "--train-head", help="Also train the classifier head (the paper keeps it frozen).")
_TRAIN_SCOPE = typer.Option(_RECIPE.train_scope, "--train-scope", help="suffix (default): freeze the layers before the first removed "
    "block and train the rest from their output, cached with the pseudo-labels (same accuracy, "
    "several times faster); all: train every layer from the pixels (the paper's recipe).")
_PRECISION = typer.Option(_RECIPE.precision, "--precision", help="auto (default): bf16 autocast where the CPU has native bf16 and a "
    "short probe of the real training step finds it faster than fp32, else fp32; fp32; bf16 "
    "(falls back to fp32 without native support).")
_EARLY_STOP = typer.Option(_RECIPE.early_stop, "--early-stop/--no-early-stop", help="Default on: hold out a slice of the fine-tune "
    "images (<=64), check its loss every 25 steps; on a plateau step the learning rate down "
    "early, and stop at a plateau of the last rate. Off: exactly --steps steps (paper).")
_MICRO_BATCH = typer.Option(_RECIPE.micro_batch or 0, "--micro-batch", help="Images per forward/backward in distillation; gradients "
    "accumulate to --batch (same loss; BatchNorm per chunk). Bounds peak memory and is faster "
    "on CPU (32, default); 0 = the whole batch at once (the paper).")
_DEPLOY_PRECISION = typer.Option(_OPT["deploy_precision"], "--deploy-precision", help="fp32 (default): model.onnx; "
    "int8: also model.int8.onnx, ONNX Runtime static QDQ quantisation calibrated on the "
    "fine-tune images and gated against model.onnx on held-out images (top-1 agreement "
    ">= 97%); where TensorRT runs also model.int8.engine from a symmetric QDQ graph; needs an int8 "
    "profile. Not --precision, which is the distillation's.")
_CALIBRATION_IMAGES = typer.Option(_INT8.calibration_images, "--calibration-images", help="INT8: fine-tune images used to calibrate.")
_CALIBRATION_METHOD = typer.Option(_INT8.settings.method, "--calibration-method", help="INT8: minmax | entropy | percentile.")
_INT8_MIN_AGREEMENT = typer.Option(_INT8.gate.min_agreement, "--int8-min-agreement", help="INT8 gate: the least "
    "held-out top-1 agreement with model.onnx (README: on a stream where the model is "
    "rarely confident, near-ties flip and this counts them).")
_ALLOW_PRECISION_MISMATCH = typer.Option(False, "--allow-precision-mismatch", help="Accept a profile of another "
    "precision than --deploy-precision (warns: savings differ by precision).")
_AS_JSON = typer.Option(False, "--json", help="Print report.json to stdout.")


def int8_config(images: int, method: str, min_agreement: float) -> Int8Config:
    """The INT8 deployment settings the CLI's calibration options describe (adapt and export)."""
    return dataclasses.replace(Int8Config(), calibration_images=images, settings=QuantSettings(method=method),
                               gate=Int8Gate(min_agreement))


def adapt(
    images: Path = _IMAGES,
    model: Optional[str] = _MODEL,
    weights: Optional[Path] = _WEIGHTS,
    profile: Optional[Path] = _PROFILE,
    blocks: Optional[int] = _BLOCKS,
    target_saving: Optional[float] = _TARGET_SAVING,
    latency_budget_ms: Optional[float] = _LATENCY_BUDGET_MS,
    output: Optional[Path] = _OUTPUT,
    criterion: str = _CRITERION,
    prune_images: int = _PRUNE_IMAGES,
    finetune_images: int = _FINETUNE_IMAGES,
    steps: int = _STEPS,
    batch: int = _BATCH,
    lr: float = _LR,
    decay_every: float = _DECAY_EVERY,
    time_budget: float = _TIME_BUDGET,
    seed: int = _SEED,
    force: bool = _FORCE,
    dynamic_batch: bool = _DYNAMIC_BATCH,
    allow_device_mismatch: bool = _ALLOW_DEVICE_MISMATCH,
    no_latency: bool = _NO_LATENCY,
    teacher_stats: str = _TEACHER_STATS,
    student_bn: str = _STUDENT_BN,
    bn_probe_steps: int = _BN_PROBE_STEPS,
    local_steps: int = _LOCAL_STEPS,
    logit_weight: float = _LOGIT_WEIGHT,
    logit_temperature: float = _LOGIT_TEMPERATURE,
    train_head: bool = _TRAIN_HEAD,
    train_scope: str = _TRAIN_SCOPE,
    precision: str = _PRECISION,
    early_stop: bool = _EARLY_STOP,
    micro_batch: int = _MICRO_BATCH,
    deploy_precision: str = _DEPLOY_PRECISION,
    calibration_images: int = _CALIBRATION_IMAGES,
    calibration_method: str = _CALIBRATION_METHOD,
    int8_min_agreement: float = _INT8_MIN_AGREEMENT,
    allow_precision_mismatch: bool = _ALLOW_PRECISION_MISMATCH,
    as_json: bool = _AS_JSON,
):
    """Prune and distil a pretrained model on unlabeled field images; write ONNX/TensorRT artifacts and a report."""
    params = dict(locals())  # the options above, by name
    if "torch" not in sys.modules:  # OpenMP reads this once, when torch loads: idle threads sleep instead of spinning,
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # which keeps training fast on a shared CPU (hardware.py)
    from ..pipeline.adapt import run_adapt

    with RichReporter(quiet=as_json) as rep:
        result = run_adapt(adapt_options(params), reporter=rep)
    if as_json:
        emit_json(result.report)
        return
    render_adapt_summary(result.report, result.output)


def adapt_options(p: dict) -> AdaptOptions:
    """The validated options object of ``adapt``'s command-line values (``p``: option name -> value)."""
    recipe = adapt_recipe(steps=p["steps"], batch_size=p["batch"], lr=p["lr"], decay_every=p["decay_every"],
                          time_budget_minutes=p["time_budget"] or None, freeze_head=not p["train_head"],
                          train_scope=p["train_scope"], precision=p["precision"], early_stop=p["early_stop"],
                          micro_batch=p["micro_batch"] or None, teacher_stats=p["teacher_stats"], student_bn=p["student_bn"],
                          local_steps=p["local_steps"], bn_probe_steps=p["bn_probe_steps"],
                          logit_weight=p["logit_weight"], logit_temperature=p["logit_temperature"])
    return AdaptOptions(p["images"], p["output"], model=p["model"], profile=p["profile"], weights=p["weights"],
                        blocks=p["blocks"], target_saving=p["target_saving"], latency_budget_ms=p["latency_budget_ms"],
                        criterion=p["criterion"], prune_images=p["prune_images"], finetune_images=p["finetune_images"],
                        seed=p["seed"], force=p["force"], dynamic_batch=p["dynamic_batch"],
                        allow_device_mismatch=p["allow_device_mismatch"], measure_latency=not p["no_latency"], recipe=recipe,
                        deploy_precision=p["deploy_precision"],
                        int8=int8_config(p["calibration_images"], p["calibration_method"], p["int8_min_agreement"]),
                        allow_precision_mismatch=p["allow_precision_mismatch"])


def render_adapt_summary(r: dict, output: Path) -> None:
    f = r["fidelity"]
    table = Table("", "original", "pruned", "pruned + distilled", title=f"{r['model']}: removed {', '.join(r['removed_blocks'])}")
    table.add_row("agreement with original (held out)", "100.0%", percent(f["agreement_before"]), percent(f["agreement_after"]))
    if "after" in f:
        b, a = f["before"], f["after"]
        table.add_row(f"  on the original's confident images ({a['confident_images']})", "100.0%",
                      percent(b["confident_agreement"]), percent(a["confident_agreement"]))
        table.add_row("  top-5 overlap", "100.0%", percent(b["top5_overlap"]), percent(a["top5_overlap"]))
        table.add_row("  KL(original || model)", "0", f"{b['kl_original_adapted']:.3f}", f"{a['kl_original_adapted']:.3f}")
    if f["accuracy_original"] is not None:
        table.add_row("accuracy (held out)", percent(f["accuracy_original"]), percent(f["accuracy_before"]), percent(f["accuracy_after"]))
    lat = r.get("measured_latency") or {}
    if lat:
        table.add_row("latency, ONNX Runtime median", f"{lat['original_ms']:.2f} ms", "", f"{lat['adapted_ms']:.2f} ms")
        if "int8_adapted_ms" in lat:
            table.add_row("  int8 (model.int8.onnx)", "", "", f"{lat['int8_adapted_ms']:.2f} ms")
    table.add_row("latency saving (predicted / measured)", "", percent(r["predicted_saving"]), percent(r["measured_saving"]))
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
