"""Distillation loss variants side by side on one pruned model (not a test): feature MSE alone
against MSE + logit KL (distill/logit_term.py), and learning rates.

    python tools/make_photo_stream.py STREAM --n 1300 --mix clean,fog,gaussian_noise --severity 2
    python tools/probe_logit_kd.py STREAM 100 0:1 1:1 1:4 0:1:0.05 [--evals 30,60,100]

Each variant is WEIGHT:TEMPERATURE[:LR[:DECAY_EVERY[:BATCH]]] (DECAY_EVERY: the fraction of the steps
between x0.1). A variant with a smaller BATCH than the default 64 runs 64/BATCH times the steps, as
many per round as the 64-image variants run one, so every variant sees the same number of images by
each round; STEPS, --evals and the printed step number count rounds of 64 images.
Every variant is the real ``distill.Distiller`` at the
adapt recipe (suffix scope, micro-batches of 32, early stop and keep-best on the 64-image
validation slice) with the student BatchNorm mode fixed (--student-bn, default frozen: what
``auto`` chooses on efficientnet_lite0) and teacher statistics source; the same pruned student
(--removed, default adapt's TT-MPD choice on this stream), the same images (adapt's split:
64 prune + 936 fine-tune = the 1000 distilled on, the rest held out, seed 0) and the same batches.
The variants' steps are interleaved one by one in ONE process, so they see the same machine load.
At each --evals step the held-out fidelity keys (pipeline/fidelity.py) are measured on the current
weights (with --train-evals also on the images distilled on, under "distilled_on"); after the last step, on the weights keep-best restores. One thread (--threads).
Appends one JSON line per variant to --results. docs/benchmarks/fidelity.md (section 6) reports it.
"""
import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from edgeprune.data.images import load_images  # noqa: E402
from edgeprune.data.split import split_indices  # noqa: E402
from edgeprune.data.transforms import normalise  # noqa: E402
from edgeprune.distill.config import DistillConfig  # noqa: E402
from edgeprune.distill.distiller import Distiller  # noqa: E402
from edgeprune.distill.hardware import plan_hardware  # noqa: E402
from edgeprune.distill.targets import build_distill_targets, prefix_stop  # noqa: E402
from edgeprune.models.staging import split  # noqa: E402
from edgeprune.models.surgery import remove_blocks  # noqa: E402
from edgeprune.models.zoo import load_model  # noqa: E402
from edgeprune.pipeline.fidelity import fidelity_metrics  # noqa: E402


def held_logits(model, entry, pixels, batch=50):
    model.eval()
    with torch.no_grad():
        return torch.cat([model(normalise(pixels[i : i + batch], entry.mean, entry.std)) for i in range(0, len(pixels), batch)])


def rounded(metrics: dict) -> dict:
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in metrics.items()}


