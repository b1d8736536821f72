"""``edgeprune.adapt``: test-time pruning + distillation from an image stream (the field job).

Flow: profile + model -> images -> block scores -> plan -> surgery -> pseudo-labels ->
distillation -> manifest, ONNX (+ parity), TensorRT engine where possible -> report.
Everything is written into a temporary folder and published at the end (outputs.py).
"""

from __future__ import annotations

import copy
import functools
import os
import platform
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import torch

from ..data.discovery import summarise_skipped
from ..data.images import load_images, require_images
from ..data.split import split_indices
from ..data.transforms import normalise
from ..deploy.outputs import AtomicOutputDir, OutputLock, check_output_dir
from ..distill.bn_stats import reestimate_bn_stats
from ..distill.compute_floor import ComputeFloor
from ..distill.distiller import TRAIN_SCOPES, DistillConfig, distill
from ..distill.hardware import PRECISIONS, peak_rss_mb, plan_hardware, release_free_memory
from ..distill.targets import build_distill_targets, suffix_stop
from ..errors import EdgepruneError, ExportError, ModelError, ProfileError, UsageError
from ..models.blocks import find_blocks
from ..models.staging import split
from ..models.surgery import remove_blocks, save_manifest
from ..models.zoo import RANDOM, canonical_name, get_entry, load_model
from ..progress import CollectingReporter, Reporter
from ..pruning.criteria import CRITERIA, ScoringContext
from ..pruning.plan import LS_FLOOR, floor_savings, make_plan
from ..version import __version__
from .evaluate import accuracy, agreement, predict
from .report import write_json, write_report

DEFAULT_BLOCKS = 3  # the short form's plan when no --blocks/--target-saving/--latency-budget-ms
MIN_IMAGES = 16  # fewer usable images than this: refuse (scoring and held-out need some)


@dataclass
class AdaptResult:
    output: Path
    report: dict
    warnings: list[str] = field(default_factory=list)

    @property
    def removed_blocks(self) -> list[str]:
        return self.report["removed_blocks"]


def default_profiles_root() -> Path:
    return Path(os.environ.get("EDGEPRUNE_PROFILES", "profiles"))


def resolve_profile(model: str | None, profile: str | os.PathLike | None, reporter: Reporter) -> tuple[str, Path]:
    """The (model, profile path) to use; the short form picks this device's recorded profile."""
    from ..latency.profiles import find_device_profiles, load_profile

    if profile is not None:
        path = Path(profile)
        prof = load_profile(path)
        return canonical_name(model or prof["model"]), path
    root = default_profiles_root()
    candidates = find_device_profiles(root)
    if model is not None:
        candidates = [p for p in candidates if canonical_name(load_profile(p)["model"]) == canonical_name(model)]
    if not candidates:
        what = f"for {model} " if model else ""
        raise ProfileError(
            f"no latency profile {what}recorded for this device under {root}/",
            f"run `edgeprune profile --model {model or 'NAME'}` first, or pass --profile PATH",
        )
    if len(candidates) > 1:
        listing = "; ".join(str(p) for p in candidates)
        raise ProfileError(f"several profiles recorded for this device: {listing}", "choose one with --profile (or --model)")
    chosen = candidates[0]
    prof = load_profile(chosen)
    reporter.info(f"using profile {chosen} (model {prof['model']})")
    return canonical_name(model or prof["model"]), chosen


def _validate(steps, batch, lr, prune_images, finetune_images, blocks):
    if steps <= 0:
        raise UsageError(f"--steps must be positive, got {steps}")
    if batch <= 0:
        raise UsageError(f"--batch must be positive, got {batch}")
    if not lr > 0:
        raise UsageError(f"--lr must be positive, got {lr}")
    if prune_images <= 0 or finetune_images <= 0:
        raise UsageError("--prune-images and --finetune-images must be positive")
    if blocks is not None and blocks <= 0:
        raise UsageError(f"--blocks must be at least 1, got {blocks}")


