"""``edgeprune sweep CONFIG``: models x streams x criteria x k x seeds x recipe options, one unit each.

A unit is one ``adapt`` run (``pipeline.adapt.run_adapt``: the same stages, checks and report as
the command) on one stream folder, written to ``<out>/units/<key>/``; its summary row goes into the
results table (``fleet.results``) as soon as it finishes. Units run on ``fleet.engine`` (serially,
or as Ray tasks). A unit's key is a hash of its parameters as written in the config, so a sweep
run again with the same config and ``--out`` skips every unit that finished.

Config (TOML; YAML where pyyaml is installed), paths relative to the config file::

    out = "sweep-out"                       # results folder (--out overrides)
    num_cpus = 1                            # per unit (Ray schedules by it; torch uses that many threads)
    num_gpus = 0
    models = ["fmnist_resnet"]
    streams = ["streams/noise", "streams/blur"]   # image folders (class sub-folders give accuracy)
    criteria = ["ttmpd", "random"]
    k = [1, 3]
    seeds = [0, 1]
    [weights]    # optional, model -> state dict (default: the zoo's local weights)
    [profiles]   # optional, model -> profile file (default: the registry's for the worker's device)
    [recipe]     # adapt options for every unit; a list makes one more axis
    steps = [20, 60]
    finetune_images = 256
"""

from __future__ import annotations

import itertools
import os
import tomllib
from pathlib import Path

from ..errors import UsageError
from .engine import UnitSpec, require_ray, run_units, unit_key
from .results import ResultsTable

AXES = ("models", "streams", "criteria", "k", "seeds")
AXIS_PARAM = {"models": "model", "streams": "stream", "criteria": "criterion", "k": "k", "seeds": "seed"}
TOP_KEYS = {*AXES, "out", "num_cpus", "num_gpus", "weights", "profiles", "recipe"}
COLUMNS = [("removed", "removed"), ("accuracy original", "accuracy_original"), ("accuracy before", "accuracy_before"),
           ("accuracy after", "accuracy_after"), ("agreement after", "agreement_after"),
           ("saving predicted", "predicted_saving"), ("saving measured", "measured_saving"), ("profile", "profile")]
TARGET = "edgeprune.fleet.sweep:sweep_unit"


def load_config(path: str | os.PathLike) -> dict:
    """The config as a dict (TOML, or YAML for .yaml/.yml); UsageError naming what is wrong."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"no sweep config at {path}", "see `edgeprune sweep --help` for the format")
    text = path.read_text(encoding="utf-8")
    if path.suffix in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError:
            raise UsageError(f"{path} is YAML, which needs pyyaml", "pip install pyyaml, or write the config as TOML") from None
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise UsageError(f"{path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    else:
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise UsageError(f"{path} is not valid TOML: {exc}") from None
    if not isinstance(data, dict):
        raise UsageError(f"{path}: the config must be a table of settings")
    unknown = set(data) - TOP_KEYS
    if unknown:
        raise UsageError(f"{path}: unknown setting(s) {', '.join(sorted(unknown))}; known: {', '.join(sorted(TOP_KEYS))}")
    for axis in AXES:
        values = data.get(axis)
        if not isinstance(values, list) or not values:
            raise UsageError(f"{path}: {axis!r} must be a non-empty list")
    return data


def _as_list(value) -> list:
    return value if isinstance(value, list) else [value]


def expand(config: dict, base: Path) -> tuple[list[UnitSpec], list[str]]:
    """Every unit of the cartesian product, and the axes' names (recipe lists included)."""
    recipe = config.get("recipe") or {}
    recipe_axes = sorted(k for k, v in recipe.items() if isinstance(v, list))
    names = [AXIS_PARAM[a] for a in AXES] + [f"recipe.{k}" for k in recipe_axes]
    lists = [config[a] for a in AXES] + [recipe[k] for k in recipe_axes]
    units = []
    for combo in itertools.product(*lists):
        ident = dict(zip(names, combo))
        unit_recipe = {k: v for k, v in recipe.items() if not isinstance(v, list)}
        unit_recipe.update({k: ident[f"recipe.{k}"] for k in recipe_axes})
        ident_full = {**{AXIS_PARAM[a]: ident[AXIS_PARAM[a]] for a in AXES}, "recipe": unit_recipe,
                      "weights": (config.get("weights") or {}).get(ident["model"]),
                      "profile": (config.get("profiles") or {}).get(ident["model"])}
        params = {**ident_full, "stream_path": str(base / ident["stream"]),  # as written, and resolved
                  "weights_path": _abs(base, ident_full["weights"]), "profile_path": _abs(base, ident_full["profile"])}
        units.append(UnitSpec(params, float(config.get("num_cpus", 1)), float(config.get("num_gpus", 0)),
                              key=unit_key(ident_full)))
    return units, names


