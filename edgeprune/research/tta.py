"""Test-time adaptation baselines: TENT and EATA (method.md, "Baselines").

Both adapt a model online while it predicts a stream of test images, in batches:

* :func:`tent` (Wang et al. 2021): only the BatchNorm affine parameters (weight, bias) are
  trained; BatchNorm normalises with the statistics of the current test batch (running
  statistics are neither used nor changed); loss = mean prediction entropy; one SGD step
  (lr 0.00025, momentum 0.9 for batch 64 on ImageNet) per test batch. As in TENT's
  ``forward_and_adapt``, a batch's predictions come from the same forward pass that computes the
  loss, i.e. before that batch's update.
* :func:`eata` (Niu et al. 2022): as TENT, but the entropy loss only uses *reliable* samples
  (entropy H < E0 = 0.4 ln C) that are *not redundant* (|cos(m, p_j)| < d, m = moving average of
  the selected samples' predicted probabilities, m <- 0.9 m + 0.1 mean(p_selected); the first
  batch has no m yet), each weighted by exp(-(H - E0)) (= EATA's 1 / exp(H - E0)); plus the
  anti-forgetting term beta * sum_i F_i (theta_i - theta0_i)^2 with beta = 2000 and theta0 the
  parameters before adaptation. As in EATA's code, a batch with no selected sample makes no
  update (the anti-forgetting term included).

Fisher information F without clean data (the documented choice): EATA estimates F on 2000 clean
in-distribution images; test-time pruning has none. edgeprune applies EATA's own recipe —
squared gradient of the cross-entropy to the model's own argmax labels, per batch, averaged over
batches, in the test-time BatchNorm mode, at theta0 — to ``fisher_pixels`` when given (the
benchmark passes the prune images, the same images TT-MPD scores with), else to the first
``fisher_images`` (default 64) images of the test stream, which are then predicted (and adapted
on) again in stream order. Its wall time is reported as ``fisher_seconds``. A ready ``fisher``
dictionary may also be passed.

The redundancy threshold d scales with the number of classes C (the documented choice): EATA
uses d = 0.05 for ImageNet's 1000 classes, where a confident (near one-hot) prediction has cosine
about 1/sqrt(C) = 0.03 with a class-balanced mean m. With 10 classes that cosine is about 0.32, so
d = 0.05 rejects every sample after the first batch and EATA takes a single update. Here
d = 0.05 * sqrt(1000 / C) (:func:`eata_d_margin`): 0.05 at 1000 classes, 0.5 at 10, the same
distance above the balanced-mean cosine. ``d_margin`` overrides it.

Other choices: only BatchNorm layers are switched to training behaviour; every other module
(Dropout in particular) stays in eval mode (TENT's code puts the whole model in train mode;
identical for models without dropout). The model is adapted IN PLACE (its BN affine parameters
keep the adapted values); on return its modes, ``track_running_stats`` flags and
``requires_grad`` flags are restored, so a later plain ``model.eval()`` forward uses the adapted
affine parameters with the ORIGINAL running statistics. Pass a copy to keep the source model.
A final batch of one image is merged into the previous batch (BatchNorm needs two values). A
batch whose loss is not finite makes no step (counted in ``skipped_nonfinite``).

Inference-time overhead (for LS including adaptation): the stats give the median wall time per
full batch with adaptation (normalise + forward + backward + step) and of plain inference
(normalise + eval-mode forward, no grad, the same batch size, ``timing_batches`` batches measured
after adaptation), and their ratio ``slowdown``; EATA's one-off Fisher pass is separate.
"""

from __future__ import annotations

import contextlib
import math
import statistics
import time
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from ..data.transforms import normalise
from ..errors import UsageError
from ..models.zoo import ZooEntry

TENT_LR = 0.00025
TENT_MOMENTUM = 0.9
EATA_E_MARGIN_FRACTION = 0.4  # E0 = 0.4 ln C
EATA_D_MARGIN = 0.05  # EATA's threshold for its 1000 ImageNet classes; eata_d_margin scales it
EATA_D_MARGIN_CLASSES = 1000
EATA_EMA = 0.1
EATA_BETA = 2000.0
FISHER_IMAGES = 64
TIMING_BATCHES = 3


