"""deploy/int8/bias.py: the biases are corrected for the mean shift of the weights' rounding."""

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from edgeprune.deploy.int8.bias import BiasCorrector, quantised_weights
from edgeprune.deploy.int8.build import build_int8
from edgeprune.deploy.int8.config import Int8Config, Int8Gate, QuantSettings
from edgeprune.deploy.int8.gate import graph_logits
from edgeprune.deploy.int8.quantize import preprocess, quantise
from edgeprune.deploy.onnx_export import export_onnx

FAST = {"budget_s": 0.3, "min_repeats": 3, "warmup_s": 0.05}
SETTINGS = QuantSettings(reduce_range=True)  # 7-bit weights: scale = max|w| / 64 on every CPU
ROUNDED_DOWN = 0.45  # of a step: every small weight of the projection rounds down by this much


def _net():
    """conv -> ReLU (positive inputs) -> a 1x1 projection whose weights all round the same way."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 32, 1), nn.ReLU(), nn.Conv2d(32, 4, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    with torch.no_grad():
        steps = torch.randint(0, 20, (4, 32, 1, 1)).float()
        net[2].weight.copy_((steps + ROUNDED_DOWN) / 64)
        net[2].weight[:, 0] = 1.0  # sets the channel's scale: 1/64, so the others sit 0.45 steps above a level
    return net.eval()


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bias")
    fp32 = export_onnx(_net(), torch.zeros(1, 3, 8, 8), tmp / "m.onnx")
    rng = np.random.default_rng(0)
    calib, held = (rng.standard_normal((n, 3, 8, 8)).astype(np.float32) for n in (32, 64))
    return {"tmp": tmp, "fp32": fp32, "pre": preprocess(fp32, tmp / "pre.onnx"), "calib": calib, "held": held}


def _mean_error(model, graph):
    return float(np.abs((graph_logits(graph, model["held"]) - graph_logits(model["fp32"], model["held"])).mean(0)).mean())


def _projection(model):
    return next(n for n in onnx.load(str(model["pre"])).graph.node if n.op_type == "Conv" and n.input[0] != "input")


def _expected_shift(model):
    """-0.45 step times the sum of the mean hidden activations, per output channel (channel 0 is exact)."""
    net = _net()
    with torch.no_grad():
        hidden = net[1](net[0](torch.from_numpy(model["calib"]))).mean((0, 2, 3)).double().numpy()
    return np.full(4, -ROUNDED_DOWN / 64 * hidden[1:].sum())


def test_the_shift_is_the_rounding_applied_to_the_mean_input(model, tmp_path):
    q = quantise(model["pre"], tmp_path / "q.onnx", model["calib"], SETTINGS)["path"]
    proj = _projection(model)
    corrector = BiasCorrector(model["pre"], q, model["calib"])
    rounded = quantised_weights(q)[proj.name]
    weight = onnx.numpy_helper.to_array(next(t for t in onnx.load(str(model["pre"])).graph.initializer if t.name == proj.input[1]))
    np.testing.assert_allclose((rounded - weight)[:, 1:], -ROUNDED_DOWN / 64, atol=1e-6)  # what the net was built for
    np.testing.assert_allclose(corrector.shifts[proj.name], _expected_shift(model), rtol=1e-4)
    assert corrector.summary()["nodes"] == 2 and corrector.summary()["images"] == 32


def test_correction_removes_the_mean_error_of_the_int8_graph(model, tmp_path):
    # Fails without the correction: the uncorrected graph's outputs sit ~0.05 below the fp32 ones.
    cfg = Int8Config(settings=SETTINGS, try_groups=False, max_sensitive_float=0, gate=Int8Gate(0.01), timing=FAST)
    plain = build_int8(model["fp32"], tmp_path / "plain.onnx", model["calib"], model["held"],
                       Int8Config(settings=SETTINGS, try_groups=False, max_sensitive_float=0, gate=Int8Gate(0.01),
                                  timing=FAST, bias_correction=False))
    corrected = build_int8(model["fp32"], tmp_path / "corrected.onnx", model["calib"], model["held"], cfg)
    assert plain["calibration"]["bias_correction"] is None and corrected["calibration"]["bias_correction"]["nodes"] == 2
    before, after = _mean_error(model, tmp_path / "plain.onnx"), _mean_error(model, tmp_path / "corrected.onnx")
    expected = float(np.abs(_expected_shift(model)).mean())
    assert before > expected / 2 and after < before / 4


def test_nodes_kept_in_float_keep_their_bias(model, tmp_path):
    q = quantise(model["pre"], tmp_path / "q.onnx", model["calib"], SETTINGS)["path"]
    corrector = BiasCorrector(model["pre"], q, model["calib"])
    proj = _projection(model)

    def bias(path):
        m = onnx.load(str(path))
        node = next(n for n in m.graph.node if n.name == proj.name)
        return onnx.numpy_helper.to_array(next(t for t in m.graph.initializer if t.name == node.input[2]))
    original = bias(model["pre"])
    np.testing.assert_array_equal(bias(corrector.write(tmp_path / "keep.onnx", keep_float=(proj.name,))), original)
    np.testing.assert_allclose(bias(corrector.write(tmp_path / "all.onnx")), original - corrector.shifts[proj.name], rtol=1e-6)
