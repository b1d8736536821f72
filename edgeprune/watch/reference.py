"""What a promoted version keeps besides adapt's artifacts: ``watch.json`` (how it came to be:
cycle, window, drift evidence, gate) and ``reference.pt`` (the drift ``Reference`` and a probe:
a few held-out images with the logits the model gave them, so anyone can check that the version
loads and reproduces its recorded outputs). Tensors only, read with ``weights_only=True``.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ..deploy.outputs import atomic_path
from ..errors import ModelError
from ..models.surgery import load_manifest
from ..models.zoo import get_entry
from ..pipeline.fidelity import logits
from ..pipeline.report import write_json
from .drift import Reference

RECORD_NAME, REFERENCE_NAME = "watch.json", "reference.pt"
PROBE_IMAGES = 8
PROBE_ATOL, PROBE_RTOL = 1e-4, 1e-4  # CPU kernels may differ in the last bits across thread counts


def write_version_files(folder: Path, record: dict, ref: Reference, probe_pixels: torch.Tensor, probe_logits: torch.Tensor) -> None:
    """watch.json and reference.pt into the version folder being written."""
    tensors = {"bn_mean": {n: m for n, (m, _) in ref.bn.items()}, "bn_var": {n: v for n, (_, v) in ref.bn.items()},
               "probe_pixels": probe_pixels.contiguous(), "probe_logits": probe_logits.float().contiguous()}
    with atomic_path(folder / REFERENCE_NAME) as tmp:
        torch.save(tensors, tmp)
    scalars = {"entropy": ref.entropy, "confidence": ref.confidence, "agreement": ref.agreement}
    write_json(folder / RECORD_NAME, {**record, "reference": scalars, "probe_images": len(probe_pixels)})


def read_record(folder: Path) -> dict:
    return json.loads((folder / RECORD_NAME).read_text())


def load_reference(folder: Path) -> Reference:
    try:
        t = torch.load(folder / REFERENCE_NAME, weights_only=True)
        r = read_record(folder)["reference"]
        bn = {n: (t["bn_mean"][n], t["bn_var"][n]) for n in t["bn_mean"]}
        return Reference(bn, float(r["entropy"]), float(r["confidence"]), float(r["agreement"]))
    except (OSError, ValueError, KeyError, TypeError, RuntimeError) as exc:
        raise ModelError(f"the drift reference of {folder} is unreadable: {exc}") from None


def verify_version(folder: Path) -> dict:
    """Load the version's model.pt (and model.onnx with ONNX Runtime) and run its probe:
    {"ok", "max_abs_diff", "images", "onnx": parity record or None}."""
    from ..data.transforms import normalise
    from ..deploy.ort import ort_session, run_session
    from ..deploy.parity import compare_outputs

    model, manifest = load_manifest(folder / "model.pt")
    entry = get_entry(manifest["model"])
    t = torch.load(folder / REFERENCE_NAME, weights_only=True)
    got, want = logits(model, entry, t["probe_pixels"]), t["probe_logits"]
    diff = float((got - want).abs().max()) if want.numel() else 0.0
    ok = got.shape == want.shape and diff <= PROBE_ATOL + PROBE_RTOL * float(want.abs().max() if want.numel() else 0)
    onnx = None
    if (folder / "model.onnx").is_file():  # the file a deployment runs: adapt's parity gate, again, on the probe
        x = normalise(t["probe_pixels"], entry.mean, entry.std).numpy()
        onnx = compare_outputs(want.numpy(), run_session(ort_session(folder / "model.onnx", threads=1), x),
                               inputs=f"{len(x)} probe images")
        ok = ok and onnx["passed"]
    return {"ok": bool(ok), "max_abs_diff": diff, "images": int(want.shape[0]), "onnx": onnx}
