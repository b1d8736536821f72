"""The INT8 artifact of ``adapt --deploy-precision int8`` and ``export --int8``: ``model.int8.onnx``
beside the fp32 ``model.onnx`` (which stays: it is the gate's reference and the TensorRT input).

Calibration is test-time: adapt calibrates on the stream's fine-tune images (never held-out
ones) and gates on held-out images; ``export --int8`` splits its image folder (seeded) into
calibration and gate images. A graph that fails the gate is not written and the caller reports
it as an error (the fp32 model.onnx stays the deployable artifact); never silently.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..data.transforms import normalise
from ..errors import ImageError
from ..progress import Reporter

INT8_FILE = "model.int8.onnx"
TENSORRT_INT8_FILE = "model.int8.tensorrt.onnx"  # the symmetric QDQ graph TensorRT builds model.int8.engine from
MIN_GATE_IMAGES = 16  # export --int8: held-out images the gate needs at least


def adapt_int8(prep, folder: Path, held: torch.Tensor, errors: list[str], rep: Reporter) -> dict:
    """model.int8.onnx in ``folder`` from model.onnx: calibrated on the run's fine-tune images,
    gated on ``held`` (normalised held-out inputs). Gate failures go to ``errors``."""
    from ..deploy.int8.build import build_int8

    calib, source = _adapt_calibration(prep)
    rep.stage("int8")
    record = build_int8(folder / "model.onnx", folder / INT8_FILE, calib, held.numpy(), prep.options.int8,
                        calibration_source=source)
    record["path"] = INT8_FILE if record["written"] else None  # relative: the folder is published under another name
    _report_verdict(record, errors, rep, INT8_FILE)
    record["profile_float_groups"] = _check_profile_groups(prep.profile, record, rep)
    return record


def _check_profile_groups(profile: dict, record: dict, rep: Reporter) -> list[str] | None:
    """The op groups the INT8 profile's variants had in float (None: a profile from before the
    rule was applied there); a warning when the deployed graph keeps others in float."""
    groups = ((profile.get("backend") or {}).get("quantisation") or {}).get("float_groups")
    if groups is None:
        return None
    chosen = record["chosen"] or ""
    deployed = [chosen[: -len("_float")]] if chosen.endswith("_float") else []
    if sorted(groups) != sorted(deployed):
        rep.warn(f"the INT8 profile's variants had {', '.join(groups) or 'no op group'} in float, the deployed graph has "
                 f"{', '.join(deployed) or 'none'} ({chosen}): the plan's block savings were measured on a differently "
                 "quantised graph")
    return list(groups)


def adapt_tensorrt_int8(prep, folder: Path, held: torch.Tensor, errors: list[str], rep: Reporter) -> dict:
    """model.int8.tensorrt.onnx and model.int8.engine in ``folder``: the same calibration images and
    gate as ``adapt_int8``, TensorRT's symmetric settings. Failures go to ``errors``."""
    calib, source = _adapt_calibration(prep)
    rep.stage("tensorrt int8")
    record = tensorrt_int8(folder, calib, held.numpy(), prep.options.int8, source, batch=int(prep.profile.get("batch", 1)))
    _report_verdict(record, errors, rep, TENSORRT_INT8_FILE)
    if record.get("engine_error"):
        errors.append(f"TensorRT INT8 engine failed: {record['engine_error']}")
    return record


def tensorrt_int8(folder: Path, calib: np.ndarray, held: np.ndarray, config, source: str, fp16: bool = True,
                  batch: int = 1, raise_errors: bool = False) -> dict:
    """The symmetric QDQ graph for TensorRT from ``folder``/model.onnx, gated in ONNX Runtime (the
    same rule and gate as the CPU graph, without its CPU speed rule), then model.int8.engine from it.

    Returns build_int8's record with ``path`` and ``engine`` relative to ``folder`` (None when not
    written), ``engine_build`` (the sidecar's build fields) and ``engine_error`` (why the engine
    failed, when it did and ``raise_errors`` is False).
    """
    from ..deploy.int8.build import build_int8
    from ..deploy.tensorrt_engine import read_sidecar
    from ..deploy.tensorrt_int8 import INT8_ENGINE_FILE, build_int8_engine
    from ..errors import EdgepruneError, OutputError

    record = build_int8(folder / "model.onnx", folder / TENSORRT_INT8_FILE, calib, held, config.for_tensorrt(),
                        calibration_source=source)
    record |= {"path": TENSORRT_INT8_FILE if record["written"] else None, "engine": None, "engine_build": None}
    if not record["written"]:
        return record
    try:
        engine = build_int8_engine(folder / TENSORRT_INT8_FILE, folder / INT8_ENGINE_FILE, fp16=fp16, batch=batch)
    except OutputError:
        raise
    except EdgepruneError as exc:
        if raise_errors:
            raise
        return record | {"engine_error": str(exc)}
    sidecar = read_sidecar(engine)
    return record | {"engine": INT8_ENGINE_FILE,
                     "engine_build": {k: sidecar.get(k) for k in ("precision", "float_layers", "flags", "qdq_layers",
                                                                  "strongly_typed", "tensorrt_version", "build_s")}}


