"""The benchmark harness's core function on a tiny configuration (tools/bench.py)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


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
              "ttmpd+entropy", "TT-MPD+stream_bn", "TT-MPD+stream_bn+student_bn", "train-time PF", "TT-MPD+tent",
              "train-time PF+eata", "ttmpd+stored_paper"):
        assert m in methods, m
    assert {r["model"] for r in rows} == {"fmnist_resnet", "fmnist_mobilenetv2"}
    # TT-MPD is fine-tuned as edgeprune adapt runs it; the baselines with the paper's recipe
    defaults = bench.edgeprune_defaults()
    for r in rows:
        if r["method"] in ("TT-MPD", "ratio+stored", "TT-MPD+stream_bn"):
            assert r["train_scope"] == defaults["train_scope"], r
        if r["method"] in ("ratio+continuous", "ttmpd+mir", "ttmpd+stored_paper"):
            assert r["train_scope"] == "all" and r["precision"] == "fp32" and r["steps_done"] == cfg.steps, r
    assert res["ttmpd_finetune"]["train_scope"] == defaults["train_scope"]
    assert {r["corruption"] for r in rows} == {"gaussian_noise", "clean"}
    assert all(r["latency_saving"] is not None for r in rows)
    assert all(abs(r["pf_s"] - r["prune_s"] - r["finetune_s"]) < 1e-9 for r in rows)
    assert all(0 <= r["accuracy"] <= 100 for r in rows)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert len(saved["rows"]) == len(rows)
    md = (tmp_path / "results.md").read_text()
    assert "main table" in md and "BatchNorm statistics" in md and "## fmnist_mobilenetv2" in md
    assert (tmp_path / "accuracy_vs_ls.png").is_file() and (tmp_path / "pf_time.png").is_file()


def test_parse_quick():
    bench = _bench()
    cfg = bench.parse_args(["--quick", "--seeds", "2"])
    assert cfg.quick and cfg.seeds == 2 and len(cfg.corruptions) == 1 and cfg.steps < 500


def test_render_from_rows(tmp_path):
    """Tables, goals and plots are generated from result rows alone (fast: no model runs)."""
    bench = _bench()
    cfg = bench.BenchConfig(corruptions=("gaussian_noise",), seeds=2, ks=(3,), ablation_ks=(3,), out=tmp_path)
    rows = []
    for seed in range(2):
        for corr in ("gaussian_noise", "clean"):
            for meth, k, acc, ls, pf in (("source", 0, 50, 0, 0), ("source+stream_bn", 0, 85, 0, 1),
                                         ("source+tent", 0, 84, -100, 0), ("TT-MPD", 3, 80, 25, 2),
                                         ("ratio+continuous", 3, 80, 25, 5), ("practise+continuous", 3, 80, 25, 90),
                                         ("train-time PF", 3, 70, 25, 2), ("TT-MPD+stream_bn", 3, 86, 25, 3)):
                rows.append({"model": "fmnist_resnet", "method": meth, "criterion": "", "finetune": "", "k": k, "corruption": corr,
                             "severity": 3, "seed": seed, "accuracy": acc + seed, "latency_saving": ls,
                             "prune_s": 0.0, "finetune_s": pf, "pf_s": pf, "inference_s": 1.0, "removed": []})
    result = {"config": {k: (str(v) if isinstance(v, Path) else v) for k, v in bench.dataclasses.asdict(cfg).items()},
              "rows": rows, "severity": {}, "units_done": [], "units_skipped": []}
    bench.write_outputs(result, cfg)
    assert list(result["summary"]) == ["fmnist_resnet"]
    g = result["summary"]["fmnist_resnet"]
    assert g["vs_ratio"]["met"] and g["vs_practise"]["met"] and g["shift"]["met"]
    assert g["bn"]["beats_source"] and g["bn"]["within_2_of_source_bn"] and g["bn"]["beats_tent"] and g["bn"]["clean_ok"]
    md = (tmp_path / "results.md").read_text()
    assert "| TT-MPD | 3 | 80.5 ± 0.7 |" in md and "## fmnist_resnet" in md
    assert (tmp_path / "accuracy_vs_ls.png").is_file()
