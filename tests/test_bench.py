"""The benchmark harness (tools/bench.py, tools/benchlib/): a tiny run, rendering, balanced order,
provenance and the refusal to publish from an uncommitted tree."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

from edgeprune.errors import UsageError  # noqa: E402

from benchlib import config, order, provenance  # noqa: E402
from benchlib.methods import jobs_for  # noqa: E402
from benchlib.outputs import write_outputs  # noqa: E402


def _bench():
    spec = importlib.util.spec_from_file_location("edgeprune_tools_bench", ROOT / "tools" / "bench.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


REQUIRED = {"method", "criterion", "finetune", "k", "corruption", "severity", "seed", "accuracy", "latency_saving",
            "prune_s", "finetune_s", "pf_s", "inference_s"}


@pytest.mark.slow  # ~20 s of CPU, but 60-70 s wall on the loaded shared machine
def test_tiny_benchmark(tmp_path):
    bench = _bench()
    cfg = bench.BenchConfig(corruptions=("gaussian_noise",), seeds=1, ks=(1,), ablation_ks=(1,), steps=2,
                            eval_images=200, finetune_images=128, practise_steps=2, sweep_images=200,
                            profile_budget_s=1.0, latency_budget_s=0.5, allow_random_weights=True,
                            severity_override={"gaussian_noise": 3}, out=tmp_path)
    res = bench.run_benchmark(cfg, log=lambda m: None)
    rows = res["rows"]
    assert rows and all(REQUIRED <= set(r) for r in rows)
    methods = {r["method"] for r in rows}
    for m in ("source", "source+stream_bn", "source+tent", "source+eata", "TT-MPD", "random+continuous",
              "curl+continuous", "ratio+continuous", "practise+continuous", "practise+stored", "ttmpd+mir",
              "ttmpd+entropy", "TT-MPD+stream_bn", "TT-MPD+stream_bn+student_bn", "TT-MPD+source_bn", "train-time PF",
              "TT-MPD+tent", "train-time PF+eata", "ttmpd+stored_paper"):
        assert m in methods, m
    assert {r["model"] for r in rows} == {"fmnist_resnet", "fmnist_mobilenetv2"}
    # TT-MPD is fine-tuned as edgeprune adapt runs it; the baselines with the paper's recipe
    defaults = config.recipe_summary(config.edgeprune_recipe(cfg, 0))
    for r in rows:
        if r["method"] in ("TT-MPD", "ratio+stored", "TT-MPD+stream_bn"):
            assert r["train_scope"] == defaults["train_scope"], r
        if r["method"] in ("ratio+continuous", "ttmpd+mir", "ttmpd+stored_paper"):
            assert r["train_scope"] == "all" and r["precision"] == "fp32" and r["steps_done"] == cfg.steps, r
    assert res["ttmpd_finetune"]["train_scope"] == defaults["train_scope"]
    assert {r["corruption"] for r in rows} == {"gaussian_noise", "mixed", "clean"}
    assert all(r["latency_saving"] is not None for r in rows)
    assert all(abs(r["pf_s"] - r["prune_s"] - r["finetune_s"]) < 1e-9 for r in rows)
    assert all(0 <= r["accuracy"] <= 100 for r in rows)
    for r in rows:  # EATA's selection per row: entropy-filtered, then redundant, then used
        if r["method"].endswith("+eata"):
            e = r["eata_selection"]
            assert e["used"] + e["redundant"] == e["reliable"] <= e["images"] == cfg.eval_images and e["d_margin"] > 0
    for u in res["units_done"]:  # the order every step ran in, per unit
        assert u["order"]["scoring"] and all(f"k={k}" in u["order"] for k in cfg.ks)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert len(saved["rows"]) == len(rows)
    assert set(saved["provenance"]) >= {"commit", "dirty", "published", "allow_dirty"} and not saved["provenance"]["published"]
    assert saved["recipe_differences"]["train_scope"] == ["all", defaults["train_scope"]]
    assert "channels_last" not in saved["recipe_differences"]  # the same layout for every method
    md = (tmp_path / "results.md").read_text()
    assert "main table" in md and "BatchNorm statistics" in md and "## fmnist_mobilenetv2" in md
    assert "every difference between methods" in md and "EATA's sample selection" in md and "Code: commit" in md
    assert (tmp_path / "accuracy_vs_ls.png").is_file() and (tmp_path / "pf_time.png").is_file()


def _tiny(tmp_path, **kw) -> config.BenchConfig:
    return config.BenchConfig(**{**dict(corruptions=("gaussian_noise",), seeds=1, ks=(1,), ablation_ks=(1,), steps=2,
                                        eval_images=200, finetune_images=128, practise_steps=2, sweep_images=200,
                                        profile_budget_s=1.0, latency_budget_s=0.5, allow_random_weights=True,
                                        severity_override={"gaussian_noise": 3}, out=tmp_path), **kw})


def test_units_keep_the_plan_order_whatever_order_they_finish_in(tmp_path, monkeypatch):
    """Parallel workers finish units in any order; rows and units_done stay in the plan's order."""
    from types import SimpleNamespace

    from benchlib import driver

    setups = {m: SimpleNamespace(streams=[("gaussian_noise", 3), ("clean", 0)], savings={"b": 0.1})
              for m in ("fmnist_resnet", "fmnist_mobilenetv2")}
    cfg = _tiny(tmp_path, seeds=2)
    units = driver.plan_units(cfg, setups)
    plan = [(u.params["seed"], u.params["model"], u.params["corruption"], u.params["row"]) for u in units]
    assert plan == [(0, "fmnist_resnet", "gaussian_noise", 0), (0, "fmnist_mobilenetv2", "gaussian_noise", 0),
                    (0, "fmnist_resnet", "clean", 1), (0, "fmnist_mobilenetv2", "clean", 1),
                    (1, "fmnist_resnet", "gaussian_noise", 2), (1, "fmnist_mobilenetv2", "gaussian_noise", 2),
                    (1, "fmnist_resnet", "clean", 3), (1, "fmnist_mobilenetv2", "clean", 3)]
    streams = [("gaussian_noise", 3), ("glass_blur", 4), ("mixed", 0), ("clean", 0)]
    only = driver.plan_units(dataclasses.replace(cfg, only_streams=("mixed",)),
                             {"fmnist_resnet": SimpleNamespace(streams=streams, savings={})})
    assert [(u.params["seed"], u.params["corruption"], u.params["row"]) for u in only] == [(0, "mixed", 2), (1, "mixed", 6)]
    assert only[0].params["mixed_of"] == [["gaussian_noise", 3], ["glass_blur", 4]]  # still every corruption
    with pytest.raises(UsageError, match="fog"):
        driver.plan_units(dataclasses.replace(cfg, only_streams=("fog",)), setups)
    monkeypatch.setattr(driver, "write_outputs", lambda result, cfg: None)
    result = driver.new_result(cfg, {}, None)
    collect = driver._Collector(result, units, cfg, lambda m: None)
    worker = {"host": "h", "pid": 1, "load_avg_start": [0.5, 0.5, 0.5]}
    for i in reversed(range(len(units))):
        collect(units[i], {"status": "ok", "worker": worker,
                           "result": {"rows": [{"unit": i}], "order": {}, "seconds": 1.0, "latency": {}}})
    assert [r["unit"] for r in result["rows"]] == list(range(len(units)))
    assert [u["corruption"] for u in result["units_done"][:2]] == ["gaussian_noise", "gaussian_noise"]
    assert all(u["worker"] == worker for u in result["units_done"])  # each unit names its worker
    collect(units[0], {"status": "failed", "error": "ValueError: x", "worker": worker})
    assert result["units_failed"][0]["error"] == "ValueError: x"


