"""The corrupted streams: severity sweep (cached per weights), latency profiles, per-unit splits."""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from edgeprune.data.split import split_indices
from edgeprune.data.transforms import normalise
from edgeprune.deploy.outputs import atomic_write
from edgeprune.models.zoo import RANDOM, ZooEntry
from edgeprune.pipeline.evaluate import predict
from edgeprune.research.corruptions import CORRUPTIONS, corrupt

from .config import KEEP_HI, KEEP_LO, KEEP_TARGET, BenchConfig


def to_nchw(images_nhwc: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(images_nhwc)).permute(0, 3, 1, 2).contiguous()


def accuracy_of(model, entry, pixels, labels, batch=250) -> tuple[float, float]:
    """(top-1 accuracy in %, seconds of the PyTorch eval pass)."""
    t = time.perf_counter()
    pred = predict(model, entry, pixels, batch)
    seconds = time.perf_counter() - t
    return float((pred == labels).float().mean()) * 100.0, seconds


@dataclass
class UnitData:
    """One stream cut for one seed: prune, fine-tune (prune images included) and evaluation images."""

    prune_px: torch.Tensor
    prune_x: torch.Tensor  # normalised prune images, what criteria score with
    ft_px: torch.Tensor
    ev_px: torch.Tensor
    ev_y: torch.Tensor

    @classmethod
    def cut(cls, stream_px: torch.Tensor, labels: torch.Tensor, entry: ZooEntry, cfg: BenchConfig, seed: int) -> "UnitData":
        parts = split_indices(len(stream_px), prune=cfg.prune_images, finetune=cfg.finetune_images - cfg.prune_images,
                              seed=seed)
        held = list(parts.held_out)[: cfg.eval_images]
        prune_px = stream_px[list(parts.prune)]
        return cls(prune_px, normalise(prune_px, entry.mean, entry.std), stream_px[list(parts.prune) + list(parts.finetune)],
                   stream_px[held], labels[held])

    def reuse(self, features: torch.Tensor | None) -> dict[int, torch.Tensor] | None:
        """Fine-tune position -> teacher features the scoring pass already computed (the prune images)."""
        if features is None:
            return None
        return {i: features[i] for i in range(len(self.prune_px))}


# ------------------------------------------------------------------------ latency profiles
def get_profile(model_name: str, cfg: BenchConfig, block_names: list[str] | None = None) -> dict:
    """The per-block latency profile TT-MPD and Practise score with (cached in --out; measured again
    when the cached one lists other blocks, i.e. the architecture changed)."""
    from edgeprune.errors import ProfileError
    from edgeprune.latency.measurement import run_profile
    from edgeprune.latency.profiles import load_profile, save_profile

    path = Path(cfg.out) / f"profile_{model_name}.json"
    if path.is_file():
        try:
            prof = load_profile(path)
            if block_names is None or sorted(b["name"] for b in prof["blocks"]) == sorted(block_names):
                return prof
        except ProfileError:
            pass  # unreadable or another schema: measured again below
    prof = run_profile(model_name, backend="onnxruntime", resolution=32, weights=RANDOM, budget_s=cfg.profile_budget_s,
                       threads=1)
    Path(cfg.out).mkdir(parents=True, exist_ok=True)
    save_profile(prof, path)
    return prof


# ---------------------------------------------------------------------------- severity sweep
def severity_sweep(model, entry, corruptions, cfg: BenchConfig, test_px_nhwc, test_y) -> dict:
    """Source accuracy per corruption and severity on a fixed subset; picks each corruption's severity."""
    rng = np.random.default_rng(12345)
    idx = np.sort(rng.choice(len(test_y), size=min(cfg.sweep_images, len(test_y)), replace=False))
    imgs, labels = test_px_nhwc[idx], torch.from_numpy(test_y[idx])
    clean, _ = accuracy_of(model, entry, to_nchw(imgs), labels)
    table = {"images": int(len(idx)), "clean_accuracy": clean, "window": [KEEP_LO, KEEP_HI], "target": KEEP_TARGET,
             "corruptions": {}}
    for name in corruptions:
        accs = {sev: accuracy_of(model, entry, to_nchw(corrupt(imgs, name, sev, seed=0)), labels)[0] for sev in range(1, 6)}
        inside = [s for s in accs if KEEP_LO <= accs[s] / clean <= KEEP_HI]
        chosen = min(inside, key=lambda s: (abs(accs[s] / clean - KEEP_TARGET), s)) if inside else None
        table["corruptions"][name] = {"accuracy": accs, "chosen": chosen}
    return table


