"""``adapt``'s last stages, inside the output folder being written: the artifacts (manifest, ONNX
with its parity gate, the measured saving, a TensorRT engine where possible) and the report.

Export failures are recorded in the report, not raised, so the manifest and the report are still
published; ``adapt`` raises afterwards. A full disk (OutputError) fails the run: nothing is published.
"""

from __future__ import annotations

import platform
from datetime import datetime, timezone
from pathlib import Path

import torch

from ..data.transforms import normalise
from ..errors import EdgepruneError, ExportError
from ..models.surgery import save_manifest
from ..progress import Reporter
from ..pruning.plan import LS_FLOOR
from ..version import __version__
from .evaluate import accuracy, agreement
from .fidelity import fidelity_metrics
from .int8_artifact import INT8_FILE, adapt_int8, adapt_tensorrt_int8, latency_variants
from .prepare import Prepared
from .report import write_report
from .stages import Distilled, Scored


def export(prep: Prepared, scored: Scored, distilled: Distilled, folder: Path) -> tuple[dict, list[str]]:
    """Write model.pt, model.onnx (parity-gated), maybe model.engine into ``folder``: (info, errors)."""
    opts, rep = prep.options, prep.reporter
    errors: list[str] = []
    with prep.clock.phase("export"):
        rep.stage("export")
        save_manifest(folder / "model.pt", distilled.student, prep.model_name, prep.weights_source, scored.plan.removed,
                      resolution=prep.resolution, criterion=opts.criterion, seed=opts.seed)
        info = _export_and_check(prep, distilled.student, int(prep.profile.get("batch", 1)), folder, errors)
    return info, errors


def _export_and_check(prep: Prepared, student, batch: int, folder: Path, errors: list[str]) -> dict:
    """ONNX export + parity gate + measured saving + TensorRT engine; failures recorded, not raised."""
    from ..deploy.onnx_export import export_onnx
    from ..deploy.parity import PARITY_IMAGES, check_parity, fit_to_batch

    opts, entry = prep.options, prep.entry
    info: dict = {"artifacts": ["model.pt"]}
    example = torch.zeros(batch, entry.in_chans, prep.resolution, prep.resolution)
    try:
        export_onnx(student, example, folder / "model.onnx", dynamic_batch=opts.dynamic_batch)
        info["artifacts"].append("model.onnx")
    except ExportError as exc:  # an OutputError (disk full...) fails the run: nothing is published
        errors.append(f"ONNX export failed: {exc}")
        return info
    held_px = prep.images.pixels[prep.held]
    x = fit_to_batch(normalise(held_px[:PARITY_IMAGES], entry.mean, entry.std), batch, opts.dynamic_batch)
    if len(x):
        info["parity"] = par = check_parity(student, folder / "model.onnx", x, inputs_label=f"{len(x)} held-out images")
        if not par["passed"]:
            errors.append(f"ONNX parity failed on {par['inputs']}: {'; '.join(par['failures'])}")
    if opts.deploy_precision == "int8" and len(x) and info.get("parity", {}).get("passed"):
        info["int8"] = adapt_int8(prep, folder, x, errors, prep.reporter)
        if info["int8"]["written"]:
            info["artifacts"].append(INT8_FILE)
    elif opts.deploy_precision == "int8":  # never a silent fp32 deployment
        errors.append(f"{INT8_FILE} was not built: model.onnx has no passing parity check on held-out images to quantise from")
    if opts.measure_latency:
        info.update(_measure_saving(prep.original, example, folder, prep.reporter, latency_variants(folder, info.get("int8"))))
    info["tensorrt"] = _tensorrt(prep, folder, x, info, errors)
    return info


