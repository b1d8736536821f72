"""``edgeprune eval``: accuracy (labelled folders) or agreement with the original, plus latency."""

from __future__ import annotations

from pathlib import Path

import torch

from ..data.discovery import summarise_skipped
from ..data.images import load_images, require_images
from ..models.surgery import load_manifest
from ..models.zoo import get_entry, load_model
from ..progress import Reporter
from .evaluate import accuracy, agreement, predict


def evaluate_model(model: str, images: str | Path, weights=None, resolution: int | None = None, latency: bool = True,
                   reporter: Reporter | None = None) -> dict:
    rep = reporter or Reporter()
    is_manifest = Path(model).suffix == ".pt" or Path(model).is_dir()
    if is_manifest:
        net, data = load_manifest(model)
        entry = get_entry(data["model"])
        res = resolution or int(data.get("resolution", entry.resolution))
        try:
            original, _, _ = load_model(data["model"], weights)
        except Exception as exc:  # agreement needs the original; accuracy does not
            rep.warn(f"original model unavailable ({exc}); agreement not computed")
            original = None
    else:
        net, entry, _ = load_model(model, weights)
        res = resolution or entry.resolution
        original = None
    imgs = load_images(images, res, entry.crop_pct, progress=lambda d, t: rep.progress("reading images", d, t))
    if imgs.skipped:
        rep.warn(f"skipped {len(imgs.skipped)} unusable file(s): {summarise_skipped(imgs.skipped)}")
    require_images(imgs, 1)
    pred = predict(net, entry, imgs.pixels)
    result: dict = {"model": model, "images": len(imgs.pixels), "skipped": len(imgs.skipped), "resolution": res}
    acc = accuracy(pred, imgs.labels)
    if acc is not None:
        result["accuracy"] = acc
    if original is not None:
        result["agreement_with_original"] = agreement(pred, predict(original, entry, imgs.pixels))
    if latency:
        from ..deploy.ort import measure_onnx_latency

        stats = measure_onnx_latency({"model": net}, torch.zeros(1, entry.in_chans, res, res),
                                     progress=lambda d, t: rep.progress("timing", d, t))["model"]
        result["latency_ms_median"] = stats.median_ms
        result["latency_ms_p90"] = stats.p90_ms
        result["latency_ms_p95"] = stats.p95_ms
        result["latency_ms_p99"] = stats.p99_ms
        result["latency_cv"] = stats.cv
    return result
