"""Benchmark harness: the paper's tables (method.md) on real Fashion-MNIST-C streams, every baseline
side by side in ONE process, plus the "beyond the paper" BatchNorm-statistics experiment (issue 7).

    python tools/bench.py [--quick] [--seeds N] [--corruptions C ...] [--models M ...] [--out DIR]
                          [--steps S] [--eval-images N] [--ks 1 3 5] [--time-budget SECONDS] [--allow-dirty]
                          [--engine local|ray] [--address ADDR] [--workers N] [--resume]

Models: fmnist_resnet and fmnist_mobilenetv2 (tools/train_source.py). Seeds are the outer loop,
models inside, so a run cut by ``--time-budget`` keeps every model.

Fine-tuning: the baselines (continuous KD, MiR, Entropy KD) use the paper's recipe (every stage
trained from the pixels, fp32, the full step schedule); TT-MPD and every stored-label row run as
``edgeprune adapt`` runs them (suffix scope over cached prefix activations, precision choice, early
stop, micro-batches). ``ttmpd+stored_paper`` (fine-tuning ablation) is stored labels with the
paper's recipe, to separate what the labels and what the fast path contribute. Every method gets
the same step budget, batch, lr and memory layout; results.md lists every remaining difference.

Per (model, seed, corruption) "unit": the Fashion-MNIST test split (10k) corrupted at the severity
picked by a generated sweep (the source keeps 30-80% of its clean accuracy), a seeded split
(64 prune images, 1000 fine-tune images with the prune images included, evaluation on a fixed
subset of the rest), block scores computed ONCE per criterion (they do not depend on k), then
per k the plans, fine-tuning, evaluation, and TTA; the latency saving of every removed-block set
is measured with ONNX Runtime (1 thread, interleaved medians, cached per set). Methods run in a
balanced order (rotations and reversals across units, recorded per unit) so slow drift of this
shared machine favours none. Everything runs with ``torch.set_num_threads(1)``: on this shared
2-core machine one thread is the fastest and least noisy setting.

Units run on ``edgeprune.fleet.engine`` (the mechanism ``edgeprune sweep`` uses): ``--engine local``
(default) one after another in this process, ``--engine ray`` as Ray tasks of 1 CPU each on a local
Ray with ``--workers`` CPUs (or a cluster at ``--address``); the same seeds give the same rows.
Each unit records its worker (host, device fingerprint, load average): timings are compared only
between methods of one unit.

Writes ``results.json`` (rewritten after every unit, so a partial run still yields tables; it
records the git commit and whether the tree had uncommitted changes), ``results.md`` (generated
tables) and PNG plots into ``--out``. Results are published only from a committed tree: writing
into docs/benchmarks from a tree with uncommitted changes is refused unless ``--allow-dirty``.
``--resume`` carries on a stopped run in the same ``--out`` (same commit and settings; its finished
units are kept). The code lives in tools/benchlib/.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

TOOLS = Path(__file__).resolve().parent
if str(TOOLS) not in sys.path:  # benchlib sits beside this script
    sys.path.insert(0, str(TOOLS))

from edgeprune.errors import EdgepruneError, UsageError  # noqa: E402
from edgeprune.research.corruptions import CORRUPTIONS  # noqa: E402

from benchlib.config import MODELS, ROOT, BenchConfig  # noqa: E402
from benchlib.driver import run_benchmark  # noqa: E402
from benchlib.outputs import write_outputs  # noqa: E402

QUICK = dict(corruptions=("gaussian_noise",), seeds=1, steps=20, eval_images=1000, practise_steps=20, quick=True, mixed=False,
             out=ROOT / "out" / "bench_quick", latency_budget_s=3.0)


def parse_args(argv=None) -> tuple[BenchConfig, str]:
    """(config, mode): mode is "run", "render" (from --out/results.json) or "sweep"."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="one corruption, one seed, 20 steps, 1000 eval images, "
                                                         "written to out/bench_quick")
    ap.add_argument("--seeds", type=int, default=None)
    ap.add_argument("--corruptions", nargs="+", default=None, choices=list(CORRUPTIONS))
    ap.add_argument("--models", nargs="+", default=None, choices=list(MODELS))
    ap.add_argument("--out", type=Path, default=None, help="default docs/benchmarks (published: a committed tree only)")
    ap.add_argument("--steps", type=int, default=None, help="distillation steps (paper: 500)")
    ap.add_argument("--eval-images", type=int, default=None)
    ap.add_argument("--ks", type=int, nargs="+", default=None)
    ap.add_argument("--ablation-ks", type=int, nargs="+", default=None)
    ap.add_argument("--practise-steps", type=int, default=None)
    ap.add_argument("--no-mixed", action="store_true", help="without the mixed stream (each image clean or one of "
                                                            "the corruptions, interleaved)")
    ap.add_argument("--only-streams", nargs="+", default=None, metavar="STREAM",
                    help="run only these streams' units (a corruption, mixed or clean), e.g. to re-check one "
                         "stream at a new commit; the mixed stream still interleaves every --corruptions")
    ap.add_argument("--render-only", action="store_true", help="re-render results.md and plots from --out/results.json")
    ap.add_argument("--sweep-only", action="store_true", help="only the severity sweep (all 15 corruptions)")
    ap.add_argument("--time-budget", type=float, default=None, help="seconds; no new unit starts after it")
    ap.add_argument("--resume", action="store_true",
                    help="carry on the stopped run in --out: its finished units are kept, the others run (the same "
                         "commit, clean tree, and the same settings but --time-budget/--engine/--workers/--address)")
    ap.add_argument("--allow-dirty", action="store_true",
                    help="publish from a tree with uncommitted changes (recorded in results.json and results.md)")
    ap.add_argument("--engine", choices=("local", "ray"), default="local",
                    help="local: units one after another here; ray: each unit a Ray task (pip install 'edgeprune[fleet]')")
    ap.add_argument("--address", default=None, help="Ray cluster address [default: a local Ray started for the run]")
    ap.add_argument("--workers", type=int, default=None, help="CPUs of the local Ray [default: all this process may use]")
    a = ap.parse_args(argv)
    cfg = dataclasses.replace(BenchConfig(), **QUICK) if a.quick else BenchConfig()
    given = {"engine": a.engine, "ray_address": a.address, "workers": a.workers,
             "seeds": a.seeds, "steps": a.steps, "eval_images": a.eval_images, "practise_steps": a.practise_steps,
             "time_budget_s": a.time_budget, "out": a.out, "resume": a.resume or None}
    lists = {"corruptions": a.corruptions, "models": a.models, "ks": a.ks, "ablation_ks": a.ablation_ks,
             "only_streams": a.only_streams}
    if a.no_mixed:
        cfg = dataclasses.replace(cfg, mixed=False)
    cfg = dataclasses.replace(cfg, allow_dirty=a.allow_dirty, **{k: v for k, v in given.items() if v is not None},
                              **{k: tuple(v) for k, v in lists.items() if v})
    return cfg, ("render" if a.render_only else "sweep" if a.sweep_only else "run")