def _adapt(
    images: str | os.PathLike,
    output: str | os.PathLike | None = None,
    model: str | None = None,
    profile: str | os.PathLike | None = None,
    weights: str | os.PathLike | None = None,
    blocks: int | None = None,
    target_saving: float | None = None,
    latency_budget_ms: float | None = None,
    criterion: str = "ttmpd",
    prune_images: int = 64,
    finetune_images: int = 1000,
    steps: int = 500,
    batch: int = 64,
    lr: float = 0.02,
    seed: int = 0,
    force: bool = False,
    dynamic_batch: bool = False,
    allow_device_mismatch: bool = False,
    tensorrt: bool | None = None,
    measure_latency: bool = True,
    teacher_stats: str = "source",
    student_bn: str = "train",
    train_head: bool = False,
    train_scope: str = "suffix",
    precision: str = "auto",
    early_stop: bool = True,
    micro_batch: int | None = 32,
    reporter: Reporter | None = None,
    _output_lock: OutputLock | None = None,
) -> AdaptResult:
    """Prune and distil a pretrained model on unlabeled images; write deployable artifacts.

    Args:
        images: folder searched recursively; class sub-folders give accuracy too.
        output: artifact folder (refused when non-empty unless ``force``); default
            ``edgeprune-out/<model>-<time>``.
        model, profile: either may be omitted: the profile recorded for this device decides.
        blocks / target_saving / latency_budget_ms: how much to prune (default 3 blocks).
        tensorrt: build a TensorRT engine; None = when tensorrt and CUDA are present.
        teacher_stats: "source" (default, the paper: the teacher as trained) or "stream" (its
            BatchNorm statistics re-estimated on the fine-tune images before scoring and
            pseudo-labels: large gains on shifted, diverse streams; harmful on low-diversity
            streams — README "Normalisation statistics from the stream").
        student_bn: "train" (default, the paper: the running averages left by distillation) or
            "reestimate" (a final pass over the fine-tune images after distillation).
        train_head: also train the classifier head (the paper keeps it frozen).
        train_scope: "suffix" (default: freeze the stages before the first removed block and train the
            rest from their cached output) or "all" (the paper: every stage from the pixels).
        precision: "auto" (default: bf16 autocast only where it is native and measured faster),
            "fp32" or "bf16". early_stop: stop distillation once a validation slice of the
            fine-tune set stops improving (docs/benchmarks/adapt_speed.md has the evidence).
        micro_batch: images per forward/backward (gradients accumulate to ``batch``; BatchNorm
            normalises per chunk); None = the whole batch at once, as in the paper.
    Returns:
        AdaptResult with the output folder and the report dictionary (report.json).
    """
    from ..latency.profiles import block_savings, check_profile_matches, load_profile

    rep = CollectingReporter(reporter)
    t0 = time.perf_counter()
    timings: dict[str, float] = {}
    _validate(steps, batch, lr, prune_images, finetune_images, blocks)
    if teacher_stats not in ("source", "stream"):
        raise UsageError(f"--teacher-stats must be source or stream, got {teacher_stats!r}")
    if student_bn not in ("train", "reestimate"):
        raise UsageError(f"--student-bn must be train or reestimate, got {student_bn!r}")
    if train_scope not in TRAIN_SCOPES:
        raise UsageError(f"--train-scope must be suffix or all, got {train_scope!r}")
    if micro_batch is not None and micro_batch <= 0:
        raise UsageError(f"--micro-batch must be positive (or 0 for the whole batch), got {micro_batch}")
    if precision not in PRECISIONS:
        raise UsageError(f"--precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    CRITERIA.get(criterion)  # unknown criterion: fail before any work
    if model is not None:
        get_entry(model)  # unknown model: "did you mean ..." before any profile lookup
    model_name, profile_path = resolve_profile(model, profile, rep)
    prof = load_profile(profile_path)
    if canonical_name(prof["model"]) != model_name:  # cheap check before loading any weights
        raise ProfileError(f"profile {profile_path} is for model {prof['model']}, not {model_name} (field: model)",
                           f"run `edgeprune profile --model {model_name}` or pass its --profile")
    if blocks is None and target_saving is None and latency_budget_ms is None:
        blocks = DEFAULT_BLOCKS
        rep.info(f"no plan given: removing {DEFAULT_BLOCKS} blocks (use --blocks/--target-saving/--latency-budget-ms)")
    if output is None:
        output = Path("edgeprune-out") / f"{model_name.replace(':', '_')}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
        rep.info(f"writing to {output}")
    output = Path(output)
    check_output_dir(output, force)

    # -- load
    rep.stage("load")
    teacher, entry, source = load_model(model_name, weights)
    if source == RANDOM:
        raise ModelError("refusing to adapt a model with random weights", "pass --weights PATH")
    resolution = int(prof["resolution"])
    example = torch.zeros(1, entry.in_chans, resolution, resolution)
    try:
        all_blocks = find_blocks(teacher, entry, example)
    except RuntimeError as exc:
        raise ProfileError(f"{entry.name} does not run at the profile's resolution {resolution} (field: resolution): "
                           f"{str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__}",
                           f"re-run `edgeprune profile --model {entry.name}`") from None
    if blocks is not None and not 1 <= blocks < len(all_blocks):  # before reading images and scoring
        raise UsageError(f"--blocks must be between 1 and {len(all_blocks) - 1} "
                         f"(the model has {len(all_blocks)} removable blocks), got {blocks}")
    from ..latency.fingerprint import device_fingerprint, device_slug

    for w in check_profile_matches(prof, model_name, [b.name for b in all_blocks], resolution,
                                   device_slug(device_fingerprint(prof["device"].get("kind", "cpu"))), allow_device_mismatch):
        rep.warn(w)
    for w in prof.get("warnings", []):
        rep.warn(f"profile: {w}")
    imgs = load_images(images, resolution, entry.crop_pct,
                       progress=lambda d, t: rep.progress("reading images", d, t))
    if imgs.skipped:
        rep.warn(f"skipped {len(imgs.skipped)} unusable file(s): {summarise_skipped(imgs.skipped)} (listed in report.json)")
    require_images(imgs, MIN_IMAGES)
    parts = split_indices(len(imgs.pixels), prune=prune_images, finetune=max(finetune_images - prune_images, 0), seed=seed,
                          minimum=MIN_IMAGES)
    for w in parts.warnings:
        rep.warn(w)
    finetune_idx = list(parts.prune) + list(parts.finetune)  # prune images are also fine-tune images
    held = list(parts.held_out)
    original = teacher
    bn_report = {"teacher_stats": teacher_stats, "student_bn": student_bn, "freeze_head": not train_head}
    if teacher_stats == "stream":
        teacher = copy.deepcopy(original)
        layers = reestimate_bn_stats(teacher, entry, imgs.pixels[finetune_idx], batch)
        bn_report["teacher_bn_layers"] = layers
        if layers == 0:
            bn_report["teacher_stats"] = "not applicable: the model has no BatchNorm running statistics"
            rep.info("--teacher-stats stream: not applicable, the model has no BatchNorm running statistics")
    hw = plan_hardware(precision, "cpu")  # threads, layout, precision (auto: probed on the real step)
    floor = ComputeFloor("cpu")
    floor.measure("fp32")  # start-up matmul throughput for the compute floor
    threads_before = torch.get_num_threads()  # scoring and pseudo-labels run with these; distillation may probe fewer
    timings["load"] = time.perf_counter() - t0
    memory = {"load": peak_rss_mb()}  # running peak (VmHWM) at the end of each phase

    # -- scoring
    t = time.perf_counter()
    rep.stage("scoring")
    savings_raw = block_savings(prof)
    savings, floored = floor_savings(savings_raw)
    for name in floored:
        rep.warn(f"block {name}: profiled saving {savings_raw[name]:.4f} <= 0, floored to {LS_FLOOR} (LS floor)")
    stages = split(teacher, entry.staging)
    prune_x = normalise(imgs.pixels[parts.prune], entry.mean, entry.std)
    ctx = ScoringContext(teacher, entry, all_blocks, prune_x, savings, stages, seed=seed, batch_size=batch)
    scored = CRITERIA.get(criterion)().score(ctx)
    plan = make_plan(scored.scores, savings_raw, k=blocks, target_saving=target_saving,
                     latency_budget_ms=latency_budget_ms, base_ms=prof["base"]["median_ms"])
    timings["scoring"] = time.perf_counter() - t
    memory["scoring"] = peak_rss_mb()
    release_free_memory()  # so the next phase's peak does not stack on this one's freed buffers
    rep.info(f"removing {len(plan.removed)} blocks: {', '.join(plan.removed)} (predicted saving {plan.predicted_saving:.1%})")

    # Inference-only passes (pseudo-labels, held-out predictions) run in micro-batch chunks too: the
    # result is the same and the transient activations are smaller (lite0, 224 px: +1.3 GB at 64, +0.8 at 32).
    infer_batch = min(batch, micro_batch or batch)

    # -- pseudo-labels (reusing the scoring pass's features of the prune images)
    t = time.perf_counter()
    rep.stage("pseudo-labels")
    reuse = {}
    if scored.teacher_features is not None:
        reuse = {i: scored.teacher_features[i] for i in range(len(parts.prune))}
    ft_pixels = imgs.pixels[finetune_idx]
    stop = suffix_stop(stages, plan.removed, train_scope)
    # one teacher pass: labels + (suffix scope) the frozen prefix's output for every fine-tune image
    targets = build_distill_targets(teacher, entry, ft_pixels, stages=stages, stop=stop, batch_size=infer_batch, reuse=reuse,
                                    progress=lambda d, tot: rep.progress("pseudo-labels", d, tot))
    store = targets.labels
    timings["pseudo_labels"] = time.perf_counter() - t
    memory["pseudo_labels"] = peak_rss_mb()
    release_free_memory()

    # -- distillation
    t = time.perf_counter()
    rep.stage("distillation")
    student = remove_blocks(teacher, plan.removed)
    held_px = imgs.pixels[held]
    held_labels = imgs.labels[held] if imgs.labels is not None else None
    pred_orig = predict(original, entry, held_px, infer_batch)
    pred_before = predict(student, entry, held_px, infer_batch)
    cfg = DistillConfig(steps=steps, batch_size=batch, lr=lr, seed=seed, freeze_head=not train_head,
                        train_scope=train_scope, precision=precision, early_stop=early_stop,
                        micro_batch=micro_batch if micro_batch and micro_batch < batch else None)
    try:
        dres = distill(student, entry, ft_pixels, store, cfg, prefix=targets.prefix, removed=plan.removed, hardware=hw,
                       progress=lambda s, n, loss: rep.progress("distillation", s, n, loss=loss))
    finally:
        targets.close()
    if dres.stopped_nonfinite:
        rep.warn(f"non-finite loss: distillation stopped, weights after {dres.restored_step} updates restored")
    if student_bn == "reestimate":
        reestimate_bn_stats(student, entry, ft_pixels, batch)
    pred_after = predict(student, entry, held_px, infer_batch)
    timings["finetune"] = time.perf_counter() - t
    memory["finetune"] = peak_rss_mb()
    release_free_memory()
    distill_threads = torch.get_num_threads()
    for p, n in {("fp32", threads_before), (dres.precision, distill_threads), (dres.precision, threads_before)}:
        floor.measure(p, again=True, threads=n)  # best of start-up and now
    flops = _phase_flops(teacher, stages, example, stop, len(parts.prune), scored.forward_equivalents, targets)
    floor.add("scoring", flops["scoring"], timings["scoring"], threads=threads_before)
    floor.add("pseudo_labels", flops["pseudo_labels"], timings["pseudo_labels"], threads=threads_before)
    floor.add("distillation", dres.floor_flops(), dres.seconds, dres.precision, threads=distill_threads)

    errors: list[str] = []
    report: dict = {}
    with AtomicOutputDir(output, force, lock=_output_lock) as tmp:
        t = time.perf_counter()
        rep.stage("export")
        save_manifest(tmp / "model.pt", student, model_name, source, plan.removed, resolution=resolution,
                      criterion=criterion, seed=seed)
        onnx_info = _export_and_check(student, original, entry, resolution, int(prof.get("batch", 1)), held_px,
                                      tmp, dynamic_batch, tensorrt, measure_latency, rep, errors)
        timings["export"] = time.perf_counter() - t
        memory["export"] = peak_rss_mb()
        timings["total"] = time.perf_counter() - t0
        details = scored.details
        report = {
            "model": model_name,
            "weights_source": source,
            "profile": str(profile_path),
            "criterion": criterion,
            "k": len(plan.removed),
            "plan": {"mode": plan.mode, "target": plan.target},
            "removed_blocks": plan.removed,
            "block_scores": [{"name": b.name, "noise": details.get(b.name, {}).get("noise"), "capacity_gap": b.capacity_gap,
                              "latency_saving": savings[b.name], "latency_saving_profiled": savings_raw[b.name],
                              "importance": scored.scores[b.name]} for b in all_blocks],
            "ls_floor": {"value": LS_FLOOR, "floored_blocks": floored},
            "predicted_saving": plan.predicted_saving,
            "measured_saving": onnx_info.get("measured_saving"),
            "measured_latency": onnx_info.get("measured_latency", {}),
            "fidelity": {
                "held_out": len(held),
                "agreement_before": agreement(pred_before, pred_orig),
                "agreement_after": agreement(pred_after, pred_orig),
                "accuracy_original": accuracy(pred_orig, held_labels),
                "accuracy_before": accuracy(pred_before, held_labels),
                "accuracy_after": accuracy(pred_after, held_labels),
            },
            "normalisation": bn_report,
            "distillation": {"steps": dres.steps_done, "steps_requested": steps, "batch": min(batch, len(finetune_idx)), "micro_batch": cfg.micro_batch, "lr": lr,
                             "final_loss": dres.final_loss, "first_loss": dres.losses[0] if dres.losses else None,
                             "stopped_nonfinite": dres.stopped_nonfinite, "restored_step": dres.restored_step,
                             "train_images": dres.train_images, "prefix_stage": dres.prefix_stage, "seconds": dres.seconds,
                             "setup_seconds": dres.setup_seconds, "check_seconds": dres.check_seconds, "notes": dres.notes,
                             "cached_prefix_mb": targets.prefix.store.nbytes / 2**20 if targets.prefix else 0.0,
                             "labels_mb": store.nbytes / 2**20, "memory_mapped": targets.memory_mapped},
            "train_scope": dres.train_scope,
            "precision": dres.precision,
            "hardware": dres.hardware,
            "early_stop": {k: dres.early_stop.get(k) for k in ("enabled", "stopped_at", "reason", "checks", "lr_events")}
                          | {"steps_done": dres.steps_done},
            "compute_floor_s": floor.floor_s,
            "efficiency": floor.efficiency(),
            "compute_floor": floor.to_dict(),
            "peak_memory_mb": peak_rss_mb(),
            "peak_memory_by_phase_mb": memory,
            "timings": timings,
            "scoring_forward_equivalents": scored.forward_equivalents,
            "onnx_parity": onnx_info.get("parity"),
            "artifacts": onnx_info.get("artifacts", ["model.pt"]),
            "tensorrt": onnx_info.get("tensorrt"),
            "images": {"found": imgs.found, "usable": len(imgs.pixels), "prune": len(parts.prune), "finetune": len(finetune_idx),
                       "held_out": len(held), "labelled": imgs.labels is not None, "skipped": imgs.skipped},
            "versions": {"edgeprune": __version__, "torch": torch.__version__, "python": platform.python_version()},
            "seed": seed,
            "warnings": rep.warnings + scored.notes,
            "errors": errors,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        write_report(tmp, report)
    if errors:
        raise ExportError(f"{errors[0]} (manifest and report saved in {output})")
    return AdaptResult(output, report, rep.warnings)


@functools.wraps(_adapt)
def adapt(images, output=None, *args, **kwargs) -> AdaptResult:
    # The output's lock is held for the whole run, not only while publishing: a second run
    # writing to the same output is refused at once (OutputError), not after all its work.
    target = Path(output).absolute() if output is not None else None
    if target is None or not target.parent.is_dir():  # default or new folder: locked when publishing
        return _adapt(images, output, *args, **kwargs)
    with OutputLock(target) as lock:
        return _adapt(images, output, *args, _output_lock=lock, **kwargs)


def _phase_flops(teacher, stages, example, stop, n_prune, forward_equivalents, targets) -> dict[str, float]:
    """FLOPs the scoring and pseudo-label phases required (compute_floor.py says what counts)."""
    from ..models.flops import model_flops, stage_flops

    per_stage = stage_flops(stages, example) if stages is not None else None
    full = sum(per_stage) if per_stage is not None else model_flops(teacher, example)
    prefix = sum(per_stage[:stop]) if per_stage is not None and stop else 0
    return {"scoring": n_prune * full * forward_equivalents,
            "pseudo_labels": targets.teacher_images * full + targets.prefix_only_images * prefix}


def _export_and_check(student, teacher, entry, resolution, batch, held_px, folder: Path, dynamic_batch, tensorrt,
                      measure_latency, rep: Reporter, errors: list[str]) -> dict:
    """ONNX export + parity gate + measured saving + TensorRT engine; failures recorded, not raised."""
    from ..deploy.onnx_export import export_onnx
    from ..deploy.parity import PARITY_IMAGES, check_parity, fit_to_batch
    from ..deploy.tensorrt_build import build_tensorrt_engine, tensorrt_available

    info: dict = {"artifacts": ["model.pt"]}
    example = torch.zeros(batch, entry.in_chans, resolution, resolution)
    try:
        export_onnx(student, example, folder / "model.onnx", dynamic_batch=dynamic_batch)
        info["artifacts"].append("model.onnx")
    except ExportError as exc:  # an OutputError (disk full...) fails the run: nothing is published
        errors.append(f"ONNX export failed: {exc}")
        return info
    x = fit_to_batch(normalise(held_px[:PARITY_IMAGES], entry.mean, entry.std), batch, dynamic_batch)
    if len(x):
        info["parity"] = par = check_parity(student, folder / "model.onnx", x, inputs_label=f"{len(x)} held-out images")
        if not par["passed"]:
            errors.append(f"ONNX parity failed on {par['inputs']}: {'; '.join(par['failures'])}")
    if measure_latency:
        info.update(_measure_saving(teacher, student, example, folder, rep))
    want_trt = tensorrt if tensorrt is not None else (tensorrt_available() and torch.cuda.is_available())
    if want_trt:
        try:
            build_tensorrt_engine(folder / "model.onnx", folder / "model.engine", fp16=True)
            info["artifacts"] += ["model.engine", "model.engine.json"]
            info["tensorrt"] = {"built": True, "precision": "fp16"}
        except EdgepruneError as exc:
            errors.append(f"TensorRT engine failed: {exc}")
    else:
        hint = f"edgeprune export --model {folder.name}/model.pt --tensorrt"
        info["tensorrt"] = {"built": False, "reason": "tensorrt or CUDA not present here", "build_on_target": hint}
        rep.info("no TensorRT here: build the engine on the target with `edgeprune export --model OUTPUT/model.pt --tensorrt`")
    return info


def _measure_saving(teacher, student, example, folder: Path, rep: Reporter) -> dict:
    """ONNX Runtime medians of the exported original vs adapted model, interleaved."""
    from ..deploy.ort import measure_onnx_latency

    stats = measure_onnx_latency({"original": teacher, "adapted": folder / "model.onnx"}, example,
                                 progress=lambda d, t: rep.progress("measuring latency", d, t))
    base, new = stats["original"].median_ms, stats["adapted"].median_ms
    return {"measured_saving": (base - new) / base,
            "measured_latency": {"backend": "onnxruntime-cpu", "original_ms": base, "adapted_ms": new,
                                 "original_cv": stats["original"].cv, "adapted_cv": stats["adapted"].cv,
                                 "original": stats["original"].to_dict(), "adapted": stats["adapted"].to_dict(),
                                 "n": min(stats["original"].n, stats["adapted"].n)}}
