"""Compute floor: how long the work adapt actually needs would take at the device's matmul speed.

floor_s(phase) = FLOPs required by the phase / throughput of a timed matrix product measured at
start-up in the phase's dtype with the phase's thread count; efficiency(phase) = floor_s / measured seconds (1.0 = every FLOP at
dense-matmul speed, which convolution nets with depthwise layers, BatchNorm and activations never
reach on a CPU: those are memory-bound). FLOPs are PyTorch's own counts (``FlopCounterMode``:
2 x multiply-adds of convolutions and matmuls; elementwise work is not counted).

Work counted per phase:
* scoring: the full teacher on the prune images plus the suffixes run for each block
  (``forward_equivalents`` x one full forward per image);
* pseudo_labels: the full teacher on every fine-tune image whose label was not reused, plus the
  prefix alone on the reused ones (suffix scope);
* distillation: steps done x batch x 3 x forward FLOPs of the trained part (backward ~ 2x forward;
  for the suffix scope only the stages after the frozen prefix). Validation checks and the
  precision probe are overhead, not required work.
"""

from __future__ import annotations

import time

import torch

from .hardware import dtype_of


def matmul_throughput(precision: str = "fp32", device: str | torch.device = "cpu", n: int = 1024,
                      trials: int = 5, min_seconds: float = 0.05) -> float:
    """Best FLOP/s of an ``n x n`` by ``n x n`` matrix product in ``precision`` on ``device``.

    The best of ``trials`` short bursts (each at least ``min_seconds``): the device's speed when
    not disturbed (a loaded shared machine lowers it; the best burst is the least disturbed).
    """
    dtype = dtype_of(precision)
    dev = torch.device(device)
    a = torch.randn(n, n, device=dev).to(dtype)
    b = torch.randn(n, n, device=dev).to(dtype)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    torch.mm(a, b)  # warm-up: kernel selection, page faults
    sync()
    best = 0.0
    for _ in range(trials):
        reps = 0
        t = time.perf_counter()
        while True:
            torch.mm(a, b)
            reps += 1
            sync()
            elapsed = time.perf_counter() - t
            if elapsed >= min_seconds:
                break
        best = max(best, 2.0 * n ** 3 * reps / elapsed)
    return best


def rate_key(precision: str, threads: int | None = None) -> str:
    """``"fp32@2t"``: throughput depends on the precision and, on a CPU, the threads running it."""
    return f"{precision}@{threads or torch.get_num_threads()}t"


class ComputeFloor:
    """Collects FLOPs per phase and turns them into floor seconds and efficiencies.

    Each phase's floor uses the matmul throughput at the precision AND thread count the phase ran
    with (adapt's thread probe may drop to 1 thread when another process holds a core; the floor
    is then that of the one core it could use). ``all_cores`` efficiencies compare with the best
    throughput measured at any thread count, for the record.
    """

    def __init__(self, device: str | torch.device = "cpu"):
        self.device = device
        self.throughput: dict[str, float] = {}
        self.phases: dict[str, dict] = {}

    def measure(self, precision: str = "fp32", again: bool = False, threads: int | None = None) -> float:
        """Throughput in ``precision`` with ``threads`` (default: torch's current count); ``again``
        re-measures and keeps the best (a shared machine busy at start-up would otherwise lower the
        floor and flatter the efficiency)."""
        key = rate_key(precision, threads)
        if key not in self.throughput or again:
            before = torch.get_num_threads()
            if threads:
                torch.set_num_threads(threads)
            try:
                self.throughput[key] = max(self.throughput.get(key, 0.0), matmul_throughput(precision, self.device))
            finally:
                torch.set_num_threads(before)
        return self.throughput[key]

    def add(self, phase: str, flops: float, seconds: float, precision: str = "fp32", threads: int | None = None) -> None:
        threads = threads or torch.get_num_threads()
        rate = self.measure(precision, threads=threads)
        best = max([v for k, v in self.throughput.items() if k.startswith(f"{precision}@")] + [rate])
        floor = flops / rate if rate > 0 else float("nan")
        self.phases[phase] = {"flops": float(flops), "precision": precision, "threads": threads, "floor_s": floor,
                              "actual_s": seconds, "efficiency": floor / seconds if seconds > 0 else float("nan"),
                              "efficiency_all_cores": flops / best / seconds if seconds > 0 and best > 0 else float("nan")}

    @property
    def floor_s(self) -> float:
        return sum(p["floor_s"] for p in self.phases.values())

    def efficiency(self) -> dict[str, float]:
        out = {k: p["efficiency"] for k, p in self.phases.items()}
        actual = sum(p["actual_s"] for p in self.phases.values())
        if self.phases and actual > 0:
            out["total"] = self.floor_s / actual
        return out

    def to_dict(self) -> dict:
        return {"throughput_flops_per_s": dict(self.throughput), "phases": dict(self.phases), "floor_s": self.floor_s}
