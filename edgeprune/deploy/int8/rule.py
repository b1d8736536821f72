"""Which nodes stay in float: a measured rule, not a fixed list.

1. **Speed, per op group.** The graph is quantised whole ("all") and once per op group with that
   group kept in float (``SPEED_GROUPS``: depthwise convolutions, which are often no faster in
   int8 on CPUs). The candidates and the fp32 graph are timed together, interleaved
   (``deploy.ort.measure_onnx_latency``). A group stays in float only when its candidate passes
   the gate and is faster than "all" by more than the measurement noise (2 standard errors of
   the difference of the medians), or when "all" fails the gate and it passes.
2. **Accuracy, per node.** When no candidate passes the gate, each compute node's sensitivity is
   measured on a few calibration images with ONNX Runtime's ``qdq_loss_debug``: the drop of the
   signal-to-quantisation-noise ratio (float model vs quantised model, dB) from the node's input
   to its output, i.e. how much error the node itself adds. The worst 1, 2, 4, 8, ... nodes are
   kept in float, in that order, until the gate passes.

Every candidate's latency, agreement and verdict and every node kept in float with its reason go
into the record (``choose``'s result), which the reports carry.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from ...latency.timing import Stats
from .config import Int8Gate, QuantSettings
from .gate import graph_logits, int8_verdict
from .quantize import depthwise_convs, quantise, reader_for

SPEED_GROUPS = {"depthwise_conv": depthwise_convs}  # op group -> its node names in a graph
SENSITIVITY_STEPS = (1, 2, 4, 8, 16)  # nodes kept in float, worst first, until the gate passes (capped)
SENSITIVITY_IMAGES = 8  # calibration images the per-node measurement runs on
COMPUTE_OPS = ("Conv", "Gemm", "MatMul")
ACTIVATIONS = ("Clip", "Relu")  # fused into the producing node by the quantiser


class Quantiser:
    """Quantises ``pre`` with given nodes in float, bias-corrected when asked (``bias.py``).

    The correction needs the weights' rounding, so the first ``build`` quantises ``pre`` as it is
    once more (every node quantised). Calibration runs once per source graph (a ranges cache).
    """

    def __init__(self, pre: Path, workdir: Path, calibration: np.ndarray, settings: QuantSettings, bias_correction: bool):
        self.pre, self.workdir, self.calibration, self.settings = pre, workdir, calibration, settings
        self.bias_correction, self._corrector = bias_correction, None

    def build(self, name: str, keep: tuple[str, ...]) -> dict:
        """``quantise``'s record for the graph ``name`` with ``keep`` in float."""
        if not self.bias_correction:
            return quantise(self.pre, self.workdir / f"{name}.onnx", self.calibration, self.settings, keep,
                            self.workdir / "calibration-ranges.json")
        if self._corrector is None:
            from .bias import BiasCorrector

            rounded = quantise(self.pre, self.workdir / "uncorrected.onnx", self.calibration, self.settings, (),
                               self.workdir / "calibration-ranges.json")
            self._corrector = BiasCorrector(self.pre, rounded["path"], self.calibration)
        source = self._corrector.write(self.workdir / f"{name}.corrected.onnx", keep)
        return quantise(source, self.workdir / f"{name}.onnx", self.calibration, self.settings, keep,
                        self.workdir / "calibration-ranges-corrected.json")

    def summary(self) -> dict | None:
        return None if self._corrector is None else self._corrector.summary()


