"""The run: per-model setup, seeds outermost (a run cut by --time-budget keeps every model), one
unit per stream, results rewritten after every unit so a partial run still yields tables."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import torch

from edgeprune.data.split import split_indices
from edgeprune.data.transforms import normalise
from edgeprune.models.blocks import find_blocks
from edgeprune.models.surgery import remove_blocks
from edgeprune.models.zoo import load_model
from edgeprune.pruning.plan import floor_savings, make_plan
from edgeprune.research.corruptions import corrupt
from edgeprune.research.fashion_mnist import load_fashion_mnist, to_rgb32

from .config import (
    BenchConfig,
    edgeprune_recipe,
    paper_recipe,
    recipe_differences,
    recipe_summary,
)
from .latency import LatencyCache
from .methods import recipe_teacher, ttmpd_finetune
from .outputs import write_outputs
from .provenance import check_publishable, environment, git_state
from .streams import MIXED, UnitData, chosen_streams, get_profile, load_or_sweep, mixed_stream, to_nchw
from .unit import Unit, score_all


@dataclass
class ModelSetup:
    teacher: torch.nn.Module
    entry: object
    blocks: list
    savings: dict
    streams: list[tuple[str, int]]
    latency: LatencyCache


def train_time_pf(setup: ModelSetup, train_px, seed: int, cfg: BenchConfig) -> dict:
    """TT-MPD on clean TRAIN images (the train-time baseline of Table 5), per k in ablation_ks."""
    parts = split_indices(len(train_px), prune=cfg.prune_images, finetune=cfg.finetune_images - cfg.prune_images,
                          seed=10_000 + seed)
    ft_px = train_px[list(parts.prune) + list(parts.finetune)]
    prune_x = normalise(train_px[list(parts.prune)], setup.entry.mean, setup.entry.std)
    recipe = edgeprune_recipe(cfg, seed)
    entry = setup.entry
    teacher, stats_s, _ = recipe_teacher(setup.teacher, None, entry, ft_px, recipe, cfg.batch)
    res, score_s = score_all(["ttmpd"], teacher, entry, setup.blocks, prune_x, setup.savings, seed, cfg)["ttmpd"]
    reuse = {i: res.teacher_features[i] for i in range(len(parts.prune))}
    out = {}
    for k in cfg.ablation_ks:
        removed = make_plan(res.scores, setup.savings, k=k).removed
        student = remove_blocks(teacher, removed)
        fres = ttmpd_finetune(student, teacher, entry, ft_px, removed, reuse, recipe)
        out[k] = {"model": student, "removed": removed, "prune_s": score_s + stats_s, "finetune_s": fres.seconds}
    return out


def setup_model(model_name: str, cfg: BenchConfig, test_nhwc, test_y, result: dict, log) -> ModelSetup:
    """Weights, blocks, latency profile and the severity of each corruption for one model."""
    from edgeprune.latency.profiles import block_savings

    teacher, entry, source = load_model(model_name, allow_random=cfg.allow_random_weights)
    result["source_models"][model_name] = source
    blocks = find_blocks(teacher, entry, torch.zeros(1, 3, 32, 32))
    prof = get_profile(model_name, cfg, [b.name for b in blocks])
    savings, _ = floor_savings(block_savings(prof))
    log(f"severity sweep for {model_name}")
    sweep = load_or_sweep(model_name, teacher, entry, cfg, test_nhwc, test_y, cfg.corruptions)
    result["severity"][model_name] = sweep
    streams, excluded = chosen_streams(sweep, cfg)
    result.setdefault("excluded", {})[model_name] = excluded
    return ModelSetup(teacher, entry, blocks, savings, streams, LatencyCache(cfg.latency_budget_s))


def new_result(cfg: BenchConfig, provenance: dict, command: str | None = None) -> dict:
    paper, mine = recipe_summary(paper_recipe(cfg, 0)), recipe_summary(edgeprune_recipe(cfg, 0))
    return {"config": {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(cfg).items()},
            "command": command, "provenance": provenance, "environment": environment(),
            "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "ttmpd_finetune": mine, "baseline_finetune": paper, "recipe_differences": recipe_differences(paper, mine),
            "rows": [], "severity": {}, "units_done": [], "units_skipped": [], "latency": {}, "source_models": {}}


def run_one_unit(result: dict, setup: ModelSetup, unit: dict, sev: int, row: int, inputs: dict, train_pf, cfg) -> float:
    """One stream of one model and seed (``unit``: model, seed, corruption); returns its seconds."""
    t = time.perf_counter()
    seed, corruption = unit["seed"], unit["corruption"]
    test_nhwc = inputs["test_nhwc"]
    if corruption == MIXED:
        px, _ = mixed_stream(test_nhwc, [(c, s) for c, s in setup.streams if c not in (MIXED, "clean")], seed)
    else:
        px = test_nhwc if corruption == "clean" else corrupt(test_nhwc, corruption, sev, seed=seed)
    data = UnitData.cut(to_nchw(px), inputs["labels"], setup.entry, cfg, seed)
    recipes = {"paper": paper_recipe(cfg, seed), "edgeprune": edgeprune_recipe(cfg, seed)}
    runner = Unit(unit["model"], setup.teacher, setup.entry, setup.blocks, setup.savings, data, corruption, sev, seed,
                  cfg, recipes, row=row)
    result["rows"].extend(runner.run(setup.latency, train_pf))
    seconds = time.perf_counter() - t
    result["units_done"].append({**unit, "severity": sev, "seconds": seconds, "order": runner.order})
    result["latency"][unit["model"]] = setup.latency.details
    return seconds


def load_inputs() -> dict:
    test_x, test_y = load_fashion_mnist("test")
    return {"test_nhwc": to_rgb32(test_x), "test_y": test_y, "labels": torch.from_numpy(test_y),
            "train_px": to_nchw(to_rgb32(load_fashion_mnist("train")[0]))}


def run_benchmark(cfg: BenchConfig, log=print, command: str | None = None) -> dict:
    """Every unit of ``cfg``; refuses (UsageError) to publish from an uncommitted tree. ``command``
    (the command line) is recorded in the results."""
    cfg.out = Path(cfg.out)
    provenance = check_publishable(cfg, git_state(cfg.out))
    torch.set_num_threads(1)
    cfg.out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    clock = lambda: time.perf_counter() - t_start  # noqa: E731
    stamp = lambda m: log(f"[{clock():6.0f}s] {m}")  # noqa: E731
    over = lambda: bool(cfg.time_budget_s) and clock() > cfg.time_budget_s  # noqa: E731
    inputs = load_inputs()
    result = new_result(cfg, provenance, command)
    setups = {m: setup_model(m, cfg, inputs["test_nhwc"], inputs["test_y"], result, stamp) for m in cfg.models}
    for seed in range(cfg.seeds):
        for model_name, setup in setups.items():
            if over():
                result["units_skipped"].append({"model": model_name, "seed": seed, "reason": "time budget"})
                continue
            stamp(f"{model_name} seed {seed}: train-time PF")
            train_pf = train_time_pf(setup, inputs["train_px"], seed, cfg)
            for i, (corruption, sev) in enumerate(setup.streams):
                unit = {"model": model_name, "seed": seed, "corruption": corruption}
                if over():
                    result["units_skipped"].append({**unit, "reason": "time budget"})
                    continue
                seconds = run_one_unit(result, setup, unit, sev, seed * len(setup.streams) + i, inputs, train_pf, cfg)
                result["elapsed_s"] = clock()
                write_outputs(result, cfg)
                stamp(f"done {model_name} {corruption} (sev {sev}) seed {seed} in {seconds:.0f}s")
    result["elapsed_s"] = clock()
    result["finished"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    write_outputs(result, cfg)
    return result