def _tensorrt(prep: Prepared, folder: Path, held: torch.Tensor, info: dict, errors: list[str]) -> dict | None:
    """model.engine (fp16) where TensorRT is wanted and present; with --deploy-precision int8 also
    model.int8.engine. Elsewhere a record saying how to build them on the target (never silent)."""
    from ..deploy.tensorrt_build import build_tensorrt_engine, tensorrt_available

    opts, rep = prep.options, prep.reporter
    int8 = opts.deploy_precision == "int8"
    if not (opts.tensorrt if opts.tensorrt is not None else (tensorrt_available() and torch.cuda.is_available())):
        return _no_tensorrt(prep.output, int8, rep)
    record: dict | None = None
    try:
        build_tensorrt_engine(folder / "model.onnx", folder / "model.engine", fp16=True)
        info["artifacts"] += ["model.engine", "model.engine.json"]
        record = {"built": True, "precision": "fp16"}
    except EdgepruneError as exc:
        errors.append(f"TensorRT engine failed: {exc}")
    if int8 and len(held) and info.get("parity", {}).get("passed"):
        q = adapt_tensorrt_int8(prep, folder, held, errors, rep)
        info["artifacts"] += [f for f in (q["path"], q["engine"], q["engine"] and q["engine"] + ".json") if f]
        record = (record or {"built": False}) | {"int8": q}
    return record


def _no_tensorrt(output: Path, int8: bool, rep: Reporter) -> dict:
    hint = f"edgeprune export --model {output}/model.pt --tensorrt"
    rep.info(f"no TensorRT here: build the engine on the target with `{hint}`")
    record = {"built": False, "reason": "tensorrt or CUDA not present here", "build_on_target": hint}
    if int8:
        int8_hint = f"{hint} --int8 --images DIR (DIR: the field images to calibrate on)"
        rep.info(f"no TensorRT here: model.int8.engine was not built; on the target: `{int8_hint}`")
        record["int8"] = {"built": False, "reason": record["reason"], "build_on_target": int8_hint}
    return record


def _measure_saving(teacher, example, folder: Path, rep: Reporter, extra: dict[str, Path]) -> dict:
    """ONNX Runtime medians of the exported original vs adapted model (fp32; and the INT8 graph in
    ``extra``), interleaved."""
    from ..deploy.ort import measure_onnx_latency

    stats = measure_onnx_latency({"original": teacher, "adapted": folder / "model.onnx", **extra}, example,
                                 progress=lambda d, t: rep.progress("measuring latency", d, t))
    base, new = stats["original"].median_ms, stats["adapted"].median_ms
    lat = {"backend": "onnxruntime-cpu", "original_ms": base, "adapted_ms": new,
           "original_cv": stats["original"].cv, "adapted_cv": stats["adapted"].cv,
           "original": stats["original"].to_dict(), "adapted": stats["adapted"].to_dict(),
           "n": min(s.n for s in stats.values())}
    if "int8_adapted" in stats:  # fp32 original, fp32 adapted, int8 adapted: one interleaved run
        q = stats["int8_adapted"]
        lat |= {"int8_adapted_ms": q.median_ms, "int8_adapted": q.to_dict(), "int8_speedup_vs_original": base / q.median_ms,
                "int8_speedup_vs_adapted": new / q.median_ms}
    return {"measured_saving": (base - new) / base, "measured_latency": lat}


