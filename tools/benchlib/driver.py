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
from edgeprune.pruning.plan import floor_savings, make_plan
from edgeprune.research.fashion_mnist import load_fashion_mnist, to_rgb32

from .config import (
    BenchConfig,
    edgeprune_recipe,
    paper_recipe,
    recipe_differences,
    recipe_summary,
)
from .methods import recipe_teacher, ttmpd_finetune
from .outputs import write_outputs
from .provenance import check_publishable, environment, git_state
from .resume import carry_over, finished_outcomes, load_previous
from .streams import MIXED, chosen_streams, get_profile, load_or_sweep
from .unit import score_all


@dataclass
class ModelSetup:
    teacher: torch.nn.Module
    entry: object
    blocks: list
    savings: dict
    streams: list[tuple[str, int]]


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

    from .unit_task import load_teacher

    teacher, entry, source = load_teacher(model_name, cfg)
    result["source_models"][model_name] = source
    blocks = find_blocks(teacher, entry, torch.zeros(1, 3, 32, 32))
    prof = get_profile(model_name, cfg, [b.name for b in blocks])
    savings, _ = floor_savings(block_savings(prof))
    log(f"severity sweep for {model_name}")
    sweep = load_or_sweep(model_name, teacher, entry, cfg, test_nhwc, test_y, cfg.corruptions)
    result["severity"][model_name] = sweep
    streams, excluded = chosen_streams(sweep, cfg)
    result.setdefault("excluded", {})[model_name] = excluded
    return ModelSetup(teacher, entry, blocks, savings, streams)


def new_result(cfg: BenchConfig, provenance: dict, command: str | None = None) -> dict:
    paper, mine = recipe_summary(paper_recipe(cfg, 0)), recipe_summary(edgeprune_recipe(cfg, 0))
    return {"config": {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(cfg).items()},
            "command": command, "provenance": provenance, "environment": environment(),
            "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "ttmpd_finetune": mine, "baseline_finetune": paper, "recipe_differences": recipe_differences(paper, mine),
            "rows": [], "severity": {}, "units_done": [], "units_skipped": [], "latency": {}, "source_models": {}}


def plan_units(cfg: BenchConfig, setups: dict) -> list:
    """One engine unit per (seed, model, stream), seeds outermost (a run cut by the time budget keeps
    every model); within a seed the corrupted streams before the clean ones (the longer units first,
    which packs parallel workers better). ``row`` is the unit's row of the balanced-order design."""
    from edgeprune.fleet.engine import UnitSpec

    from .unit_task import config_to_params

    params = config_to_params(cfg)
    units = []
    for seed in range(cfg.seeds):
        for clean_pass in (False, True):
            for model_name, setup in setups.items():
                for i, (corruption, sev) in enumerate(setup.streams):
                    if (corruption == "clean") != clean_pass or (cfg.only_streams and corruption not in cfg.only_streams):
                        continue
                    mixed_of = [[c, s] for c, s in setup.streams if c not in (MIXED, "clean")] if corruption == MIXED else []
                    units.append(UnitSpec({"model": model_name, "seed": seed, "corruption": corruption, "severity": sev,
                                           "mixed_of": mixed_of, "row": seed * len(setup.streams) + i,
                                           "savings": setup.savings, "config": params}))
    planned = {c for setup in setups.values() for c, _ in setup.streams}
    unknown = sorted(set(cfg.only_streams or ()) - planned)
    if unknown:
        from edgeprune.errors import UsageError

        raise UsageError(f"--only-streams {' '.join(unknown)}: not a stream of this run (its streams: "
                         f"{', '.join(sorted(planned))}; a corruption needs a severity in the window and --corruptions)")
    return units


def load_inputs() -> dict:
    test_x, test_y = load_fashion_mnist("test")
    return {"test_nhwc": to_rgb32(test_x), "test_y": test_y}


