"""Step budget of the watch scenario's first clean cycle at -k 3 (not a test; issue 14's -k 3 miss).

    python tools/probe_watch_steps.py [--images N] [STEPS ...]     (default: 300 images; 150 500 steps)

Feeds the scenario's first N stream images (tools/watch_scenario.py: the same seeded stream pool;
300 = its first chunk, 600 = its whole first clean phase) into a fresh folder per step budget and runs one ``edgeprune watch
--once -k 3 --steps S`` as the scenario does. The promoted model is scored on 1000 clean labelled
images that are in neither the scenario's stream pool nor its evaluation pool, so the scenario's
evaluation images stay unseen. Prints one JSON line per budget (accuracy, wall time, early stop).
"""
import json
import sys
from argparse import Namespace
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import watch_scenario as ws  # noqa: E402

from edgeprune.models.surgery import load_manifest  # noqa: E402
from edgeprune.models.zoo import load_model  # noqa: E402
from edgeprune.research.fashion_mnist import load_fashion_mnist, to_rgb32  # noqa: E402
from edgeprune.research.source_models import pretrained_path  # noqa: E402

WORK = ws.ROOT / "out" / "probe_watch_steps"


def main(budgets: list[int], n_images: int) -> None:
    torch.set_num_threads(1)
    d = ws.parse_args([])
    images, labels = load_fashion_mnist("test")
    order = np.random.default_rng(d.seed).permutation(len(labels))
    stream_n = d.chunk * d.chunks_per_phase * len(d.conditions.split(","))
    probe_idx = order[stream_n:stream_n + 1000]  # neither the stream pool nor the last eval_images
    assert stream_n + 1000 <= len(labels) - d.eval_images
    rgb = to_rgb32(images)
    px, y = ws.to_nchw(rgb[probe_idx]), torch.from_numpy(labels[probe_idx])
    source, entry, _ = load_model(ws.MODEL, pretrained_path(ws.MODEL))
    assert n_images <= d.chunk * d.chunks_per_phase, "beyond the scenario's clean phase"
    chunk = rgb[order[:n_images]]  # the scenario's first stream images (its clean phase)
    profile = ws.make_profile(ws.ROOT / "out" / f"watch_scenario_profile_{ws.MODEL}.json")
    print(json.dumps({"source_acc": ws.accuracy(source, entry, px, y)}), flush=True)
    for steps in budgets:
        base = WORK / f"images{n_images}_steps{steps}"
        ws.shutil.rmtree(base, ignore_errors=True)
        ws.feed(base / "stream", chunk, "c0")
        records, wall = ws.run_cycle(Namespace(steps=steps), 3, base / "stream", base / "deploy", profile)
        rec = next(r for r in records if r.get("event") == "cycle")
        vdir = base / "deploy" / "versions" / "1"
        acc = ws.accuracy(load_manifest(vdir / "model.pt")[0], entry, px, y) if vdir.exists() else None
        rep = json.loads((vdir / "report.json").read_text()) if (vdir / "report.json").exists() else {}
        print(json.dumps({"images": n_images, "steps": steps, "action": rec["action"], "acc": acc, "wall_s": wall,
                          "adapt_s": rec["seconds"].get("adapt_total"), "early_stop": rep.get("early_stop"),
                          "distillation_steps": (rep.get("distillation") or {}).get("steps")}), flush=True)


if __name__ == "__main__":
    argv = sys.argv[1:]
    n = int(argv.pop(argv.index("--images") + 1)) if "--images" in argv else 300
    argv = [a for a in argv if a != "--images"]
    main([int(s) for s in argv] or [150, 500], n)
