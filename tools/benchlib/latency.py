"""Latency saving of each removed-block set: ONNX Runtime CPU, 1 thread, interleaved medians."""

from __future__ import annotations

import torch

from edgeprune.models.surgery import remove_blocks


def removed_key(removed) -> str:
    return "|".join(sorted(removed))


class LatencyCache:
    """``measure(model, sets)`` exports each not-yet-measured set once and times them together with
    the full model in one interleaved run; LS = (T_full - T_set) / T_full of that run."""

    def __init__(self, budget_s: float):
        self.budget_s = budget_s
        self.saving: dict[str, float] = {"": 0.0}
        self.details: dict[str, dict] = {}

    def measure(self, model, removed_sets) -> None:
        from edgeprune.deploy.ort import measure_onnx_latency

        todo = sorted({removed_key(r): list(r) for r in removed_sets if removed_key(r) not in self.saving}.items())
        if not todo:
            return
        variants = {key or "full": remove_blocks(model, removed) for key, removed in [("", [])] + todo}
        stats = measure_onnx_latency(variants, torch.zeros(1, 3, 32, 32), threads=1, budget_s=self.budget_s, warmup_s=0.5)
        base = stats["full"].median_ms
        for key, _ in todo:
            s = stats[key]
            self.saving[key] = (base - s.median_ms) / base
            self.details[key] = {"full_ms": base, "pruned_ms": s.median_ms, "cv": s.cv, "n": s.n}

    def fill(self, teacher, rows: list[dict]) -> None:
        """Measure every row's removed set, then set its LS (%). Test-time adaptation rows pay their
        adaptation at inference: effective time (1 - LS) x slowdown, so LS_eff = 1 - (1 - LS) x slowdown."""
        self.measure(teacher, [r["removed"] for r in rows])
        for r in rows:
            ls = self.saving[removed_key(r["removed"])]
            r["latency_saving_model"] = ls * 100
            if r.get("tta"):
                ls = 1.0 - (1.0 - ls) * r["tta_slowdown"]
            r["latency_saving"] = ls * 100
