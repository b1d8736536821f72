"""``edgeprune demo``: the embedded end-to-end example, built from the package registries only.

1. the source model ``fmnist_resnet`` (trained once on clean Fashion-MNIST train, cached);
2. a field stream: 2000 Fashion-MNIST test images with an ImageNet-C corruption (real labelled
   images, shifted), written as PNG class folders so labels give accuracy;
3. ``edgeprune profile`` of the model on this machine (ONNX Runtime);
4. ``edgeprune adapt`` on the stream: 3 blocks removed, distilled, exported, reported.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import OutputError
from ..progress import Reporter
from .adapt import AdaptResult, adapt

MODEL = "fmnist_resnet"
CORRUPTION, SEVERITY = "gaussian_noise", 3  # the source keeps about half its clean accuracy
STREAM_IMAGES = 2000


def build_stream(folder: Path, n: int = STREAM_IMAGES, corruption: str = CORRUPTION, severity: int = SEVERITY, seed: int = 0) -> Path:
    """Write ``n`` corrupted Fashion-MNIST test images as ``folder/<class>/<i>.png`` (skipped if present)."""
    from PIL import Image

    from ..research.corruptions import corrupt
    from ..research.fashion_mnist import CLASSES, load_fashion_mnist, to_rgb32

    done = folder / ".complete"
    if done.exists():
        return folder
    images, labels = load_fashion_mnist("test")
    order = np.random.default_rng(seed).permutation(len(images))[:n]
    rgb = corrupt(to_rgb32(images[order]), corruption, severity, seed=seed)
    for i, (img, label) in enumerate(zip(rgb, labels[order])):
        d = folder / f"{label}-{CLASSES[label]}"
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(d / f"{i:05d}.png")
    done.write_text(f"{corruption} severity {severity}, {n} images, seed {seed}\n")
    return folder


DEMO_MARKER = ".edgeprune-demo"


def claim_workdir(workdir: Path) -> None:
    """Use ``workdir`` only when it is new, empty or an earlier demo's (it holds the marker).

    The demo overwrites its profile and replaces its ``adapted`` folder (``--force``); in a folder
    of the user's that would destroy their files.
    """
    from ..deploy.outputs import check_output_dir

    if workdir.exists() and not workdir.is_dir():
        raise OutputError(f"demo workdir {workdir} is a file", "choose another --workdir")
    if workdir.is_dir() and any(workdir.iterdir()) and not (workdir / DEMO_MARKER).is_file():
        raise OutputError(f"demo workdir {workdir} is not empty and was not made by the demo (no {DEMO_MARKER})",
                          "choose another --workdir (a new or empty folder)")
    check_output_dir(workdir / "adapted", force=True)  # its adapt output: edgeprune's own or absent
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / DEMO_MARKER).write_text("edgeprune demo working folder\n")


def run_demo(workdir: str | Path = "edgeprune-demo", steps: int = 300, reporter: Reporter | None = None) -> AdaptResult:
    from ..latency.measurement import run_profile
    from ..latency.profiles import save_profile
    from ..research.source_models import pretrained_path
    from ..research.train_source import train_source

    rep = reporter or Reporter()
    workdir = Path(workdir)
    claim_workdir(workdir)  # before any work: never write into a folder the demo did not make
    if not pretrained_path(MODEL).is_file():
        rep.info(f"training the source model {MODEL} on clean Fashion-MNIST (once; cached in {pretrained_path(MODEL).parent})")
        res = train_source(MODEL, epochs=4, progress=lambda s, t, loss: rep.progress("training source model", s, t, loss=loss))
        rep.info(f"source model: {res['test_accuracy']:.1%} clean test accuracy in {res['seconds']:.0f} s")
    rep.info(f"field stream: {STREAM_IMAGES} Fashion-MNIST test images with {CORRUPTION} (severity {SEVERITY}) in {workdir / 'stream'}")
    stream = build_stream(workdir / "stream")
    profile_path = workdir / "profile.json"
    prof = run_profile(MODEL, backend="onnxruntime", resolution=32, budget_s=30.0,
                       progress=lambda d, t: rep.progress("profiling", d, t))
    save_profile(prof, profile_path)
    # The stream is shifted and varied: distil toward field-matched features (README, "Normalisation
    # statistics from the stream").
    rep.info("teacher statistics: re-estimated on the stream (--teacher-stats stream --student-bn reestimate)")
    return adapt(stream, workdir / "adapted", model=MODEL, profile=profile_path, blocks=3, steps=steps, force=True,
                 teacher_stats="stream", student_bn="reestimate", reporter=rep)
