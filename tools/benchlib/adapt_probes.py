"""tools/bench_adapt.py's measurements outside the in-process study: the machine, ``edgeprune adapt``
end to end in a subprocess, and the threads / OpenMP wait-policy A/B in fresh processes."""

from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import torch

from edgeprune.distill import hardware


def log(msg: str) -> None:
    print(f"[{datetime.now().strftime('%H:%M:%S')}] {msg}", flush=True)


def machine() -> dict:
    ok, why = hardware.cpu_bf16_support()
    return {"cpu": platform.processor() or platform.machine(), "cpus": hardware.available_cpus(),
            "torch_threads": torch.get_num_threads(), "torch": torch.__version__, "python": platform.python_version(),
            "bf16": why, "native_bf16": ok, "capability": torch.backends.cpu.get_cpu_capability(),
            "loadavg_start": os.getloadavg()}


E2E_KEYS = ("removed_blocks", "timings", "train_scope", "precision", "early_stop", "distillation", "compute_floor_s",
            "efficiency", "compute_floor", "peak_memory_mb", "fidelity")


def run_e2e(work: Path, stream: Path, profile: Path, user_omp: str | None) -> dict:
    """``edgeprune adapt`` at its defaults in a subprocess (with the user's OMP_NUM_THREADS, not the study's)."""
    out = Path(work) / "e2e"
    cmd = [sys.executable, "-m", "edgeprune.cli", "adapt", "--images", str(stream), "--profile", str(profile),
           "--output", str(out), "--force", "--json"]
    log("end to end: " + " ".join(cmd[2:]))
    load_start = os.getloadavg()[0]
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    if user_omp:
        env["OMP_NUM_THREADS"] = user_omp
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        return {"error": proc.stderr[-2000:], "wall_s": wall}
    r = json.loads(proc.stdout)
    return {"command": "edgeprune adapt --images STREAM --profile PROFILE --output OUT --force --json", "wall_s": wall,
            "loadavg_start": load_start, "loadavg_end": os.getloadavg()[0],
            "child_peak_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024.0,
            **{k: r[k] for k in E2E_KEYS}, "hardware": r.get("hardware"),
            "peak_memory_by_phase_mb": r.get("peak_memory_by_phase_mb"),
            "images": {k: v for k, v in r["images"].items() if k != "skipped"}, "measured_saving": r.get("measured_saving")}


_THREAD_PROBE = r"""
import json, os, sys, time, torch, torch.nn.functional as F
from edgeprune.models import zoo
from edgeprune.models.staging import split, run_stages
from edgeprune.models.surgery import remove_blocks
torch.set_num_threads(int(sys.argv[1]))
removed = sys.argv[2].split(",")
m, e, _ = zoo.load_model("efficientnet_lite0")
st = remove_blocks(m, removed); stages = split(st, e.staging)
p = min([n for n, _ in stages].index(r) for r in removed)
x = torch.randn(64, 3, 224, 224)
with torch.no_grad():
    pre = run_stages(split(m, e.staging), x, 0, p).contiguous(memory_format=torch.channels_last); tgt = m.forward_features(x)
st.to(memory_format=torch.channels_last).train()
ts = []
for i in range(4):
    t = time.perf_counter()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = run_stages(stages, pre, p)
    F.mse_loss(out.float(), tgt).backward(); st.zero_grad(set_to_none=True)
    ts.append(time.perf_counter() - t)
print(json.dumps({"step_s": ts[1:], "load": os.getloadavg()[0]}))
"""

THREAD_SETTINGS = {"2 threads, OpenMP default (spin)": ("2", None), "2 threads, OMP_WAIT_POLICY=PASSIVE": ("2", "PASSIVE"),
                   "1 thread": ("1", None)}


def _thread_probe(threads: str, wait: str | None, removed) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if wait:
        env["OMP_WAIT_POLICY"] = wait
    proc = subprocess.run([sys.executable, "-c", _THREAD_PROBE, threads, ",".join(removed)], capture_output=True,
                          text=True, env=env)
    if proc.returncode:
        return {"error": proc.stderr[-500:]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def threads_ab(removed, rounds: int = 3) -> dict:
    """Suffix step (bf16, batch 64) in fresh processes: 2 threads spinning / 2 passive / 1 thread, alternated."""
    out: dict = {k: {"median_step_s": [], "load": []} for k in THREAD_SETTINGS}
    for r in range(rounds):
        items = list(THREAD_SETTINGS.items())
        for name, (n, wait) in (items if r % 2 == 0 else items[::-1]):
            res = _thread_probe(n, wait, removed)
            if "error" in res:
                out[name]["error"] = res["error"]
                continue
            out[name]["median_step_s"].append(statistics.median(res["step_s"]))
            out[name]["load"].append(res["load"])
        log(f"threads A/B round {r}: " + ", ".join(f"{k}: {v['median_step_s'][-1:]}" for k, v in out.items()))
    return out