def export_int8(model_dir: Path, entry, res: int, images: str | Path, config, batch: int, tensorrt: bool = False,
                fp16: bool = True) -> dict:
    """model.int8.onnx next to model.onnx from a folder of images: a seeded split into calibration
    images and held-out gate images (a quarter, 16 to 256). ``tensorrt``: instead the symmetric
    model.int8.tensorrt.onnx and model.int8.engine (``tensorrt_int8``). Raises ExportError on a
    failed gate, BackendError when the engine fails."""
    from ..deploy.int8.build import build_int8
    from ..errors import ExportError

    calib, held, source = _export_split(entry, res, images, config, batch)
    if tensorrt:
        record = tensorrt_int8(model_dir, calib, held, config, source, fp16=fp16, batch=batch, raise_errors=True)
        file = TENSORRT_INT8_FILE
    else:
        record, file = build_int8(model_dir / "model.onnx", model_dir / INT8_FILE, calib, held, config,
                                  calibration_source=source), INT8_FILE
    if not record["passed"]:
        raise ExportError(f"INT8 gate failed on {record['gate']['inputs']}: {'; '.join(record['gate']['failures'])}; "
                          f"{file} was not written", "try --calibration-method percentile or more calibration images; "
                          "model.onnx (fp32) is unaffected")
    return record


def _export_split(entry, res: int, images: str | Path, config, batch: int) -> tuple[np.ndarray, np.ndarray, str]:
    """(calibration inputs, held-out gate inputs, what they are) from the folder ``images``."""
    from ..data.images import load_images, require_images
    from ..deploy.parity import PARITY_IMAGES, fit_to_batch

    imgs = load_images(images, res, entry.crop_pct)
    require_images(imgs, 2 * MIN_GATE_IMAGES)
    order = torch.randperm(len(imgs.pixels), generator=torch.Generator().manual_seed(0))
    n_held = min(PARITY_IMAGES, max(MIN_GATE_IMAGES, len(order) // 4))
    held = fit_to_batch(normalise(imgs.pixels[order[:n_held]], entry.mean, entry.std), batch, False)
    calib_idx = order[n_held:][: config.calibration_images]
    if len(calib_idx) < batch:
        raise ImageError(f"too few images in {images} to calibrate INT8 after holding out {n_held} for the gate")
    calib = normalise(imgs.pixels[calib_idx], entry.mean, entry.std).numpy()
    return calib, held.numpy(), f"{len(calib_idx)} images from {images} (the other {n_held} held out for the gate)"


def _adapt_calibration(prep) -> tuple[np.ndarray, str]:
    """adapt's calibration inputs (normalised fine-tune images, never held-out ones) and their description."""
    idx = prep.finetune_idx[: prep.options.int8.calibration_images]
    return (normalise(prep.images.pixels[idx], prep.entry.mean, prep.entry.std).numpy(),
            f"{len(idx)} fine-tune images of the stream")


def _report_verdict(record: dict, errors: list[str], rep: Reporter, file: str) -> None:
    gate = record["gate"]
    floats = len(record["keep_float"])
    if record["passed"]:
        rep.info(f"INT8: {file} passed the gate (top-1 agreement {gate['agreement']:.1%} with the fp32 model on "
                 f"{gate['inputs']}; {floats} node(s) kept in float)")
        return
    errors.append(f"INT8 gate failed on {gate['inputs']}: {'; '.join(gate['failures'])}; {file} was not written "
                  "and model.onnx (fp32) is the deployable model")


def latency_variants(folder: Path, record: dict | None) -> dict[str, Path]:
    """The INT8 graph to time beside the fp32 ones, when it was written."""
    return {"int8_adapted": folder / INT8_FILE} if record and record.get("written") else {}
