"""The GPU check: edgeprune's TensorRT path, end to end, on a machine with an NVIDIA GPU.

    bash tools/gpu_check.sh [--out DIR] [--no-install] [--weights PATH] [--dry-run]

Steps (each recorded in DIR/gpu_check.json with pass | fail | "not run: <why>", its time and
what it measured):

  environment        versions, device fingerprint (GPU, driver, CUDA, TensorRT, CPU ISA flags)
  profile:<model>    `edgeprune profile --backend tensorrt --precision fp16` on mobilenet_v2 and
                     efficientnet_lite0 (one engine per block variant)
  stream             field images (tools/make_photo_stream.py) and a disjoint held-out set
  adapt              `edgeprune adapt` on mobilenet_v2 with its TensorRT profile: the engine is
                     built (report.json says tensorrt.built)
  parity             the adapted engine against ONNX Runtime on the held-out images
                     (deploy.parity, fp16 gate)
  timing             host latency vs GPU compute time of the engine (p50/p90/p95/p99)
  polygraphy         an independent second opinion: `polygraphy run --trt --fp16 --onnxrt`
  int8_engine        `edgeprune export --tensorrt --int8` of the adapted model calibrated on the
                     stream (symmetric QDQ graph + model.int8.engine); the engine against that
                     graph in ONNX Runtime (top-1 >= 95%) and against fp32 on the held-out
                     images, and its host vs GPU time

It never skips silently: a step that cannot run is "fail", except in --dry-run, where the steps
that need a GPU are "not run: no GPU" and the rest (environment, stream, the summary itself)
run on the CPU. Exit code: 0 when every step that ran passed, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parent.parent
MODELS = ("mobilenet_v2", "efficientnet_lite0")
ADAPT_MODEL = "mobilenet_v2"
STREAM_IMAGES, HELD_OUT_IMAGES = 600, 64  # adapt: 400 fine-tune images, 200 held out
PROFILE_BUDGET_S = 15
SUMMARY_FORMAT = "edgeprune.gpu-check"


def gpu_present() -> tuple[bool, str]:
    """(True, name) when torch sees a CUDA GPU; else (False, why)."""
    try:
        import torch
    except ImportError:
        return False, "torch is not installed"
    if not torch.cuda.is_available():
        return False, "no CUDA GPU visible to PyTorch"
    return True, torch.cuda.get_device_name(0)


class Check:
    """Runs the steps in order, records each, and writes the summary after every step."""

    def __init__(self, out: Path, dry_run: bool, has_gpu: bool):
        self.out, self.dry_run, self.has_gpu = out, dry_run, has_gpu
        self.summary: dict = {"format": SUMMARY_FORMAT, "version": 1, "dry_run": dry_run, "host": platform.node(),
                              "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "steps": {}}

    def step(self, name: str, fn: Callable[[], dict], needs_gpu: bool = True) -> dict | None:
        if needs_gpu and not self.has_gpu:
            record = {"status": "not run: no GPU" if self.dry_run else "fail", "seconds": 0.0}
            if not self.dry_run:
                record["error"] = "no CUDA GPU visible (run with --dry-run on a CPU machine)"
            return self._record(name, record)
        t0 = time.perf_counter()
        try:
            record = {"status": "pass", **fn()}
        except Exception as exc:  # every failure is recorded with its reason; the check goes on
            record = {"status": "fail", "error": f"{type(exc).__name__}: {exc}",
                      "traceback": traceback.format_exc(limit=5)}
        record["seconds"] = round(time.perf_counter() - t0, 2)
        return self._record(name, record)

    def _record(self, name: str, record: dict) -> dict:
        self.summary["steps"][name] = record
        self.write()
        mark = {"pass": "PASS", "fail": "FAIL"}.get(record["status"], "----")
        print(f"[{mark}] {name}: {record.get('error') or record['status']} ({record['seconds']:.1f} s)", flush=True)
        return record

    def failed(self) -> list[str]:
        return [n for n, r in self.summary["steps"].items() if r["status"] == "fail"]

    def write(self) -> None:
        from edgeprune.deploy.outputs import atomic_write

        self.summary["passed"] = not self.failed()
        atomic_write(self.out / "gpu_check.json", json.dumps(self.summary, indent=2, default=str) + "\n")


def run_cli(*args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    """``python -m edgeprune.cli ARGS``; a non-zero exit raises with the error line."""
    proc = subprocess.run([sys.executable, "-m", "edgeprune.cli", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)
    if proc.returncode != 0:
        lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
        raise RuntimeError(f"edgeprune {args[0]} exited {proc.returncode}: {lines[-1] if lines else '(no output)'}")
    return proc


# ------------------------------------------------------------------ steps
def environment(has_gpu: bool) -> dict:
    from edgeprune.latency.fingerprint import device_fingerprint, library_versions

    info = {"python": platform.python_version(), "libraries": library_versions(),
            "fingerprint": device_fingerprint("cuda" if has_gpu else "cpu")}
    try:
        import onnxruntime as ort

        info["onnxruntime_providers"] = ort.get_available_providers()
    except ImportError:
        info["onnxruntime_providers"] = []
    if has_gpu and "CUDAExecutionProvider" not in info["onnxruntime_providers"]:
        raise RuntimeError("onnxruntime has no CUDAExecutionProvider (onnxruntime-gpu not installed or shadowed)")
    return info


def profile_model(model: str, out: Path) -> dict:
    path = out / "profiles" / f"{model}-tensorrt-fp16.json"
    run_cli("profile", "-m", model, "--backend", "tensorrt", "--device", "cuda", "--precision", "fp16",
            "--budget", str(PROFILE_BUDGET_S), "-o", str(path))
    prof = json.loads(path.read_text())
    return {"profile": str(path), "base_ms": prof["base"], "blocks": len(prof["blocks"]),
            "execution_provider": prof["backend"]["execution_provider"], "device": prof["device"]}


def make_streams(out: Path, n: int, held_out: int) -> dict:
    for folder, count, seed in ((out / "stream", n, 0), (out / "held_out", held_out, 1)):
        subprocess.run([sys.executable, str(ROOT / "tools" / "make_photo_stream.py"), str(folder), "--n", str(count),
                        "--seed", str(seed)], check=True, capture_output=True, text=True, timeout=600)
    counts = {name: len(list((out / name).glob("*.jpg"))) for name in ("stream", "held_out")}
    if counts != {"stream": n, "held_out": held_out}:
        raise RuntimeError(f"expected {n} + {held_out} images, found {counts}")
    return {"images": counts, "source": "tools/make_photo_stream.py (seeds 0 and 1: disjoint crops)"}


def adapt_with_engine(out: Path, weights: str | None) -> dict:
    args = ["adapt", "-i", str(out / "stream"), "-m", ADAPT_MODEL, "--profile",
            str(out / "profiles" / f"{ADAPT_MODEL}-tensorrt-fp16.json"), "-k", "3", "--steps", "60",
            "--finetune-images", "400", "-o", str(out / "adapted"), "--force", "--json"]
    if weights:
        args += ["--weights", weights]
    report = json.loads(run_cli(*args, timeout=1800).stdout)
    if not (report.get("tensorrt") or {}).get("built"):
        raise RuntimeError(f"adapt did not build the engine: {report.get('tensorrt')} {report.get('errors')}")
    return {"removed_blocks": report["removed_blocks"], "tensorrt": report["tensorrt"], "onnx_parity": report["onnx_parity"],
            "fidelity": report["fidelity"], "timings": report["timings"], "artifacts": report["artifacts"]}


def held_out_batch(out: Path):
    from edgeprune.data.images import load_images
    from edgeprune.data.transforms import normalise
    from edgeprune.models.zoo import get_entry

    entry = get_entry(ADAPT_MODEL)
    imgs = load_images(out / "held_out", entry.resolution, entry.crop_pct)
    return normalise(imgs.pixels, entry.mean, entry.std)


def engine_parity(out: Path) -> dict:
    import torch

    from edgeprune.deploy.ort import ort_session, run_session
    from edgeprune.deploy.parity import FP16_GATE, compare_outputs
    from edgeprune.deploy.tensorrt_engine import engine_runner, load_engine

    x = held_out_batch(out)
    ort_out = run_session(ort_session(out / "adapted" / "model.onnx", device="cuda"), x.numpy())
    runner = engine_runner(load_engine(out / "adapted" / "model.engine"), (1, *x.shape[1:]))
    trt_out = torch.cat([runner.run(x[i:i + 1]) for i in range(len(x))]).numpy()
    result = compare_outputs(ort_out, trt_out, FP16_GATE, f"{len(x)} held-out images (fp32 ONNX Runtime CUDA vs fp16 engine)")
    if not result["passed"]:
        raise RuntimeError(f"parity failed: {'; '.join(result['failures'])} ({json.dumps(result)})")
    return {"parity": result}


def engine_timing(out: Path) -> dict:
    from edgeprune.deploy.tensorrt_engine import engine_runner, load_engine, time_engine

    loaded = load_engine(out / "adapted" / "model.engine")
    return {"timing_ms": time_engine(engine_runner(loaded, tuple(held_out_batch(out)[:1].shape))),
            "engine_precision": loaded.sidecar.get("precision")}


def polygraphy_check(out: Path) -> dict:
    cmd = ["polygraphy", "run", str(out / "adapted" / "model.onnx"), "--trt", "--fp16", "--onnxrt",
           "--atol", str(1e-2), "--rtol", str(1e-2)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    tail = proc.stdout.strip().splitlines()[-3:]
    if proc.returncode != 0:
        raise RuntimeError(f"polygraphy exited {proc.returncode}: {' | '.join(tail)}")
    return {"command": " ".join(cmd), "output_tail": tail}


INT8_ENGINE_MIN_AGREEMENT = 0.95  # the engine vs the same QDQ graph in ONNX Runtime (fp16 float layers, fused kernels)


def int8_engine(out: Path) -> dict:
    import numpy as np
    import torch

    from edgeprune.deploy.ort import ort_session, run_session
    from edgeprune.deploy.tensorrt_engine import engine_runner, load_engine, time_engine

    folder = out / "adapted"
    result = json.loads(run_cli("export", "--model", str(folder / "model.pt"), "--tensorrt", "--int8", "--images",
                                str(out / "stream"), "--json", timeout=900).stdout)
    x = held_out_batch(out)
    qdq = run_session(ort_session(folder / "model.int8.tensorrt.onnx"), x.numpy())  # what the gate judged (CPU)
    fp32 = run_session(ort_session(folder / "model.onnx", device="cuda"), x.numpy())
    runner = engine_runner(load_engine(folder / "model.int8.engine"), (1, *x.shape[1:]))
    engine = torch.cat([runner.run(x[i:i + 1]) for i in range(len(x))]).numpy()
    vs_qdq, vs_fp32 = (float(np.mean(engine.argmax(1) == ref.argmax(1))) for ref in (qdq, fp32))
    record = {"gate": result["int8"]["gate"], "engine_build": result["int8"]["engine_build"], "images": len(x),
              "agreement_vs_qdq_onnxruntime": vs_qdq, "agreement_vs_fp32": vs_fp32,
              "max_abs_diff_vs_qdq": float(np.abs(engine - qdq).max()), "timing_ms": time_engine(runner)}
    if vs_qdq < INT8_ENGINE_MIN_AGREEMENT:
        raise RuntimeError(f"the INT8 engine agrees {vs_qdq:.1%} with its QDQ graph in ONNX Runtime "
                           f"(< {INT8_ENGINE_MIN_AGREEMENT:.0%}): {json.dumps(record)}")
    return record


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path("gpu-check"))
    ap.add_argument("--dry-run", action="store_true", help="CPU only: GPU steps are recorded as not run")
    ap.add_argument("--weights", help="mobilenet_v2 pretrained state dict for adapt (default: the zoo's local weights)")
    ap.add_argument("--stream-images", type=int, default=STREAM_IMAGES)
    args = ap.parse_args(argv)
    has_gpu, gpu = gpu_present()
    if not has_gpu and not args.dry_run:
        print(f"error: {gpu}: the GPU check needs an NVIDIA GPU (use --dry-run to check the script on a CPU)", file=sys.stderr)
    check = Check(args.out, args.dry_run, has_gpu)
    check.summary["gpu"] = gpu if has_gpu else None
    check.step("environment", lambda: environment(has_gpu), needs_gpu=False)
    for model in MODELS:
        check.step(f"profile:{model}", lambda m=model: profile_model(m, args.out))
    n = args.stream_images if has_gpu else min(args.stream_images, 24)
    check.step("stream", lambda: make_streams(args.out, n, HELD_OUT_IMAGES if has_gpu else 8), needs_gpu=False)
    check.step("adapt", lambda: adapt_with_engine(args.out, args.weights))
    check.step("parity", lambda: engine_parity(args.out))
    check.step("timing", lambda: engine_timing(args.out))
    check.step("polygraphy", lambda: polygraphy_check(args.out))
    check.step("int8_engine", lambda: int8_engine(args.out))
    failed = check.failed()
    print(f"summary: {args.out / 'gpu_check.json'}; " + (f"FAILED: {', '.join(failed)}" if failed else "every step that ran passed"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
