"""End to end on a small model: profile -> adapt -> artifacts, report, reload, CLI short form."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from edgeprune.errors import EdgepruneError, OutputError, ProfileError, UsageError
from edgeprune.latency.profiles import load_profile
from edgeprune.models import zoo
from edgeprune.models.surgery import load_manifest
from edgeprune.pipeline.adapt import adapt
from edgeprune.pruning.criteria import CRITERIA

RES = 32


def _stream(root, n=48, classes=2, seed=0):
    rng = np.random.default_rng(seed)
    for i in range(n):
        d = root / f"class{i % classes}"
        d.mkdir(parents=True, exist_ok=True)
        base = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
        Image.fromarray(base).resize((40, 40), Image.NEAREST).save(d / f"img{i:03d}.png")
    return root


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from edgeprune.latency.measurement import run_profile
    from edgeprune.latency.profiles import save_profile

    tmp = tmp_path_factory.mktemp("adapt")
    torch.manual_seed(0)
    model, _, _ = zoo.load_model("resnet18", weights="random")
    weights = tmp / "resnet18.pt"
    torch.save(model.state_dict(), weights)
    prof = run_profile("resnet18", backend="torch", resolution=RES, budget_s=3.0)
    prof_path = tmp / "profiles" / "resnet18.json"
    save_profile(prof, prof_path)
    return {"tmp": tmp, "weights": weights, "profile": prof_path, "images": _stream(tmp / "stream")}


def _run(setup, out, **kw):
    args = dict(model="resnet18", weights=setup["weights"], profile=setup["profile"], blocks=2, prune_images=8,
                finetune_images=24, steps=4, batch=8, measure_latency=False)
    args.update(kw)
    return adapt(setup["images"], out, **args)


def test_adapt_writes_all_artifacts_and_reloads(setup):
    out = setup["tmp"] / "out"
    res = _run(setup, out)
    names = sorted(os.listdir(out))
    assert {"model.pt", "model.onnx", "report.json", "report.md"} <= set(names)
    marker = json.loads((out / ".edgeprune-output.json").read_text())  # what --force may replace later
    assert marker["format"] == "edgeprune.output" and sorted(marker["files"]) == [n for n in names if not n.startswith(".")]
    rep = json.loads((out / "report.json").read_text())
    for key in ("model", "criterion", "k", "removed_blocks", "block_scores", "predicted_saving", "measured_saving",
                "fidelity", "timings", "scoring_forward_equivalents", "onnx_parity", "images", "versions", "seed"):
        assert key in rep
    assert rep["k"] == 2 and len(rep["removed_blocks"]) == 2
    assert set(rep["timings"]) >= {"load", "scoring", "pseudo_labels", "finetune", "export", "total"}
    assert rep["images"]["prune"] == 8 and rep["images"]["finetune"] == 24 and rep["images"]["held_out"] == 24
    assert rep["fidelity"]["accuracy_after"] is not None  # class folders give accuracy
    for when in ("before", "after"):  # fidelity on an unlabeled stream (pipeline/fidelity.py)
        assert set(rep["fidelity"][when]) == {"agreement", "top5_overlap", "confident_images", "confident_agreement",
                                              "kl_original_adapted"}
    assert rep["fidelity"]["after"]["agreement"] == rep["fidelity"]["agreement_after"]
    norm, dist = rep["normalisation"], rep["distillation"]
    assert norm["teacher_stats"] == "auto" and norm["auto"]["choice"] in ("source", "blend", "stream")
    assert len(norm["auto"]["candidates"]) == 4 and norm["teacher_stats_used"] == norm["auto"]["choice"]
    assert dist["student_bn"] == "auto" and dist["local"]["enabled"] is False
    # 24 fine-tune images leave no validation slice: auto runs the paper's mode and says why
    assert dist["student_bn_used"] == "train" and "no validation slice" in dist["student_bn_probe"]["reason"]
    assert dist["logit_term"] is None  # the logit term is off by default (docs/benchmarks/fidelity.md section 6)
    assert dist["kept"] == {}  # 24 fine-tune images: too few for a validation slice (test_distill covers keep-best)
    par = rep["onnx_parity"]  # deploy/parity.py's gate, the one `edgeprune export` applies too
    assert par["passed"] and par["top1_agreement"] >= par["min_top1"] == 0.99 and par["failures"] == []
    assert par["inputs"] == "24 held-out images" and par["n"] == 24
    assert rep["tensorrt"]["built"] is False and "edgeprune export" in rep["tensorrt"]["build_on_target"]
    model, data = load_manifest(out / "model.pt")
    assert data["removed_blocks"] == res.removed_blocks
    # same seed, same blocks
    again = _run(setup, setup["tmp"] / "out2")
    assert again.removed_blocks == res.removed_blocks


@pytest.fixture(scope="module")
def small(tmp_path_factory, random_fmnist_resnet):
    """The 32-px Fashion-MNIST ResNet (research/source_models.py, random weights) and its profile:
    small enough that the training criteria (Practise, CURL) score it in seconds."""
    from edgeprune.latency.profiles import save_profile

    tmp = tmp_path_factory.mktemp("small")
    save_profile(random_fmnist_resnet["profile"], tmp / "profile.json")
    return {"weights": random_fmnist_resnet["weights"], "profile": tmp / "profile.json", "images": _stream(tmp / "stream", n=32)}


@pytest.mark.parametrize("criterion", CRITERIA.names())
def test_every_criterion_runs_through_adapt(small, tmp_path, criterion):
    """Each registered criterion end to end: scores, plan, distillation, export and both reports
    (only TT-MPD computes the block noise; the others leave it empty and report.md says n/a)."""
    res = adapt(small["images"], tmp_path / "out", model="fmnist_resnet", weights=small["weights"], profile=small["profile"],
                criterion=criterion, blocks=2, prune_images=8, finetune_images=16, steps=1, batch=8, measure_latency=False)
    rep = json.loads((tmp_path / "out" / "report.json").read_text())
    assert rep["criterion"] == criterion and len(res.removed_blocks) == 2
    assert {s["name"] for s in rep["block_scores"]} >= set(res.removed_blocks)
    assert all((s["noise"] is None) == (criterion != "ttmpd") for s in rep["block_scores"])
    md = (tmp_path / "out" / "report.md").read_text()
    assert f"criterion: `{criterion}`" in md and all(f"| `{b}` |" in md for b in res.removed_blocks)


def test_target_saving_plan_and_refusals(setup):
    from edgeprune.latency.profiles import load_profile, save_profile

    # The plan reads the profile's savings; a 3-second timing on a loaded CPU can measure every
    # block as a slowdown, so this test plans on the same profile with known savings.
    prof = load_profile(setup["profile"])
    for b in prof["blocks"]:
        b["saving"], b["saving_ms"] = 0.05, 0.05 * prof["base"]["median_ms"]
    fixed = setup["tmp"] / "profiles" / "resnet18-fixed-savings.json"
    save_profile(prof, fixed)
    res = _run(setup, setup["tmp"] / "t", blocks=None, target_saving=0.01, profile=fixed)
    assert res.report["plan"]["mode"] == "target_saving" and res.report["predicted_saving"] >= 0.01
    with pytest.raises(OutputError, match="not empty"):
        _run(setup, setup["tmp"] / "t", blocks=None, target_saving=0.01, profile=fixed)
    with pytest.raises(UsageError):
        _run(setup, setup["tmp"] / "u", blocks=99)
    with pytest.raises(UsageError):
        _run(setup, setup["tmp"] / "u", steps=0)
    with pytest.raises(ProfileError):
        _run(setup, setup["tmp"] / "u", model="resnet34")
    assert not (setup["tmp"] / "u").exists()


def test_short_form_uses_this_devices_profile(setup, tmp_path, monkeypatch):
    from edgeprune.latency.profiles import default_profile_path, load_profile, save_profile

    root = tmp_path / "profiles"
    monkeypatch.setenv("EDGEPRUNE_PROFILES", str(root))
    prof = load_profile(setup["profile"])
    save_profile(prof, default_profile_path(prof, root=root))
    res = adapt(setup["images"], tmp_path / "o", weights=setup["weights"], prune_images=8, finetune_images=24, steps=2,
                batch=8, measure_latency=False)
    assert res.report["model"] == "resnet18" and res.report["k"] == 3
    assert res.report["profile"].startswith(str(root))
    choice = res.report["profile_choice"]  # which profile, found how: in report.json
    assert choice["how"] == "registry" and choice["key"].startswith(choice["this_device"][0] + "/resnet18-torch-fp32-b1-r32")
    # two candidates for this device: a clear error listing both
    first = default_profile_path(prof, root=root)
    save_profile(prof, first.with_name("other-" + first.name))
    with pytest.raises(ProfileError, match="several profiles.*other-"):
        adapt(setup["images"], tmp_path / "o2", weights=setup["weights"], steps=2, measure_latency=False)


def test_short_form_never_takes_another_devices_profile(setup, tmp_path, monkeypatch):
    from edgeprune.latency.registry import ProfileRegistry

    root = tmp_path / "profiles"
    monkeypatch.setenv("EDGEPRUNE_PROFILES", str(root))
    prof = load_profile(setup["profile"])
    prof["device"]["cpu"], prof["device_slug"] = "Intel(R) Xeon(R) Platinum 8480+", "cpu-intel-xeon-platinum-8480-2c"
    ProfileRegistry(root).put(prof)
    with pytest.raises(ProfileError, match="no latency profile of resnet18 for this device.*cpu-intel-xeon-platinum-8480-2c"):
        adapt(setup["images"], tmp_path / "o", model="resnet18", weights=setup["weights"], steps=2, measure_latency=False)
    assert not (tmp_path / "o").exists()


def test_measured_saving_uses_the_one_onnx_latency_measurement(setup, monkeypatch):
    import edgeprune.deploy.ort as ort_mod

    real, seen = ort_mod.measure_onnx_latency, []

    def quick(variants, example, **kw):  # the real measurement, shortened for the test
        seen.append(sorted(variants))
        return real(variants, example, **{**kw, "budget_s": 0.5, "warmup_s": 0.1, "min_repeats": 5})

    monkeypatch.setattr(ort_mod, "measure_onnx_latency", quick)
    rep = _run(setup, setup["tmp"] / "lat", measure_latency=True).report
    assert seen == [["adapted", "original"]]
    lat = rep["measured_latency"]
    assert lat["backend"] == "onnxruntime-cpu" and rep["measured_saving"] == pytest.approx(1 - lat["adapted_ms"] / lat["original_ms"])
    assert lat["original"]["p99_ms"] >= lat["original"]["p95_ms"] >= lat["original"]["median_ms"] > 0


def test_options_from_adapt_keywords_and_validation():
    from edgeprune.pipeline.options import DEFAULT_BLOCKS, AdaptOptions, adapt_recipe

    opts = AdaptOptions.from_kwargs("imgs", "out", steps=7, batch=16, lr=0.5, train_head=True, micro_batch=None, seed=3)
    assert (opts.recipe.steps, opts.recipe.batch_size, opts.recipe.lr, opts.recipe.freeze_head) == (7, 16, 0.5, False)
    assert opts.recipe.micro_batch is None and opts.seed == 3 and opts.distill_config().seed == 3
    kd = AdaptOptions.from_kwargs("imgs", logit_weight=0.5, logit_temperature=2.0).recipe
    assert (kd.logit_weight, kd.logit_temperature) == (0.5, 2.0)
    assert AdaptOptions("imgs").recipe == adapt_recipe() and AdaptOptions("imgs").plan_blocks() == DEFAULT_BLOCKS
    assert AdaptOptions("imgs", recipe=adapt_recipe(batch_size=16)).distill_config().micro_batch is None  # 32 >= 16: whole batch
    with pytest.raises(TypeError, match="stepz"):
        AdaptOptions.from_kwargs("imgs", stepz=3)
    for bad, message in [(dict(steps=0), "--steps must be positive"), (dict(blocks=0), "--blocks must be at least 1"),
                         (dict(precision="fp8"), "--precision must be one of"), (dict(criterion="ttmp"), "did you mean"),
                         (dict(teacher_stats="x"), "--teacher-stats"), (dict(micro_batch=-1), "--micro-batch")]:
        with pytest.raises(EdgepruneError) as info:
            AdaptOptions.from_kwargs("imgs", **bad).validate()
        assert message in str(info.value) + " " + str(getattr(info.value, "hint", "")), bad


def test_stages_run_one_by_one(small):
    """The stages a benchmark calls: prepare -> score -> distil, without publishing anything."""
    from edgeprune.pipeline.options import AdaptOptions, adapt_recipe
    from edgeprune.pipeline.prepare import prepare
    from edgeprune.pipeline.stages import distil, score

    opts = AdaptOptions(small["images"], model="fmnist_resnet", weights=small["weights"], profile=small["profile"], blocks=2,
                        prune_images=8, finetune_images=16, recipe=adapt_recipe(steps=2, batch_size=8))
    prep = prepare(opts)
    assert prep.model_name == "fmnist_resnet" and len(prep.split.prune) == 8 and prep.held
    scored = score(prep)
    assert len(scored.plan.removed) == 2 and set(scored.result.scores) == {b.name for b in prep.blocks}
    distilled = distil(prep, scored)
    assert distilled.result.steps_done >= 1 and len(distilled.pred_after) == len(prep.held)
    assert set(prep.clock.timings) == {"load", "scoring", "pseudo_labels", "finetune"}
    again = prepare(opts, images=prep.images)  # an in-memory image set instead of the folder
    assert again.split.prune == prep.split.prune and again.images is prep.images