def sweep_only(cfg: BenchConfig) -> None:
    import torch

    from edgeprune.models.zoo import load_model
    from edgeprune.research.fashion_mnist import load_fashion_mnist, to_rgb32

    from benchlib.streams import load_or_sweep

    torch.set_num_threads(1)
    test_x, test_y = load_fashion_mnist("test")
    for model_name in cfg.models:
        model, entry, _ = load_model(model_name)
        t = time.perf_counter()
        table = load_or_sweep(model_name, model, entry, cfg, to_rgb32(test_x), test_y, CORRUPTIONS)
        print(json.dumps({c: v["chosen"] for c, v in table["corruptions"].items()}), f"{time.perf_counter() - t:.0f}s")


def main(argv=None) -> int:
    cfg, mode = parse_args(argv)
    try:
        if mode == "render":
            path = Path(cfg.out) / "results.json"
            if not path.is_file():
                raise UsageError(f"--render-only needs {path}: run the benchmark into --out first")
            result = json.loads(path.read_text())
            write_outputs(result, cfg)
        elif mode == "sweep":
            sweep_only(cfg)
            return 0
        else:
            command = "python tools/bench.py " + " ".join(sys.argv[1:] if argv is None else argv)
            result = run_benchmark(cfg, log=lambda m: print(m, flush=True), command=command.strip())
    except EdgepruneError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    print(json.dumps(result["summary"], indent=1, default=float))
    for failed in result.get("units_failed", []):
        print(f"unit {failed['model']} {failed['corruption']} seed {failed['seed']} failed: {failed['error']}", file=sys.stderr)
    return 1 if result.get("units_failed") else 0


if __name__ == "__main__":
    sys.exit(main())
