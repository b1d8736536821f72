"""What a benchmark run measures (BenchConfig) and the two fine-tuning recipes it compares."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from edgeprune.distill.distiller import DistillConfig

ROOT = Path(__file__).resolve().parents[2]
PUBLISHED = ROOT / "docs" / "benchmarks"  # results written here are published: a clean tree only

BASELINE_CRITERIA = ("random", "curl", "ratio", "practise")
# Noise, blur and a digital corruption, each with a severity in the 30-80% window for both models in
# the generated sweep (docs/benchmarks/severity_*.json; brightness, say, has none for fmnist_mobilenetv2).
DEFAULT_CORRUPTIONS = ("gaussian_noise", "glass_blur", "elastic_transform")
KEEP_LO, KEEP_HI = 0.30, 0.80  # severity window: fraction of clean accuracy the source keeps
KEEP_TARGET = 0.55  # several severities in the window: the one closest to this
MODELS = ("fmnist_resnet", "fmnist_mobilenetv2")


@dataclasses.dataclass
class BenchConfig:
    models: tuple[str, ...] = MODELS
    corruptions: tuple[str, ...] = DEFAULT_CORRUPTIONS
    mixed: bool = True  # also a stream interleaving the corruptions and clean images, per image
    only_streams: tuple[str, ...] | None = None  # run only these streams' units (the mixed one still mixes every corruption)
    seeds: int = 3
    ks: tuple[int, ...] = (1, 3, 5)
    ablation_ks: tuple[int, ...] = (3,)  # Tables 5/6/7 and the clean-data check
    steps: int = 500
    batch: int = 64
    lr: float = 0.02
    prune_images: int = 64
    finetune_images: int = 1000
    eval_images: int = 2000
    practise_steps: int = 100
    sweep_images: int = 1000
    profile_budget_s: float = 20.0
    latency_budget_s: float = 6.0
    time_budget_s: float | None = None  # stop starting new units after this
    allow_random_weights: bool = False  # tests only
    severity_override: dict | None = None  # corruption -> severity (tests: random weights have no 30-80% window)
    out: Path = PUBLISHED
    quick: bool = False
    allow_dirty: bool = False  # publish from a tree with uncommitted changes (said so in the results)
    engine: str = "local"  # where units run (edgeprune.fleet.engine): local | ray
    ray_address: str | None = None  # a Ray cluster; None = a local Ray of `workers` CPUs
    workers: int | None = None
    resume: bool = False  # keep the units a stopped run in `out` finished (same commit and settings)


# ------------------------------------------------------------------------------- recipes
# Both recipes come from DistillConfig, the one owner of the defaults: DistillConfig.paper() is
# method.md's recipe (the baselines'), adapt_recipe() = DistillConfig() is what `edgeprune adapt` runs.
# Both train in channels_last (same math, 1.15-1.39x faster on CPU, docs/benchmarks/adapt_speed.json),
# so the layout is not one of the differences between methods.
RECIPE_FIELDS = ("decay_every", "time_budget_minutes", "train_scope", "precision", "early_stop", "micro_batch",
                 "channels_last", "student_bn", "teacher_stats", "keep_best", "local_steps", "steps", "check_every",
                 "patience", "min_rel_improvement", "val_images")


def _base(cfg: BenchConfig, seed: int) -> dict:
    return dict(steps=cfg.steps, batch_size=cfg.batch, lr=cfg.lr, seed=seed)


def paper_recipe(cfg: BenchConfig, seed: int) -> DistillConfig:
    """The baselines' fine-tuning (and ttmpd+stored_paper's): the paper's recipe at this run's budget."""
    return DistillConfig.paper(**_base(cfg, seed))


def edgeprune_recipe(cfg: BenchConfig, seed: int) -> DistillConfig:
    """TT-MPD's fine-tuning as ``edgeprune adapt`` runs it, at the same step budget, batch and lr."""
    from edgeprune.pipeline.options import adapt_recipe

    recipe = adapt_recipe(**_base(cfg, seed))
    if recipe.micro_batch and recipe.micro_batch >= cfg.batch:  # adapt: micro-batches only below the batch
        recipe = dataclasses.replace(recipe, micro_batch=None)
    return recipe


def recipe_summary(recipe: DistillConfig) -> dict:
    return {k: v for k, v in dataclasses.asdict(recipe).items() if k in RECIPE_FIELDS}


def recipe_differences(paper: dict, edgeprune: dict) -> dict:
    """Field -> [paper recipe, edgeprune recipe] for every setting in which the two differ."""
    return {k: [paper.get(k), edgeprune.get(k)] for k in sorted(set(paper) | set(edgeprune))
            if paper.get(k) != edgeprune.get(k)}
