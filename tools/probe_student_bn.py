"""Student BatchNorm mode on labelled Fashion-MNIST streams: train, frozen and auto (not a test).

    python tools/probe_student_bn.py fmnist_resnet gaussian_noise:3,clean,elastic_transform:3,mixed train,frozen,auto 60
    python tools/probe_student_bn.py fmnist_resnet gaussian_noise:3,clean auto 60 0:1,1:1   # logit term off / on
    python tools/probe_student_bn.py fmnist_resnet gaussian_noise:3,clean auto 60 --decay-every 0.4,0.7

Writes 2000 Fashion-MNIST test images per stream (seeded) as class folders under OUT (default
out/student_bn), runs `edgeprune adapt` (pipeline.adapt.adapt, k = 3, the benchmark's latency profile
docs/benchmarks/profile_<model>.json, every other option at its default) once per stream and mode,
and appends one JSON line per run to OUT/results.jsonl: accuracy of the original and the adapted
model on the 1000 held-out images, agreement, teacher statistics chosen, and the auto probe's
evidence. The optional fifth argument lists logit terms WEIGHT:TEMPERATURE (distill/logit_term.py;
default: the recipe's), each run with every mode; --decay-every lists learning-rate schedules the same way. "mixed": each image clean or one of gaussian_noise 3 / glass_blur 2 / elastic_transform 3.
docs/benchmarks/fidelity.md (section 4) reports its runs. Needs the trained source models
(tools/train_source.py).
"""
import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from edgeprune.distill.config import DistillConfig  # noqa: E402
from edgeprune.pipeline.adapt import adapt  # noqa: E402
from edgeprune.research.corruptions import corrupt  # noqa: E402
from edgeprune.research.fashion_mnist import load_fashion_mnist, to_rgb32  # noqa: E402

ROOT = Path(os.environ.get("OUT", "out/student_bn"))
BENCH = Path(__file__).resolve().parents[1] / "docs" / "benchmarks"
MIXED = [("gaussian_noise", 3), ("glass_blur", 2), ("elastic_transform", 3)]


def stream(name: str, imgs: np.ndarray, labels: np.ndarray) -> Path:
    d = ROOT / f"stream_{name.replace(':', '')}"
    if d.exists():
        return d
    if name == "clean":
        px = imgs
    elif name == "mixed":
        which = np.random.default_rng(1).integers(len(MIXED) + 1, size=len(imgs))
        px = imgs.copy()
        for i, (c, s) in enumerate(MIXED, 1):
            px[which == i] = corrupt(imgs[which == i], c, s, seed=0)
    else:
        c, s = name.split(":")
        px = corrupt(imgs, c, int(s), seed=0)
    for i, (p, label) in enumerate(zip(px, labels)):
        (d / str(label)).mkdir(parents=True, exist_ok=True)
        Image.fromarray(p).save(d / str(label) / f"{i:05d}.png")
    return d


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("streams", help="comma list: clean, mixed, CORRUPTION:SEVERITY")
    ap.add_argument("modes", help="comma list of --student-bn modes")
    ap.add_argument("steps", type=int, nargs="?", default=60)
    ap.add_argument("terms", nargs="?", default=None, help="comma list of logit terms WEIGHT:TEMPERATURE")
    ap.add_argument("--decay-every", default=None, help="comma list of the recipe's decay_every (default: the recipe's)")
    return ap.parse_args()


def main() -> None:
    torch.set_num_threads(1)
    a = parse_args()
    model, streams, modes, steps = a.model, a.streams.split(","), a.modes.split(","), a.steps
    recipe = DistillConfig()
    terms = [tuple(float(v) for v in t.split(":")) for t in a.terms.split(",")] if a.terms else [
        (recipe.logit_weight, recipe.logit_temperature)]
    decays = [float(v) for v in a.decay_every.split(",")] if a.decay_every else [recipe.decay_every]
    x, y = load_fashion_mnist("test")
    idx = np.random.default_rng(0).choice(len(y), 2000, replace=False)
    imgs, labels = to_rgb32(x[idx]), y[idx]
    for name in streams:
        folder = stream(name, imgs, labels)
        for mode, (weight, temp), decay in [(m, t, d) for m in modes for t in terms for d in decays]:
            t = time.perf_counter()
            out = ROOT / f"out_{model}_{name.replace(':', '')}_{mode}_{steps}_kd{weight:g}t{temp:g}_d{decay:g}"
            rep = adapt(folder, out, model=model, profile=BENCH / f"profile_{model}.json", blocks=3, steps=steps,
                        student_bn=mode, logit_weight=weight, logit_temperature=temp, decay_every=decay, force=True,
                        measure_latency=False, allow_device_mismatch=True).report
            f, d = rep["fidelity"], rep["distillation"]
            row = {"model": model, "stream": name, "student_bn": mode, "steps": steps, "logit_weight": weight,
                   "logit_temperature": temp, "decay_every": decay, "seconds": round(time.perf_counter() - t),
                   "removed": rep["removed_blocks"], "teacher_stats": rep["normalisation"].get("teacher_stats_used"),
                   "accuracy_original": f["accuracy_original"], "accuracy_after": f["accuracy_after"],
                   "agreement_after": f["agreement_after"], "kl_after": f["after"]["kl_original_adapted"],
                   "student_bn_used": d.get("student_bn_used"), "steps_done": d.get("steps_done"),
                   "probe": d.get("student_bn_probe")}
            print(json.dumps(row), flush=True)
            with open(ROOT / "results.jsonl", "a") as fh:
                fh.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
