"""Train the benchmark/demo source models on clean Fashion-MNIST train (cached outside git).

    python tools/train_source.py [--model fmnist_resnet|fmnist_mobilenetv2|all] [--epochs N] [--force]

Prints one JSON line per model: test accuracy and training time.
"""

from __future__ import annotations

import argparse
import json

import torch
from rich.progress import Progress

from edgeprune.research.train_source import train_source


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="all", choices=["all", "fmnist_resnet", "fmnist_mobilenetv2"])
    ap.add_argument("--epochs", type=int, default=None,
                    help="default: per model (edgeprune.research.source_models.DEFAULT_EPOCHS: resnet 6, mobilenetv2 5)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1, help="1 is fastest on a shared 2-core machine (no OpenMP spinning)")
    ap.add_argument("--force", action="store_true", help="retrain even when a cached model exists")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    names = ["fmnist_resnet", "fmnist_mobilenetv2"] if args.model == "all" else [args.model]
    for name in names:
        with Progress() as bar:
            task = bar.add_task(f"training {name}", total=None)
            result = train_source(name, epochs=args.epochs, seed=args.seed, force=args.force,
                                  progress=lambda s, t, loss: bar.update(task, completed=s, total=t))
        print(json.dumps(result))


if __name__ == "__main__":
    main()