@dataclass
class TTAStats:
    method: str
    images: int
    batches: int
    updates: int  # optimizer steps taken
    adapted_parameters: int  # scalars in the BN affine parameters
    num_classes: int
    losses: list[float] = field(default_factory=list)  # per batch that was updated
    seconds: float = 0.0  # the whole adapt-and-predict loop (Fisher pass excluded)
    ms_per_batch_adapt: float = float("nan")  # median over full batches
    ms_per_batch_plain: float = float("nan")  # median plain eval forward, same batch size
    slowdown: float = float("nan")  # ms_per_batch_adapt / ms_per_batch_plain
    batch_size: int = 0
    skipped_nonfinite: int = 0  # batches whose loss was not finite: no step taken (weights kept)
    # EATA only
    reliable: int = 0  # samples with H < E0
    selected: int = 0  # reliable and non-redundant: the ones in the loss
    per_batch: list[dict] = field(default_factory=list)  # {"size", "reliable", "selected"}
    e_margin: float | None = None
    d_margin: float | None = None
    beta: float | None = None
    fisher_images: int = 0
    fisher_seconds: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


# ----------------------------------------------------------------------------- helpers
def entropy(logits: torch.Tensor) -> torch.Tensor:
    """Per-sample entropy (nats) of softmax(logits)."""
    log_p = F.log_softmax(logits, dim=1)
    return -(log_p.exp() * log_p).sum(1)


def bn_affine_parameters(model: nn.Module) -> dict[str, nn.Parameter]:
    """name -> parameter for the weight and bias of every BatchNorm layer."""
    out = {}
    for mname, m in model.named_modules():
        if isinstance(m, _BatchNorm):
            for pname, p in m.named_parameters(recurse=False):
                out[f"{mname}.{pname}" if mname else pname] = p
    return out


@contextlib.contextmanager
def test_time_mode(model: nn.Module):
    """BN normalises with batch statistics (buffers untouched), only BN affine params need grad.

    Yields the BN affine parameters (name -> parameter). Everything is restored on exit except the
    parameter values.
    """
    params = bn_affine_parameters(model)
    if not params:
        raise UsageError("test-time adaptation (TENT/EATA) adapts BatchNorm affine parameters, and this model has none")
    modes = {m: m.training for m in model.modules()}
    tracks = {m: m.track_running_stats for m in model.modules() if isinstance(m, _BatchNorm)}
    grads = {p: p.requires_grad for p in model.parameters()}
    try:
        model.eval()
        for m in tracks:
            m.train()
            m.track_running_stats = False  # with train(): batch statistics, running buffers not updated
        for p in model.parameters():
            p.requires_grad_(False)
        for p in params.values():
            p.requires_grad_(True)
        yield params
    finally:
        for m, mode in modes.items():
            m.training = mode
        for m, track in tracks.items():
            m.track_running_stats = track
        for p, flag in grads.items():
            p.requires_grad_(flag)
            p.grad = None


def _batch_slices(n: int, batch_size: int) -> list[slice]:
    if batch_size <= 0:
        raise UsageError(f"batch size must be positive, got {batch_size}")
    out = [slice(i, min(i + batch_size, n)) for i in range(0, n, batch_size)]
    if len(out) > 1 and out[-1].stop - out[-1].start == 1:  # BatchNorm needs more than one value
        out[-2:] = [slice(out[-2].start, n)]
    return out


def _median_ms(times: list[float]) -> float:
    return statistics.median(times) * 1e3 if times else float("nan")


def plain_ms_per_batch(model: nn.Module, entry: ZooEntry, pixels: torch.Tensor, batch_size: int,
                       batches: int = TIMING_BATCHES) -> float:
    """Median ms of normalise + eval-mode forward (no grad) over the first full batches."""
    was = model.training
    model.eval()
    times = []
    with torch.no_grad():
        for s in _batch_slices(pixels.shape[0], batch_size)[:batches]:
            if s.stop - s.start != batch_size and times:
                break
            t = time.perf_counter()
            model(normalise(pixels[s], entry.mean, entry.std))
            times.append(time.perf_counter() - t)
    model.train(was)
    return _median_ms(times)


def _step(opt: torch.optim.Optimizer, loss: torch.Tensor, stats: TTAStats) -> bool:
    """One SGD step on ``loss``; a non-finite loss is skipped (counted) so weights stay finite."""
    opt.zero_grad(set_to_none=True)
    if not math.isfinite(float(loss.detach())):
        stats.skipped_nonfinite += 1
        return False
    loss.backward()
    opt.step()
    stats.updates += 1
    return True