def choose(fp32: Path, pre: Path, workdir: Path, calibration: np.ndarray, held: np.ndarray, settings: QuantSettings,
           gate: Int8Gate, keep_float: tuple[str, ...] = (), try_groups: bool = True, threads: int | None = None,
           timing: dict | None = None, max_sensitive_float: int = SENSITIVITY_STEPS[-1], bias_correction: bool = True) -> dict:
    """Quantise ``pre`` by the rule (module docstring); the chosen graph is ``result["path"]``.

    Args:
        fp32: the fp32 graph (the gate's reference and the latency baseline).
        pre: its pre-processed copy (``quantize.preprocess``), which is quantised.
        calibration, held: normalised (N, C, H, W) inputs: calibration images and gate images.
        keep_float: nodes that stay in float whatever the rule finds.
        try_groups: run the speed rule (else "all" only).
        max_sensitive_float: at most this many nodes kept in float by the accuracy rule.
        bias_correction: correct the biases for the weights' rounding (``bias.py``) before the
            candidates are quantised.
        threads, timing: the candidates' latency measurement (``measure_onnx_latency``).
    Returns:
        dict(passed, chosen, path, keep_float [{name, op, reason}], candidates [...], fp32 (Stats
        dict), sensitivity (None or its steps), gate (the chosen graph's verdict), quantisation,
        bias_correction (None or ``BiasCorrector.summary()``)).
    """
    quant = Quantiser(pre, workdir, calibration, settings, bias_correction)
    label = f"{len(held)} held-out images"
    reference = graph_logits(fp32, held, threads)
    keeps = {"all": tuple(keep_float)}
    group_nodes = {g: find(pre) for g, find in SPEED_GROUPS.items()} if try_groups else {}
    keeps.update({f"{g}_float": tuple(sorted(set(keep_float) | set(n))) for g, n in group_nodes.items() if n})
    built = {name: quant.build(name, keep) for name, keep in keeps.items()}
    verdicts = {name: int8_verdict(reference, graph_logits(b["path"], held, threads), gate, label) for name, b in built.items()}
    batch = reader_for(calibration, pre).batch  # a static graph runs at its own batch
    stats = (_time({"fp32": fp32, **{n: b["path"] for n, b in built.items()}}, held[:batch], threads, timing)
             if settings.target == "onnxruntime" else {})  # TensorRT's speed is the GPU's: not timed on the CPU
    chosen = _fastest_passing(verdicts, stats)
    record = {"candidates": [_candidate(n, keeps[n], stats, verdicts[n]) for n in keeps],
              "fp32": stats["fp32"].to_dict() if stats else None,
              "sensitivity": None, "quantisation": built["all"], "bias_correction": quant.summary()}
    reasons = {n: "asked (keep_float)" for n in keep_float}
    if chosen is not None and chosen != "all":
        group = chosen[: -len("_float")]
        why = (f"speed: int8 with the {group} group in float measured {stats[chosen].median_ms:.3g} ms vs "
               f"{stats['all'].median_ms:.3g} ms fully quantised" if verdicts["all"]["passed"] else
               f"accuracy: fully quantised failed the gate ({verdicts['all']['agreement']:.1%}), with the {group} group "
               f"in float it passed ({verdicts[chosen]['agreement']:.1%})")
        reasons.update({n: why for n in group_nodes[group] if n not in reasons})
    if chosen is None:
        chosen, path, verdict, record["sensitivity"], extra = _by_sensitivity(
            quant, built["all"]["path"], held, reference, gate, keep_float, threads, max_sensitive_float)
        reasons.update(extra)
    else:
        path, verdict = built[chosen]["path"], verdicts[chosen]
    ops = _op_types(pre)
    return {**record, "passed": verdict["passed"], "chosen": chosen, "path": str(path), "gate": verdict,
            "keep_float": [{"name": n, "op": ops.get(n, "?"), "reason": r} for n, r in reasons.items()]}


def _time(graphs: dict[str, str | os.PathLike], example: np.ndarray, threads: int | None, timing: dict | None) -> dict[str, Stats]:
    import torch

    from ..ort import measure_onnx_latency

    opts = {"budget_s": 15.0, "min_repeats": 20, "warmup_s": 1.0, **(timing or {})}
    return measure_onnx_latency(graphs, torch.from_numpy(np.ascontiguousarray(example, dtype=np.float32)),
                                threads=threads, **opts)


def faster(a: Stats, b: Stats) -> bool:
    """``a`` is faster than ``b`` beyond 2 standard errors of the difference of their medians."""
    return a.median_ms < b.median_ms - 2.0 * math.hypot(a.median_se_ms, b.median_se_ms)


def _fastest_passing(verdicts: dict[str, dict], stats: dict[str, Stats]) -> str | None:
    """"all" when it passes unless a passing candidate is measurably faster; without timings
    (``stats`` empty) the one with the fewest float nodes that passes ("all" first)."""
    chosen = "all" if verdicts["all"]["passed"] else None
    passing = [n for n in verdicts if n != "all" and verdicts[n]["passed"]]
    if not stats:
        return chosen or (passing[0] if passing else None)
    for name in sorted(passing, key=lambda n: stats[n].median_ms):
        if chosen is None or faster(stats[name], stats[chosen]):
            chosen = name
    return chosen