def weights_fingerprint(model) -> str:
    """sha1 of the state dict: a cached severity sweep is only valid for the weights that made it."""
    h = hashlib.sha1()
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def _cached_sweep(path: Path, images: int, fingerprint: str) -> dict:
    if not path.is_file():
        return {}
    table = json.loads(path.read_text())
    if table.get("images") != images or table.get("weights_sha1", fingerprint) != fingerprint:
        return {}
    return table


def load_or_sweep(model_name, model, entry, cfg: BenchConfig, test_px_nhwc, test_y, wanted) -> dict:
    """The severity table of ``model_name`` with every ``wanted`` corruption, swept where missing."""
    path = Path(cfg.out) / f"severity_{model_name}.json"
    fingerprint = weights_fingerprint(model)
    table = _cached_sweep(path, min(cfg.sweep_images, len(test_y)), fingerprint)
    missing = [c for c in wanted if c not in table.get("corruptions", {})]
    if not missing and table.get("weights_sha1") == fingerprint:
        return table
    if missing:
        new = severity_sweep(model, entry, missing, cfg, test_px_nhwc, test_y)
        if table:
            table["corruptions"].update(new["corruptions"])
        else:
            table = new
        table["corruptions"] = {k: table["corruptions"][k] for k in CORRUPTIONS if k in table["corruptions"]}
        for v in table["corruptions"].values():
            v["accuracy"] = {int(s): a for s, a in v["accuracy"].items()}
    table["weights_sha1"] = fingerprint  # a sweep from before fingerprints were recorded adopts these weights
    Path(cfg.out).mkdir(parents=True, exist_ok=True)
    atomic_write(path, json.dumps(table, indent=1))
    return table


MIXED = "mixed"


def chosen_streams(sweep: dict, cfg: BenchConfig) -> tuple[list[tuple[str, int]], list[str]]:
    """([(corruption, severity), ..., ("mixed", 0), ("clean", 0)], corruptions without a severity in
    the window); "mixed" only with cfg.mixed and at least one corruption."""
    override = cfg.severity_override or {}
    chosen = [(c, override.get(c, sweep["corruptions"][c]["chosen"])) for c in cfg.corruptions]
    excluded = [c for c, s in chosen if s is None]
    kept = [(c, s) for c, s in chosen if s is not None]
    mixed = [(MIXED, 0)] if cfg.mixed and kept else []
    return kept + mixed + [("clean", 0)], excluded


def mixed_stream(images_nhwc: np.ndarray, corruptions: list[tuple[str, int]], seed: int) -> tuple[np.ndarray, list[str]]:
    """Each image clean or corrupted by one of ``corruptions`` (at its chosen severity), drawn uniformly
    per image: the interleaved mixed-domain stream on which plain stream statistics are known to fail
    (issue 11). Returns (images, the condition of each image)."""
    rng = np.random.default_rng(50_000 + seed)
    names = ["clean"] + [c for c, _ in corruptions]
    which = rng.integers(len(names), size=len(images_nhwc))
    out = images_nhwc.copy()
    for i, (name, sev) in enumerate(corruptions, start=1):
        idx = np.flatnonzero(which == i)
        if len(idx):
            out[idx] = corrupt(images_nhwc[idx], name, sev, seed=seed)
    return out, [names[w] for w in which]
