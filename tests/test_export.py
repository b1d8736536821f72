"""deploy/: atomic ONNX export, the parity gate, ONNX Runtime sessions and latency, TensorRT refusal."""

import os

import numpy as np
import pytest
import torch
from torch import nn

from edgeprune.deploy.onnx_export import export_onnx
from edgeprune.deploy.ort import execution_providers, measure_onnx_latency, ort_session
from edgeprune.deploy.parity import FP32_GATE, ParityGate, check_parity, compare_outputs
from edgeprune.deploy.tensorrt_build import build_tensorrt_engine, engine_sidecar_path, tensorrt_available, tensorrt_status
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
    assert result["failures"] and "max |diff|" in result["failures"][0]
    with pytest.raises(ExportError, match="parity failed on 8 inputs: max"):
        check_parity(b, path, x, raise_on_mismatch=True)


def test_one_gate_scaled_by_the_logit_range_and_top1():
    rng = np.random.default_rng(0)
    ref = rng.normal(0, 40, size=(64, 10))  # large logits: 0.05 off is rounding, not a wrong graph
    ok = compare_outputs(ref, ref + 0.05, FP32_GATE, "64 test rows")
    assert ok["passed"] and ok["tolerance"] == pytest.approx(1e-3 + 1e-3 * np.abs(ref).max())
    assert ok["inputs"] == "64 test rows" and ok["min_top1"] == 0.99 and ok["max_rel_diff"] > 0
    swapped = ref.copy()
    swapped[:2] = swapped[:2, ::-1]  # two rows' classes changed: within no tolerance
    bad = compare_outputs(ref, swapped, ParityGate(atol=1e9, rtol=0.0))
    assert not bad["passed"] and bad["failures"] == ["top-1 agreement 96.9% < 99%"]


def _manifest(tmp_path):
    from edgeprune.models.surgery import save_manifest

    model, removed = pruned("resnet18", 32)
    save_manifest(tmp_path / "model.pt", model, "resnet18", "random", removed, resolution=32)
    return tmp_path / "model.pt"


def test_export_uses_the_same_gate_on_real_images_and_says_which(tmp_path, monkeypatch):
    from PIL import Image

    from edgeprune.pipeline.export_manifest import export_manifest

    manifest = _manifest(tmp_path)
    random_run = export_manifest(manifest, batch=2)
    par = random_run["onnx_parity"]
    assert par["passed"] and par["n"] == 16 and par["inputs"].startswith("16 random normal inputs")
    assert (par["atol"], par["rtol"], par["min_top1"]) == (FP32_GATE.atol, FP32_GATE.rtol, FP32_GATE.min_top1)
    pics = tmp_path / "pics"
    pics.mkdir()
    for i in range(5):
        Image.fromarray(np.random.default_rng(i).integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(pics / f"{i}.png")
    real = export_manifest(manifest, batch=2, images=pics)["onnx_parity"]
    assert real["passed"] and real["inputs"] == f"4 images from {pics}" and real["n"] == 4
    import edgeprune.deploy.ort as ort_mod

    real_run = ort_mod.run_session
    monkeypatch.setattr(ort_mod, "run_session", lambda s, x: real_run(s, x) + 0.5)  # a graph computing something else
    with pytest.raises(ExportError, match="ONNX parity failed on 16 random normal inputs.*max \\|diff\\| 0.5"):
        export_manifest(manifest, batch=2)


def test_one_latency_measurement_for_modules_and_graphs(tmp_path):
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Flatten()).eval()
    x = torch.randn(1, 3, 16, 16)
    path = export_onnx(model, x, tmp_path / "m.onnx")
    stats = measure_onnx_latency({"module": model, "graph": path}, x, threads=1, budget_s=0.3, warmup_s=0.05,
                                 min_repeats=5)
    for s in stats.values():
        assert s.n >= 5 and 0 < s.median_ms <= s.p90_ms <= s.p95_ms <= s.p99_ms


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
