"""``edgeprune export``: ONNX and/or TensorRT from a pruned-model manifest, on the target device."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..errors import ExportError
from ..models.surgery import load_manifest
from ..models.zoo import ZooEntry, get_entry

RANDOM_PARITY_INPUTS = 16  # without --images: this many random inputs (at least one batch)


def export_manifest(manifest: str | Path, onnx: bool = True, tensorrt: bool = False, fp16: bool = True, batch: int = 1,
                    dynamic_batch: bool = False, images: str | Path | None = None, int8=None) -> dict:
    """Write model.onnx and/or model.engine (and model.int8.onnx) next to the manifest.

    model.onnx passes the parity gate (deploy/parity.py, the one adapt uses) on ``images`` when
    given (normalised as the model expects), else on random inputs; the result says which.
    ``int8``: an ``Int8Config``: also quantise model.onnx, calibrated on ``images`` (required),
    gated on a held-out part of them (pipeline/int8_artifact.py); with ``tensorrt`` the engine is
    model.int8.engine, built from the symmetric QDQ graph model.int8.tensorrt.onnx (``fp16``: its
    float layers may run in fp16, TensorRT 10), and no model.int8.onnx is written.
    """
    from ..errors import UsageError

    if int8 is not None and (images is None or dynamic_batch or not onnx):
        raise UsageError("--int8 quantises model.onnx: it needs --images DIR (the calibration images), a static batch "
                         "(no --dynamic-batch) and the ONNX export (no --no-onnx)")
    if int8 is not None:
        int8.validate()
    if tensorrt:  # before minutes of export and calibration, not after
        from ..deploy.tensorrt_build import require_tensorrt

        require_tensorrt()
    from ..deploy.onnx_export import export_onnx
    from ..deploy.parity import check_parity

    model, data = load_manifest(manifest)
    entry = get_entry(data["model"])
    folder = Path(manifest).parent if Path(manifest).is_file() else Path(manifest)
    res = int(data.get("resolution", entry.resolution))
    example = torch.zeros(batch, entry.in_chans, res, res)
    result: dict = {"manifest": str(manifest), "model": data["model"], "removed_blocks": data["removed_blocks"]}
    onnx_path = folder / "model.onnx"
    if onnx or (tensorrt and not onnx_path.exists()):
        export_onnx(model, example, onnx_path, dynamic_batch=dynamic_batch)
        x, label = parity_inputs(entry, res, batch, dynamic_batch, images)
        par = check_parity(model, onnx_path, x, inputs_label=label)
        result["onnx"], result["onnx_parity"] = str(onnx_path), par
        if not par["passed"]:
            raise ExportError(f"ONNX parity failed on {label}: {'; '.join(par['failures'])}",
                              "try --dynamic-batch off or another batch; the manifest itself is unaffected")
    if int8 is not None:  # with --tensorrt: the symmetric graph and model.int8.engine instead of model.int8.onnx
        from .int8_artifact import export_int8

        result["int8"] = export_int8(folder, entry, res, images, int8, batch, tensorrt=tensorrt, fp16=fp16)
        if tensorrt:
            result["engine"] = str(folder / result["int8"]["engine"])
    elif tensorrt:
        result["engine"] = str(_build_engine(model, example, onnx_path, folder, fp16))
    return result


def parity_inputs(entry: ZooEntry, res: int, batch: int, dynamic_batch: bool,
                  images: str | Path | None) -> tuple[torch.Tensor, str]:
    """(inputs, what they are): real images when a folder is given, else seeded random inputs."""
    from ..data.images import load_images, require_images
    from ..data.transforms import normalise
    from ..deploy.parity import PARITY_IMAGES, fit_to_batch

    if images is not None:
        imgs = load_images(images, res, entry.crop_pct)
        require_images(imgs, 1)
        x = fit_to_batch(normalise(imgs.pixels[:PARITY_IMAGES], entry.mean, entry.std), batch, dynamic_batch)
        return x, f"{len(x)} images from {images}"
    n = -(-max(RANDOM_PARITY_INPUTS, batch) // batch) * batch
    x = torch.randn(n, entry.in_chans, res, res, generator=torch.Generator().manual_seed(0))
    return x, f"{n} random normal inputs (seed 0; --images uses real ones)"


def _build_engine(model: nn.Module, example: torch.Tensor, onnx_path: Path, folder: Path, fp16: bool) -> Path:
    """model.engine; on TensorRT 11 an fp16 engine is built from a half-precision graph."""
    from ..deploy.onnx_export import export_onnx
    from ..deploy.tensorrt_build import build_tensorrt_engine, needs_half_graph

    if fp16 and needs_half_graph():
        half = model.to("cuda").half()
        onnx_path = export_onnx(half, example.to("cuda").half(), folder / "model.fp16.onnx")
    return build_tensorrt_engine(onnx_path, folder / "model.engine", fp16=fp16, batch=int(example.shape[0]))
