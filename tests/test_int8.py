"""deploy/int8: static QDQ quantisation calibrated on given images, the float-node rule, the gate."""

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from edgeprune.deploy.int8.build import build_int8
from edgeprune.deploy.int8.config import (
    Int8Config,
    Int8Gate,
    QuantSettings,
    needs_reduce_range,
)
from edgeprune.deploy.int8.gate import graph_logits, int8_verdict
from edgeprune.deploy.int8.quantize import (
    ArrayCalibrationReader,
    depthwise_convs,
    float_ops,
    preprocess,
    quantise,
)
from edgeprune.deploy.onnx_export import export_onnx
from edgeprune.deploy.ort import ort_session
from edgeprune.errors import UsageError

FAST = {"budget_s": 0.3, "min_repeats": 3, "warmup_s": 0.05}


def _net():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.ReLU(),
                        nn.Conv2d(8, 16, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10))
    with torch.no_grad():
        net[-1].weight.mul_(8)  # well-separated logits: int8 rounding alone does not swap classes
    return net.eval()


def _images(n, seed):
    """Noise around a per-image colour: the random net's answer depends on the image (3 classes)."""
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((n, 3, 16, 16)) * 0.5 + rng.standard_normal((n, 3, 1, 1)) * 2).astype(np.float32)


