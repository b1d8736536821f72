"""Inference in NCHW against channels-last (NHWC), and the teacher-statistics decision's time.

    python tools/probe_inference_layout.py [--model efficientnet_lite0] [--rounds 6] [--images DIR]

One batch of 64 images (random pixels: the time does not depend on them) through the model in
eval mode, the two layouts interleaved round by round (alternating which goes first); medians and
their ratio. With ``--images``, also the time of ``choose_teacher_stats`` (``--teacher-stats
auto``'s decision, which runs its passes channels-last) on the first 1000 images of the folder.
The source of the inference lines in docs/benchmarks/design_measurements.md ("Memory layout").
Not a test: timings on a shared machine; read the ratio.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib.provenance import git_state  # noqa: E402

from edgeprune.data.images import load_images  # noqa: E402
from edgeprune.data.transforms import normalise  # noqa: E402
from edgeprune.distill.hardware import to_layout  # noqa: E402
from edgeprune.distill.normalisation import choose_teacher_stats  # noqa: E402
from edgeprune.models.zoo import load_model  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="efficientnet_lite0")
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--images", type=Path, default=None)
    args = ap.parse_args()
    model, entry, _ = load_model(args.model, None)
    model.eval()
    x = normalise(torch.randint(0, 256, (64, entry.in_chans, entry.resolution, entry.resolution), dtype=torch.uint8),
                  entry.mean, entry.std)
    times: dict[str, list[float]] = {"NCHW": [], "channels_last": []}
    with torch.no_grad():
        for r in range(args.rounds + 1):  # round 0 warms up
            for layout in (("NCHW", "channels_last") if r % 2 else ("channels_last", "NCHW")):
                t = time.perf_counter()
                model(to_layout(x, layout == "channels_last"))
                if r:
                    times[layout].append(time.perf_counter() - t)
    med = {k: statistics.median(v) for k, v in times.items()}
    state = git_state(Path("."))
    print(f"{args.model}, batch 64, {entry.resolution} px, {torch.get_num_threads()} threads, commit {state.get('commit')}"
          f"{' (dirty)' if state.get('dirty') else ''}")
    print(f"NCHW {med['NCHW']:.2f} s, channels_last {med['channels_last']:.2f} s per batch (median of {args.rounds}): "
          f"{med['NCHW'] / med['channels_last']:.2f}x")
    if args.images:
        pixels = load_images(args.images, entry.resolution, entry.crop_pct).pixels[:1000]
        t = time.perf_counter()
        decision = choose_teacher_stats(model, entry, pixels)
        print(f"choose_teacher_stats on {len(pixels)} images: {time.perf_counter() - t:.1f} s, chose {decision.choice}")


if __name__ == "__main__":
    main()
