"""tools/bench_int8.py's TensorRT-target option: the symmetric graph built as adapt builds it, its
agreement measured in ONNX Runtime, and the table that sets it beside the CPU graph."""

import sys
from dataclasses import replace
from pathlib import Path

import onnx
import pytest
import torch

from edgeprune.deploy.int8.config import Int8Config, Int8Gate
from edgeprune.deploy.int8.gate import graph_logits
from edgeprune.deploy.int8.tensorrt_qdq import tensorrt_qdq_problems
from edgeprune.deploy.onnx_export import export_onnx
from edgeprune.pipeline.fidelity import fidelity_metrics

from test_int8 import _images, _net

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

import bench_int8  # noqa: E402
from bench_int8_tables import tensorrt_table  # noqa: E402


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bench-int8")
    fp32 = export_onnx(_net(), torch.zeros(1, 3, 16, 16), tmp / "small-pruned.onnx")
    held = _images(64, 1)
    rec = bench_int8.tensorrt_graph(fp32, tmp / "small-pruned", _images(32, 0), held, Int8Config(), "32 test images")
    return {"fp32": fp32, "held": held, "record": rec}


def test_tensorrt_graph_is_the_symmetric_target_and_gated(built):
    rec = built["record"]
    assert rec["calibration"]["target"] == "tensorrt" and rec["calibration"]["symmetric"]
    assert rec["passed"] and rec["path"].endswith("small-pruned.int8.tensorrt.onnx")
    assert tensorrt_qdq_problems(rec["path"])[1] == []
    assert rec["candidates"][0]["median_ms"] is None  # not timed on the CPU


def test_tensorrt_graph_failing_the_gate_is_kept_for_its_agreement(tmp_path):
    net = _net()
    with torch.no_grad():  # near-tied logits: int8 rounding swaps classes, so a 100% gate fails
        net[-1].weight.div_(800)
        net[-1].bias.zero_()
    fp32 = export_onnx(net, torch.zeros(1, 3, 16, 16), tmp_path / "m.onnx")
    strict = replace(Int8Config(max_sensitive_float=0), gate=Int8Gate(min_agreement=1.0))
    held = _images(64, 1)
    rec = bench_int8.tensorrt_graph(fp32, tmp_path / "m", _images(32, 0), held, strict, "32 test images")
    assert not rec["passed"] and not rec["written"], rec["gate"]
    assert Path(rec["failed_copy"]).name == "m.int8.tensorrt-failed.onnx" and not (tmp_path / "m.int8.tensorrt.onnx").exists()
    assert graph_logits(rec["failed_copy"], held).shape == (64, 10)


def test_fidelity_record_counts_the_reference_classes(built):
    ref = torch.from_numpy(graph_logits(built["fp32"], built["held"]))
    got = torch.from_numpy(graph_logits(built["record"]["path"], built["held"]))
    f = bench_int8._fid({"fp32_pruned": ref, "int8_tensorrt_pruned": got}, "fp32_pruned", "int8_tensorrt_pruned",
                        fidelity_metrics)
    assert f["agreement"] == pytest.approx(built["record"]["gate"]["agreement"])
    assert f["reference_top1_classes"] == len(set(ref.argmax(1).tolist())) > 1
    assert bench_int8._fid({"a": ref}, "a", "missing", fidelity_metrics) is None


def test_tensorrt_table_sets_the_symmetric_graph_beside_the_cpu_graph(built):
    rec = built["record"]
    cpu = {**rec, "chosen": "sensitive-2", "passed": False, "keep_float": [{}, {}],
           "candidates": [{"name": "all", "agreement": 0.9}]}
    fid = {"agreement": 0.95, "confident_agreement": 1.0, "confident_images": 12, "kl_original_adapted": 0.01}
    models = {"m": {"random_weights": True, "int8": {"pruned": cpu, "tensorrt_pruned": rec},
                    "agreement": {"int8_pruned_vs_fp32_pruned": fid,
                                  "int8_tensorrt_pruned_vs_fp32_pruned (not timed)": {**fid, "agreement": 0.5}}}}
    lines = tensorrt_table(models)
    assert "Not timed" in lines[0]
    cpu_row, trt_row = lines[4], lines[5]
    assert cpu_row.startswith("| m | random | CPU (ONNX Runtime) | `sensitive-2` (2) | 90.0% | 95.0% / 100.0% (12 images)")
    assert cpu_row.endswith("| FAILED |")
    assert trt_row.startswith("| m | random | TensorRT (symmetric) |") and "| 50.0% / 100.0%" in trt_row
    assert trt_row.endswith("| passed |")
    assert tensorrt_table({"m": {"int8": {"pruned": cpu}}}) == []  # a run without --tensorrt-graph


def test_int8_graphs_adds_the_fully_quantised_pruned_graph_when_the_rule_keeps_float_nodes(tmp_path):
    fp32 = export_onnx(_net(), torch.zeros(1, 3, 16, 16), tmp_path / "m.onnx")
    first_conv = next(n.name for n in onnx.load(str(fp32)).graph.node if n.op_type == "Conv")
    graphs = {"fp32_original": fp32, "fp32_pruned": fp32}
    config = Int8Config(keep_float=(first_conv,), timing={"budget_s": 0.3, "min_repeats": 3, "warmup_s": 0.05})
    int8, untimed = bench_int8.int8_graphs("m", graphs, tmp_path, _images(32, 0), _images(64, 1), config, "test", True)
    assert first_conv in [k["name"] for k in int8["pruned"]["keep_float"]] and not int8["pruned_full"]["keep_float"]
    assert int8["original"]["chosen"] == "all" and int8["tensorrt_pruned"]["calibration"]["target"] == "tensorrt"
    assert set(graphs) == {"fp32_original", "fp32_pruned", "int8_pruned", "int8_original", "int8_pruned_full"}
    assert all(Path(p).exists() for p in graphs.values()) and set(untimed) == {"int8_tensorrt_pruned"}
    med = {k: {"median_ms": v} for k, v in (("fp32_original", 10.0), ("fp32_pruned", 8.0), ("int8_pruned", 5.0),
                                             ("int8_original", 6.0), ("int8_pruned_full", 4.0))}
    f = bench_int8._factors(med)
    assert f["pruned_int8_vs_fp32_original"] == 2.0 and f["pruned_full_int8_vs_fp32_original"] == 2.5
