"""The INT8 artifact of ``adapt --deploy-precision int8`` and ``export --int8``: ``model.int8.onnx``
beside the fp32 ``model.onnx`` (which stays: it is the gate's reference and the TensorRT input).

Calibration is test-time: adapt calibrates on the stream's fine-tune images (never held-out
ones) and gates on held-out images; ``export --int8`` splits its image folder (seeded) into
calibration and gate images. A graph that fails the gate is not written and the caller reports
it as an error (the fp32 model.onnx stays the deployable artifact); never silently.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..data.transforms import normalise
from ..errors import ImageError
from ..progress import Reporter

INT8_FILE = "model.int8.onnx"
MIN_GATE_IMAGES = 16  # export --int8: held-out images the gate needs at least


def adapt_int8(prep, folder: Path, held: torch.Tensor, errors: list[str], rep: Reporter) -> dict:
    """model.int8.onnx in ``folder`` from model.onnx: calibrated on the run's fine-tune images,
    gated on ``held`` (normalised held-out inputs). Gate failures go to ``errors``."""
    from ..deploy.int8.build import build_int8

    cfg = prep.options.int8
    idx = prep.finetune_idx[: cfg.calibration_images]
    calib = normalise(prep.images.pixels[idx], prep.entry.mean, prep.entry.std).numpy()
    rep.stage("int8")
    record = build_int8(folder / "model.onnx", folder / INT8_FILE, calib, held.numpy(), cfg,
                        calibration_source=f"{len(idx)} fine-tune images of the stream")
    record["path"] = INT8_FILE if record["written"] else None  # relative: the folder is published under another name
    _report_verdict(record, errors, rep)
    return record


def export_int8(model_dir: Path, entry, res: int, images: str | Path, config, batch: int) -> dict:
    """model.int8.onnx next to model.onnx from a folder of images: a seeded split into calibration
    images and held-out gate images (a quarter, 16 to 256). Raises ExportError on a failed gate."""
    from ..data.images import load_images, require_images
    from ..deploy.int8.build import build_int8
    from ..deploy.parity import PARITY_IMAGES, fit_to_batch
    from ..errors import ExportError

    imgs = load_images(images, res, entry.crop_pct)
    require_images(imgs, 2 * MIN_GATE_IMAGES)
    order = torch.randperm(len(imgs.pixels), generator=torch.Generator().manual_seed(0))
    n_held = min(PARITY_IMAGES, max(MIN_GATE_IMAGES, len(order) // 4))
    held = fit_to_batch(normalise(imgs.pixels[order[:n_held]], entry.mean, entry.std), batch, False)
    calib_idx = order[n_held:][: config.calibration_images]
    if len(calib_idx) < batch:
        raise ImageError(f"too few images in {images} to calibrate INT8 after holding out {n_held} for the gate")
    calib = normalise(imgs.pixels[calib_idx], entry.mean, entry.std).numpy()
    record = build_int8(model_dir / "model.onnx", model_dir / INT8_FILE, calib, held.numpy(), config,
                        calibration_source=f"{len(calib_idx)} images from {images} (the other {n_held} held out for the gate)")
    if not record["passed"]:
        raise ExportError(f"INT8 gate failed on {record['gate']['inputs']}: {'; '.join(record['gate']['failures'])}; "
                          f"{INT8_FILE} was not written", "try --calibration-method percentile or more calibration images; "
                          "model.onnx (fp32) is unaffected")
    return record


def _report_verdict(record: dict, errors: list[str], rep: Reporter) -> None:
    gate = record["gate"]
    floats = len(record["keep_float"])
    if record["passed"]:
        rep.info(f"INT8: {INT8_FILE} passed the gate (top-1 agreement {gate['agreement']:.1%} with the fp32 model on "
                 f"{gate['inputs']}; {floats} node(s) kept in float)")
        return
    errors.append(f"INT8 gate failed on {gate['inputs']}: {'; '.join(gate['failures'])}; {INT8_FILE} was not written "
                  "and model.onnx (fp32) is the deployable model")


def latency_variants(folder: Path, record: dict | None) -> dict[str, Path]:
    """The INT8 graph to time beside the fp32 ones, when it was written."""
    return {"int8_adapted": folder / INT8_FILE} if record and record.get("written") else {}
