"""`edgeprune sweep` (fleet/sweep.py, fleet/engine.py, fleet/results.py): config, units, resume, engines.

Ray starts in ~15 s on this shared 2-core machine, so the Ray tests are marked slow (run them with
``-m slow``); the local engine, resume and the no-Ray message run in the default suite."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from edgeprune.errors import BackendUnavailable, UsageError
from edgeprune.fleet import sweep as sweep_mod
from edgeprune.fleet.engine import UnitSpec, run_units
from edgeprune.fleet.sweep import load_config, plan_sweep, run_sweep
from edgeprune.models import zoo

ROOT = Path(__file__).resolve().parents[1]

CONFIG = """
out = "res"
models = ["fmnist_resnet"]
streams = ["streams/a"]
criteria = ["ttmpd"]
k = [1, 2]
seeds = [0]
[weights]
fmnist_resnet = "w.pt"
[profiles]
fmnist_resnet = "p.json"
[recipe]
steps = 2
batch = 8
prune_images = 8
finetune_images = 24
measure_latency = false
"""


def _profile(model) -> dict:
    """A profile of fmnist_resnet on this device with made-up timings (block i saves (i + 1)%): a
    measured one takes 20-40 s on the loaded test machine, and the sweep only needs a valid one."""
    from edgeprune.latency.fingerprint import device_fingerprint, device_slug
    from edgeprune.models.blocks import find_blocks

    prof = json.loads((ROOT / "profiles" / "cpu-amd-epyc-2c" / "mobilenet_v2-onnxruntime-fp32-b1-r224.json").read_text())
    found = find_blocks(model, zoo.get_entry("fmnist_resnet"), torch.zeros(1, 3, 32, 32))
    stats = {"median_ms": 1.0, "p90_ms": 1.1, "cv": 0.01, "n": 10}
    fp = device_fingerprint("cpu")
    prof.update(model="fmnist_resnet", resolution=32, backend={**prof["backend"], "name": "torch"}, device=fp,
                device_slug=device_slug(fp), base=stats, additivity=None, warnings=[],
                blocks=[{"name": b.name, "params": b.params, "capacity_gap": b.capacity_gap, **stats, "median_ms": 1 - s,
                         "saving_ms": s, "saving": s, "flags": []}
                        for b, s in zip(found, [(i + 1) / 100 for i in range(len(found))])])
    return prof


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from edgeprune.latency.profiles import save_profile

    tmp = tmp_path_factory.mktemp("sweep")
    torch.manual_seed(0)
    model, _, _ = zoo.load_model("fmnist_resnet", weights="random")
    torch.save(model.state_dict(), tmp / "w.pt")
    save_profile(_profile(model), tmp / "p.json")
    rng = np.random.default_rng(0)
    for i in range(40):
        d = tmp / "streams" / "a" / f"c{i % 2}"
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).resize((32, 32), Image.NEAREST).save(d / f"{i}.png")
    (tmp / "sweep.toml").write_text(CONFIG)
    return tmp


def _config(setup, tmp_path, text=CONFIG, name="sweep.toml"):
    """The config in a fresh folder that links the module's weights, profile and streams."""
    for f in ("w.pt", "p.json", "streams"):
        (tmp_path / f).symlink_to(setup / f)
    (tmp_path / name).write_text(text)
    return tmp_path / name


def test_units_keys_and_axes(setup):
    text = CONFIG.replace("steps = 2", "steps = [2, 3]").replace('criteria = ["ttmpd"]', 'criteria = ["ttmpd", "random"]')
    (setup / "grid.toml").write_text(text)
    _, units, axes, _ = plan_sweep(setup / "grid.toml", out=setup / "grid-out")
    assert axes == ["model", "stream", "criterion", "k", "seed", "recipe.steps"]
    assert len(units) == 2 * 2 * 2 and len({u.key for u in units}) == 8
    assert {u.params["recipe"]["steps"] for u in units} == {2, 3} and all(u.params["recipe"]["batch"] == 8 for u in units)
    # the key is the parameters as written: the same config elsewhere gives the same keys
    _, again, _, _ = plan_sweep(setup / "grid.toml", out=setup / "elsewhere")
    assert [u.key for u in again] == [u.key for u in units]


@pytest.mark.parametrize("text, match", [
    ("models = []\n", "'models' must be a non-empty list"),
    ("colour = 1\n" + CONFIG, "unknown setting.*colour"),
    ("models = [\n", "not valid TOML"),
    (CONFIG.replace("steps = 2", "stepz = 2"), r"\[recipe\].*stepz"),
    (CONFIG.replace("steps = 2", "steps = 0"), "steps"),
    (CONFIG.replace('criteria = ["ttmpd"]', 'criteria = ["nope"]'), "nope"),
])
def test_bad_configs_are_refused_before_any_unit(setup, tmp_path, text, match):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(UsageError, match=match):
        plan_sweep(path)
    assert not (tmp_path / "sweep-out").exists()