@pytest.mark.slow  # two tiny benchmarks (~2 x 60 s here) and a Ray start
def test_ray_engine_gives_the_serial_accuracies(tmp_path):
    pytest.importorskip("ray", reason="Ray is the optional edgeprune[fleet] extra")
    bench = _bench()
    runs = {}
    for engine in ("local", "ray"):
        out = tmp_path / engine
        if engine == "ray":  # the same measured latency profile (the plans depend on it) and severities
            shutil.copytree(tmp_path / "local", out, ignore=shutil.ignore_patterns("results.*", "*.png"))
        cfg = _tiny(out, models=("fmnist_resnet",), mixed=False, engine=engine, workers=2)
        runs[engine] = bench.run_benchmark(cfg, log=lambda m: None)
    key = lambda r: (r["corruption"], r["method"], r["criterion"], r["finetune"], r["k"])  # noqa: E731
    local, ray_ = ({key(r): r for r in runs[e]["rows"]} for e in ("local", "ray"))
    assert local.keys() == ray_.keys() and len(local) > 20
    for k in local:
        assert local[k]["accuracy"] == ray_[k]["accuracy"] and local[k]["removed"] == ray_[k]["removed"], k
    pids = {u["worker"]["pid"] for u in runs["ray"]["units_done"]}
    assert len(runs["ray"]["units_done"]) == 2 and all(u["worker"]["device"] for u in runs["ray"]["units_done"])
    assert {u["worker"]["pid"] for u in runs["local"]["units_done"]} != pids  # the Ray units ran in Ray workers