def _finish(stats: TTAStats, times: list[float], sizes: list[int], model, entry, pixels, batch_size, timing_batches):
    full = [t for t, s in zip(times, sizes) if s == batch_size] or times
    stats.ms_per_batch_adapt = _median_ms(full)
    stats.ms_per_batch_plain = plain_ms_per_batch(model, entry, pixels, batch_size, timing_batches)
    if stats.ms_per_batch_plain > 0:
        stats.slowdown = stats.ms_per_batch_adapt / stats.ms_per_batch_plain


# ----------------------------------------------------------------------------- TENT
def tent(model: nn.Module, entry: ZooEntry, pixels: torch.Tensor, batch_size: int = 64, lr: float = TENT_LR,
         momentum: float = TENT_MOMENTUM, timing_batches: int = TIMING_BATCHES) -> tuple[torch.Tensor, TTAStats]:
    """Predict ``pixels`` (uint8 N x 3 x R x R) in order while adapting ``model`` with TENT.

    Returns:
        (top-1 predictions, long N; :class:`TTAStats`).
    """
    n = int(pixels.shape[0])
    preds, times, sizes = [], [], []
    with test_time_mode(model) as params:
        opt = torch.optim.SGD(list(params.values()), lr=lr, momentum=momentum)
        stats = TTAStats("tent", n, 0, 0, sum(p.numel() for p in params.values()), 0, batch_size=batch_size)
        start = time.perf_counter()
        for s in _batch_slices(n, batch_size):
            t = time.perf_counter()
            logits = model(normalise(pixels[s], entry.mean, entry.std))
            loss = entropy(logits).mean()
            if _step(opt, loss, stats):
                stats.losses.append(float(loss.detach()))
            preds.append(logits.detach().argmax(1))
            times.append(time.perf_counter() - t)
            sizes.append(s.stop - s.start)
            stats.num_classes = int(logits.shape[1])
        stats.seconds = time.perf_counter() - start
        stats.batches = len(sizes)
    _finish(stats, times, sizes, model, entry, pixels, batch_size, timing_batches)
    return (torch.cat(preds) if preds else torch.empty(0, dtype=torch.long)), stats


# ----------------------------------------------------------------------------- EATA
def eata_d_margin(num_classes: int) -> float:
    """EATA's redundancy threshold for ``num_classes`` (module docstring): 0.05 * sqrt(1000 / C)."""
    return EATA_D_MARGIN * math.sqrt(EATA_D_MARGIN_CLASSES / max(1, num_classes))


def estimate_fisher(model: nn.Module, params: dict[str, nn.Parameter], entry: ZooEntry, pixels: torch.Tensor,
                    batch_size: int) -> dict[str, torch.Tensor]:
    """EATA's Fisher: mean over batches of (d CE(f(x), argmax f(x)) / d theta)^2, at the current theta.

    Call inside :func:`test_time_mode` (BatchNorm in its test-time behaviour).
    """
    names = list(params)
    fisher = {k: torch.zeros_like(p) for k, p in params.items()}
    slices = _batch_slices(int(pixels.shape[0]), batch_size)
    for s in slices:
        logits = model(normalise(pixels[s], entry.mean, entry.std))
        loss = F.cross_entropy(logits, logits.detach().argmax(1))
        grads = torch.autograd.grad(loss, [params[k] for k in names])
        for k, g in zip(names, grads):
            fisher[k] += g.detach() ** 2
    for k in fisher:
        fisher[k] /= max(len(slices), 1)
    return fisher


def anti_forgetting(params: dict[str, nn.Parameter], fisher: dict[str, torch.Tensor],
                    theta0: dict[str, torch.Tensor], beta: float) -> torch.Tensor:
    """EATA's regulariser beta * sum_i F_i (theta_i - theta0_i)^2."""
    total = None
    for k, p in params.items():
        if k in fisher:
            term = (fisher[k] * (p - theta0[k]) ** 2).sum()
            total = term if total is None else total + term
    if total is None:
        return torch.zeros(())
    return beta * total


def _timed_fisher(model, params, entry: ZooEntry, source: torch.Tensor, batch_size: int, stats: TTAStats):
    """``estimate_fisher`` on ``source``, its time and image count recorded in ``stats``."""
    t = time.perf_counter()
    fisher = estimate_fisher(model, params, entry, source, batch_size)
    stats.fisher_seconds = time.perf_counter() - t
    stats.fisher_images = int(source.shape[0])
    return fisher


