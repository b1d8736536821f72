"""Benchmark of adapt's distillation fast path against the paper's plain recipe (not a test).

    python tools/bench_adapt.py [--work out/bench_adapt] [--plain-steps 12] [--skip-e2e] [--quick]

What it runs (everything in ONE process except the end-to-end CLI run, and the compared
variants interleaved so that load from other processes on the shared CPU hits them alike):

1. ``edgeprune adapt`` end to end at its defaults on efficientnet_lite0 (real ImageNet weights,
   224 px, k=3) over a stream of real photos (tools/make_photo_stream.py), in a subprocess:
   wall time, per-phase timings, peak memory, compute-floor efficiency, early stop.
2. The same prune plan in-process, then
   * pseudo-labels: plain (labels only, NCHW) and fast (labels + cached prefix, one pass,
     channels_last) alternated, 2 rounds each;
   * distillation variants stepped round-robin (one optimiser step of each in turn):
     ``plain`` (all stages, fp32, NCHW, no early stop: the paper's recipe as the code ran it; only
     ``--plain-steps`` steps are run and the 500-step time is EXTRAPOLATED from them),
     ``paper_cl`` (the same recipe in channels_last layout: same math, run to 500 steps: the
     plain recipe's accuracy), ``suffix_fp32``, ``suffix_bf16`` (suffix scope, 500 steps, no early
     stop) and ``fast`` (adapt's defaults: suffix, precision auto, early stop);
   * held-out top-1 agreement with the original model and feature MSE to the teacher, per variant.
3. The small Fashion-MNIST source models (edgeprune/research/source_models.py) when their trained weights
   are cached (tools/train_source.py): plain vs fast end to end, interleaved. Skipped with a note
   otherwise.

Writes ``--json`` (default docs/benchmarks/adapt_speed.json) and the generated tables between the
``<!-- bench:begin -->`` / ``<!-- bench:end -->`` markers of ``--md`` (prose outside is kept).
The variants' settings come from tools/benchlib/config.py (the paper's recipe and adapt's
defaults); the code is in tools/benchlib/adapt_*.py.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

if "--omp-active" not in sys.argv:  # same OpenMP wait policy as `edgeprune adapt` (set before torch loads)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
_USER_OMP = os.environ.get("OMP_NUM_THREADS")  # the end-to-end child gets the user's setting, not the study's

import torch  # noqa: E402

TOOLS = Path(__file__).resolve().parent
ROOT = TOOLS.parent
sys.path.insert(0, str(TOOLS))

from edgeprune.deploy.outputs import atomic_write  # noqa: E402

from benchlib.adapt_probes import log, machine, run_e2e, threads_ab  # noqa: E402
from benchlib.adapt_study import small_models_study, study, variants  # noqa: E402
from benchlib.adapt_tables import tables, write_md  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", default=str(ROOT / "out" / "bench_adapt"))
    ap.add_argument("--stream", default=None, help="image folder [default: WORK/stream, made by tools/make_photo_stream.py]")
    ap.add_argument("--profile", default=None, help="lite0 latency profile [default: WORK/profiles/..., profiled if missing]")
    ap.add_argument("--images", type=int, default=1300)
    ap.add_argument("--blocks", type=int, default=3)
    ap.add_argument("--finetune", type=int, default=1000, help="fine-tune images (prune images included)")
    ap.add_argument("--omp-active", action="store_true", help="keep OpenMP's default (spinning) wait policy")
    ap.add_argument("--skip-threads", action="store_true", help="skip the thread / OpenMP wait-policy A/B")
    ap.add_argument("--steps", type=int, default=500, help="distillation steps of the lite0 study (schedule scaled to it)")
    ap.add_argument("--small-models", nargs="+", default=None, help="which small source models [default: all trained]")
    ap.add_argument("--small-steps", type=int, default=500, help="distillation steps on the small source models")
    ap.add_argument("--threads", type=int, default=1, help="threads of the in-process study (1: least disturbed on a shared CPU)")
    ap.add_argument("--plain-steps", type=int, default=12, help="steps of the literal plain recipe to time (extrapolated)")
    ap.add_argument("--variants", default=",".join(variants()))
    ap.add_argument("--skip-e2e", action="store_true")
    ap.add_argument("--fresh", action="store_true", help="do not keep sections of an existing --json")
    ap.add_argument("--skip-lite0", action="store_true")
    ap.add_argument("--study-name", default="lite0", help="JSON key of the lite0 study (keep several: lite0, lite0_500, ...)")
    ap.add_argument("--skip-small", action="store_true")
    ap.add_argument("--json", default=str(ROOT / "docs" / "benchmarks" / "adapt_speed.json"))
    ap.add_argument("--md", default=str(ROOT / "docs" / "benchmarks" / "adapt_speed.md"))
    return ap.parse_args(argv)


def inputs(args) -> tuple[Path, Path]:
    """The photo stream and the lite0 profile, made on first use."""
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    stream = Path(args.stream) if args.stream else work / "stream"
    if not stream.exists():
        from make_photo_stream import make_stream

        make_stream(stream, n=args.images)
        log(f"made {args.images} photos in {stream}")
    profile = Path(args.profile) if args.profile else work / "profiles" / "efficientnet_lite0.json"
    if not profile.exists():
        log("profiling efficientnet_lite0 (once per device)")
        subprocess.run([sys.executable, "-m", "edgeprune.cli", "profile", "--model", "efficientnet_lite0", "--output",
                        str(profile), "--json"], check=True, capture_output=True)
    return stream, profile


class Results:
    """The --json document: sections this invocation writes replace those of an earlier one."""

    def __init__(self, args, command: str):
        self.args, self.path = args, Path(args.json)
        self.data = {"command": command, "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                     "machine": machine()}
        self.mine = set(self.data)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def put(self, key: str, value) -> None:
        self.mine.add(key)
        self.data[key] = value
        self.save()

    def save(self) -> None:
        data = self.data
        data["machine"]["loadavg_end"] = os.getloadavg()
        if self.path.exists() and not self.args.fresh:  # re-read: another invocation may have written since
            old = json.loads(self.path.read_text())
            data = {**{k: v for k, v in old.items() if k not in self.mine}, **{k: data[k] for k in self.mine}}
            data["commands"] = sorted(set(old.get("commands", [old.get("command", "")])) | {data["command"]})
            self.data = data
        atomic_write(self.path, json.dumps(data, indent=2, default=str))
        write_md(Path(self.args.md), tables(data))


def main(argv=None) -> None:
    args = parse_args(argv)
    # Every in-process variant at the same fixed thread count (the OpenMP variable also stops each
    # Distiller's thread probe from changing the count under the others).
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    torch.set_num_threads(args.threads)
    needs_lite0 = not (args.skip_e2e and args.skip_lite0)
    stream, profile = inputs(args) if needs_lite0 else (None, None)
    res = Results(args, "python tools/bench_adapt.py " + " ".join(sys.argv[1:] if argv is None else argv))
    if not args.skip_e2e:
        res.put("e2e", run_e2e(Path(args.work), stream, profile, _USER_OMP))
    if not args.skip_lite0:
        res.put(args.study_name, study(stream, profile, names=args.variants.split(","), blocks=args.blocks,
                                       steps=args.steps, plain_steps=args.plain_steps, finetune_n=args.finetune))
    if not args.skip_threads:
        res.put("threads", threads_ab(res.data.get("lite0", {}).get("removed_blocks") or ["blocks.3.1"]))
    if not args.skip_small:
        res.put("small_models", small_models_study(Path(args.work), args.small_models, args.blocks, args.small_steps))
    res.save()
    log(f"wrote {args.json} and {args.md}")


if __name__ == "__main__":
    main()
