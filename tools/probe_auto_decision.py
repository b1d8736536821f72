"""`--teacher-stats auto`'s decision on the benchmark's own streams, per seed, for several sizes of the
slice the information score is computed on (fidelity.md section 12).

The streams are rebuilt exactly as tools/bench.py builds them (same corruption seeds, same split, the
1000 fine-tune images the decision sees); only the decision runs, no pruning or distillation, so the
whole grid takes minutes. One JSON line per (model, stream, seed, check images):

    PYTHONPATH=$PWD python tools/probe_auto_decision.py OUT.jsonl --streams mixed --checks 64 256 744
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import unit_task  # noqa: E402
from benchlib.config import BenchConfig  # noqa: E402
from benchlib.streams import MIXED, UnitData, mixed_stream, to_nchw  # noqa: E402

from edgeprune.distill import normalisation  # noqa: E402
from edgeprune.research.corruptions import corrupt  # noqa: E402

# The severities the benchmark chose (docs/benchmarks/severity_*.json, "chosen").
SEVERITY = {"fmnist_resnet": {"gaussian_noise": 3, "impulse_noise": 4, "glass_blur": 4, "elastic_transform": 2, "pixelate": 5},
            "fmnist_mobilenetv2": {"gaussian_noise": 2, "impulse_noise": 3, "glass_blur": 5, "elastic_transform": 2,
                                   "pixelate": 5}}


def stream_pixels(model: str, stream: str, seed: int, test_nhwc):
    if stream == MIXED:
        return mixed_stream(test_nhwc, list(SEVERITY[model].items()), seed)[0]
    if stream == "clean":
        return test_nhwc
    return corrupt(test_nhwc, stream, SEVERITY[model][stream], seed=seed)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--streams", nargs="+", default=[MIXED])
    ap.add_argument("--models", nargs="+", default=list(SEVERITY))
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--checks", type=int, nargs="+", default=[64, 256])
    a = ap.parse_args()
    cfg = BenchConfig()
    inputs = unit_task._inputs()
    with a.out.open("a") as out:
        for model in a.models:
            teacher, entry, _, _ = unit_task._teacher(model, False)
            for stream in a.streams:
                for seed in range(a.seeds):
                    px = stream_pixels(model, stream, seed, inputs["test_nhwc"])
                    data = UnitData.cut(to_nchw(px), inputs["labels"], entry, cfg, seed)
                    for check in a.checks:
                        normalisation.CHECK_IMAGES = check
                        decision = normalisation.choose_teacher_stats(copy.deepcopy(teacher), entry, data.ft_px, 64)
                        row = {"model": model, "stream": stream, "seed": seed, "check_images": check,
                               "choice": decision.choice, "prior_weight": decision.to_dict()["prior_weight"],
                               "im": [round(c["im"], 4) for c in decision.candidates]}
                        print(json.dumps(row), flush=True)
                        out.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    torch.set_num_threads(2)
    main()
