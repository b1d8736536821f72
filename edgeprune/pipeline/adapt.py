"""``edgeprune.adapt``: test-time pruning + distillation from an image stream (the field job).

The run is a handful of stages, each a function a benchmark can call on its own:

    prep = prepare(options)                  # validate; model, profile, images, split (prepare.py)
    scored = score(prep)                     # block scores and the removal plan (stages.py)
    distilled = distil(prep, scored)         # pseudo-labels, distillation, held-out predictions
    info, errors = export(prep, scored, distilled, folder)   # manifest, ONNX + parity, TensorRT (publish.py)
    report(prep, scored, distilled, info, errors, folder)    # report.json / report.md

``adapt`` runs them in sequence, writing into a temporary folder that is published at the end
(deploy/outputs.py); the options are one validated ``AdaptOptions`` (options.py).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from ..deploy.outputs import AtomicOutputDir, OutputLock
from ..errors import ExportError
from ..progress import Reporter
from .options import AdaptOptions
from .prepare import prepare
from .publish import export, report
from .stages import distil, score


@dataclass
class AdaptResult:
    output: Path
    report: dict
    warnings: list[str] = field(default_factory=list)

    @property
    def removed_blocks(self) -> list[str]:
        return self.report["removed_blocks"]


def adapt(images: str | os.PathLike, output: str | os.PathLike | None = None, reporter: Reporter | None = None,
          **options) -> AdaptResult:
    """Prune and distil a pretrained model on unlabeled images; write deployable artifacts.

    Args:
        images: folder searched recursively; class sub-folders give accuracy too.
        output: artifact folder (refused when non-empty unless ``force``); default
            ``edgeprune-out/<model>-<time>``.
        model, profile: either may be omitted: the profile recorded for this device decides.
        weights: a state dict of the pretrained model; default the zoo's local weights.
        blocks / target_saving / latency_budget_ms: how much to prune (default 3 blocks).
        criterion: block-scoring criterion plug-in (default "ttmpd").
        prune_images, finetune_images (prune images included), seed: the image split.
        force, dynamic_batch, allow_device_mismatch, measure_latency: as the CLI's flags.
        tensorrt: build a TensorRT engine; None = when tensorrt and CUDA are present.
        teacher_stats: "auto" (default: decided from the stream, distill/normalisation.py),
            "source" (the paper: the teacher as trained) or "stream" (BatchNorm statistics
            re-estimated on the fine-tune images before scoring and pseudo-labels).
        student_bn: "auto" (default: a short probe of frozen and train, distill/bn_probe.py),
            "train" (the paper), "frozen" (eval-mode BatchNorm while distilling: far better on
            lite0, diverged on a small ResNet) or "reestimate" (train, then a final pass over the
            fine-tune images).
        local_steps: local gap reconstruction steps per window before distillation (0 = off).
        steps, batch, lr, decay_every, time_budget_minutes: the distillation recipe's (the last:
            wall-time budget of the distillation, distill/budget.py); every default is
            ``DistillConfig()``'s.
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
    return run_adapt(AdaptOptions.from_kwargs(images, output, **options), reporter)


def run_adapt(options: AdaptOptions, reporter: Reporter | None = None) -> AdaptResult:
    """``adapt`` with its options as one object (the CLI's entry)."""
    # The output's lock is held for the whole run, not only while publishing: a second run
    # writing to the same output is refused at once (OutputError), not after all its work.
    target = Path(options.output).absolute() if options.output is not None else None
    if target is None or not target.parent.is_dir():  # default or new folder: locked when publishing
        return _run(options, reporter, None)
    with OutputLock(target) as lock:
        return _run(options, reporter, lock)


def _run(options: AdaptOptions, reporter: Reporter | None, lock: OutputLock | None) -> AdaptResult:
    prep = prepare(options, reporter)
    scored = score(prep)
    distilled = distil(prep, scored)
    with AtomicOutputDir(prep.output, options.force, lock=lock) as folder:
        exported, errors = export(prep, scored, distilled, folder)
        data = report(prep, scored, distilled, exported, errors, folder)
    if errors:
        raise ExportError(f"{errors[0]} (manifest and report saved in {prep.output})")
    return AdaptResult(prep.output, data, prep.reporter.warnings)
