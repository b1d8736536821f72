"""Peak memory and time of one distillation step and of inference, by (micro-)batch size.

    python tools/probe_step_memory.py [--threads 1] [--removed blocks.1.1,blocks.2.1,blocks.3.2]

efficientnet_lite0 (real weights) at 224 px, suffix scope from the first removed block,
channels-last. For each micro-batch size (64 = one pass, 32 = 2 x 32, 16 = 4 x 16) and precision,
one 64-image step (forward + backward of every chunk) after a warm-up; memory is the rise of the
process's peak resident set over the step, measured after freed memory is handed back to the OS
(the same ``malloc_trim`` adapt does between phases). The source of the micro-batch figures in
docs/benchmarks/design_measurements.md ("Micro-batches") and README.md ("Fast adaptation"). Not a
test: timings on a shared machine.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from edgeprune.distill import hardware
from edgeprune.models import zoo
from edgeprune.models.staging import run_stages, split
from edgeprune.models.surgery import remove_blocks
from edgeprune.pipeline.evaluate import predict


def measure(name: str, fn) -> None:
    hardware.release_free_memory()
    hardware.reset_peak_rss()
    base = hardware.peak_rss_mb()
    t = time.perf_counter()
    fn()
    seconds = time.perf_counter() - t
    peak = hardware.peak_rss_mb()
    print(f"{name}: {seconds:.2f} s, peak {peak:.0f} MiB (+{peak - base:.0f} over {base:.0f})", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--removed", default="blocks.1.1,blocks.2.1,blocks.3.2")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    removed = args.removed.split(",")
    teacher, entry, _ = zoo.load_model("efficientnet_lite0")
    student = remove_blocks(teacher, removed)
    stages = split(student, entry.staging)
    start = min([n for n, _ in stages].index(r) for r in removed)
    pixels = torch.randint(0, 255, (128, 3, 224, 224), dtype=torch.uint8)
    for batch in (64, 32, 16):
        measure(f"inference of 128 images in batches of {batch}", lambda b=batch: predict(teacher, entry, pixels, b))
    x = torch.randn(64, 3, 224, 224)
    with torch.no_grad():
        cached = run_stages(split(teacher, entry.staging), x, 0, start).contiguous(memory_format=torch.channels_last)
        target = teacher.forward_features(x)
    student.to(memory_format=torch.channels_last).train()
    for micro in (64, 32, 16):
        for precision in ("fp32", "bf16"):
            def step(micro=micro, precision=precision):
                for s in range(0, 64, micro):
                    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
                        out = run_stages(stages, cached[s : s + micro], start)
                    (F.mse_loss(out.float(), target[s : s + micro]) * micro / 64).backward()
                student.zero_grad(set_to_none=True)

            step()  # warm-up: oneDNN primitives
            measure(f"64-image step as {64 // micro} x {micro}, {precision}", step)


if __name__ == "__main__":
    main()
