"""``adapt``'s first stage: from options to a loaded model, its profile and the split images.

``prepare(options)`` validates the options, resolves the model and its latency profile (the short
form picks the one recorded for this device), refuses a non-empty output early, loads the model,
checks the profile against it, reads and splits the images, optionally re-estimates the
teacher's BatchNorm statistics on the stream, and plans the hardware. Every refusal happens here,
before the expensive stages.
"""

from __future__ import annotations

import copy
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import torch
from torch import nn

from ..data.discovery import summarise_skipped
from ..data.images import ImageSet, load_images, require_images
from ..data.split import MIN_USABLE_IMAGES, Split, split_indices
from ..deploy.outputs import check_output_dir
from ..distill.bn_stats import reestimate_bn_stats
from ..distill.normalisation import choose_teacher_stats
from ..distill.compute_floor import ComputeFloor
from ..distill.hardware import HardwarePlan, peak_rss_mb, plan_hardware
from ..errors import ModelError, ProfileError, UsageError
from ..models.blocks import Block, find_blocks
from ..models.zoo import RANDOM, ZooEntry, canonical_name, load_model
from ..progress import CollectingReporter, Reporter
from ..pruning.plan import check_block_count
from .options import DEFAULT_BLOCKS, AdaptOptions


class PhaseClock:
    """Seconds and peak memory (running VmHWM) at the end of each phase of one run."""

    def __init__(self):
        self.started = time.perf_counter()
        self.timings: dict[str, float] = {}
        self.memory: dict[str, float] = {}

    @contextmanager
    def phase(self, name: str, since_start: bool = False):
        t = self.started if since_start else time.perf_counter()
        yield
        self.timings[name] = time.perf_counter() - t
        self.memory[name] = peak_rss_mb()

    def total(self) -> None:
        self.timings["total"] = time.perf_counter() - self.started


@dataclass
class Prepared:
    """What ``prepare`` resolved and loaded; the later stages read it."""

    options: AdaptOptions
    reporter: CollectingReporter
    clock: PhaseClock
    model_name: str
    profile_path: str  # a file path, or a URL in a remote registry
    profile: dict
    output: Path
    original: nn.Module  # the model as loaded (eval mode)
    teacher: nn.Module  # the original, or a copy with stream BatchNorm statistics (--teacher-stats stream)
    entry: ZooEntry
    weights_source: str
    resolution: int
    blocks: list[Block]
    images: ImageSet
    split: Split
    normalisation: dict  # report.json "normalisation"
    hardware: HardwarePlan
    floor: ComputeFloor
    threads: int  # torch threads of scoring and pseudo-labels (distillation may probe fewer)
    plan_blocks: int | None = None  # --blocks, or the default when no plan was given
    finetune_idx: list[int] = field(default_factory=list)  # prune images are fine-tune images too
    held: list[int] = field(default_factory=list)
    profile_choice: dict = field(default_factory=dict)  # report.json "profile_choice": how the profile was found

    @property
    def example(self) -> torch.Tensor:
        return torch.zeros(1, self.entry.in_chans, self.resolution, self.resolution)


def default_profiles_root() -> str:
    """The profile registry: a folder or an fsspec URL."""
    return os.environ.get("EDGEPRUNE_PROFILES", "profiles")


def resolve_profile(model: str | None, profile: str | os.PathLike | None,
                    reporter: Reporter, deploy_precision: str | None = None) -> tuple[str, str, dict, dict]:
    """(model, profile location, profile, how it was chosen): ``--profile`` as given, else the one
    profile the registry holds for this device's fingerprint (never another device's; of the
    deployed precision where profiles of several precisions are recorded)."""
    from ..latency.profiles import current_device_slugs, load_profile
    from ..latency.registry import ProfileKey, ProfileRegistry

    if profile is not None:
        prof = load_profile(profile)
        choice = {"how": "--profile", "location": str(profile), "key": str(ProfileKey.of(prof))}
    else:
        registry = ProfileRegistry(default_profiles_root())
        entry = registry.for_this_device(model, deploy_precision=deploy_precision)
        prof, profile = entry.profile, entry.location
        choice = {"how": "registry", "registry": registry.location, "location": entry.location, "key": str(entry.key),
                  "this_device": current_device_slugs()}
    reporter.info(f"using profile {choice['key']} ({choice['location']}; chosen by {choice['how']})")
    return canonical_name(model or prof["model"]), str(profile), prof, choice


def prepare(options: AdaptOptions, reporter: Reporter | None = None, images: ImageSet | None = None) -> Prepared:
    """Validate, resolve and load everything the run needs (module docstring); refuse early.

    ``images``: an already decoded set (e.g. a benchmark's in-memory stream) instead of reading
    ``options.images``; it must be at the profile's resolution.
    """
    rep = CollectingReporter(reporter)
    clock = PhaseClock()
    options.validate()
    model_name, profile_path, prof, choice = resolve_profile(options.model, options.profile, rep, options.deploy_precision)
    if canonical_name(prof["model"]) != model_name:  # cheap check before loading any weights
        raise ProfileError(f"profile {profile_path} is for model {prof['model']}, not {model_name} (field: model)",
                           f"run `edgeprune profile --model {model_name}` or pass its --profile")
    plan_blocks = options.plan_blocks()
    if options.blocks is None and plan_blocks is not None:
        rep.info(f"no plan given: removing {DEFAULT_BLOCKS} blocks (use --blocks/--target-saving/--latency-budget-ms)")
    output = options.output
    if output is None:
        output = Path("edgeprune-out") / f"{model_name.replace(':', '_')}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
        rep.info(f"writing to {output}")
    output = Path(output)
    check_output_dir(output, options.force)
    with clock.phase("load", since_start=True):
        rep.stage("load")
        prep = _load(options, rep, clock, model_name, profile_path, prof, output, plan_blocks, images)
    prep.profile_choice = choice
    return prep