def test_parse_quick():
    bench = _bench()
    cfg, mode = bench.parse_args(["--quick", "--seeds", "2"])
    assert mode == "run" and cfg.quick and cfg.seeds == 2 and len(cfg.corruptions) == 1 and cfg.steps < 500
    assert cfg.engine == "local" and bench.parse_args(["--engine", "ray", "--workers", "2"])[0].workers == 2
    assert not provenance.is_published(cfg.out) and not cfg.allow_dirty
    cfg, mode = bench.parse_args(["--allow-dirty", "--ks", "3", "--render-only"])
    assert mode == "render" and cfg.allow_dirty and cfg.ks == (3,) and provenance.is_published(cfg.out)


def test_render_from_rows(tmp_path):
    """Tables, goals and plots are generated from result rows alone (fast: no model runs)."""
    cfg = config.BenchConfig(corruptions=("gaussian_noise",), seeds=2, ks=(3,), ablation_ks=(3,), out=tmp_path)
    rows = []
    for seed in range(2):
        for corr in ("gaussian_noise", "clean"):
            for meth, k, acc, ls, pf in (("source", 0, 50, 0, 0), ("source+stream_bn", 0, 85, 0, 1),
                                         ("source+tent", 0, 84, -100, 0), ("TT-MPD", 3, 80, 25, 2),
                                         ("ratio+continuous", 3, 80, 25, 5), ("practise+continuous", 3, 80, 25, 90),
                                         ("train-time PF", 3, 70, 25, 2), ("TT-MPD+stream_bn", 3, 86, 25, 3),
                                         ("TT-MPD+source_bn", 3, 79, 25, 2)):
                rows.append({"model": "fmnist_resnet", "method": meth, "criterion": "", "finetune": "", "k": k, "corruption": corr,
                             "severity": 3, "seed": seed, "accuracy": acc + seed, "latency_saving": ls,
                             "prune_s": 0.0, "finetune_s": pf, "pf_s": pf, "inference_s": 1.0, "removed": []})
    result = {"config": {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(cfg).items()},
              "rows": rows, "severity": {}, "units_done": [], "units_skipped": []}
    write_outputs(result, cfg)
    assert list(result["summary"]) == ["fmnist_resnet"]
    g = result["summary"]["fmnist_resnet"]
    assert g["vs_ratio"]["met"] and g["vs_practise"]["met"] and g["shift"]["met"]
    assert g["vs_ratio"]["pf_ratio_per_seed"] == {0: pytest.approx(0.4), 1: pytest.approx(0.4)}  # TT-MPD 2 s / ratio 5 s
    assert g["bn"]["beats_source"] and g["bn"]["within_2_of_source_bn"] and g["bn"]["beats_tent"] and g["bn"]["clean_ok"]
    # auto (TT-MPD, 80.5) is 5.5 points below stream statistics (86.5) on both streams: missed, per stream
    auto = g["auto_stats"]
    assert not auto["met"] and set(auto["streams"]) == {"gaussian_noise", "clean"}
    assert auto["streams"]["clean"]["diff"] == pytest.approx(-6.0)
    md = (tmp_path / "results.md").read_text()
    assert "| TT-MPD | 3 | 80.5 ± 0.7 |" in md and "## fmnist_resnet" in md
    assert "per seed 0.40x (seed 0), 0.40x (seed 1)" in md
    assert (tmp_path / "accuracy_vs_ls.png").is_file()


