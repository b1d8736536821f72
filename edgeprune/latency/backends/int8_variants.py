"""INT8 profile variants quantised as ``adapt --deploy-precision int8`` deploys them.

adapt's float-node rule (deploy/int8/rule.py) keeps an op group in float (the depthwise
convolutions) when the graph runs measurably faster that way on this device. A profile that
quantised every node would measure block savings of a graph that is never deployed, so the speed
part of the rule runs here too, once per profile: on the first variant prepared (the full model),
the fully quantised graph and one graph per op group in float are timed together, interleaved,
with the fp32 graph; a group stays in float when its graph is faster than the fully quantised one
by more than 2 standard errors of the difference of the medians (``rule.faster``). Every variant
is then quantised with those groups in float. The accuracy part of the rule needs the deployed
weights and the field images, which a profile (random weights) does not have: it runs in adapt.

The decision and its measurements are recorded in the profile (``backend.quantisation.float_rule``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

INT8_PROFILE_CALIBRATION = 8  # seeded random inputs per variant (latency does not depend on the ranges)
RULE_BUDGET_FRACTION = 0.15  # of the profile's main budget, within [RULE_BUDGET_MIN_S, RULE_BUDGET_MAX_S]
RULE_BUDGET_MIN_S, RULE_BUDGET_MAX_S = 1.0, 20.0


class Int8Variants:
    """Quantises each profile variant with the float groups the speed rule chose (module docstring).

    Args:
        threads: the profile's intra-op threads (the rule is timed as the variants are).
        timing: the profile's timing settings (budget_s, warmup_s, min_repeats, seed); the rule
            gets ``RULE_BUDGET_FRACTION`` of the budget.
    """

    def __init__(self, threads: int | None, timing: dict | None = None):
        self.threads, self.timing = threads, dict(timing or {})
        self.kept: tuple[str, ...] | None = None  # op groups in float; None until the first variant
        self.rule: dict | None = None

    def quantise(self, fp32: Path, example: torch.Tensor, workdir: Path) -> Path:
        """``fp32`` quantised (random calibration) with the chosen groups in float: the INT8 graph's path."""
        from ...deploy.int8.quantize import preprocess, quantise

        calib = random_calibration(example)
        pre = preprocess(fp32, workdir / "model.pre.onnx")
        if self.kept is None:
            self.kept, self.rule = self._decide(fp32, pre, calib, example, workdir)
        return Path(quantise(pre, workdir / "model.int8.onnx", calib, keep_float=self._float_nodes(pre))["path"])

    def _float_nodes(self, pre: Path) -> tuple[str, ...]:
        from ...deploy.int8.rule import SPEED_GROUPS

        return tuple(sorted(n for g in self.kept or () for n in SPEED_GROUPS[g](pre)))

    def budget_s(self) -> float:
        budget = RULE_BUDGET_FRACTION * float(self.timing.get("budget_s", RULE_BUDGET_MAX_S / RULE_BUDGET_FRACTION))
        return min(max(budget, RULE_BUDGET_MIN_S), RULE_BUDGET_MAX_S)

    def _decide(self, fp32: Path, pre: Path, calib: np.ndarray, example: torch.Tensor, workdir: Path) -> tuple[tuple[str, ...], dict]:
        """The speed rule on this (the first) variant: (groups kept in float, the record)."""
        from ...deploy.int8.quantize import quantise
        from ...deploy.int8.rule import SPEED_GROUPS, faster
        from ...deploy.ort import measure_onnx_latency

        rule_dir = workdir / "float-rule"
        rule_dir.mkdir(exist_ok=True)
        nodes = {g: find(pre) for g, find in SPEED_GROUPS.items()}
        graphs = {"fp32": fp32, "all": quantise(pre, rule_dir / "all.onnx", calib)["path"]}
        graphs |= {g: quantise(pre, rule_dir / f"{g}_float.onnx", calib, keep_float=n)["path"] for g, n in nodes.items() if n}
        budget = self.budget_s()
        t = self.timing
        stats = measure_onnx_latency(graphs, example, threads=self.threads, budget_s=budget, seed=int(t.get("seed", 0)),
                                     min_repeats=int(t.get("min_repeats", 20)), warmup_s=min(float(t.get("warmup_s", 1.0)), 1.0))
        rows, kept = [], []
        for group, found in nodes.items():
            row = {"group": group, "nodes": len(found), "kept_float": False, "median_ms": None, "saving_ms": None, "noise_ms": None}
            if found:
                s, q = stats[group], stats["all"]
                row |= {"kept_float": faster(s, q), "median_ms": s.median_ms, "saving_ms": q.median_ms - s.median_ms,
                        "noise_ms": 2.0 * float(np.hypot(s.median_se_ms, q.median_se_ms)), "cv": s.cv, "n": s.n}
            kept += [group] if row["kept_float"] else []
            rows.append(row)
        record = {"measured_on": "the full model (the profile's first variant)", "budget_s": budget,
                  "fp32_median_ms": stats["fp32"].median_ms, "all_median_ms": stats["all"].median_ms,
                  "all_cv": stats["all"].cv, "all_n": stats["all"].n, "groups": rows,
                  "rule": "a group stays in float when its graph is faster than the fully quantised one by more than noise_ms "
                          "(2 standard errors of the difference of the medians); saving_ms = all - group in float"}
        return tuple(kept), record

    def describe(self) -> dict:
        """The profile's ``backend.quantisation`` record."""
        from ...deploy.int8.config import QuantSettings

        return quantisation_record(QuantSettings().resolved(), list(self.kept or ()), self.rule,
                                   "adapt's speed rule (op groups in float when measured faster, float_rule); its accuracy "
                                   "rule needs the deployed weights and field images and runs in adapt only")


def quantisation_record(settings, float_groups: list[str], float_rule: dict | None, float_nodes: str) -> dict:
    """A profile's ``backend.quantisation``: the settings, the random calibration, what stays in float."""
    return {**settings.to_dict(), "calibration_images": INT8_PROFILE_CALIBRATION,
            "calibration": f"{INT8_PROFILE_CALIBRATION} random normal inputs (seed 0): latency does not depend on the ranges",
            "float_groups": float_groups, "float_rule": float_rule, "float_nodes": float_nodes}


def random_calibration(example: torch.Tensor) -> np.ndarray:
    gen = torch.Generator().manual_seed(0)
    return torch.randn(INT8_PROFILE_CALIBRATION * example.shape[0], *example.shape[1:], generator=gen).numpy()


def tensorrt_int8_graph(fp32: Path, example: torch.Tensor, workdir: Path) -> Path:
    """A TensorRT INT8 profile variant: ``fp32`` as the symmetric QDQ graph adapt's TensorRT target
    builds (random calibration), every weighted layer quantised: that target has no speed rule."""
    from ...deploy.int8.config import QuantSettings
    from ...deploy.int8.quantize import preprocess, quantise

    pre = preprocess(fp32, workdir / "model.pre.onnx")
    return Path(quantise(pre, workdir / "model.int8.tensorrt.onnx", random_calibration(example), QuantSettings.tensorrt())["path"])


def tensorrt_int8_record() -> dict:
    """A TensorRT INT8 profile's ``backend.quantisation`` record."""
    from ...deploy.int8.config import QuantSettings

    return quantisation_record(QuantSettings.tensorrt(), [], None,
                               "none for speed: adapt's TensorRT target has no speed rule (its accuracy rule runs in adapt only)")
