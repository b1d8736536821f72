"""Fine-tuners (plug-ins): how the pruned student is trained toward the original model (teacher).

One interface, one registry::

    FINETUNERS.get(name)().run(student, teacher, entry, pixels_uint8, config, progress=None, reuse=None)
        -> FinetuneResult

All of them train the student in place with the same recipe as :func:`edgeprune.distill.distiller.distill`
(:class:`DistillConfig`: SGD + momentum + weight decay, lr x ``gamma`` every ``decay_every`` of the
steps, seeded :func:`batch_schedule` batches, classifier head frozen, student in train mode, the
memory layout ``channels_last`` asks for, a non-finite loss stops training and restores the last
good weights) and the same loss: MSE between
the student's and the teacher's pre-global-average-pool feature maps (method.md). They differ in
WHEN and ON WHAT the teacher is run:

* ``stored`` (TT-MPD, method.md "Fine-tuning"): the teacher runs ONCE per image to build stored
  pseudo-labels (:func:`build_pseudo_labels`, reusing features the scoring pass already made),
  then :func:`distill` trains on them. Teacher queries = number of images (minus reused ones).
* ``continuous`` (continuous KD, the main table's baseline fine-tuning): the teacher is run on
  every training batch. Teacher queries = steps x batch.
* ``mir`` (MiR, Wang et al. 2022): per method.md, "MSE on pre-GAP features with the teacher
  queried every batch" — the SAME computation as ``continuous`` here. MiR's second half
  ("replace": put the teacher's head on the mimicking student) is a no-op for a pruned student,
  which already carries the teacher's head, frozen. The two names are kept so reports can name
  the baseline the paper names; expect identical numbers for identical seeds.
* ``entropy`` (Entropy KD / UNIX, Xu, Liu & Loy 2023): per batch of B, the student (no grad, in
  its training mode, as in UNIX's code) ranks samples by prediction entropy; the B/2 most
  uncertain are kept as they are, the next ones are mixed up with a random partner from the batch
  (weight lambda ~ Beta(1, 1) = U(0, 1), through UNIX's sharp sigmoid mask, w = 1000); only the
  first k = 0.75 B of that ranked, mixed batch (48 of 64) are shown to the teacher and trained
  on. Loss adapted to pre-GAP MSE (method.md). Teacher queries = steps x k; the ranking pass
  costs ``selection_forwards`` = steps x B student sample-forwards (no backward).

``reuse`` (position -> teacher feature map of that image) is used by ``stored`` only; the online
methods query the teacher on every batch by definition and ignore it.

Counting is measured, not assumed: ``teacher_queries`` is the number of images the teacher
actually processed during ``run`` (a forward pre-hook on the teacher; timm's
``forward_features`` is wrapped as well), so a probe image inside pseudo-label generation shows up.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..data.batches import batch_schedule
from ..data.transforms import normalise
from ..distill.config import DistillConfig
from ..distill.distiller import distill
from ..distill.result import DistillResult
from ..distill.scope import trainable_parameters
from ..distill.hardware import to_layout
from ..distill.targets import build_pseudo_labels
from ..models.features import extract_features
from ..models.zoo import ZooEntry
from ..registry import Registry

FINETUNERS: Registry = Registry("fine-tuner")

Progress = Callable[[int, int, float], None]


@dataclass
class FinetuneResult(DistillResult):
    """:class:`DistillResult` plus what the comparison of fine-tuners needs.

    ``seconds`` is the whole ``run`` (``label_seconds + train_seconds``): ``label_seconds`` is the
    wall time spent running the teacher (pseudo-label generation for ``stored``, the per-batch
    queries for the online methods), ``train_seconds`` everything else (student forward/backward,
    updates, selection passes).
    """

    method: str = ""
    teacher_queries: int = 0  # images the teacher processed (sample-forwards)
    selection_forwards: int = 0  # extra student sample-forwards without backward (entropy ranking)
    label_seconds: float = 0.0
    train_seconds: float = 0.0

    @classmethod
    def from_distill(cls, result: DistillResult, **extra) -> "FinetuneResult":
        base = {f.name: getattr(result, f.name) for f in dataclasses.fields(result)}
        base.update(extra)
        return cls(**base)


class TeacherCounter:
    """Counts the images ``teacher`` processes while active (nested calls counted once)."""

    def __init__(self, teacher: nn.Module, entry: ZooEntry):
        self.teacher, self.entry = teacher, entry
        self.images = 0
        self.calls = 0
        self._depth = 0
        self._handles: list = []
        self._wrapped = False

    def _count(self, x) -> None:
        if self._depth == 0 and isinstance(x, torch.Tensor):
            self.images += int(x.shape[0])
            self.calls += 1

    def __enter__(self) -> "TeacherCounter":
        def pre(_m, args):
            self._count(args[0] if args else None)
            self._depth += 1

        def post(_m, _args, _out):
            self._depth -= 1

        self._handles = [self.teacher.register_forward_pre_hook(pre),
                         self.teacher.register_forward_hook(post, always_call=True)]
        if self.entry.feature_layer == "forward_features" and "forward_features" not in vars(self.teacher):
            original = self.teacher.forward_features

            def forward_features(x, *args, **kwargs):
                self._count(x)
                self._depth += 1
                try:
                    return original(x, *args, **kwargs)
                finally:
                    self._depth -= 1

            self.teacher.forward_features = forward_features
            self._wrapped = True
        return self

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()
        if self._wrapped:
            del self.teacher.forward_features
            self._wrapped = False


class Finetuner:
    name = "base"

    def run(self, student: nn.Module, teacher: nn.Module, entry: ZooEntry, pixels: torch.Tensor, config: DistillConfig,
            progress: Progress | None = None, reuse: dict[int, torch.Tensor] | None = None) -> FinetuneResult:
        """Train ``student`` in place toward ``teacher`` on ``pixels`` (uint8 N x 3 x R x R)."""
        raise NotImplementedError  # pragma: no cover - interface


@FINETUNERS.register("stored")
class StoredPseudoLabels(Finetuner):
    """TT-MPD: teacher features computed once per image and stored, then :func:`distill`."""

    name = "stored"

    def run(self, student, teacher, entry, pixels, config, progress=None, reuse=None) -> FinetuneResult:
        t0 = time.perf_counter()
        with TeacherCounter(teacher, entry) as counter:
            store = build_pseudo_labels(teacher, entry, pixels, batch_size=config.batch_size, reuse=reuse)
        label_seconds = time.perf_counter() - t0
        try:
            t1 = time.perf_counter()
            result = distill(student, entry, pixels, store, config, progress)
            train_seconds = time.perf_counter() - t1
        finally:
            store.close()
        return FinetuneResult.from_distill(result, method=self.name, teacher_queries=counter.images,
                                           label_seconds=label_seconds, train_seconds=train_seconds,
                                           seconds=label_seconds + train_seconds)


class OnlineKD(Finetuner):
    """The teacher is queried during training; subclasses choose the batch it sees."""

    def batch_features(self, student: nn.Module, teacher: nn.Module, entry: ZooEntry, x: torch.Tensor,
                       rng: torch.Generator, clock: list[float]) -> tuple[torch.Tensor, torch.Tensor, int]:
        """(student features, teacher features, student selection sample-forwards) for batch ``x``."""
        raise NotImplementedError  # pragma: no cover - interface

    @staticmethod
    def query_teacher(teacher, entry, x, clock: list[float]) -> torch.Tensor:
        t = time.perf_counter()
        with torch.no_grad():
            out = extract_features(teacher, entry, x)
        clock[0] += time.perf_counter() - t
        return out

    def run(self, student, teacher, entry, pixels, config, progress=None, reuse=None) -> FinetuneResult:
        torch.manual_seed(config.seed)
        rng = torch.Generator().manual_seed(config.seed)
        params = trainable_parameters(student, entry, config.freeze_head)
        opt = torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=max(1, int(round(config.decay_every * config.steps))),
                                                gamma=config.gamma)
        result = FinetuneResult(0, method=self.name)
        good = {k: v.detach().clone() for k, v in student.state_dict().items()}
        good_updates = 0
        clock = [0.0]  # teacher seconds
        start = time.perf_counter()
        teacher.eval()
        student.train()
        if config.channels_last:  # the layout distill() trains in: same math, faster convolutions on CPU
            student.to(memory_format=torch.channels_last)
        n = int(pixels.shape[0])
        try:
            with TeacherCounter(teacher, entry) as counter:
                for step, idx in enumerate(batch_schedule(n, config.batch_size, config.steps, config.seed), 1):
                    x = to_layout(normalise(pixels[idx], entry.mean, entry.std), config.channels_last)
                    s_feat, t_feat, selection = self.batch_features(student, teacher, entry, x, rng, clock)
                    result.selection_forwards += selection
                    loss = F.mse_loss(s_feat.float(), t_feat.float())
                    value = float(loss.detach())
                    if not math.isfinite(value):
                        student.load_state_dict(good)
                        result.stopped_nonfinite, result.restored_step = True, good_updates
                        break
                    with torch.no_grad():
                        for k, v in student.state_dict().items():
                            good[k].copy_(v)
                    good_updates = step - 1
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    sched.step()
                    result.losses.append(value)
                    result.steps_done = step
                    if progress:
                        progress(step, config.steps, value)
        finally:
            student.eval()
            if config.channels_last:
                student.to(memory_format=torch.contiguous_format)
            for p in student.parameters():
                p.requires_grad_(True)
        result.teacher_queries = counter.images
        result.seconds = time.perf_counter() - start
        result.label_seconds = clock[0]
        result.train_seconds = result.seconds - clock[0]
        return result


@FINETUNERS.register("continuous")
class ContinuousKD(OnlineKD):
    """Continuous KD: the teacher runs on every training batch; pre-GAP MSE."""

    name = "continuous"

    def batch_features(self, student, teacher, entry, x, rng, clock):
        target = self.query_teacher(teacher, entry, x, clock)
        return extract_features(student, entry, x), target, 0


@FINETUNERS.register("mir")
class MiR(ContinuousKD):
    """MiR (mimic then replace): identical to ``continuous`` here, see the module docstring."""

    name = "mir"


@FINETUNERS.register("entropy")
class EntropyKD(OnlineKD):
    """Entropy KD (UNIX): teacher only on the k most uncertain (partly mixed-up) samples of a batch."""

    name = "entropy"
    query_fraction = 0.75  # k = 48 of 64
    keep_fraction = 0.5  # b = 32 of 64 most uncertain samples left unmixed (UNIX default)
    sharpness = 1000.0  # UNIX's w: the sigmoid mask is a near-step at rank b

    def sizes(self, batch: int) -> tuple[int, int]:
        """(k samples shown to the teacher, b left unmixed) for a batch of ``batch``."""
        k = min(batch, max(1, int(round(self.query_fraction * batch))))
        b = min(k, max(1, int(round(self.keep_fraction * batch))))
        return k, b

    def batch_features(self, student, teacher, entry, x, rng, clock):
        batch = x.shape[0]
        k, b = self.sizes(batch)
        with torch.no_grad():
            logits = student(x)
            log_p = F.log_softmax(logits.float(), dim=1)
            entropy = -(log_p.exp() * log_p).sum(1)
        rank = torch.argsort(entropy, descending=True)
        pos = torch.arange(batch, dtype=torch.float32)
        centre = (2 * b - 1) / (2 * batch)
        mask = torch.sigmoid(self.sharpness * (pos / batch - centre))
        lam = float(torch.rand((), generator=rng))  # Beta(1, 1)
        mask = (lam * mask).to(x.dtype).view(-1, *([1] * (x.dim() - 1)))
        partner = torch.randperm(batch, generator=rng)
        mixed = ((1 - mask) * x[rank] + mask * x[partner])[:k]
        mixed = to_layout(mixed, x.is_contiguous(memory_format=torch.channels_last))  # keep the batch's layout
        target = self.query_teacher(teacher, entry, mixed, clock)
        return extract_features(student, entry, mixed), target, batch