def _eata_select(logits: torch.Tensor, e0: float, d: float, mean_probs: torch.Tensor | None, ema: float):
    """EATA's sample selection: reliable (entropy < E0) and not redundant (|cos| with the moving
    mean prediction < d). Returns (entropies of the selected samples, with grad; the reliable count;
    the mean prediction updated with the selected samples)."""
    ent = entropy(logits)
    reliable = ent.detach() < e0
    probs = F.softmax(logits.detach()[reliable], dim=1)
    if mean_probs is not None and probs.shape[0]:
        keep = F.cosine_similarity(mean_probs.unsqueeze(0), probs, dim=1).abs() < d
    else:
        keep = torch.ones(probs.shape[0], dtype=torch.bool)
    if keep.any():
        new = probs[keep].mean(0)
        mean_probs = new if mean_probs is None else (1 - ema) * mean_probs + ema * new
    return ent[reliable][keep], int(reliable.sum()), mean_probs


def eata(model: nn.Module, entry: ZooEntry, pixels: torch.Tensor, batch_size: int = 64, lr: float = TENT_LR,
         momentum: float = TENT_MOMENTUM, e_margin: float | None = None, d_margin: float | None = None,
         ema: float = EATA_EMA, beta: float = EATA_BETA, fisher: dict[str, torch.Tensor] | None = None,
         fisher_pixels: torch.Tensor | None = None, fisher_images: int = FISHER_IMAGES,
         timing_batches: int = TIMING_BATCHES) -> tuple[torch.Tensor, TTAStats]:
    """Predict ``pixels`` in order while adapting ``model`` with EATA (see the module docstring).

    Args:
        e_margin: E0; default 0.4 ln C with C the number of logits.
        d_margin: the redundancy threshold; default :func:`eata_d_margin` of C.
        fisher: BN-parameter name -> Fisher diagonal; default: estimated on ``fisher_pixels``, or
            on the first ``fisher_images`` stream images when that is None too.
    Returns:
        (top-1 predictions, long N; :class:`TTAStats`).
    """
    n = int(pixels.shape[0])
    preds, times, sizes = [], [], []
    with test_time_mode(model) as params:
        theta0 = {k: p.detach().clone() for k, p in params.items()}
        stats = TTAStats("eata", n, 0, 0, sum(p.numel() for p in params.values()), 0, batch_size=batch_size,
                         d_margin=d_margin, beta=beta)
        if fisher is None and beta:
            fisher = _timed_fisher(model, params, entry, fisher_pixels if fisher_pixels is not None else pixels[:fisher_images],
                                   batch_size, stats)
        opt = torch.optim.SGD(list(params.values()), lr=lr, momentum=momentum)
        mean_probs: torch.Tensor | None = None
        start = time.perf_counter()
        for s in _batch_slices(n, batch_size):
            t = time.perf_counter()
            logits = model(normalise(pixels[s], entry.mean, entry.std))
            c = int(logits.shape[1])
            e0 = e_margin if e_margin is not None else EATA_E_MARGIN_FRACTION * math.log(c)
            d = d_margin if d_margin is not None else eata_d_margin(c)
            chosen, reliable, mean_probs = _eata_select(logits, e0, d, mean_probs, ema)
            if chosen.numel():
                loss = (chosen * torch.exp(-(chosen.detach() - e0))).mean()
                if beta and fisher is not None:
                    loss = loss + anti_forgetting(params, fisher, theta0, beta)
                if _step(opt, loss, stats):
                    stats.losses.append(float(loss.detach()))
            preds.append(logits.detach().argmax(1))
            times.append(time.perf_counter() - t)
            sizes.append(s.stop - s.start)
            stats.per_batch.append({"size": s.stop - s.start, "reliable": reliable, "selected": int(chosen.numel())})
            stats.reliable += reliable
            stats.selected += int(chosen.numel())
            stats.num_classes, stats.e_margin, stats.d_margin = c, float(e0), float(d)
        stats.seconds = time.perf_counter() - start
        stats.batches = len(sizes)
    _finish(stats, times, sizes, model, entry, pixels, batch_size, timing_batches)
    return (torch.cat(preds) if preds else torch.empty(0, dtype=torch.long)), stats