@pytest.fixture(scope="module")
def graph(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("int8")
    fp32 = export_onnx(_net(), torch.zeros(1, 3, 16, 16), tmp / "model.onnx")
    calib, held = _images(32, seed=0), _images(64, seed=1)
    return {"tmp": tmp, "fp32": fp32, "pre": preprocess(fp32, tmp / "pre.onnx"), "calib": calib, "held": held}


def test_reader_serves_exactly_the_given_images_in_strides():
    x = np.arange(5 * 3 * 2 * 2, dtype=np.float32).reshape(5, 3, 2, 2)
    reader = ArrayCalibrationReader(x, "input", batch=2)
    assert len(reader) == 2  # the tail shorter than a batch is dropped
    got = [reader.get_next()["input"] for _ in range(2)]
    assert reader.get_next() is None and reader.served == 4
    np.testing.assert_array_equal(np.concatenate(got), x[:4])
    reader.set_range(1, 2)
    np.testing.assert_array_equal(reader.get_next()["input"], x[2:4])
    with pytest.raises(UsageError, match="calibration needs at least 2"):
        ArrayCalibrationReader(x[:1], "input", batch=2)


def test_quantised_graph_loads_and_its_ranges_come_from_the_calibration_images(graph, tmp_path):
    info = quantise(graph["pre"], tmp_path / "a.onnx", graph["calib"])
    assert info["calibration_images"] == 32 and info["settings"]["format"] == "QDQ"
    ort_session(tmp_path / "a.onnx")  # loads in ONNX Runtime
    ops = {n.op_type for n in onnx.load(str(tmp_path / "a.onnx")).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops and float_ops(tmp_path / "a.onnx") == {}
    quantise(graph["pre"], tmp_path / "b.onnx", graph["calib"] * 50)  # other images, other activation ranges

    def input_scale(path):
        m = onnx.load(str(path))
        q = next(n for n in m.graph.node if n.op_type == "QuantizeLinear" and n.input[0] == "input")
        return float(onnx.numpy_helper.to_array(next(t for t in m.graph.initializer if t.name == q.input[1])))
    assert input_scale(tmp_path / "b.onnx") == pytest.approx(50 * input_scale(tmp_path / "a.onnx"), rel=1e-3)


def test_keep_float_nodes_stay_float(graph, tmp_path):
    dw = depthwise_convs(graph["pre"])
    assert len(dw) == 1
    quantise(graph["pre"], tmp_path / "q.onnx", graph["calib"], keep_float=dw)
    assert float_ops(tmp_path / "q.onnx") == {dw[0]: "Conv"}
    rec = build_int8(graph["fp32"], tmp_path / "k.onnx", graph["calib"], graph["held"],
                     Int8Config(keep_float=tuple(dw), try_groups=False, timing=FAST))
    assert rec["written"] and float_ops(tmp_path / "k.onnx") == {dw[0]: "Conv"}
    assert rec["keep_float"] == [{"name": dw[0], "op": "Conv", "reason": "asked (keep_float)"}]


def test_build_records_the_rule_and_writes_a_passing_graph(graph, tmp_path):
    rec = build_int8(graph["fp32"], tmp_path / "m.onnx", graph["calib"], graph["held"], Int8Config(timing=FAST),
                     calibration_source="32 test images")
    assert rec["written"] and rec["passed"] and rec["path"] == str(tmp_path / "m.onnx")
    assert rec["calibration"]["images"] == 32 and rec["calibration"]["source"] == "32 test images"
    assert rec["calibration"]["method"] == "minmax" and rec["calibration"]["reduce_range"] == needs_reduce_range()
    assert [c["name"] for c in rec["candidates"]] == ["all", "depthwise_conv_float"]  # the group was measured
    assert rec["chosen"] in ("all", "depthwise_conv_float") and rec["gate"]["agreement"] >= 0.97
    assert all(c["median_ms"] > 0 and c["n"] >= 3 for c in rec["candidates"])
    graph_logits(tmp_path / "m.onnx", graph["held"][:2])


def test_gate_rejects_a_broken_quantisation_and_nothing_is_written(graph, tmp_path):
    # Calibrated on inputs 1000x too small: every activation range is tiny, the int8 graph saturates.
    broken = build_int8(graph["fp32"], tmp_path / "x.onnx", graph["calib"] / 1000, graph["held"],
                        Int8Config(try_groups=False, max_sensitive_float=0, timing=FAST), failed_copy=tmp_path / "failed.onnx")
    assert not broken["passed"] and not broken["written"] and not (tmp_path / "x.onnx").exists()
    assert broken["failed_copy"] == str(tmp_path / "failed.onnx") and (tmp_path / "failed.onnx").is_file()  # to time it
    assert broken["gate"]["failures"][0].startswith("top-1 agreement with the fp32 model")
    ref = graph_logits(graph["fp32"], graph["held"])
    assert int8_verdict(ref, ref.copy(), Int8Gate())["passed"]


def test_accuracy_rule_keeps_the_sensitive_nodes_float_until_the_gate_passes(graph, tmp_path):
    rec = build_int8(graph["fp32"], tmp_path / "s.onnx", graph["calib"] / 1000, graph["held"],
                     Int8Config(try_groups=False, timing=FAST))
    sens = rec["sensitivity"]
    assert sens["ranked"] and sens["steps"] and sens["images"] == 8
    assert not sens["steps"][0]["passed"] and sens["steps"][-1]["passed"] and rec["written"]  # worst first, until it passes
    kept = {k["name"] for k in rec["keep_float"] if k["reason"].startswith("accuracy")}
    assert len(kept) == sens["steps"][-1]["float_nodes"] and set(float_ops(tmp_path / "s.onnx")) == kept
    assert [s["float_nodes"] for s in sens["steps"]] == sorted(s["float_nodes"] for s in sens["steps"])
    assert [r["drop_db"] for r in sens["ranked"]] == sorted((r["drop_db"] for r in sens["ranked"]), reverse=True)


def test_bad_settings_are_usage_errors(graph, tmp_path):
    with pytest.raises(UsageError, match="unknown calibration method"):
        quantise(graph["pre"], tmp_path / "q.onnx", graph["calib"], QuantSettings(method="magic"))
    with pytest.raises(UsageError, match="calibration-images"):
        Int8Config(calibration_images=0).validate()
    assert needs_reduce_range(["avx2", "fma"]) and not needs_reduce_range(["avx2", "avx512_vnni"])
    assert not needs_reduce_range(["asimd", "asimddp"])


def test_a_static_batch_graph_is_calibrated_gated_and_timed_at_its_batch(tmp_path):
    fp32 = export_onnx(_net(), torch.zeros(2, 3, 16, 16), tmp_path / "b2.onnx")
    rec = build_int8(fp32, tmp_path / "b2.int8.onnx", _images(8, seed=0), _images(16, seed=1), Int8Config(timing=FAST))
    assert rec["written"] and rec["calibration"]["images"] == 8 and rec["gate"]["n"] == 16
    assert ort_session(tmp_path / "b2.int8.onnx").get_inputs()[0].shape[0] == 2


def test_nodes_kept_in_float_run_in_float(tmp_path):
    """ONNX Runtime's WeightBiasQuantization would quantise a float Conv fed by a DequantizeLinear
    per tensor at load time; ort_session turns it off, so the graph runs as the rule built it."""
    import onnxruntime as ort

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.ReLU(),
                        nn.Conv2d(8, 4, 1)).eval()
    with torch.no_grad():
        net[2].weight[0].mul_(300)  # one channel 300x the others: per-tensor int8 rounds the rest to ~0
    fp32 = export_onnx(net, torch.zeros(1, 3, 8, 8), tmp_path / "m.onnx")
    pre = preprocess(fp32, tmp_path / "pre.onnx")
    dw = depthwise_convs(pre)
    qdq = quantise(pre, tmp_path / "q.onnx", _images(16, 0)[:, :, :8, :8], keep_float=dw)["path"]
    x = _images(4, 1)[:, :, :8, :8]
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # the QDQ graph as written
    written = ort.InferenceSession(qdq, opts, providers=["CPUExecutionProvider"])
    as_built = np.concatenate([written.run(None, {"input": x[i:i + 1]})[0] for i in range(4)])
    ours = graph_logits(qdq, x)
    rel = np.abs(ours - as_built).max() / np.abs(as_built).max()
    assert rel < 0.05, f"the float depthwise conv did not run as written (relative error {rel:.2f})"