def _candidate(name: str, keep: tuple[str, ...], stats: dict[str, Stats], verdict: dict) -> dict:
    """The candidate's record; its latency fields are None when it was not timed (TensorRT target)."""
    s = stats.get(name)
    timed = {"median_ms": s.median_ms, "p90_ms": s.p90_ms, "p95_ms": s.p95_ms, "cv": s.cv, "n": s.n,
             "speedup_vs_fp32": stats["fp32"].median_ms / s.median_ms} if s is not None else dict.fromkeys(
        ("median_ms", "p90_ms", "p95_ms", "cv", "n", "speedup_vs_fp32"))
    return {"name": name, "float_nodes": len(keep), **timed, "agreement": verdict["agreement"], "passed": verdict["passed"]}


def _by_sensitivity(quant, qdq, held, reference, gate, keep_float, threads, limit):
    """Keep the most sensitive nodes in float, worst first, until the gate passes (step 2)."""
    calibration = quant.calibration
    ranked = node_sensitivity(quant.pre, qdq, calibration[:SENSITIVITY_IMAGES], quant.workdir) if limit > 0 else []
    steps, path, verdict, label = [], qdq, None, f"{len(held)} held-out images"
    cap = min(len(ranked), limit)
    for k in [k for k in SENSITIVITY_STEPS if k < cap] + ([cap] if cap else []):
        keep = tuple(sorted(set(keep_float) | {n for n, _ in ranked[:k]}))
        path = quant.build(f"sensitive-{k}", keep)["path"]
        verdict = int8_verdict(reference, graph_logits(path, held, threads), gate, label)
        steps.append({"float_nodes": k, "agreement": verdict["agreement"], "passed": verdict["passed"]})
        if verdict["passed"]:
            break
    if verdict is None:  # nothing to rank: the fully quantised graph's verdict stands
        verdict = int8_verdict(reference, graph_logits(qdq, held, threads), gate, label)
    kept = steps[-1]["float_nodes"] if steps else 0
    reasons = {n: f"accuracy: adds {drop:.1f} dB of quantisation noise (rank {i + 1} of {len(ranked)})"
               for i, (n, drop) in enumerate(ranked[:kept]) if n not in keep_float}
    record = {"images": min(len(calibration), SENSITIVITY_IMAGES), "measure": "SQNR drop across the node (dB)",
              "ranked": [{"name": n, "drop_db": d} for n, d in ranked[:16]], "steps": steps}
    return f"sensitive-{kept}", path, verdict, record, reasons


def node_sensitivity(float_graph: Path, qdq_graph: str | os.PathLike, inputs: np.ndarray, workdir: Path) -> list[tuple[str, float]]:
    """(node, dB) for each compute node, worst first: the float-vs-quantised SQNR of its input
    minus that of its output (after a fused Clip/Relu), measured with ``qdq_loss_debug``."""
    import onnx
    from onnxruntime.quantization.qdq_loss_debug import (
        collect_activations,
        compute_activation_error,
        create_activation_matching,
        modify_model_output_intermediate_tensors,
    )

    from .quantize import quiet_logs

    acts = {}
    with quiet_logs():
        for tag, graph in (("float", float_graph), ("qdq", Path(qdq_graph))):
            augmented = workdir / f"debug-{tag}.onnx"
            modify_model_output_intermediate_tensors(str(graph), str(augmented))
            acts[tag] = collect_activations(str(augmented), reader_for(inputs, graph))
        errors = compute_activation_error(create_activation_matching(acts["qdq"], acts["float"]))
    model = onnx.load(str(float_graph), load_external_data=False)
    consumers: dict[str, list] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    drops = []
    for node in model.graph.node:
        if node.op_type not in COMPUTE_OPS:
            continue
        out = node.output[0]
        after = consumers.get(out, [])
        if len(after) == 1 and after[0].op_type in ACTIVATIONS:
            out = after[0].output[0]
        sqnr_in, sqnr_out = (errors.get(t, {}).get("xmodel_err") for t in (node.input[0], out))
        if sqnr_in is not None and sqnr_out is not None:
            drops.append((node.name, float(sqnr_in - sqnr_out)))
    return sorted(drops, key=lambda d: -d[1])


def _op_types(graph: Path) -> dict[str, str]:
    import onnx

    return {n.name: n.op_type for n in onnx.load(str(graph), load_external_data=False).graph.node}
