"""Train the small Fashion-MNIST source models (clean train split only).

Seeded; SGD with Nesterov momentum and a one-cycle schedule; random crop (pad 2) and horizontal
flip; channels-last. Writes a plain state dict atomically to ``source_models.pretrained_path``.
"""

from __future__ import annotations

import time
from typing import Callable

import torch
import torch.nn.functional as F

from ..data.transforms import normalise
from ..deploy.outputs import atomic_path
from ..models.zoo import build_architecture, get_entry
from .fashion_mnist import load_fashion_mnist, to_rgb32
from .source_models import DEFAULT_EPOCHS, pretrained_path


def _augment(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    n = x.shape[0]
    flip = torch.rand(n, generator=g) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(3), x)
    padded = F.pad(x, (2, 2, 2, 2))
    dx, dy = torch.randint(0, 5, (2,), generator=g).tolist()  # one shift per batch: cheap, enough here
    return padded[:, :, dy : dy + x.shape[2], dx : dx + x.shape[3]]


def evaluate_accuracy(model, entry, pixels: torch.Tensor, labels: torch.Tensor, batch: int = 500) -> float:
    model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(pixels), batch):
            x = normalise(pixels[i : i + batch], entry.mean, entry.std).contiguous(memory_format=torch.channels_last)
            correct += int((model(x).argmax(1) == labels[i : i + batch]).sum())
    return correct / len(pixels)


def train_source(name: str = "fmnist_resnet", epochs: int | None = None, batch: int = 128, lr: float = 0.1, seed: int = 0,
                 force: bool = False, progress: Callable[[int, int, float], None] | None = None) -> dict:
    """Train ``name`` on clean Fashion-MNIST train; returns {model, path, test_accuracy, seconds}.

    ``epochs`` defaults to the model's entry in ``source_models.DEFAULT_EPOCHS`` (6 otherwise)."""
    if epochs is None:
        epochs = DEFAULT_EPOCHS.get(name, 6)
    path = pretrained_path(name)
    entry = get_entry(name)
    test_x, test_y = load_fashion_mnist("test")
    test_px = torch.from_numpy(to_rgb32(test_x)).permute(0, 3, 1, 2).contiguous()
    test_labels = torch.from_numpy(test_y)
    if path.is_file() and not force:
        from ..models.zoo import load_model

        model, _, _ = load_model(name)
        return {"model": name, "path": str(path), "cached": True,
                "test_accuracy": evaluate_accuracy(model, entry, test_px, test_labels), "seconds": 0.0}
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    train_x, train_y = load_fashion_mnist("train")
    pixels = torch.from_numpy(to_rgb32(train_x)).permute(0, 3, 1, 2).contiguous()
    labels = torch.from_numpy(train_y)
    model = build_architecture(entry).to(memory_format=torch.channels_last)
    steps_per_epoch = len(pixels) // batch
    total = epochs * steps_per_epoch
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, nesterov=True, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=total, pct_start=0.25)
    start = time.perf_counter()
    step = 0
    for _ in range(epochs):
        model.train()
        perm = torch.randperm(len(pixels), generator=g)
        for i in range(steps_per_epoch):
            idx = perm[i * batch : (i + 1) * batch]
            x = _augment(normalise(pixels[idx], entry.mean, entry.std), g).contiguous(memory_format=torch.channels_last)
            loss = F.cross_entropy(model(x), labels[idx], label_smoothing=0.05)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            if progress:
                progress(step, total, float(loss.detach()))
    seconds = time.perf_counter() - start
    model = model.to(memory_format=torch.contiguous_format)
    acc = evaluate_accuracy(model, entry, test_px, test_labels)
    with atomic_path(path) as tmp:
        torch.save({k: v.contiguous() for k, v in model.state_dict().items()}, tmp)
    return {"model": name, "path": str(path), "cached": False, "test_accuracy": acc, "seconds": seconds,
            "epochs": epochs, "seed": seed}
