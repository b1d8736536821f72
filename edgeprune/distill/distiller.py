"""Distillation of the pruned student toward stored pseudo-labels (method.md, "Fine-tuning").

Student = pruned model in train mode; every weight but the classifier head is trained;
loss = MSE(student pre-GAP features, stored teacher features); SGD momentum 0.9, weight decay
1e-4, lr 0.02 multiplied by 0.1 every 40% of the steps; 500 steps of batch 64; no augmentation.
A non-finite loss stops training and restores the last good weights.

Beyond the paper's recipe (each off in ``DistillConfig()``'s defaults unless said otherwise, so
existing callers get the paper's recipe; ``adapt`` turns on the fast path; the measurements
behind each default are in docs/benchmarks/adapt_speed.md and docs/benchmarks/design_measurements.md):

* ``train_scope="suffix"``: the stages before the first removed block (the *prefix*) are
  identical in student and teacher. They are frozen (eval-mode BatchNorm, no gradient) and their
  output for every fine-tune image is read from a cache built with the pseudo-labels in one
  teacher pass (targets.build_distill_targets); only the rest of the network runs forward
  and backward. ``"all"`` (default here) trains every stage from the pixels, as in the paper;
  there, BatchNorm in the unchanged prefix normalises with batch statistics while training and
  its running statistics drift toward the stream's, so at evaluation the student's prefix no
  longer reproduces the teacher's features that the labels were made with.
* ``precision``: ``fp32`` (default) | ``bf16`` | ``fp16`` | ``auto`` autocast; weights,
  optimiser and loss stay fp32 (hardware.py says what each device supports, and ``auto``'s probe).
* ``channels_last`` (default on): NHWC layout for 4-D activations; same math, faster convolutions
  on CPU (design_measurements.md, "Memory layout"). The student is returned in the default layout.
* ``micro_batch``: run each batch as chunks of this many images and accumulate the gradient
  (the same mean loss; BatchNorm normalises per chunk, i.e. ghost batches). ``adapt`` uses 32 on
  CPU: faster per step and a lower memory peak than one pass of 64 (design_measurements.md,
  "Micro-batches", made by tools/probe_step_memory.py).
* ``early_stop``: a validation slice of the fine-tune set (``val_images``, excluded from
  training; no held-out image is touched) is evaluated every ``check_every`` steps in eval mode;
  its plateaus move the learning-rate schedule early and end training (schedule.py).
* ``decay_every`` (0.7; the paper's 0.4 in ``DistillConfig.paper()``) and ``time_budget_minutes``:
  the step count fitted to a wall-time budget after the first steps (budget.py).
* ``logit_weight`` (default 0): adds a KL term between the original's and the student's class
  outputs, both through the frozen head (logit_term.py); the validation loss includes it.
"""

from __future__ import annotations

import copy
import math
import time
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..data.batches import batch_schedule
from ..data.transforms import normalise
from ..errors import UsageError
from ..models.features import extract_features
from ..models.flops import stage_flops
from ..models.staging import run_stages
from ..models.zoo import ZooEntry
from .bn_stats import freeze_batchnorm
from .budget import fit_when_due
from .result import DistillResult
from .schedule import PlateauSchedule
from .scope import resolve_suffix, trainable_parameters, validation_split
from .config import TRAIN_SCOPES, DistillConfig
from .hardware import HardwarePlan, plan_hardware, probe_precision, probe_threads, to_layout
from .logit_term import LogitTerm
from .targets import FeatureStore, PrefixCache


