"""Where the units of a sweep or a benchmark run: serially in this process, or as Ray tasks.

One mechanism for both ``edgeprune sweep`` and ``tools/bench.py``: a unit is a JSON-able set of
parameters and a target function (``"module:function"``) that turns them into a JSON-able result.
``run_units`` runs every unit once, in order of submission, and calls ``on_done`` in this process
as each finishes, so the caller writes its results table unit by unit.

- ``local``: one after the other, in this process.
- ``ray``: each unit a Ray task declaring its ``num_cpus`` / ``num_gpus``; a local Ray is started on
  demand (``workers`` CPUs) and stopped afterwards, or ``address`` joins a running cluster (whose
  workers must have edgeprune installed). At most as many units are in flight as the cluster has
  room for, so ``should_start`` (a time budget) is asked before each one starts.

Both run a unit through the same ``execute``: it fixes the torch thread count to the unit's CPUs
(so the arithmetic, and the results, are the same on either engine) and records the worker (host,
device fingerprint, load average before and after): timings from units on shared workers are
only comparable within a unit.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import socket
import sys
import time
import traceback
from dataclasses import dataclass, field
from typing import Callable

from ..errors import BackendUnavailable, UsageError

ENGINES = ("local", "ray")
INSTALL_HINT = "install it with `pip install 'edgeprune[fleet]'` (or `pip install ray`), or use --engine local"


@dataclass
class UnitSpec:
    """One unit: ``params`` go to the target; ``key`` (a hash of them by default) identifies it for resume."""

    params: dict
    num_cpus: float = 1.0
    num_gpus: float = 0.0
    key: str = field(default="")

    def __post_init__(self):
        if not self.key:
            self.key = unit_key(self.params)


def unit_key(params: dict) -> str:
    """A stable 16-hex-digit hash of the parameters (JSON with sorted keys)."""
    return hashlib.sha256(json.dumps(params, sort_keys=True, default=str).encode()).hexdigest()[:16]


def worker_info() -> dict:
    """The machine a unit runs on: host, pid, device slug and fingerprint essentials, load average."""
    from ..latency.fingerprint import device_fingerprint, device_slug

    fp = device_fingerprint("cpu")
    return {"host": socket.gethostname(), "pid": os.getpid(), "device": device_slug(fp), "cpu": fp["cpu"],
            "cpu_isa": fp["cpu_isa"], "logical_cores": fp["logical_cores"], "load_avg_start": list(os.getloadavg())}


def _resolve(target: str) -> Callable[[dict], dict]:
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def execute(target: str, params: dict, paths: list[str], threads: int | None) -> dict:
    """Run one unit (in a Ray worker or in this process): {status, result | error, worker}."""
    for p in reversed(paths):  # e.g. tools/ for the benchmark's units
        if p not in sys.path:
            sys.path.insert(0, p)
    old_omp = os.environ.get("OMP_NUM_THREADS")
    if threads:
        import torch

        os.environ["OMP_NUM_THREADS"] = str(threads)  # adapt's thread choice respects it (distill/hardware.py)
        torch.set_num_threads(threads)
    worker = worker_info()
    t = time.perf_counter()
    try:
        out = {"status": "ok", "result": _resolve(target)(params)}
    except Exception as exc:  # a failed unit is recorded and the sweep goes on
        out = {"status": "failed", "error": f"{type(exc).__name__}: {exc}",
               "traceback": traceback.format_exc(limit=8)[-4000:]}
    finally:
        if threads:
            if old_omp is None:
                os.environ.pop("OMP_NUM_THREADS", None)
            else:
                os.environ["OMP_NUM_THREADS"] = old_omp
    worker.update(seconds=time.perf_counter() - t, load_avg_end=list(os.getloadavg()))
    out["worker"] = worker
    return out


def require_ray():
    """The ray module, or BackendUnavailable saying how to install it."""
    try:
        import ray
    except ImportError:
        raise BackendUnavailable("--engine ray needs Ray, which is not installed", INSTALL_HINT) from None
    return ray


def run_units(units: list[UnitSpec], target: str, engine: str = "local", *, on_done: Callable[[UnitSpec, dict], None],
              should_start: Callable[[], bool] | None = None, address: str | None = None, workers: int | None = None,
              paths: list[str] | None = None) -> list[UnitSpec]:
    """Run ``units`` with ``target`` on ``engine``; ``on_done(unit, outcome)`` as each finishes.

    Returns:
        The units not started because ``should_start`` said no (a time budget).
    """
    if engine not in ENGINES:
        raise UsageError(f"--engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    paths = list(paths or [])
    if engine == "local":
        for i, unit in enumerate(units):
            if should_start is not None and not should_start():
                return units[i:]
            on_done(unit, execute(target, unit.params, paths, _threads(unit)))
        return []
    return _run_ray(units, target, on_done, should_start, address, workers, paths)


def _threads(unit: UnitSpec) -> int:
    return max(1, int(unit.num_cpus))


def _run_ray(units, target, on_done, should_start, address, workers, paths) -> list[UnitSpec]:
    ray = require_ray()
    started_here = not ray.is_initialized()
    if started_here:
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        kwargs = dict(include_dashboard=False, log_to_driver=False, logging_level="ERROR", configure_logging=True)
        try:
            if address:
                ray.init(address=address, **kwargs)
            else:
                ray.init(num_cpus=workers or _default_workers(), **kwargs)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            where = f"the Ray cluster at {address}" if address else "a local Ray"
            raise BackendUnavailable(f"cannot start or join {where}: {str(exc).strip().splitlines()[0][:200]}",
                                     "check --address (ray://HOST:10001 or HOST:6379), or use --engine local") from None
    try:
        remote = ray.remote(execute)
        room = ray.cluster_resources().get("CPU", 1.0)
        capacity = max(1, int(room // max(u.num_cpus for u in units))) if units else 1
        queue, pending = list(units), {}
        while queue or pending:
            while queue and len(pending) < capacity and (should_start is None or should_start()):
                unit = queue.pop(0)
                ref = remote.options(num_cpus=unit.num_cpus, num_gpus=unit.num_gpus).remote(
                    target, unit.params, paths, _threads(unit))
                pending[ref] = unit
            if not pending:
                break
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                on_done(pending.pop(ref), ray.get(ref))
        return queue
    finally:
        if started_here:
            ray.shutdown()


def _default_workers() -> int:
    from ..latency.fingerprint import available_cpus

    return available_cpus()