def _load(options: AdaptOptions, rep: CollectingReporter, clock: PhaseClock, model_name: str, profile_path: str,
          prof: dict, output: Path, plan_blocks: int | None, imgs: ImageSet | None) -> Prepared:
    teacher, entry, source = load_model(model_name, options.weights)
    if source == RANDOM:
        raise ModelError("refusing to adapt a model with random weights", "pass --weights PATH")
    resolution = int(prof["resolution"])
    blocks = _blocks_at(teacher, entry, resolution)
    check_block_count(plan_blocks, len(blocks))  # before reading images and scoring
    _check_profile(prof, model_name, blocks, resolution, options.allow_device_mismatch, rep, options)
    if imgs is None:
        imgs = load_images(options.images, resolution, entry.crop_pct, progress=lambda d, t: rep.progress("reading images", d, t))
    elif tuple(imgs.pixels.shape[-2:]) != (resolution, resolution):
        raise UsageError(f"the images are {tuple(imgs.pixels.shape[-2:])} pixels, the profile's resolution is {resolution}")
    if imgs.skipped:
        rep.warn(f"skipped {len(imgs.skipped)} unusable file(s): {summarise_skipped(imgs.skipped)} (listed in report.json)")
    require_images(imgs, MIN_USABLE_IMAGES)
    parts = split_indices(len(imgs.pixels), prune=options.prune_images,
                          finetune=max(options.finetune_images - options.prune_images, 0), seed=options.seed)
    for w in parts.warnings:
        rep.warn(w)
    finetune_idx = list(parts.prune) + list(parts.finetune)
    stream_teacher, normalisation = _teacher_statistics(teacher, entry, imgs.pixels[finetune_idx], options, rep)
    hw = plan_hardware(options.recipe.precision, "cpu")  # threads, layout, precision (auto: probed on the real step)
    floor = ComputeFloor("cpu")
    floor.measure("fp32")  # start-up matmul throughput for the compute floor
    return Prepared(options, rep, clock, model_name, profile_path, prof, output, teacher, stream_teacher, entry, source,
                    resolution, blocks, imgs, parts, normalisation, hw, floor, torch.get_num_threads(), plan_blocks,
                    finetune_idx, list(parts.held_out))


def _blocks_at(model: nn.Module, entry: ZooEntry, resolution: int) -> list[Block]:
    example = torch.zeros(1, entry.in_chans, resolution, resolution)
    try:
        return find_blocks(model, entry, example)
    except RuntimeError as exc:
        raise ProfileError(f"{entry.name} does not run at the profile's resolution {resolution} (field: resolution): "
                           f"{str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__}",
                           f"re-run `edgeprune profile --model {entry.name}`") from None


def _check_profile(prof: dict, model_name: str, blocks: list[Block], resolution: int, allow_mismatch: bool,
                   rep: Reporter, options: AdaptOptions) -> None:
    from ..latency.fingerprint import device_fingerprint, device_slug
    from ..latency.profiles import check_profile_matches, check_profile_precision

    here = device_slug(device_fingerprint(prof["device"].get("kind", "cpu")))
    for w in check_profile_matches(prof, model_name, [b.name for b in blocks], resolution, here, allow_mismatch):
        rep.warn(w)
    for w in check_profile_precision(prof, options.deploy_precision, options.allow_precision_mismatch):
        rep.warn(w)
    for w in prof.get("warnings", []):
        rep.warn(f"profile: {w}")


def _teacher_statistics(teacher: nn.Module, entry: ZooEntry, pixels: torch.Tensor, options: AdaptOptions,
                        rep: Reporter) -> tuple[nn.Module, dict]:
    """The teacher distillation learns from, and report.json's "normalisation" record."""
    recipe = options.recipe
    record = {"teacher_stats": recipe.teacher_stats, "student_bn": recipe.student_bn, "freeze_head": recipe.freeze_head}
    if recipe.teacher_stats == "auto":
        candidate = copy.deepcopy(teacher)
        decision = choose_teacher_stats(candidate, entry, pixels, min(recipe.batch_size, recipe.micro_batch or recipe.batch_size))
        record["auto"] = decision.to_dict()
        record["teacher_stats_used"] = decision.choice
        rep.info(f"teacher statistics: {decision.choice} ({decision.reason})")
        return (teacher if decision.choice in ("source", "not applicable") else candidate), record
    if recipe.teacher_stats != "stream":
        return teacher, record
    stream = copy.deepcopy(teacher)
    layers = reestimate_bn_stats(stream, entry, pixels, options.recipe.batch_size)
    record["teacher_bn_layers"] = layers
    if layers == 0:
        record["teacher_stats"] = "not applicable: the model has no BatchNorm running statistics"
        rep.info("--teacher-stats stream: not applicable, the model has no BatchNorm running statistics")
    return stream, record