def test_mixed_stream_interleaves_clean_and_each_corruption():
    import numpy as np

    from benchlib.streams import MIXED, chosen_streams, mixed_stream

    images = np.random.default_rng(0).integers(0, 256, size=(300, 32, 32, 3), dtype=np.uint8)
    out, conditions = mixed_stream(images, [("gaussian_noise", 3), ("contrast", 4)], seed=1)
    assert out.shape == images.shape and set(conditions) == {"clean", "gaussian_noise", "contrast"}
    clean = np.array([c == "clean" for c in conditions])
    assert np.array_equal(out[clean], images[clean]) and not np.array_equal(out[~clean], images[~clean])
    again, same = mixed_stream(images, [("gaussian_noise", 3), ("contrast", 4)], seed=1)
    assert same == conditions and np.array_equal(again, out)  # seeded: every method sees the same stream
    cfg = config.BenchConfig(corruptions=("gaussian_noise", "glass_blur"), severity_override={"gaussian_noise": 2})
    sweep = {"corruptions": {"gaussian_noise": {"chosen": 4}, "glass_blur": {"chosen": None}}}
    assert chosen_streams(sweep, cfg) == ([("gaussian_noise", 2), (MIXED, 0), ("clean", 0)], ["glass_blur"])
    cfg = dataclasses.replace(cfg, mixed=False)
    assert chosen_streams(sweep, cfg)[0] == [("gaussian_noise", 2), ("clean", 0)]


# ------------------------------------------------------------------ balanced order
def test_every_method_runs_at_every_position_equally_often():
    jobs = [j.method for j in jobs_for(clean=False, ablation=True)]
    n = len(jobs)
    assert n == 14
    counts = order.position_counts(jobs, 2 * n)
    assert all(c == [2] * n for c in counts.values())  # 2n rows: each method twice in each position
    rows = [order.balanced_order(jobs, r) for r in range(2 * n)]
    assert all(sorted(r) == sorted(jobs) for r in rows)
    after = sum(r.index("ratio+continuous") > r.index("TT-MPD") for r in rows)
    assert after == n  # ratio + KD runs after TT-MPD in exactly half of the rows
    for r in range(0, 2 * n, 2):  # any pair of rows: every method's mean position is the middle
        pair = rows[r : r + 2]
        assert all(pair[0].index(m) + pair[1].index(m) == n - 1 for m in jobs)


# ------------------------------------------------------------------ provenance
def _git(repo, *args):
    import subprocess

    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True,
                   env={"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
                        "GIT_COMMITTER_EMAIL": "t@t", "PATH": "/usr/bin:/bin"})


def test_git_state_sees_uncommitted_code_but_not_its_own_outputs(tmp_path):
    repo = tmp_path / "repo"
    out = repo / "docs" / "benchmarks"
    out.mkdir(parents=True)
    (repo / "code.py").write_text("x = 1\n")
    (out / "results.json").write_text("{}")
    _git(repo, "init", "-q")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-qm", "c")
    state = provenance.git_state(out, root=repo)
    assert len(state["commit"]) == 40 and state["dirty"] is False
    (out / "results.json").write_text('{"rows": []}')  # rewritten by the harness itself: still clean
    (out / "results.md").write_text("new")
    assert provenance.git_state(out, root=repo)["dirty"] is False
    (repo / "code.py").write_text("x = 2\n")
    (out / "severity_fmnist_resnet.json").write_text("{}")  # an input of the run, not an output
    state = provenance.git_state(out, root=repo)
    assert state["dirty"] is True and set(state["dirty_paths"]) == {"code.py", "docs/benchmarks/severity_fmnist_resnet.json"}
    assert provenance.git_state(out, root=tmp_path / "nowhere") == {"commit": None, "dirty": None, "dirty_paths": []}


