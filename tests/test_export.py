"""export.py: atomic ONNX export, parity with PyTorch, execution providers, TensorRT refusal."""

import os

import numpy as np
import pytest
import torch
from torch import nn

from edgeprune.deploy.onnx_export import (
    build_tensorrt_engine,
    check_parity,
    engine_sidecar_path,
    execution_providers,
    export_onnx,
    ort_session,
    tensorrt_available,
    tensorrt_status,
)
from edgeprune.errors import BackendUnavailable, ExportError, UsageError
from edgeprune.models.blocks import find_blocks
from edgeprune.models.surgery import remove_blocks
from edgeprune.models.zoo import load_model


def pruned(name, res, every=2):
    model, entry, _ = load_model(name, weights="random")
    x = torch.randn(1, 3, res, res)
    blocks = find_blocks(model, entry, x)
    removed = [b.name for b in blocks[::every]]
    return remove_blocks(model, removed), removed


@pytest.mark.parametrize("name,res", [("resnet18", 32), ("mobilenet_v2", 64), ("timm:tf_efficientnet_lite0", 64)])
def test_export_and_parity_with_identity_blocks(tmp_path, name, res):
    model, removed = pruned(name, res)
    assert removed and all(isinstance(model.get_submodule(n), nn.Identity) for n in removed)
    torch.manual_seed(0)
    x = torch.randn(4, 3, res, res)
    path = export_onnx(model, x[:1], tmp_path / "sub" / "model.onnx", dynamic_batch=True)
    assert path == tmp_path / "sub" / "model.onnx" and path.is_file()
    assert os.listdir(tmp_path / "sub") == ["model.onnx"]  # no temporary left behind
    result = check_parity(model, path, x)
    assert result["passed"] and result["top1_agreement"] == 1.0 and result["n"] == 4
    assert result["max_abs_diff"] < 1e-3
    assert set(result) >= {"max_abs_diff", "top1_agreement", "n"}


@pytest.mark.slow
def test_vit_exports_even_under_no_grad(tmp_path):
    model, _ = pruned("vit_b_16", 224, every=4)
    nn.init.normal_(model.heads.head.weight)  # torchvision zero-inits the head: make parity meaningful
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():  # the fused attention fast path must not reach the legacy exporter
        path = export_onnx(model, x[:1], tmp_path / "vit.onnx", dynamic_batch=True, exporters=("legacy",))
    assert check_parity(model, path, x)["passed"]


def test_static_batch_graph_is_fed_in_chunks(tmp_path):
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 5)).eval()
    path = export_onnx(model, torch.randn(1, 3, 16, 16), tmp_path / "tiny.onnx")
    session = ort_session(path, threads=1)
    assert session.get_inputs()[0].shape[0] == 1
    result = check_parity(model, path, torch.randn(3, 3, 16, 16))
    assert result["passed"] and result["n"] == 3


def test_dynamic_batch_session_runs_any_batch(tmp_path):
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten()).eval()
    path = export_onnx(model, torch.randn(1, 3, 8, 8), tmp_path / "dyn.onnx", dynamic_batch=True)
    out = ort_session(path).run(None, {"input": np.zeros((5, 3, 8, 8), np.float32)})[0]
    assert out.shape == (5, 4 * 6 * 6)


def test_parity_failure_is_reported_or_raised(tmp_path):
    a = nn.Sequential(nn.Flatten(), nn.Linear(12, 3)).eval()
    b = nn.Sequential(nn.Flatten(), nn.Linear(12, 3)).eval()
    path = export_onnx(a, torch.randn(1, 3, 2, 2), tmp_path / "a.onnx", dynamic_batch=True)
    x = torch.randn(8, 3, 2, 2)
    result = check_parity(b, path, x)
    assert not result["passed"] and result["max_abs_diff"] > 1e-3
    with pytest.raises(ExportError, match="parity failed"):
        check_parity(b, path, x, raise_on_mismatch=True)


class Broken(nn.Module):
    def forward(self, x):
        raise RuntimeError("cannot trace me")


def test_failed_export_raises_and_keeps_the_old_file(tmp_path):
    target = tmp_path / "model.onnx"
    target.write_bytes(b"previous good graph")
    with pytest.raises(ExportError, match="cannot trace me"):
        export_onnx(Broken(), torch.randn(1, 3, 4, 4), target, exporters=("legacy",))
    assert target.read_bytes() == b"previous good graph"
    assert os.listdir(tmp_path) == ["model.onnx"]


def test_execution_providers_never_fall_back_silently():
    assert execution_providers("cpu") == ["CPUExecutionProvider"]
    with pytest.raises(UsageError, match="unknown onnxruntime device"):
        execution_providers("tpu")
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("onnxruntime-gpu installed")
    with pytest.raises(BackendUnavailable, match="CUDAExecutionProvider"):
        execution_providers("cuda")


@pytest.mark.skipif(tensorrt_available(), reason="TensorRT is usable here")
def test_tensorrt_unavailable_is_a_clear_error(tmp_path):
    from edgeprune.latency.backends import get_backend

    ok, reason = tensorrt_status()
    assert not ok and reason
    onnx = export_onnx(nn.Sequential(nn.Flatten()), torch.randn(1, 3, 2, 2), tmp_path / "m.onnx")
    with pytest.raises(BackendUnavailable, match="TensorRT is unavailable") as err:
        build_tensorrt_engine(onnx, tmp_path / "m.engine")
    assert err.value.exit_code == 7 and err.value.hint
    assert not (tmp_path / "m.engine").exists()
    with pytest.raises(BackendUnavailable):
        get_backend("tensorrt", device="cuda")
    with pytest.raises(BackendUnavailable, match="GPU"):
        get_backend("tensorrt", device="cpu")


def test_engine_sidecar_name():
    assert engine_sidecar_path("out/model.engine").name == "model.engine.json"
