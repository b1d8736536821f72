"""Hardware choices for distillation: precision, memory layout, threads (and the CUDA path).

Each choice is measured or checked, and falls back when the hardware cannot do it (the
measurements behind them: docs/benchmarks/design_measurements.md, "Threads", "Memory layout",
"Precision"):

* **Threads (CPU)**: the CPUs this process may run on (``sched_getaffinity``, capped by a cgroup
  CPU quota). PyTorch's default is the machine's core count, which oversubscribes a container
  limited to fewer CPUs; an explicit ``OMP_NUM_THREADS`` or an earlier ``torch.set_num_threads``
  below that count is respected. On a shared machine a second OpenMP thread can gain nothing, and
  spinning threads wait for each other at every parallel region. So, unless OMP_NUM_THREADS is
  set, ``probe_threads`` times the real training step at that count and at 1 thread and keeps the
  faster.
* **channels_last**: NHWC convolutions (oneDNN on CPU, cuDNN on GPU), faster on CPU. Numerically
  the same computation (rounding-level differences only), so it is on for every 4-D
  convolutional input.
* **Precision**: ``fp32``; ``bf16`` autocast (CPU needs native bf16 instructions, avx512_bf16 or
  amx_bf16: without them oneDNN emulates bf16 and is slower than fp32; CUDA needs compute
  capability 8.0+); ``fp16`` autocast with a GradScaler (CUDA only). ``auto`` = on CUDA bf16 where
  supported, else fp16 + GradScaler; on CPU with native bf16, a short interleaved probe of the real
  training step in fp32 and bf16 decides: bf16 only when it is faster (whether it is depends on
  the trained part's size and the thread count). A tie goes to fp32: its step reaches a larger
  share of the fp32 compute floor, and the memory bf16 would save is bounded by micro-batching
  instead (distiller.py). Weights, optimizer state and the loss stay fp32 in every mode (autocast
  only changes the matmul/conv inputs).
* **CUDA extras**: pinned host memory for the batches; no CUDA graphs / torch.compile by default
  (compile time of minutes does not pay back over 500 short steps; not measurable here).
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch

from ..errors import UsageError
from ..latency.fingerprint import available_cpus, cpu_isa_flags

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
BF16_MAX_SLOWDOWN = 0.0  # auto keeps bf16 only when its probe step is faster than fp32's (memory is bounded by micro-batches)
_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def dtype_of(precision: str) -> torch.dtype:
    return _DTYPES[precision]


def check_precision(precision: str) -> None:
    """UsageError unless ``precision`` is one of PRECISIONS (the CLI's option name in the message)."""
    if precision not in PRECISIONS:
        raise UsageError(f"--precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")


# ---------------------------------------------------------------- CPU facts
def cpu_bf16_support() -> tuple[bool, str]:
    """(native bf16 available to PyTorch on this CPU, why)."""
    try:
        capability = torch.backends.cpu.get_cpu_capability()
    except Exception:  # older torch
        capability = "unknown"
    try:
        mkldnn_bf16 = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except Exception:
        mkldnn_bf16 = False
    flags = set(cpu_isa_flags())
    native = sorted(flags & {"avx512_bf16", "amx_bf16"})
    if not torch.backends.mkldnn.is_available():
        return False, "PyTorch built without oneDNN"
    if not mkldnn_bf16:
        return False, f"oneDNN reports no bf16 support (capability {capability})"
    if not native:
        return False, f"no native bf16 instructions (capability {capability}; bf16 would be emulated, slower than fp32)"
    return True, f"native bf16 ({', '.join(native)}; capability {capability})"


def choose_threads(apply: bool = True) -> tuple[int, str]:
    """The intra-op thread count for CPU training; lowers torch's count when it oversubscribes."""
    current = torch.get_num_threads()
    cpus = available_cpus()
    if os.environ.get("OMP_NUM_THREADS"):
        return current, f"{current} (OMP_NUM_THREADS set by the user)"
    if current <= cpus:
        return current, f"{current} ({cpus} CPUs available to this process)"
    if apply:
        torch.set_num_threads(cpus)
    return cpus, f"{cpus} (torch default {current} lowered to the {cpus} CPUs available to this process)"


def to_layout(x: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """NHWC for 4-D activations when ``channels_last``; other tensors unchanged."""
    return x.contiguous(memory_format=torch.channels_last) if channels_last and x.dim() == 4 else x


# ---------------------------------------------------------------- the plan
@dataclass
class HardwarePlan:
    device: str = "cpu"
    precision: str = "fp32"  # what training actually uses: fp32 | bf16 | fp16
    requested: str = "fp32"
    channels_last: bool = True
    threads: int | None = None
    threads_auto: bool = False  # chosen here (not by OMP_NUM_THREADS): probe_threads may lower it
    grad_scaler: bool = False
    pin_memory: bool = False
    notes: list[str] = field(default_factory=list)
    probe: dict | None = None  # auto on CPU: seconds per step of each precision

    @property
    def dtype(self) -> torch.dtype:
        return _DTYPES[self.precision]

    def autocast(self):
        if self.precision == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(self.device, dtype=self.dtype)

    def grad_scaler_obj(self):
        if not self.grad_scaler:
            return None
        return torch.amp.GradScaler("cuda")

    def to_dict(self) -> dict:
        d = asdict(self)
        return d


def plan_hardware(precision: str = "fp32", device: str | torch.device = "cpu", channels_last: bool = True,
                  set_threads: bool = True) -> HardwarePlan:
    """Resolve the requested precision on ``device`` (probe decisions for ``auto`` on CPU come later).

    An explicit ``bf16``/``fp16`` the hardware cannot do falls back to fp32 with a note.
    """
    check_precision(precision)
    dev = torch.device(device).type
    plan = HardwarePlan(device=dev, requested=precision, channels_last=channels_last)
    if dev == "cpu":
        if set_threads:
            plan.threads, why = choose_threads()
            plan.threads_auto = not os.environ.get("OMP_NUM_THREADS")
            plan.notes.append(f"threads: {why}")
        ok, why = cpu_bf16_support()
        if precision == "fp16":
            plan.notes.append("fp16 autocast is CUDA-only here: using fp32")
        elif precision == "bf16":
            plan.precision = "bf16" if ok else "fp32"
            if not ok:
                plan.notes.append(f"bf16 requested but not supported natively ({why}): using fp32")
        elif precision == "auto":
            plan.notes.append(f"bf16: {why}" + ("; probing fp32 vs bf16" if ok else "; using fp32"))
            plan.precision = "auto" if ok else "fp32"  # "auto" here = decide with probe_precision()
        return plan
    if dev == "cuda":
        plan.pin_memory = True
        bf16_ok = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
        if precision == "auto":
            plan.precision = "bf16" if bf16_ok else "fp16"
        elif precision == "bf16" and not bf16_ok:
            plan.precision = "fp16"
            plan.notes.append("bf16 not supported on this GPU: fp16 autocast with a GradScaler")
        else:
            plan.precision = precision
        plan.grad_scaler = plan.precision == "fp16"
        return plan
    plan.notes.append(f"device {dev}: fp32, no layout change")
    plan.channels_last = False
    plan.precision = "fp32" if precision in ("auto", "fp32") else precision
    return plan


def probe_precision(plan: HardwarePlan, step: Callable[[HardwarePlan], None], rounds: int = 2,
                    timer: Callable[[], float] = time.perf_counter) -> HardwarePlan:
    """Resolve ``plan.precision == "auto"`` by timing ``step`` (one training step, no weight update).

    Interleaved fp32 / bf16 (order alternating each round, one warm-up each), min per precision;
    bf16 is kept only when it is faster (``BF16_MAX_SLOWDOWN`` = 0). ``step`` must leave the model
    unchanged (run it on a copy).
    """
    if plan.precision != "auto":
        return plan
    times: dict[str, list[float]] = {"fp32": [], "bf16": []}
    order = ["fp32", "bf16"]
    for r in range(rounds + 1):
        for p in (order if r % 2 == 0 else order[::-1]):
            trial = HardwarePlan(device=plan.device, precision=p, channels_last=plan.channels_last)
            t = timer()
            step(trial)
            if r:  # round 0 = warm-up (oneDNN primitive creation)
                times[p].append(timer() - t)
    best = {p: min(v) for p, v in times.items()}
    plan.probe = {**(plan.probe or {}), **{p: round(v, 4) for p, v in best.items()}}
    plan.precision = "bf16" if best["bf16"] < (1 + BF16_MAX_SLOWDOWN) * best["fp32"] else "fp32"
    plan.notes.append(f"precision auto: probe step fp32 {best['fp32']:.3f}s, bf16 {best['bf16']:.3f}s -> {plan.precision}")
    return plan


def probe_threads(plan: HardwarePlan, step: Callable[[HardwarePlan], None], rounds: int = 2,
                  timer: Callable[[], float] = time.perf_counter) -> HardwarePlan:
    """Keep ``plan.threads`` or drop to 1 thread, whichever runs ``step`` faster (min of ``rounds``).

    On a CPU shared with other busy processes, OpenMP threads wait for each other at every
    parallel region, so more threads can be slower than one (see the module docstring). Only when
    the thread count was chosen here (``threads_auto``); both times are recorded in ``plan.probe``.
    """
    n = plan.threads or torch.get_num_threads()
    if plan.device != "cpu" or not plan.threads_auto or n <= 1:
        return plan
    trial = HardwarePlan(device=plan.device, precision="fp32" if plan.precision == "auto" else plan.precision,
                         channels_last=plan.channels_last)
    times: dict[int, list[float]] = {n: [], 1: []}
    for r in range(rounds + 1):
        for k in ((n, 1) if r % 2 == 0 else (1, n)):
            torch.set_num_threads(k)
            t = timer()
            step(trial)
            if r:  # round 0 = warm-up
                times[k].append(timer() - t)
    best = {k: min(v) for k, v in times.items()}
    plan.threads = 1 if best[1] < best[n] else n
    torch.set_num_threads(plan.threads)
    plan.probe = {**(plan.probe or {}), "threads": {str(k): round(v, 4) for k, v in best.items()}}
    plan.notes.append(f"threads: probe step {n} threads {best[n]:.3f}s, 1 thread {best[1]:.3f}s -> {plan.threads}")
    return plan


# ---------------------------------------------------------------- memory
def peak_rss_mb() -> float:
    """Peak resident memory of this process in MiB (VmHWM; ru_maxrss where /proc is missing)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except (OSError, ValueError, IndexError):
        pass
    import resource
    import sys

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024.0 * 1024.0) if sys.platform == "darwin" else rss / 1024.0


def reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux ``/proc/self/clear_refs``); False where unsupported."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def release_free_memory() -> bool:
    """Hand memory freed by PyTorch back to the OS (glibc ``malloc_trim``) between phases.

    glibc keeps freed activation buffers in its heap, so a later phase's peak would stack on an
    earlier phase's leftovers; trimming makes the reported peak the largest single phase's need.
    False where it is not glibc.
    """
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.malloc_trim(0))
    except (OSError, AttributeError):
        return False

