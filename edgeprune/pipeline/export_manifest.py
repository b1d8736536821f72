"""``edgeprune export``: ONNX and/or TensorRT from a pruned-model manifest, on the target device."""

from __future__ import annotations

from pathlib import Path

import torch

from ..errors import ExportError
from ..models.surgery import load_manifest
from ..models.zoo import get_entry


def export_manifest(manifest: str | Path, onnx: bool = True, tensorrt: bool = False, fp16: bool = True, batch: int = 1,
                    dynamic_batch: bool = False) -> dict:
    """Write model.onnx (parity-checked on random inputs) and/or model.engine next to the manifest."""
    from ..deploy.onnx_export import build_tensorrt_engine, check_parity, export_onnx

    model, data = load_manifest(manifest)
    entry = get_entry(data["model"])
    folder = Path(manifest).parent if Path(manifest).is_file() else Path(manifest)
    res = int(data.get("resolution", entry.resolution))
    example = torch.zeros(batch, entry.in_chans, res, res)
    result: dict = {"manifest": str(manifest), "model": data["model"], "removed_blocks": data["removed_blocks"]}
    onnx_path = folder / "model.onnx"
    if onnx or (tensorrt and not onnx_path.exists()):
        export_onnx(model, example, onnx_path, dynamic_batch=dynamic_batch)
        gen = torch.Generator().manual_seed(0)
        par = check_parity(model, onnx_path, torch.randn(batch, entry.in_chans, res, res, generator=gen))
        result["onnx"] = str(onnx_path)
        result["onnx_parity"] = par
        if par["max_abs_diff"] > 1e-3:
            raise ExportError(f"ONNX parity failed: max |diff| {par['max_abs_diff']:.2e}")
    if tensorrt:
        engine = build_tensorrt_engine(onnx_path, folder / "model.engine", fp16=fp16)
        result["engine"] = str(engine)
    return result