class _Collector:
    """Unit outcomes as they arrive (any order), kept in the plan's order in ``result``."""

    def __init__(self, result: dict, units: list, cfg: BenchConfig, stamp):
        self.result, self.cfg, self.stamp = result, cfg, stamp
        self.units = units
        self.index = {u.key: i for i, u in enumerate(units)}
        self.done: dict[int, tuple] = {}

    def adopt(self, finished: dict[tuple, tuple]) -> list:
        """Take the units a stopped run finished (--resume); returns the units still to run."""
        left = []
        for unit in self.units:
            key = (unit.params["model"], unit.params["seed"], unit.params["corruption"])
            if key in finished:
                self.done[self.index[unit.key]] = finished[key]
            else:
                left.append(unit)
        if self.done:
            self._write()
        return left

    def __call__(self, unit, outcome: dict) -> None:
        p = unit.params
        unit_id = {"model": p["model"], "seed": p["seed"], "corruption": p["corruption"]}
        if outcome["status"] != "ok":
            self.result.setdefault("units_failed", []).append({**unit_id, "error": outcome["error"],
                                                               "traceback": outcome.get("traceback")})
            self.stamp(f"FAILED {p['model']} {p['corruption']} seed {p['seed']}: {outcome['error']}")
            return
        self.done[self.index[unit.key]] = (unit_id, p["severity"], outcome)
        self._write()
        w = outcome["worker"]
        self.stamp(f"done {p['model']} {p['corruption']} (sev {p['severity']}) seed {p['seed']} in "
                   f"{outcome['result']['seconds']:.0f}s on {w['host']}:{w['pid']} (load {w['load_avg_start'][0]:.1f})")

    def _write(self) -> None:
        """Rows and units_done rebuilt in the plan's order, written out."""
        res = self.result
        res["rows"], res["units_done"] = [], []
        for _, (uid, sev, out) in sorted(self.done.items()):
            r = out["result"]
            res["rows"].extend(r["rows"])
            res["units_done"].append({**uid, "severity": sev, "seconds": r["seconds"], "order": r["order"],
                                      "worker": out["worker"]})
            res["latency"].setdefault(uid["model"], {}).update(r["latency"])
        write_outputs(res, self.cfg)


def run_benchmark(cfg: BenchConfig, log=print, command: str | None = None) -> dict:
    """Every unit of ``cfg`` on ``cfg.engine`` (edgeprune.fleet.engine: "local" = one after another
    here, "ray" = Ray tasks); refuses (UsageError) to publish from an uncommitted tree. ``command``
    (the command line) is recorded in the results."""
    from edgeprune.fleet.engine import require_ray, run_units

    from .unit_task import TARGET, TOOLS

    if cfg.engine == "ray":
        require_ray()
    cfg.out = Path(cfg.out)
    provenance = check_publishable(cfg, git_state(cfg.out))
    torch.set_num_threads(1)
    cfg.out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    clock = lambda: time.perf_counter() - t_start  # noqa: E731
    stamp = lambda m: log(f"[{clock():6.0f}s] {m}")  # noqa: E731
    over = lambda: bool(cfg.time_budget_s) and clock() > cfg.time_budget_s  # noqa: E731
    result = new_result(cfg, provenance, command)
    previous = load_previous(cfg.out, result["config"], provenance) if cfg.resume else None
    elapsed_before = carry_over(result, previous) if previous else 0.0
    inputs = load_inputs()
    setups = {m: setup_model(m, cfg, inputs["test_nhwc"], inputs["test_y"], result, stamp) for m in cfg.models}
    units = plan_units(cfg, setups)
    result["setup_s"] = clock()
    collect = _Collector(result, units, cfg, stamp)
    todo = collect.adopt(finished_outcomes(previous)) if previous else units
    stamp(f"{len(todo)} units on engine {cfg.engine}" + (f" ({len(units) - len(todo)} finished before, kept)" if previous else ""))
    left = run_units(todo, TARGET, cfg.engine, on_done=collect, should_start=lambda: not over(),
                     address=cfg.ray_address, workers=cfg.workers, paths=[TOOLS])
    result["units_skipped"] += [{k: u.params[k] for k in ("model", "seed", "corruption")} | {"reason": "time budget"}
                                for u in left]
    result["elapsed_s"] = elapsed_before + clock()
    result["finished"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    write_outputs(result, cfg)
    return result