def report(prep: Prepared, scored: Scored, distilled: Distilled, exported: dict, errors: list[str], folder: Path) -> dict:
    """report.json's dictionary (keys: README "report.json keys"), written with report.md into ``folder``."""
    from ..distill.hardware import peak_rss_mb

    prep.clock.total()
    plan, dres, floor = scored.plan, distilled.result, prep.floor
    data = {
        "model": prep.model_name,
        "weights_source": prep.weights_source,
        "profile": str(prep.profile_path),
        "profile_choice": prep.profile_choice,
        "criterion": prep.options.criterion,
        "k": len(plan.removed),
        "plan": {"mode": plan.mode, "target": plan.target},
        "removed_blocks": plan.removed,
        "block_scores": _block_scores(prep, scored),
        "ls_floor": {"value": LS_FLOOR, "floored_blocks": scored.floored},
        "predicted_saving": plan.predicted_saving,
        "measured_saving": exported.get("measured_saving"),
        "measured_latency": exported.get("measured_latency", {}),
        "fidelity": _fidelity(prep, distilled),
        "normalisation": prep.normalisation,
        "distillation": _distillation(prep, distilled),
        "train_scope": dres.train_scope,
        "precision": dres.precision,
        "hardware": dres.hardware,
        "early_stop": {k: dres.early_stop.get(k) for k in ("enabled", "stopped_at", "reason", "checks", "lr_events")}
                      | {"steps_done": dres.steps_done},
        "compute_floor_s": floor.floor_s,
        "efficiency": floor.efficiency(),
        "compute_floor": floor.to_dict(),
        "peak_memory_mb": peak_rss_mb(),
        "peak_memory_by_phase_mb": prep.clock.memory,
        "timings": prep.clock.timings,
        "scoring_forward_equivalents": scored.result.forward_equivalents,
        "onnx_parity": exported.get("parity"),
        "deploy_precision": prep.options.deploy_precision,
        "deployed": INT8_FILE if (exported.get("int8") or {}).get("written") else "model.onnx",
        "int8": exported.get("int8"),
        "artifacts": exported.get("artifacts", ["model.pt"]),
        "tensorrt": exported.get("tensorrt"),
        "images": _images(prep),
        "versions": {"edgeprune": __version__, "torch": torch.__version__, "python": platform.python_version()},
        "seed": prep.options.seed,
        "warnings": prep.reporter.warnings + scored.result.notes,
        "errors": errors,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    write_report(folder, data)
    return data


def _block_scores(prep: Prepared, scored: Scored) -> list[dict]:
    details = scored.result.details
    return [{"name": b.name, "noise": details.get(b.name, {}).get("noise"), "capacity_gap": b.capacity_gap,
             "latency_saving": scored.savings[b.name], "latency_saving_profiled": scored.savings_profiled[b.name],
             "importance": scored.result.scores[b.name]} for b in prep.blocks]


def _fidelity(prep: Prepared, d: Distilled) -> dict:
    return {
        "held_out": len(prep.held),
        "agreement_before": agreement(d.pred_before, d.pred_original),
        "agreement_after": agreement(d.pred_after, d.pred_original),
        "accuracy_original": accuracy(d.pred_original, d.held_labels),
        "accuracy_before": accuracy(d.pred_before, d.held_labels),
        "accuracy_after": accuracy(d.pred_after, d.held_labels),
        "before": fidelity_metrics(d.logits_original, d.logits_before),
        "after": fidelity_metrics(d.logits_original, d.logits_after),
    }


def _distillation(prep: Prepared, d: Distilled) -> dict:
    dres, targets, recipe = d.result, d.targets, prep.options.recipe
    return {"steps": dres.steps_done, "steps_requested": recipe.steps, "batch": min(recipe.batch_size, len(prep.finetune_idx)),
            "micro_batch": d.config.micro_batch, "lr": recipe.lr,
            "final_loss": dres.final_loss, "first_loss": dres.losses[0] if dres.losses else None,
            "stopped_nonfinite": dres.stopped_nonfinite, "restored_step": dres.restored_step, "kept": dres.kept,
            "student_bn": d.config.student_bn, "student_bn_used": dres.student_bn.get("chosen", d.config.student_bn),
            "student_bn_probe": dres.student_bn or None, "local": d.local, "logit_term": dres.logit_term or None,
            "time_budget": dres.time_budget or None, "decay_every": recipe.decay_every,
            "train_images": dres.train_images, "prefix_stage": dres.prefix_stage, "seconds": dres.seconds,
            "setup_seconds": dres.setup_seconds, "check_seconds": dres.check_seconds, "notes": dres.notes,
            "cached_prefix_mb": targets.prefix.store.nbytes / 2**20 if targets.prefix else 0.0,
            "labels_mb": targets.labels.nbytes / 2**20, "memory_mapped": targets.memory_mapped}


def _images(prep: Prepared) -> dict:
    imgs = prep.images
    return {"found": imgs.found, "usable": len(imgs.pixels), "prune": len(prep.split.prune), "finetune": len(prep.finetune_idx),
            "held_out": len(prep.held), "labelled": imgs.labels is not None, "skipped": imgs.skipped}