def parse_variant(text: str, base_lr: float) -> dict:
    parts = [float(p) for p in text.split(":")]
    return {"name": text, "logit_weight": parts[0], "logit_temperature": parts[1] if len(parts) > 1 else 1.0,
            "lr": parts[2] if len(parts) > 2 else base_lr,
            "decay_every": parts[3] if len(parts) > 3 else DistillConfig().decay_every,
            "batch": int(parts[4]) if len(parts) > 4 else DistillConfig().batch_size}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("stream")
    ap.add_argument("steps", type=int)
    ap.add_argument("variants", nargs="+")
    ap.add_argument("--model", default="efficientnet_lite0")
    ap.add_argument("--removed", default="blocks.1.1,blocks.2.1,blocks.3.2")
    ap.add_argument("--student-bn", default="frozen")
    ap.add_argument("--lr", type=float, default=DistillConfig().lr)
    ap.add_argument("--evals", default="")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--time-budget", type=float, default=0.0,
                    help="adapt's --time-budget in minutes [default 0: exactly STEPS steps, what a probe compares]")
    ap.add_argument("--train-evals", action="store_true",
                    help="at each --evals step also the fidelity on the images distilled on (over- vs under-fitting)")
    ap.add_argument("--results", default="out/logit_kd.jsonl")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    evals = {int(e) for e in args.evals.split(",") if e} | {args.steps}
    teacher, entry, _ = load_model(args.model)
    teacher.eval()
    imgs = load_images(args.stream, entry.resolution, entry.crop_pct)
    parts = split_indices(len(imgs.pixels), prune=64, finetune=936, seed=0)
    ft, held = list(parts.prune) + list(parts.finetune), list(parts.held_out)
    removed = args.removed.split(",")
    stages = split(teacher, entry.staging)
    targets = build_distill_targets(teacher, entry, imgs.pixels[ft], stages, prefix_stop(stages, removed))
    original = held_logits(teacher, entry, imgs.pixels[held])
    original_ft = held_logits(teacher, entry, imgs.pixels[ft]) if args.train_evals else None
    pruned = remove_blocks(teacher, removed)
    before = rounded(fidelity_metrics(original, held_logits(pruned, entry, imgs.pixels[held])))
    print("pruned, not distilled", before, flush=True)
    hw = plan_hardware("fp32", "cpu", set_threads=False)
    runs = []
    base = DistillConfig()
    for v in (parse_variant(t, args.lr) for t in args.variants):
        if base.batch_size % v["batch"]:
            sys.exit(f"variant {v['name']}: BATCH must divide {base.batch_size}")
        v["per_round"] = base.batch_size // v["batch"]
        v["steps"] = args.steps * v["per_round"]
        cfg = dataclasses.replace(base, steps=v["steps"], batch_size=v["batch"],
                                  micro_batch=min(v["batch"], base.micro_batch), student_bn=args.student_bn, lr=v["lr"],
                                  logit_weight=v["logit_weight"], logit_temperature=v["logit_temperature"],
                                  decay_every=v["decay_every"], time_budget_minutes=args.time_budget)
        d = Distiller(remove_blocks(teacher, removed), entry, imgs.pixels[ft], targets.labels, cfg, prefix=targets.prefix,
                      removed=removed, hardware=dataclasses.replace(hw, notes=[]))
        runs.append((v, d, {"curve": [], "seconds": 0.0}))
    for step in range(1, args.steps + 1):
        for v, d, log in runs:
            own = step * v["per_round"]  # this variant's step count at the end of the round
            for _ in range(v["per_round"]):
                t = time.perf_counter()
                d.step()  # a no-op once the variant has finished, so its time adds nothing
                log["seconds"] += time.perf_counter() - t
            if step in evals and d.result.steps_done == own:
                m = rounded(fidelity_metrics(original, held_logits(d.student, entry, imgs.pixels[held])))
                if original_ft is not None:
                    m["distilled_on"] = rounded(fidelity_metrics(original_ft, held_logits(d.student, entry, imgs.pixels[ft])))
                d._train_mode()
                log["curve"].append([step, round(log["seconds"], 1), m])
                print(v["name"], step, round(log["seconds"], 1), m, flush=True)
    out = Path(args.results)
    out.parent.mkdir(parents=True, exist_ok=True)
    for v, d, log in runs:
        res = d.finish()
        kept = rounded(fidelity_metrics(original, held_logits(d.student, entry, imgs.pixels[held])))
        row = {**v, "model": args.model, "removed": removed, "student_bn": args.student_bn,
               "steps_done": res.steps_done, "step_seconds": round(log["seconds"] / max(res.steps_done, 1), 2),
               "before": before, "curve": log["curve"], "kept": res.kept, "after_keep_best": kept,
               "early_stop": {k: res.early_stop.get(k) for k in ("stopped_at", "reason", "checks", "lr_events")},
               "logit_term": res.logit_term, "notes": res.notes}
        print(json.dumps(row), flush=True)
        with open(out, "a") as fh:
            fh.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
