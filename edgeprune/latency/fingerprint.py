"""Which device a latency profile was measured on.

A latency saving only holds on the device it was measured on (method.md, Eq. 3), so every
profile records a fingerprint of the machine and the libraries, and profiles are filed under a
short filesystem-safe slug of it (``profiles/cpu-amd-epyc-2c/...``). The slug names the
hardware only, not library versions: a newer onnxruntime on the same machine still finds its
profiles, and the versions recorded in the fingerprint let a reader judge the difference.
"""

from __future__ import annotations

import os
import platform
import re
from importlib import metadata
from pathlib import Path


def _cpu_model() -> str:
    """The CPU's marketing name: /proc/cpuinfo on Linux, else what platform reports."""
    try:
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("model name", "Model", "Hardware", "cpu model") and value.strip():
                return value.strip()
    except OSError:
        pass
    if platform.system() == "Darwin":
        try:
            import subprocess

            out = subprocess.run(["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True, text=True, timeout=5)
            if out.returncode == 0 and out.stdout.strip():
                return out.stdout.strip()
        except (OSError, subprocess.SubprocessError):
            pass
    return platform.processor() or platform.machine() or "unknown-cpu"


# CPU features that change inference speed by a large factor (INT8 dot products, bf16, matrix
# units): two CPUs of one model name can differ in them (microcode, virtualisation masks flags).
ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "avx512_fp16",
             "amx_tile", "amx_int8", "amx_bf16",  # x86 (/proc/cpuinfo "flags")
             "asimd", "asimddp", "sve", "sve2", "i8mm", "bf16")  # Arm (/proc/cpuinfo "Features")


def cpu_isa_flags(cpuinfo: str | None = None) -> list[str]:
    """The ``ISA_FLAGS`` this CPU reports (Linux /proc/cpuinfo; [] where unreadable)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(errors="replace")
        except OSError:
            return []
    present: set[str] = set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            present.update(value.split())
    return [f for f in ISA_FLAGS if f in present]


def jetson_power_mode() -> str | None:
    """The Jetson power mode (``nvpmodel -q``), None elsewhere or when unreadable."""
    if not Path("/etc/nv_tegra_release").exists():
        return None
    try:
        import subprocess

        out = subprocess.run(["nvpmodel", "-q"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    lines = [ln.strip() for ln in out.stdout.splitlines() if ln.strip()]
    return lines[0] if out.returncode == 0 and lines else None


def available_cpus() -> int:
    """CPUs this process may use: the affinity mask (taskset, cpusets), capped by a cgroup v2/v1 CPU
    quota. The one CPU count: ONNX Runtime threads, the device fingerprint, distillation threads."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    quota = _cgroup_cpu_quota()
    if quota is not None:
        n = max(1, min(n, int(quota + 0.5)))
    return max(1, n)


def _cgroup_cpu_quota() -> float | None:
    try:
        text = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        if text and text[0] != "max":
            return float(text[0]) / float(text[1])
    except (OSError, ValueError, IndexError):
        pass
    try:
        q = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").read_text())
        p = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us").read_text())
        if q > 0 and p > 0:
            return q / p
    except (OSError, ValueError):
        pass
    return None


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def library_versions() -> dict[str, str | None]:
    """Versions of the libraries that decide latency (None = not installed)."""
    import torch

    ort = _version("onnxruntime") or _version("onnxruntime-gpu")
    return {
        "torch": torch.__version__,
        "onnxruntime": ort,
        "onnx": _version("onnx"),
        "tensorrt": _tensorrt_version(),
        "edgeprune": _version("edgeprune"),
    }


def _tensorrt_version() -> str | None:
    try:
        import tensorrt

        return tensorrt.__version__
    except Exception:  # not installed, or its native libraries do not load
        return None


def _nvidia_driver() -> str | None:
    """The NVIDIA driver version, from /proc (Linux) or nvidia-smi; None when unknown."""
    try:
        text = Path("/proc/driver/nvidia/version").read_text()
        m = re.search(r"Kernel Module\s+(?:for\s+\S+\s+)?([\d.]+)", text)
        if m:
            return m.group(1)
    except OSError:
        pass
    try:
        import subprocess

        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"], capture_output=True, text=True, timeout=10
        )
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout.strip().splitlines()[0]
    except (OSError, subprocess.SubprocessError):
        pass
    return None


def device_fingerprint(device: str = "cpu") -> dict:
    """Describe the machine a measurement runs on.

    Args:
        device: "cpu", or "cuda" / "cuda:N" for a GPU.
    Returns:
        A JSON-ready dict: ``kind`` ("cpu" | "cuda"), ``cpu`` (model name), ``cpu_isa`` (the
        ``ISA_FLAGS`` present), ``logical_cores``,
        ``torch_threads``, ``os``, ``machine``, ``python``, ``libraries`` (torch, onnxruntime, onnx,
        tensorrt, edgeprune versions); for CUDA also ``gpu`` (name), ``compute_capability``
        ("9.0"), ``gpu_memory_gb``, ``driver``, ``cuda`` and on a Jetson ``jetson_power_mode``.
    Raises:
        BackendUnavailable: CUDA asked for but not available.
    """
    import torch

    fp: dict = {
        "kind": "cpu",
        "cpu": _cpu_model(),
        "cpu_isa": cpu_isa_flags(),
        "logical_cores": available_cpus(),
        "torch_threads": torch.get_num_threads(),
        "os": f"{platform.system()} {platform.release()}",
        "machine": platform.machine(),
        "python": platform.python_version(),
        "libraries": library_versions(),
    }
    if device.startswith("cuda") or device == "tensorrt":
        from ..errors import BackendUnavailable

        if not torch.cuda.is_available():
            raise BackendUnavailable("no CUDA GPU is visible to PyTorch", "check the NVIDIA driver and install a CUDA build of torch")
        index = int(device.split(":", 1)[1]) if ":" in device else torch.cuda.current_device()
        props = torch.cuda.get_device_properties(index)
        fp.update({
            "kind": "cuda",
            "gpu": props.name,
            "compute_capability": f"{props.major}.{props.minor}",
            "gpu_memory_gb": round(props.total_memory / 2**30, 1),
            "driver": _nvidia_driver(),
            "cuda": torch.version.cuda,
        })
        if (mode := jetson_power_mode()) is not None:
            fp["jetson_power_mode"] = mode
    return fp


def _slugify(text: str) -> str:
    text = re.sub(r"\((?:r|tm|c)\)", "", text.lower())
    text = re.sub(r"\b(cpu|processor|with radeon graphics|\d+-core)\b", " ", text)
    text = re.sub(r"@.*$", "", text)  # "@ 2.20GHz": the nominal clock adds nothing to the model name
    return re.sub(r"[^a-z0-9]+", "-", text).strip("-")


def device_slug(fp: dict) -> str:
    """A short filesystem-safe name of the device, e.g. ``cpu-amd-epyc-2c`` or
    ``cuda-nvidia-h100-80gb-hbm3-sm90``.

    Args:
        fp: a ``device_fingerprint`` dict.
    Returns:
        Lower-case letters, digits and dashes only (at most 64 characters).
    """
    if fp.get("kind") == "cuda":
        cc = str(fp.get("compute_capability", "")).replace(".", "")
        slug = f"cuda-{_slugify(str(fp.get('gpu', 'gpu')))}-sm{cc}"
    else:
        slug = f"cpu-{_slugify(str(fp.get('cpu', 'cpu'))) or 'unknown'}-{int(fp.get('logical_cores', 0))}c"
    slug = re.sub(r"-+", "-", slug)
    return slug[:64].strip("-")
