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
  training; no held-out image is touched) is evaluated every ``check_every`` steps in eval mode.
  When its loss has not improved by ``min_rel_improvement`` (relative) for ``patience`` checks,
  the learning rate moves to its next step of the schedule early; on the last step of the
  schedule, training stops. Training also stops when the first check after such a plateau decay
  shows no such improvement: a 10x lower rate that does not help on a plateau means the next,
  lower one will not either. Without plateaus the schedule is the paper's.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..data.batches import batch_schedule
from ..data.transforms import normalise
from ..errors import UsageError
from ..models.features import extract_features, head_parameters
from ..models.flops import stage_flops
from ..models.staging import Stage, run_stages, split
from ..models.zoo import ZooEntry
from .bn_stats import freeze_batchnorm
from .config import TRAIN_SCOPES, DistillConfig
from .hardware import HardwarePlan, plan_hardware, probe_precision, probe_threads, to_layout
from .targets import FeatureStore, PrefixCache, prefix_stop


@dataclass
class DistillResult:
    steps_done: int
    losses: list[float] = field(default_factory=list)
    stopped_nonfinite: bool = False
    restored_step: int | None = None  # updates applied to the restored weights
    seconds: float = 0.0
    # --- fast path records
    train_scope: str = "all"
    prefix_stop: int = 0  # first trained stage (0 = the whole network)
    prefix_stage: str = ""
    precision: str = "fp32"
    hardware: dict = field(default_factory=dict)
    early_stop: dict = field(default_factory=dict)  # enabled, stopped_at, reason, checks, lr_events
    kept: dict = field(default_factory=dict)  # which weights were kept: step (0 = undistilled), validation losses
    train_images: int = 0
    batch: int = 0
    trained_forward_flops: int = 0  # forward FLOPs of the trained part for one image
    setup_seconds: float = 0.0  # precision probe and (when not given) prefix cache, inside `seconds`
    check_seconds: float = 0.0  # validation checks, inside `seconds`
    notes: list[str] = field(default_factory=list)

    @property
    def final_loss(self) -> float:
        return self.losses[-1] if self.losses else float("nan")

    def floor_flops(self) -> int:
        """Training FLOPs actually required: steps x batch x (forward + backward ~ 2x forward)."""
        return 3 * self.steps_done * self.batch * self.trained_forward_flops


def trainable_parameters(student: nn.Module, entry: ZooEntry, freeze_head: bool = True,
                         frozen: set[int] | None = None) -> list[nn.Parameter]:
    head = head_parameters(student, entry) if freeze_head else set()
    frozen = (frozen or set()) | head
    params = []
    for p in student.parameters():
        p.requires_grad_(id(p) not in frozen)
        if id(p) not in frozen:
            params.append(p)
    return params


def validation_split(n: int, config: DistillConfig) -> tuple[list[int], list[int], str | None]:
    """(train positions, validation positions, why there is no validation slice or None)."""
    if not (config.early_stop or config.keep_best):
        return list(range(n)), [], "disabled"
    k = min(config.val_images, n // 10)
    if k < config.min_val_images:
        return list(range(n)), [], f"too few fine-tune images ({n}) for a validation slice of {config.min_val_images}"
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(config.seed + 7919)).tolist()
    return sorted(perm[k:]), sorted(perm[:k]), None


def _identity_stop(stages: list[Stage]) -> int | None:
    idx = [i for i, (_, m) in enumerate(stages) if isinstance(m, nn.Identity)]
    return min(idx) if idx else None


