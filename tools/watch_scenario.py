"""The field-loop scenario: ``edgeprune watch --once`` cycles on a stream of real labelled images.

    python tools/watch_scenario.py [--workdir DIR] [--out DIR] [--chunk 300] [--chunks-per-phase 2]
                                   [--conditions clean,gaussian_noise,contrast,clean] [--severity 3]
                                   [--steps 150] [--blocks 3 2] [--eval-images 1000] [--allow-dirty]

Fashion-MNIST test images (edgeprune.research.fashion_mnist) are split into a stream pool and a
disjoint labelled evaluation pool. The stream goes through the conditions in order (ImageNet-C
corruptions from edgeprune.research.corruptions at --severity; "clean" = none), each phase fed
into the watched folder as --chunks-per-phase chunks of --chunk PNG files (written to a hidden
name, then renamed: complete files). After each chunk one ``edgeprune watch --once --json`` runs
as its own process (the CLI as a cron job would run it). Recorded per cycle: the decision and its
drift evidence, the gate, wall time; and the accuracy on the current condition's evaluation
images of the source model, of the version deployed before the cycle and of the one after.

Goals checked (issue 14): re-adaptation exactly at the phase starts (the first cycle adapts from
nothing; no adaptation on an unchanged stream), each promoted model more accurate on the new
condition than the one it replaces, no promoted model less accurate than the source model on
the current condition; time per cycle. The whole stream runs once per ``--blocks`` value (3 is
adapt's default; fewer removed blocks keep more accuracy), each with a fresh deploy folder. Writes watch.json and watch.md into --out (default
docs/benchmarks: a committed tree only, unless --allow-dirty, which the results then say).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

TOOLS = Path(__file__).resolve().parent
ROOT = TOOLS.parent
if str(TOOLS) not in sys.path:  # benchlib sits beside this script
    sys.path.insert(0, str(TOOLS))

from benchlib.provenance import git_state

from edgeprune.formatting import percent
from edgeprune.errors import UsageError
from edgeprune.models.surgery import load_manifest
from edgeprune.models.zoo import RANDOM, load_model
from edgeprune.pipeline.fidelity import logits
from edgeprune.research.corruptions import corrupt
from edgeprune.research.fashion_mnist import load_fashion_mnist, to_rgb32
from edgeprune.research.source_models import pretrained_path

MODEL = "fmnist_resnet"
OWN = ("watch.json", "watch.md")


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", type=Path, default=ROOT / "out" / "watch_scenario")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks")
    ap.add_argument("--chunk", type=int, default=300)
    ap.add_argument("--chunks-per-phase", type=int, default=2)
    ap.add_argument("--conditions", default="clean,gaussian_noise,contrast,clean")
    ap.add_argument("--severity", type=int, default=3)
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--blocks", type=int, nargs="+", default=[3, 2])
    ap.add_argument("--eval-images", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--allow-dirty", action="store_true")
    return ap.parse_args(argv)


def condition(images: np.ndarray, name: str, severity: int, seed: int) -> np.ndarray:
    return images if name == "clean" else corrupt(images, name, severity, seed=seed)


def to_nchw(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x)).permute(0, 3, 1, 2).contiguous()


def accuracy(model, entry, pixels: torch.Tensor, labels: torch.Tensor) -> float:
    return float((logits(model, entry, pixels, 250).argmax(1) == labels).float().mean())


def feed(folder: Path, chunk: np.ndarray, tag: str) -> None:
    """Write a chunk as PNG files: each to a hidden name first, then renamed (a complete file)."""
    folder.mkdir(parents=True, exist_ok=True)
    for i, img in enumerate(chunk):
        tmp, final = folder / f".{tag}_{i:04d}.png", folder / f"{tag}_{i:04d}.png"
        Image.fromarray(img).save(tmp)
        os.replace(tmp, final)


def make_profile(path: Path) -> Path:
    from edgeprune.latency.measurement import run_profile
    from edgeprune.latency.profiles import save_profile

    if not path.exists():
        save_profile(run_profile(MODEL, backend="onnxruntime", resolution=32, weights=RANDOM, budget_s=20, threads=1), path)
    return path


def run_cycle(args, k: int, stream: Path, deploy: Path, profile: Path) -> tuple[list[dict], float]:
    cmd = [sys.executable, "-m", "edgeprune.cli", "watch", "-i", str(stream), "-d", str(deploy), "-m", MODEL,
           "--weights", str(pretrained_path(MODEL)), "--profile", str(profile), "-k", str(k),
           "--steps", str(args.steps), "--settle", "0", "--once", "--json"]
    t = time.perf_counter()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}  # one thread: steady on a shared CPU
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env, check=False)
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        raise SystemExit(f"watch failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")], wall


def main(argv=None) -> None:
    args = parse_args(argv)
    state = git_state(args.out, ROOT)
    state["dirty_paths"] = [p for p in state["dirty_paths"] if Path(p).name not in OWN]
    state["dirty"] = bool(state["dirty_paths"]) if state["dirty"] is not None else None
    if state["dirty"] is not False and not args.allow_dirty and args.out.resolve() == (ROOT / "docs" / "benchmarks").resolve():
        raise UsageError("refusing to publish from a tree with uncommitted changes; commit first, or --allow-dirty")
    if not pretrained_path(MODEL).exists():
        raise UsageError(f"no trained {MODEL} at {pretrained_path(MODEL)}", f"python tools/train_source.py --model {MODEL}")
    torch.set_num_threads(1)
    source, entry, _ = load_model(MODEL, pretrained_path(MODEL))
    conditions = args.conditions.split(",")
    images, labels = load_fashion_mnist("test")
    order = np.random.default_rng(args.seed).permutation(len(labels))
    per_phase = args.chunk * args.chunks_per_phase
    stream_idx, eval_idx = order[: per_phase * len(conditions)], order[-args.eval_images:]
    rgb = to_rgb32(images)
    eval_y = torch.from_numpy(labels[eval_idx])
    evals = {c: to_nchw(condition(rgb[eval_idx], c, args.severity, seed=1000)) for c in set(conditions)}
    shutil.rmtree(args.workdir, ignore_errors=True)
    profile = make_profile(args.workdir.parent / f"watch_scenario_profile_{MODEL}.json")
    phases = [condition(rgb[stream_idx[p * per_phase:(p + 1) * per_phase]], c, args.severity, seed=p) for p, c in enumerate(conditions)]
    runs, started = {}, time.perf_counter()
    for k in args.blocks:
        cycles = run_stream(args, k, conditions, phases, profile, source, entry, evals, eval_y)
        runs[str(k)] = {"cycles": cycles, "goals": goals(cycles)}
    result = {"command": " ".join(["python", "tools/watch_scenario.py", *(argv if argv is not None else sys.argv[1:])]),
              "git": state, "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
              "environment": {"torch": torch.__version__, "watch_threads": 1, "load_average": os.getloadavg()},
              "runs": runs, "total_s": time.perf_counter() - started}
    write(args.out, result)


def run_stream(args, k, conditions, phases, profile, source, entry, evals, eval_y) -> list[dict]:
    """The whole stream into a fresh folder, one ``watch --once`` per chunk, with -k ``k``."""
    stream, deploy = args.workdir / f"k{k}" / "stream", args.workdir / f"k{k}" / "deploy"
    cycles = []
    for p, cond in enumerate(conditions):
        for c in range(args.chunks_per_phase):
            before = _current(deploy)
            feed(stream / f"p{p}_{cond}", phases[p][c * args.chunk:(c + 1) * args.chunk], f"c{c}")
            records, wall = run_cycle(args, k, stream, deploy, profile)
            rec = next(r for r in records if r.get("event") == "cycle")
            cycles.append(_row(p, c, cond, rec, wall, before, _current(deploy), source, entry, evals[cond], eval_y, deploy))
            print(json.dumps({"k": k, **{f: cycles[-1][f] for f in ("phase", "chunk", "condition", "action", "wall_s",
                                                                   "acc_source", "acc_before", "acc_after")}}), flush=True)
    return cycles


def _current(deploy: Path) -> int | None:
    try:
        return json.loads((deploy / "current.json").read_text())["version"]
    except (OSError, ValueError, KeyError):
        return None


def _row(p, c, cond, rec, wall, before, after, source, entry, px, y, deploy) -> dict:
    def acc(version):
        return None if version is None else accuracy(load_manifest(deploy / "versions" / str(version) / "model.pt")[0], entry, px, y)

    drift = rec.get("drift") or {}
    gate = rec.get("gate") or {}
    return {"phase": p, "chunk": c, "condition": cond, "action": rec["action"], "reason": rec.get("reason"),
            "version_before": before, "version_after": after, "wall_s": wall, "cycle_s": rec["seconds"].get("total"),
            "adapt_s": rec["seconds"].get("adapt_total"),
            "drift": {k: drift.get(k) for k in ("bn_divergence", "entropy", "entropy_reference", "agreement",
                                                 "agreement_reference", "reasons")} if drift else None,
            "gate": {"passed": gate.get("passed"), "reasons": gate.get("reasons"),
                     "candidate_agreement": (gate.get("candidate") or {}).get("agreement"),
                     "deployed_agreement": (gate.get("deployed") or {}).get("agreement")} if gate else None,
            "acc_source": accuracy(source, entry, px, y), "acc_before": acc(before), "acc_after": acc(after)}


def goals(cycles: list[dict]) -> dict:
    adapted_at = [(r["phase"], r["chunk"]) for r in cycles if r["action"] in ("promoted", "rejected")]
    expected = [(r["phase"], 0) for r in cycles if r["chunk"] == 0]
    promoted = [r for r in cycles if r["action"] == "promoted"]
    better = [r for r in promoted if r["acc_before"] is not None]
    return {
        "adapts_exactly_at_drift_points": {"met": adapted_at == expected, "adapted_at": adapted_at, "expected": expected},
        "promoted_beats_replaced": {"met": all(r["acc_after"] > r["acc_before"] for r in better),
                                    "pairs": [(r["phase"], r["acc_before"], r["acc_after"]) for r in better]},
        "promoted_not_below_source": {"met": all(r["acc_after"] >= r["acc_source"] for r in promoted),
                                      "pairs": [(r["phase"], r["acc_source"], r["acc_after"]) for r in promoted]},
        "time_per_cycle_s": {"max": max(r["wall_s"] for r in cycles), "mean": sum(r["wall_s"] for r in cycles) / len(cycles),
                             "adapting_max": max((r["wall_s"] for r in promoted), default=None)},
    }


def write(out: Path, result: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "watch.json").write_text(json.dumps(result, indent=1) + "\n")
    s, env = result["settings"], result["environment"]
    lines = ["# `edgeprune watch` on a drifting stream (Fashion-MNIST)", "",
             f"Command: `{result['command']}` at commit `{result['git']['commit']}`"
             + (" (uncommitted changes: --allow-dirty)" if result["git"]["dirty"] else "") + ".", "",
             f"Stream: {s['chunk']} images per chunk, {s['chunks_per_phase']} chunks per condition, conditions "
             f"{s['conditions']} (ImageNet-C severity {s['severity']}). After each chunk one `edgeprune watch --once "
             f"--json` process (one thread) with `--steps {s['steps']}` and every other option at its default; the "
             f"whole stream once per `-k` in {s['blocks']}, each into a fresh deploy folder. Accuracy on "
             f"{s['eval_images']} labelled evaluation images of the current condition, never fed to the watcher. "
             f"Wall time per cycle includes the process start; the machine was shared (load average "
             f"{env['load_average'][0]:.1f} at the end, 2 cores). Total {result['total_s'] / 60:.1f} min.", ""]
    for k, run in result["runs"].items():
        lines += [f"## -k {k}", "", "| cycle | condition | decision | BN divergence | version before -> after | source | before "
                  "| after | wall s |", "|---|---|---|---|---|---|---|---|---|"]
        for i, r in enumerate(run["cycles"], 1):
            bn = (r["drift"] or {}).get("bn_divergence")
            lines.append(f"| {i} | {r['condition']} (chunk {r['chunk'] + 1}) | {r['action']} | {'-' if bn is None else f'{bn:.3f}'} | "
                         f"{r['version_before']} -> {r['version_after']} | {percent(r['acc_source'], '-')} | {percent(r['acc_before'], '-')} | "
                         f"{percent(r['acc_after'], '-')} | {r['wall_s']:.1f} |")
        lines += ["", "Goals:", ""]
        for name, v in run["goals"].items():
            shown = json.dumps({key: x for key, x in v.items() if key != "met"})
            lines.append(f"- **{name}**: " + (f"{'met' if v['met'] else 'MISSED'} ({shown})" if "met" in v else shown))
        lines.append("")
    lines += ["Decisions, drift evidence and gate figures per cycle are in watch.json (`runs[k].cycles[]`).", ""]
    (out / "watch.md").write_text("\n".join(lines))


if __name__ == "__main__":
    main()