def test_publishing_from_a_dirty_tree_is_refused_unless_allowed(tmp_path, monkeypatch, capsys):
    dirty = {"commit": "a" * 40, "dirty": True, "dirty_paths": ["edgeprune/distill.py"]}
    published = config.BenchConfig(out=config.PUBLISHED)
    with pytest.raises(UsageError, match="uncommitted changes: edgeprune/distill.py"):
        provenance.check_publishable(published, dirty)
    with pytest.raises(UsageError, match="no git revision"):
        provenance.check_publishable(published, {"commit": None, "dirty": None, "dirty_paths": []})
    allowed = provenance.check_publishable(dataclasses.replace(published, allow_dirty=True), dirty)
    assert allowed["dirty"] and allowed["allow_dirty"] and allowed["published"]
    elsewhere = provenance.check_publishable(config.BenchConfig(out=tmp_path), dirty)
    assert elsewhere["dirty"] and not elsewhere["published"]
    # the command line: one message, exit 2, nothing written
    bench = _bench()
    from benchlib import driver

    monkeypatch.setattr(driver, "git_state", lambda out: dirty)
    monkeypatch.setattr(driver, "load_inputs", lambda: pytest.fail("the benchmark started"))
    before = {p: p.stat().st_mtime_ns for p in config.PUBLISHED.iterdir()}
    assert bench.main([]) == 2
    assert "refusing to publish" in capsys.readouterr().err
    assert {p: p.stat().st_mtime_ns for p in config.PUBLISHED.iterdir()} == before


def test_default_corruptions_have_a_severity_for_every_model():
    """A default corruption without a 30-80% severity would silently drop out of a model's tables."""
    for model in config.MODELS:
        sweep = json.loads((config.PUBLISHED / f"severity_{model}.json").read_text())
        assert all(sweep["corruptions"][c]["chosen"] for c in config.DEFAULT_CORRUPTIONS), model


def test_recipe_teacher_follows_teacher_stats():
    """edgeprune's rows score and distil with the BatchNorm statistics its recipe asks for."""
    from types import SimpleNamespace

    from benchlib.methods import recipe_teacher

    source, stream = object(), object()
    assert recipe_teacher(source, (stream, 1.5), None, None, SimpleNamespace(teacher_stats="source"), 8) == (source, 0.0, "source")
    assert recipe_teacher(source, (stream, 1.5), None, None, SimpleNamespace(teacher_stats="stream"), 8) == (stream, 1.5, "stream")
    assert recipe_teacher(source, None, None, None, SimpleNamespace(), 8)[2] == "source"  # a recipe without the field


def test_baselines_get_the_papers_recipe():
    """The baselines' recipe is method.md's whatever DistillConfig's defaults become (adapt's fast path
    must not leak into them); edgeprune's rows get adapt's recipe."""
    paper = config.recipe_summary(config.paper_recipe(config.BenchConfig(), 0))
    expected = {"train_scope": "all", "precision": "fp32", "early_stop": False, "micro_batch": None,
                "student_bn": "train", "teacher_stats": "source", "keep_best": False, "local_steps": 0}
    assert {k: paper[k] for k in expected if k in paper} == {k: v for k, v in expected.items() if k in paper}, \
        "paper_recipe must be method.md's recipe (DistillConfig.paper() where it exists)"
    mine = config.recipe_summary(config.edgeprune_recipe(config.BenchConfig(), 0))
    from edgeprune.pipeline.options import adapt_recipe

    adapt = config.recipe_summary(adapt_recipe())
    assert {k: v for k, v in mine.items() if k not in ("steps", "micro_batch")} == \
        {k: v for k, v in adapt.items() if k not in ("steps", "micro_batch")}


def test_time_ratios_compare_methods_of_one_unit_only():
    """A unit on a slow (loaded) worker must not weigh more: per-unit ratios, geometric mean."""
    from benchlib.summary import unit_ratio

    rows = [{"model": "m", "seed": s, "corruption": "gaussian_noise", "k": 3, "method": meth, "pf_s": pf}
            for s, meth, pf in ((0, "TT-MPD", 10.0), (0, "ratio+continuous", 20.0),  # a loaded worker
                                (1, "TT-MPD", 1.0), (1, "ratio+continuous", 4.0), (2, "TT-MPD", 3.0))]  # seed 2: no pair
    assert unit_ratio(rows, "TT-MPD", "ratio+continuous") == pytest.approx((0.5 * 0.25) ** 0.5)
    assert unit_ratio(rows, "TT-MPD", "practise+continuous") is None