def build_prefix_cache(stages: list[Stage], stop: int, entry: ZooEntry, pixels: torch.Tensor, batch_size: int = 64,
                       channels_last: bool = True) -> PrefixCache:
    """The prefix output for every image from the student's own (frozen) prefix: one batched pass.

    Used only when the caller did not build it together with the pseudo-labels.
    """
    store = None
    with torch.no_grad():
        for start in range(0, pixels.shape[0], batch_size):
            x = to_layout(normalise(pixels[start : start + batch_size], entry.mean, entry.std), channels_last)
            h = run_stages(stages, x, 0, stop)
            if store is None:
                store = FeatureStore(pixels.shape[0], tuple(h.shape[1:]))
            store.put(list(range(start, start + x.shape[0])), h)
    return PrefixCache(store, stop, stages[stop][0])


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
        self.student, self.entry, self.pixels, self.labels, self.cfg = student, entry, pixels, labels, config
        self.progress = progress
        self.result = DistillResult(0)
        notes = self.result.notes
        torch.manual_seed(config.seed)

        # -- scope: which stages run and train
        self.stages: list[Stage] | None = None
        self.start = 0
        self.prefix = prefix
        if config.train_scope == "suffix":
            self.stages = split(student, entry.staging)
            if self.stages is None:
                notes.append("no stage split for this model: suffix scope unavailable, training all stages")
            else:
                if prefix is not None:
                    self.start = prefix.stop
                elif removed:
                    self.start = prefix_stop(self.stages, removed)
                else:
                    self.start = _identity_stop(self.stages) or 0
                if self.start > 0 and prefix is None:
                    self.prefix = build_prefix_cache(self.stages, self.start, entry, pixels, config.batch_size,
                                                     config.channels_last)
                    notes.append("prefix cache built inside distill (pass it from build_distill_targets to share the teacher pass)")
        self.suffix = self.stages is not None and self.start > 0
        self.result.train_scope = "suffix" if self.suffix else "all"
        if config.train_scope == "suffix" and not self.suffix and self.stages is not None:
            notes.append("the first removed block is the first stage: suffix = whole network")
        self.result.prefix_stop = self.start
        self.result.prefix_stage = self.stages[self.start][0] if self.suffix else ""

        # -- hardware: device, layout, precision
        self.hw = hardware or plan_hardware(config.precision, config.device, config.channels_last)
        self.device = torch.device(self.hw.device if self.hw.device != "cuda" or torch.cuda.is_available() else "cpu")
        self.home = next(student.parameters()).device
        student.to(self.device)
        if self.hw.channels_last:
            student.to(memory_format=torch.channels_last)

        # -- parameters, optimiser, schedule
        frozen: set[int] = set()
        self.prefix_modules: list[nn.Module] = []
        if self.suffix:
            self.prefix_modules = [m for _, m in self.stages[: self.start]]
            trained = {id(p) for _, m in self.stages[self.start :] for p in m.parameters()}
            frozen = {id(p) for p in student.parameters() if id(p) not in trained}
        self.params = trainable_parameters(student, entry, config.freeze_head, frozen)
        if self.suffix and not self.params:  # e.g. the last block removed: nothing after it but the frozen head
            notes.append(f"nothing trainable after {self.result.prefix_stage}: suffix scope unavailable, training all stages")
            self.suffix, self.start, self.prefix, self.prefix_modules = False, 0, None, []
            self.result.train_scope, self.result.prefix_stop, self.result.prefix_stage = "all", 0, ""
            self.params = trainable_parameters(student, entry, config.freeze_head)
        self.opt = torch.optim.SGD(self.params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
        self.step_size = max(1, int(round(config.decay_every * config.steps)))
        self.last_phase = (config.steps - 1) // self.step_size  # the paper's schedule reaches this many decays
        self.phase, self.next_boundary = 0, self.step_size
        self.scaler = self.hw.grad_scaler_obj() if self.device.type == "cuda" else None

        # -- data: train / validation positions
        self.train_pos, self.val_pos, off_reason = validation_split(len(labels), config)
        self.schedule = batch_schedule(len(self.train_pos), config.batch_size, config.steps, config.seed)
        self.result.train_images = len(self.train_pos)
        self.result.batch = min(config.batch_size, len(self.train_pos))
        self.early = {"enabled": config.early_stop and off_reason is None, "stopped_at": None, "reason": off_reason or ("" if config.early_stop else "disabled"),
                      "check_every": config.check_every, "patience": config.patience,
                      "min_rel_improvement": config.min_rel_improvement, "val_images": len(self.val_pos),
                      "checks": [], "lr_events": []}
        self.best, self.bad = math.inf, 0
        self.decayed_at: int | None = None  # step of the last learning-rate decay not yet judged by a check

        self._train_mode()
        first = self.train_pos[:self.result.batch]
        # Probes time one micro-batch (else half a batch): a full fp32 trial step would otherwise set
        # the run's memory peak (measured: +2.3 GB at batch 64 from 56x56 on); the ratio is what counts.
        half = first[: self.cfg.micro_batch or max(2, len(first) // 2)]
        probe_threads(self.hw, lambda trial: self._probe_step(trial, half))
        if self.hw.precision == "auto":
            probe_precision(self.hw, lambda trial: self._probe_step(trial, half))
        self.result.precision = self.hw.precision
        self.result.hardware = self.hw.to_dict()
        self.result.trained_forward_flops = self._trained_flops(first[:1])
        # Weights that last gave a finite loss, refreshed in place each step (no reallocation).
        self.good = {k: v.detach().clone() for k, v in student.state_dict().items()}
        self.good_updates = 0
        self.done = False
        # Best weights by validation loss, the undistilled student included: distillation never
        # hands back a model worse (on the slice) than the one it started from.
        self.best_val, self.best_step, self.best_state, self.last_checked = math.inf, 0, None, -1
        if self.val_pos and config.keep_best:
            self._remember(0, self.validation_loss())
        self.result.setup_seconds = time.perf_counter() - t0
        self.seconds = self.result.setup_seconds

    # ------------------------------------------------------------ pieces
    def _train_mode(self) -> None:
        self.student.train()
        for m in self.prefix_modules:
            m.eval()  # frozen prefix: running statistics, exactly the teacher's computation
        if self.cfg.student_bn == "frozen":
            freeze_batchnorm(self.student)

    def _remember(self, step: int, val: float) -> None:
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

    def _set_lr(self) -> None:
        for g in self.opt.param_groups:
            g["lr"] = self.cfg.lr * self.cfg.gamma ** self.phase

    def validation_loss(self) -> float:
        if not self.val_pos:
            return float("nan")
        self.student.eval()
        total, count = 0.0, 0
        with torch.no_grad(), self.hw.autocast():
            chunk = self.cfg.micro_batch or self.cfg.batch_size
            for i in range(0, len(self.val_pos), chunk):
                pos = self.val_pos[i : i + chunk]
                out = self._forward(self._inputs(pos)).float()
                total += float(F.mse_loss(out, self._targets(pos), reduction="sum"))
                count += out.numel()
        self._train_mode()
        return total / count

    def _check(self, step: int) -> None:
        t = time.perf_counter()
        v = self.validation_loss()
        self.early["checks"].append([step, v])
        self._remember(step, v)
        if not self.early["enabled"]:
            self.result.check_seconds += time.perf_counter() - t
            return
        improved = v < self.best * (1 - self.cfg.min_rel_improvement)
        if improved:
            self.best, self.bad = v, 0
        else:
            self.bad += 1
        if self.decayed_at is not None and step > self.decayed_at:
            # The first check after a plateau's decay judges it: when a 10x lower rate brings no gain
            # on a plateau, the still lower ones will not either (docs/benchmarks/adapt_speed.md).
            # Only plateau decays: right after a scheduled decay of a run still improving, the
            # validation loss can rise for a few steps (measured on lite0: 0.218 -> 0.223).
            decayed, self.decayed_at = self.decayed_at, None
            if not improved:
                self.done = True
                self.early["stopped_at"] = step
                self.early["reason"] = (f"the learning-rate decay at step {decayed} improved the validation loss "
                                        f"< {self.cfg.min_rel_improvement:.0%} within {step - decayed} steps")
                self.result.check_seconds += time.perf_counter() - t
                return
        if self.bad >= self.cfg.patience:
            self.bad = 0
            if self.phase < self.last_phase:
                self.phase += 1
                self.next_boundary = step + self.step_size
                self._set_lr()
                self.decayed_at = step
                self.early["lr_events"].append({"step": step, "lr": self.cfg.lr * self.cfg.gamma ** self.phase,
                                                "why": "validation plateau"})
            else:
                self.done = True
                self.early["stopped_at"] = step
                self.early["reason"] = (f"validation loss improved < {self.cfg.min_rel_improvement:.0%} in {self.cfg.patience} "
                                        f"checks ({self.cfg.patience * self.cfg.check_every} steps) at the last learning rate")
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
            loss = F.mse_loss(out.float(), target) * (len(part) / len(pos))
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
        if step == self.next_boundary:  # the paper's StepLR: x gamma every `step_size` steps
            self.phase = min(self.phase + 1, self.last_phase)  # = StepLR within `steps`; caps plateau shifts
            self.next_boundary += self.step_size
            self._set_lr()
            self.decayed_at = None  # a scheduled decay of a still-improving run is not a test of lower rates
        if self.val_pos and step % self.cfg.check_every == 0 and step < self.cfg.steps:
            self._check(step)
        if self.progress:
            self.progress(step, self.cfg.steps, value)
        if step >= self.cfg.steps:
            self.done = True
        self.seconds += time.perf_counter() - t
        return not self.done

    def _restore_best(self) -> None:
        if not (self.cfg.keep_best and self.val_pos and self.best_state is not None):
            return
        if self.last_checked != self.result.steps_done and not self.result.stopped_nonfinite:
            final = self.validation_loss()
            self.early["checks"].append([self.result.steps_done, final])
            self._remember(self.result.steps_done, final)
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
    d = Distiller(student, entry, pixels, labels, config, progress, prefix, removed, hardware)
    while d.step():
        pass
    return d.finish()
