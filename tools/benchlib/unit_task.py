"""One benchmark unit as a self-contained task: what ``edgeprune.fleet.engine`` runs, in this process
(``--engine local``) or in a Ray worker (``--engine ray``).

The driver measures what every unit of a model must share (the latency profile's savings, the
severities) once and passes it in the parameters; the task loads the rest itself (weights, data;
cached per worker process), seeds every global generator from the unit, and returns JSON: its
rows, the order its methods ran in, and its latency measurements. The same parameters give the
same rows on either engine.
"""

from __future__ import annotations

import dataclasses
import functools
import random
import time
from pathlib import Path

import numpy as np
import torch

from edgeprune.models.blocks import find_blocks
from edgeprune.research.corruptions import corrupt
from edgeprune.research.fashion_mnist import load_fashion_mnist, to_rgb32

from .config import BenchConfig, edgeprune_recipe, paper_recipe
from .latency import LatencyCache
from .streams import MIXED, UnitData, mixed_stream, to_nchw
from .unit import Unit

TARGET = "benchlib.unit_task:run_unit_task"
TOOLS = str(Path(__file__).resolve().parents[1])  # put on the worker's sys.path so ``benchlib`` imports


def config_to_params(cfg: BenchConfig) -> dict:
    return {k: (str(v) if isinstance(v, Path) else list(v) if isinstance(v, tuple) else v)
            for k, v in dataclasses.asdict(cfg).items()}


def config_from_params(d: dict) -> BenchConfig:
    types = {f.name: f.type for f in dataclasses.fields(BenchConfig)}
    return BenchConfig(**{k: (tuple(v) if isinstance(v, list) and "tuple" in str(types[k]) else v) for k, v in d.items()})


def load_teacher(model_name: str, cfg: BenchConfig):
    """(model, entry, weights source); random weights (tests) are drawn from a fixed seed, so the
    driver and every worker build the same model."""
    from edgeprune.models.zoo import load_model

    torch.manual_seed(20_260_101)
    return load_model(model_name, allow_random=cfg.allow_random_weights)


@functools.lru_cache(maxsize=2)
def _teacher(model_name: str, allow_random: bool):
    cfg = BenchConfig(allow_random_weights=allow_random)
    teacher, entry, source = load_teacher(model_name, cfg)
    return teacher, entry, find_blocks(teacher, entry, torch.zeros(1, 3, 32, 32)), source


@functools.lru_cache(maxsize=1)
def _inputs() -> dict:
    test_x, test_y = load_fashion_mnist("test")
    return {"test_nhwc": to_rgb32(test_x), "labels": torch.from_numpy(test_y),
            "train_px": to_nchw(to_rgb32(load_fashion_mnist("train")[0]))}


def _seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


def run_unit_task(params: dict) -> dict:
    """params: model, seed, corruption, severity, mixed_of (the mixed stream's corruptions), row,
    savings, config. Returns {rows, order,
    seconds, latency}."""
    from .driver import (
        train_time_pf,  # the driver's, unchanged: train-time PF of this model and seed
    )

    t = time.perf_counter()
    cfg = config_from_params(params["config"])
    torch.set_num_threads(1)
    teacher, entry, blocks, _ = _teacher(params["model"], cfg.allow_random_weights)
    seed, corruption, sev = params["seed"], params["corruption"], params["severity"]
    _seed_everything(1_000_003 * seed + params["row"])
    inputs = _inputs()
    savings = params["savings"]
    train_pf = None
    if corruption != "clean":  # clean units have no train-time rows
        train_pf = train_time_pf(_Setup(teacher, entry, blocks, savings), inputs["train_px"], seed, cfg)
    if corruption == MIXED:  # each image clean or one of the model's corruptions
        px, _ = mixed_stream(inputs["test_nhwc"], [(c, s) for c, s in params["mixed_of"]], seed)
    else:
        px = inputs["test_nhwc"] if corruption == "clean" else corrupt(inputs["test_nhwc"], corruption, sev, seed=seed)
    data = UnitData.cut(to_nchw(px), inputs["labels"], entry, cfg, seed)
    recipes = {"paper": paper_recipe(cfg, seed), "edgeprune": edgeprune_recipe(cfg, seed)}
    runner = Unit(params["model"], teacher, entry, blocks, savings, data, corruption, sev, seed, cfg, recipes,
                  row=params["row"])
    latency = LatencyCache(cfg.latency_budget_s)
    rows = runner.run(latency, train_pf)
    return {"rows": rows, "order": runner.order, "seconds": time.perf_counter() - t, "latency": latency.details}


@dataclasses.dataclass
class _Setup:
    """The fields of ``driver.ModelSetup`` that ``train_time_pf`` reads."""

    teacher: object
    entry: object
    blocks: list
    savings: dict