# ------------------------------------------------------------------ --resume
def _fake_run(monkeypatch, tmp_path, state: dict, run_first: int | None):
    """run_benchmark with git, setup, units and outputs faked (no model runs): runs at most
    ``run_first`` units, as a run stopped by its time budget does; returns the list of units that ran."""
    from types import SimpleNamespace

    from benchlib import driver

    streams = [("gaussian_noise", 3), ("clean", 0)]
    monkeypatch.setattr(driver, "git_state", lambda out: state)
    monkeypatch.setattr(driver, "load_inputs", lambda: {"test_nhwc": None, "test_y": None})
    monkeypatch.setattr(driver, "setup_model", lambda m, *a: SimpleNamespace(streams=streams, savings={"b": 0.1}))
    monkeypatch.setattr(driver, "write_outputs",
                        lambda result, cfg: (cfg.out / "results.json").write_text(json.dumps(result, default=str)))
    ran = []

    def run_units(units, target, engine, on_done, should_start, **kw):
        for unit in units[:run_first]:
            p = unit.params
            ran.append((p["model"], p["seed"], p["corruption"]))
            row = {"model": p["model"], "seed": p["seed"], "corruption": p["corruption"], "method": "TT-MPD"}
            on_done(unit, {"status": "ok", "worker": {"host": "h", "pid": 1, "load_avg_start": [0.1] * 3},
                           "result": {"rows": [row], "order": {}, "seconds": 2.0, "latency": {}}})
        return units[run_first:] if run_first is not None else []

    import edgeprune.fleet.engine as engine

    monkeypatch.setattr(engine, "run_units", run_units)
    return ran


def test_resume_runs_only_the_units_a_stopped_run_left(tmp_path, monkeypatch):
    from benchlib import driver

    clean = {"commit": "c" * 40, "dirty": False, "dirty_paths": []}
    cfg = _tiny(tmp_path, seeds=2)
    ran = _fake_run(monkeypatch, tmp_path, clean, run_first=3)
    first = driver.run_benchmark(cfg, log=lambda m: None)
    assert len(first["units_done"]) == 3 and len(first["units_skipped"]) == 5
    ran = _fake_run(monkeypatch, tmp_path, clean, run_first=None)
    again = driver.run_benchmark(dataclasses.replace(cfg, resume=True, time_budget_s=99.0), log=lambda m: None)
    assert ran == [(u["model"], u["seed"], u["corruption"]) for u in first["units_skipped"]]  # only those
    plan = [(u["model"], u["seed"], u["corruption"]) for u in again["units_done"]]
    assert len(plan) == 8 and plan[:3] == [(u["model"], u["seed"], u["corruption"]) for u in first["units_done"]]
    assert [(r["model"], r["seed"], r["corruption"]) for r in again["rows"]] == plan  # the plan's order
    assert not again["units_skipped"] and again["started"] == first["started"]
    assert [s["units_done_before"] for s in again["sittings"]] == [0, 3]
    assert again["elapsed_s"] >= first["elapsed_s"]


def test_resume_refuses_other_code_or_settings(tmp_path, monkeypatch):
    from benchlib import driver

    clean = {"commit": "c" * 40, "dirty": False, "dirty_paths": []}
    cfg = _tiny(tmp_path)
    with pytest.raises(UsageError, match="no run to carry on"):
        driver.run_benchmark(dataclasses.replace(cfg, resume=True), log=lambda m: None)
    _fake_run(monkeypatch, tmp_path, clean, run_first=1)
    driver.run_benchmark(cfg, log=lambda m: None)
    with pytest.raises(UsageError, match="steps 2 -> 3"):
        driver.run_benchmark(dataclasses.replace(cfg, resume=True, steps=3), log=lambda m: None)
    _fake_run(monkeypatch, tmp_path, {**clean, "commit": "d" * 40}, run_first=1)
    with pytest.raises(UsageError, match="check that commit out"):
        driver.run_benchmark(dataclasses.replace(cfg, resume=True), log=lambda m: None)
    _fake_run(monkeypatch, tmp_path, {**clean, "dirty": True}, run_first=1)
    with pytest.raises(UsageError, match="committed, clean tree"):
        driver.run_benchmark(dataclasses.replace(cfg, resume=True), log=lambda m: None)