def _abs(base: Path, value):
    return None if value is None else str(base / value)


def unit_options(params: dict, output: str | os.PathLike):
    """The ``AdaptOptions`` of one unit (UsageError for a recipe key adapt does not have)."""
    from ..pipeline.options import AdaptOptions

    try:
        return AdaptOptions.from_kwargs(params["stream_path"], output, model=params["model"], weights=params["weights_path"],
                                        profile=params["profile_path"], blocks=int(params["k"]), criterion=params["criterion"],
                                        seed=int(params["seed"]), force=True, **params["recipe"])
    except TypeError as exc:
        raise UsageError(f"sweep config [recipe]: {exc}".replace(" adapt() got", "")) from None


def sweep_unit(params: dict) -> dict:
    """One unit: ``adapt`` on its stream into ``params["output"]``; the row of the results table."""
    from ..pipeline.adapt import run_adapt

    result = run_adapt(unit_options(params, params["output"]))
    r, fid = result.report, result.report["fidelity"]
    return {"removed": r["removed_blocks"], "accuracy_original": fid["accuracy_original"],
            "accuracy_before": fid["accuracy_before"], "accuracy_after": fid["accuracy_after"],
            "agreement_after": fid["agreement_after"], "predicted_saving": r["predicted_saving"],
            "measured_saving": r["measured_saving"], "profile": r["profile_choice"].get("key"),
            "timings": r["timings"], "warnings": result.warnings, "output": str(result.output)}


def plan_sweep(config_path: str | os.PathLike, out: str | os.PathLike | None = None):
    """(config, units, axes, results table): validated before any unit runs."""
    config_path = Path(config_path)
    config = load_config(config_path)
    base = config_path.resolve().parent
    units, axes = expand(config, base)
    folder = Path(out) if out is not None else base / config.get("out", "sweep-out")
    for unit in units:
        unit.params["output"] = str(folder / "units" / unit.key)
        unit_options(unit.params, unit.params["output"]).validate()  # bad recipe values: refused before any work
    return config, units, axes, ResultsTable(folder, config, axes, COLUMNS)


def run_sweep(config_path, engine: str = "local", out=None, address: str | None = None, workers: int | None = None,
              on_unit=None) -> dict:
    """Run every unit not finished before; ``on_unit(done, total, unit, outcome)`` after each.

    Returns:
        {folder, total, skipped (finished before), ran, failed}.
    """
    if engine == "ray":
        require_ray()  # before any work: says how to install it
    _, units, _, table = plan_sweep(config_path, out)
    finished = table.done()
    todo = [u for u in units if u.key not in finished]
    counts = {"ran": 0, "failed": 0}

    def on_done(unit: UnitSpec, outcome: dict) -> None:
        table.record(unit.key, unit.params, outcome)
        counts["ran"] += 1
        counts["failed"] += outcome["status"] != "ok"
        if on_unit is not None:
            on_unit(len(units) - len(todo) + counts["ran"], len(units), unit, outcome)

    if not table.data["units"]:
        table.write()  # an empty table at once: the folder says a sweep is under way
    if todo:
        run_units(todo, TARGET, engine, on_done=on_done, address=address, workers=workers)
    return {"folder": str(table.folder), "total": len(units), "skipped": len(units) - len(todo), **counts}