def test_yaml_config(setup, tmp_path):
    yaml = pytest.importorskip("yaml")
    import tomllib

    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(tomllib.loads(CONFIG)))
    assert load_config(path) == tomllib.loads(CONFIG)


def test_local_sweep_writes_table_and_resume_redoes_no_finished_unit(setup, tmp_path, monkeypatch):
    config = _config(setup, tmp_path)
    ran = []
    real = sweep_mod.sweep_unit
    monkeypatch.setattr(sweep_mod, "sweep_unit", lambda p: ran.append(p["k"]) or real(p))
    first = run_sweep(config, engine="local")
    assert (first["total"], first["skipped"], first["ran"], first["failed"]) == (2, 0, 2, 0) and sorted(ran) == [1, 2]
    res = json.loads((tmp_path / "res" / "results.json").read_text())
    assert len(res["units"]) == 2 and all(u["status"] == "ok" for u in res["units"].values())
    for u in res["units"].values():
        assert len(u["result"]["removed"]) == u["params"]["k"] and u["result"]["profile"].endswith("fmnist_resnet-torch-fp32-b1-r32")
        w = u["worker"]  # fair timing: the worker and its load, per unit
        assert w["device"] and len(w["load_avg_start"]) == 3 and w["seconds"] > 0
        assert Path(u["result"]["output"], "report.json").is_file()
    md = (tmp_path / "res" / "results.md").read_text()
    assert "| fmnist_resnet | streams/a | ttmpd | 1 | 0 | ok |" in md
    # run again: nothing is redone
    ran.clear()
    again = run_sweep(config, engine="local")
    assert (again["skipped"], again["ran"]) == (2, 0) and ran == []
    # a unit that failed (or never finished) runs again, and only that one
    res["units"][next(iter(res["units"]))]["status"] = "failed"
    (tmp_path / "res" / "results.json").write_text(json.dumps(res))
    third = run_sweep(config, engine="local")
    assert (third["skipped"], third["ran"], third["failed"]) == (1, 1, 0) and len(ran) == 1


def test_engine_records_failures_and_stops_at_the_budget():
    units = [UnitSpec({"x": i}) for i in range(3)]
    seen = []
    left = run_units(units, "edgeprune.fleet.engine:worker_info", "local", on_done=lambda u, o: seen.append(o),
                     should_start=lambda: len(seen) < 2)
    assert [o["status"] for o in seen] == ["failed", "failed"] and "TypeError" in seen[0]["error"]  # worker_info() takes no params
    assert left == units[2:]
    with pytest.raises(UsageError, match="--engine"):
        run_units(units, "x:y", "dask", on_done=print)


def test_without_ray_sweep_says_how_to_install(setup, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    config = _config(setup, tmp_path)
    with pytest.raises(BackendUnavailable, match=r"pip install 'edgeprune\[fleet\]'.*--engine local"):
        run_sweep(config, engine="ray")
    from edgeprune import cli

    monkeypatch.setattr(sys, "argv", ["edgeprune", "sweep", str(config)])
    with pytest.raises(SystemExit) as exc:
        cli.main()
    assert exc.value.code == BackendUnavailable.exit_code
    err = capsys.readouterr().err
    assert "Traceback" not in err and "needs Ray" in err and not (tmp_path / "res").exists()


@pytest.mark.slow  # ray.init takes ~15 s here
def test_ray_sweep_gives_the_local_results(setup, tmp_path):
    pytest.importorskip("ray", reason="Ray is the optional edgeprune[fleet] extra")
    config = _config(setup, tmp_path)
    run_sweep(config, engine="local", out=tmp_path / "local")
    summary = run_sweep(config, engine="ray", out=tmp_path / "ray", workers=2)
    assert summary["ran"] == 2 and summary["failed"] == 0
    local, ray_ = (json.loads((tmp_path / d / "results.json").read_text())["units"] for d in ("local", "ray"))
    assert local.keys() == ray_.keys()
    for key in local:
        a, b = local[key]["result"], ray_[key]["result"]
        for field in ("removed", "accuracy_before", "accuracy_after", "agreement_after", "predicted_saving"):
            assert a[field] == b[field], (key, field)
        assert ray_[key]["worker"]["pid"] != local[key]["worker"]["pid"]  # it did run in a Ray worker