class Distiller:
    """One distillation run, advanced one optimiser step at a time (``distill`` loops it).

    Exposed so a benchmark can interleave the steps of several runs in one process.
    """

    def __init__(self, student: nn.Module, entry: ZooEntry, pixels: torch.Tensor, labels: FeatureStore,
                 config: DistillConfig, progress: Callable[[int, int, float], None] | None = None,
                 prefix: PrefixCache | None = None, removed: list[str] | None = None,
                 hardware: HardwarePlan | None = None):
        t0 = time.perf_counter()
        if config.train_scope not in TRAIN_SCOPES:
            raise UsageError(f"train_scope must be one of {', '.join(TRAIN_SCOPES)}, got {config.train_scope!r}")
        if config.student_bn == "auto":  # a decision between two runs: distill() (bn_probe.py) makes it
            raise ValueError("a Distiller needs a fixed student_bn (frozen, train, reestimate); distill() resolves auto")
        self.student, self.entry, self.pixels, self.labels, self.cfg = student, entry, pixels, labels, config
        self.progress = progress
        self.result = DistillResult(0)
        torch.manual_seed(config.seed)
        self.stages, self.start, self.prefix = resolve_suffix(student, entry, pixels, config, prefix, removed,
                                                              self.result.notes)
        self._setup_hardware(hardware)
        self.logit = LogitTerm.build(student, entry, pixels, config, self.result.notes)
        self.result.logit_term = self.logit.record() if self.logit else {}
        self._setup_parameters()
        self._setup_data()
        self._train_mode()
        self._probe()
        # Weights that last gave a finite loss, refreshed in place each step (no reallocation).
        self.good = {k: v.detach().clone() for k, v in student.state_dict().items()}
        self.good_updates = 0
        self.done = False
        # Best weights by validation loss, the undistilled student included: distillation never
        # hands back a model worse (on the slice) than the one it started from.
        self.best_val, self.best_step, self.best_state, self.last_checked = math.inf, 0, None, -1
        self.val_seconds = 0.0  # one validation check (the time budget's estimate)
        self.partner: Distiller | None = None  # the student BatchNorm probe's other run: its time counts too
        self.budget_mark = (0, 0.0)  # (steps, step seconds) at the time budget's last fit (budget.py)
        if self.val_pos and config.keep_best:
            t = time.perf_counter()
            self.record_validation(0, self.validation_loss())
            self.val_seconds = time.perf_counter() - t
        self.result.setup_seconds = time.perf_counter() - t0
        self.seconds = self.result.setup_seconds

    # ------------------------------------------------------------ setup
    def _set_scope(self, suffix: bool) -> None:
        self.suffix = suffix
        if not suffix:
            self.start, self.prefix = 0, None
        self.result.train_scope = "suffix" if suffix else "all"
        self.result.prefix_stop = self.start
        self.result.prefix_stage = self.stages[self.start][0] if suffix else ""

    def _setup_hardware(self, hardware: HardwarePlan | None) -> None:
        """Device, layout, precision."""
        cfg, student = self.cfg, self.student
        self.hw = hardware or plan_hardware(cfg.precision, cfg.device, cfg.channels_last)
        self.device = torch.device(self.hw.device if self.hw.device != "cuda" or torch.cuda.is_available() else "cpu")
        self.home = next(student.parameters()).device
        student.to(self.device)
        if self.hw.channels_last:
            student.to(memory_format=torch.channels_last)

    def _setup_parameters(self) -> None:
        """What trains (the suffix's weights but the head), the optimiser and the paper's step schedule."""
        cfg, student = self.cfg, self.student
        self._set_scope(self.stages is not None and self.start > 0)
        frozen: set[int] = set()
        self.prefix_modules: list[nn.Module] = []
        if self.suffix:
            self.prefix_modules = [m for _, m in self.stages[: self.start]]
            trained = {id(p) for _, m in self.stages[self.start :] for p in m.parameters()}
            frozen = {id(p) for p in student.parameters() if id(p) not in trained}
        self.params = trainable_parameters(student, self.entry, cfg.freeze_head, frozen)
        if self.suffix and not self.params:  # e.g. the last block removed: nothing after it but the frozen head
            self.result.notes.append(f"nothing trainable after {self.result.prefix_stage}: suffix scope unavailable, "
                                     "training all stages")
            self.prefix_modules = []
            self._set_scope(False)
            self.params = trainable_parameters(student, self.entry, cfg.freeze_head)
        self.opt = torch.optim.SGD(self.params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
        self.scaler = self.hw.grad_scaler_obj() if self.device.type == "cuda" else None

    def _setup_data(self) -> None:
        """Train / validation positions, the batch order, the early-stop record."""
        cfg = self.cfg
        self.train_pos, self.val_pos, off_reason = validation_split(len(self.labels), cfg)
        self.schedule = batch_schedule(len(self.train_pos), cfg.batch_size, cfg.steps, cfg.seed)
        self.result.train_images = len(self.train_pos)
        self.result.batch = min(cfg.batch_size, len(self.train_pos))
        self.early = {"enabled": cfg.early_stop and off_reason is None, "stopped_at": None,
                      "reason": off_reason or ("" if cfg.early_stop else "disabled"),
                      "check_every": cfg.check_every, "patience": cfg.patience,
                      "min_rel_improvement": cfg.min_rel_improvement, "val_images": len(self.val_pos),
                      "checks": [], "lr_events": []}
        self.lr_schedule = PlateauSchedule(cfg, self.opt, self.early)

    def _probe(self) -> None:
        """Thread count and precision timed on the real step; FLOPs of the trained part."""
        first = self.train_pos[: self.result.batch]
        # Probes time one micro-batch (else half a batch): a full fp32 trial step would otherwise set
        # the run's memory peak (docs/benchmarks/design_measurements.md); the ratio is what counts.
        half = first[: self.cfg.micro_batch or max(2, len(first) // 2)]
        probe_threads(self.hw, lambda trial: self._probe_step(trial, half))
        if self.hw.precision == "auto":
            probe_precision(self.hw, lambda trial: self._probe_step(trial, half))
        self.result.precision = self.hw.precision
        self.result.hardware = self.hw.to_dict()
        self.result.trained_forward_flops = self._trained_flops(first[:1])

    # ------------------------------------------------------------ pieces
    def _train_mode(self) -> None:
        self.student.train()
        for m in self.prefix_modules:
            m.eval()  # frozen prefix: running statistics, exactly the teacher's computation
        if self.cfg.student_bn == "frozen":
            freeze_batchnorm(self.student)
        if self.logit:
            self.logit.head_module.eval()  # frozen head: no dropout in the logit term

    def record_validation(self, step: int, val: float) -> None:
        """A validation loss measured at ``step``: the best weights so far are kept (keep_best)."""
        self.last_checked = step
        if self.cfg.keep_best and val < self.best_val:
            self.best_val, self.best_step = val, step
            self.best_state = {k: v.detach().clone() for k, v in self.student.state_dict().items()}
            if step == 0:
                self.result.kept["undistilled_val_loss"] = val

    def _inputs(self, positions) -> torch.Tensor:
        idx = torch.as_tensor(positions)
        if self.suffix:
            x = self.prefix.store.get(idx).float()
        else:
            x = normalise(self.pixels[idx], self.entry.mean, self.entry.std)
        if self.device.type == "cuda":
            x = x.pin_memory().to(self.device, non_blocking=True)
        return to_layout(x, self.hw.channels_last)

    def _targets(self, positions) -> torch.Tensor:
        y = self.labels.get(torch.as_tensor(positions))
        if self.device.type == "cuda":
            y = y.pin_memory().to(self.device, non_blocking=True)
        return y.float()

    def _forward(self, x: torch.Tensor, module_stages=None) -> torch.Tensor:
        if self.suffix:
            return run_stages(module_stages or self.stages, x, self.start)
        return extract_features(self.student, self.entry, x)

    def _probe_step(self, trial: HardwarePlan, positions) -> None:
        x, y = self._inputs(positions), self._targets(positions)
        if self.suffix:
            mods = copy.deepcopy(nn.ModuleList([m for _, m in self.stages[self.start :]]))
            mods.train()
            if self.cfg.student_bn == "frozen":
                freeze_batchnorm(mods)
            with trial.autocast():
                out = x
                for m in mods:
                    out = m(out)
        else:
            model = copy.deepcopy(self.student).train()
            if self.cfg.student_bn == "frozen":
                freeze_batchnorm(model)
            with trial.autocast():
                out = extract_features(model, self.entry, x)
        F.mse_loss(out.float(), y).backward()

    def _trained_flops(self, positions) -> int:
        from torch.utils.flop_counter import FlopCounterMode

        was = self.student.training
        self.student.eval()
        try:
            x = self._inputs(positions)
            if self.suffix:
                return sum(stage_flops(self.stages[self.start :], x))
            with FlopCounterMode(display=False) as counter, torch.no_grad():
                extract_features(self.student, self.entry, x)
            return int(counter.get_total_flops())
        finally:
            self.student.train(was)
            if was:
                self._train_mode()

    def validation_loss(self) -> float:
        if not self.val_pos:
            return float("nan")
        self.student.eval()
        total, count, logit_total = 0.0, 0, 0.0
        with torch.no_grad(), self.hw.autocast():
            chunk = self.cfg.micro_batch or self.cfg.batch_size
            for i in range(0, len(self.val_pos), chunk):
                pos = self.val_pos[i : i + chunk]
                out, target = self._forward(self._inputs(pos)).float(), self._targets(pos)
                total += float(F.mse_loss(out, target, reduction="sum"))
                count += out.numel()
                if self.logit:
                    logit_total += float(self.logit.loss(out, target, reduction="sum"))
        self._train_mode()
        return total / count + logit_total / len(self.val_pos)  # the training loss: per-element MSE + per-image KL

    @property
    def step_seconds(self) -> float:
        """Time spent in optimiser steps so far (set-up and validation checks excluded)."""
        return self.seconds - self.result.setup_seconds - self.result.check_seconds

    def _check(self, step: int) -> None:
        t = time.perf_counter()
        v = self.validation_loss()
        self.val_seconds = time.perf_counter() - t
        self.early["checks"].append([step, v])
        self.record_validation(step, v)
        if self.early["enabled"] and self.lr_schedule.judge(step, v):
            self.done = True
        self.result.check_seconds += time.perf_counter() - t

    # ------------------------------------------------------------ stepping
    def step(self) -> bool:
        """One optimiser step; False once training is over (steps done, early stop, non-finite loss)."""
        if self.done:
            return False
        t = time.perf_counter()
        idx = next(self.schedule, None)
        if idx is None:
            self.done = True
            return False
        step = self.result.steps_done + 1
        pos = [self.train_pos[i] for i in idx.tolist()]
        # Micro-batches: the same mean loss and gradient as one pass over the batch (each chunk's
        # mean weighted by its share), but only one chunk's activations alive at a time. BatchNorm
        # normalises each chunk with its own statistics (ghost batches).
        chunk = self.cfg.micro_batch or len(pos)
        self.opt.zero_grad(set_to_none=True)
        value = 0.0
        for start in range(0, len(pos), chunk):
            part = pos[start : start + chunk]
            x, target = self._inputs(part), self._targets(part)
            with self.hw.autocast():
                out = self._forward(x)
            loss = F.mse_loss(out.float(), target)
            if self.logit:
                loss = loss + self.logit.loss(out, target)
            loss = loss * (len(part) / len(pos))
            value += float(loss.detach())
            if not math.isfinite(value):
                break
            (self.scaler.scale(loss) if self.scaler is not None else loss).backward()
        if not math.isfinite(value):
            self.student.load_state_dict(self.good)
            self.opt.zero_grad(set_to_none=True)
            self.result.stopped_nonfinite, self.result.restored_step = True, self.good_updates
            self.done = True
            self.seconds += time.perf_counter() - t
            return False
        with torch.no_grad():
            for k, v in self.student.state_dict().items():
                self.good[k].copy_(v)
        self.good_updates = step - 1
        if self.scaler is not None:
            self.scaler.step(self.opt)
            self.scaler.update()
        else:
            self.opt.step()
        self.result.losses.append(value)
        self.result.steps_done = step
        self.lr_schedule.after_step(step)  # the paper's StepLR: x gamma every decay_every of the steps
        if self.val_pos and step % self.cfg.check_every == 0 and step < self.cfg.steps:
            self._check(step)
        if step >= self.cfg.steps:
            self.done = True
        self.seconds += time.perf_counter() - t
        fit_when_due(self)  # the time budget (budget.py)
        if self.progress:  # after the budget's fit: the bar's total is the fitted count
            self.progress(step, self.cfg.steps, value)
        return not self.done

    def _restore_best(self) -> None:
        if not (self.cfg.keep_best and self.val_pos and self.best_state is not None):
            return
        if self.last_checked != self.result.steps_done and not self.result.stopped_nonfinite:
            final = self.validation_loss()
            self.early["checks"].append([self.result.steps_done, final])
            self.record_validation(self.result.steps_done, final)
        self.result.kept.update({"step": self.best_step, "val_loss": self.best_val, "steps_done": self.result.steps_done,
                                 "undistilled": self.best_step == 0})
        if self.best_step != self.result.steps_done or self.result.stopped_nonfinite:
            self.student.load_state_dict(self.best_state)

    def finish(self) -> DistillResult:
        t = time.perf_counter()
        student = self.student
        self._restore_best()
        student.eval()
        if self.hw.channels_last:
            student.to(memory_format=torch.contiguous_format)
        student.to(self.home)
        for p in student.parameters():
            p.requires_grad_(True)
        if self.early["enabled"] and self.early["stopped_at"] is None:
            self.early["reason"] = "not converged: ran every requested step" if not self.result.stopped_nonfinite else "non-finite loss"
        self.result.early_stop = self.early
        self.seconds += time.perf_counter() - t
        self.result.seconds = self.seconds
        return self.result


def distill(
    student: nn.Module,
    entry: ZooEntry,
    pixels: torch.Tensor,
    labels: FeatureStore,
    config: DistillConfig,
    progress: Callable[[int, int, float], None] | None = None,
    prefix: PrefixCache | None = None,
    removed: list[str] | None = None,
    hardware: HardwarePlan | None = None,
) -> DistillResult:
    """Train ``student`` in place toward ``labels`` (aligned with ``pixels`` by position).

    Args:
        prefix: the frozen prefix's cached output (``build_distill_targets``) for
            ``train_scope="suffix"``; without it the prefix is located from ``removed`` (or the
            first ``nn.Identity`` stage) and cached here with one pass of the student's prefix.
        hardware: a resolved ``HardwarePlan``; default ``plan_hardware(config.precision, ...)``.
    """
    if config.student_bn == "auto":
        from .bn_probe import distill_auto_bn

        return distill_auto_bn(Distiller, student, entry, pixels, labels, config, progress, prefix, removed, hardware)
    d = Distiller(student, entry, pixels, labels, config, progress, prefix, removed, hardware)
    while d.step():
        pass
    return d.finish()
