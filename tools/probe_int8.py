"""Why an INT8 graph disagrees with its fp32 graph: one row per quantisation variant, same images.

For efficientnet_lite0 (real weights) on bench_int8.py's photo stream and split (calibration: the
first 256 fine-tune images; the 300 held-out images for agreement), it quantises the fp32 ONNX
graphs given (the original by default; `--pruned` removes the named blocks; `--graph` adds any
exported graph of the same model, e.g. a distilled one) and prints held-out agreement with the
fp32 graph (all / confident images, KL) for:

- `plain`: static QDQ as before the fix (reduce_range on this CPU, no bias correction)
- `bias-corrected`: the default (deploy/int8/bias.py)
- `8-bit weights`: reduce_range off (u8s8 products can saturate on AVX2 without VNNI), as ONNX
  Runtime runs it and as written (graph optimisations off: the QDQ arithmetic in float)
- `depthwise in float`: bias-corrected with the depthwise convolutions excluded, run with and
  without ONNX Runtime's WeightBiasQuantization optimiser

    python tools/probe_int8.py [--pruned blocks.1.1,blocks.2.1,blocks.4.1] [--distil STEPS] [--graph NAME=PATH ...] [--rows ...]

`--distil STEPS` also distils the pruned model (adapt's prepare, score and distil stages on the
same stream and split, teacher statistics "source", the `--pruned` blocks) and probes it: the
model `adapt --deploy-precision int8` would quantise.

Writes JSON lines to --out (default out/probe_int8.jsonl) and prints them.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

TOOLS = Path(__file__).resolve().parent
sys.path.insert(0, str(TOOLS.parent))

ROWS = ("plain", "bias-corrected", "8-bit-weights", "depthwise-float")


def data(stream: Path, entry, calibration: int = 256):
    from edgeprune.data.images import load_images
    from edgeprune.data.split import split_indices
    from edgeprune.data.transforms import normalise

    imgs = load_images(stream, 224, entry.crop_pct)
    parts = split_indices(len(imgs.pixels), prune=64, finetune=236, seed=0)  # bench_int8.py's split (300 fine-tune)
    finetune = list(parts.prune) + list(parts.finetune)
    norm = lambda idx: normalise(imgs.pixels[idx], entry.mean, entry.std).numpy()  # noqa: E731
    return norm(finetune[:calibration]), norm(list(parts.held_out))


def session_logits(path, inputs, disabled=(), optimise=True):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    if not optimise:
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    s = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"], disabled_optimizers=list(disabled))
    name = s.get_inputs()[0].name
    return np.concatenate([s.run(None, {name: inputs[i:i + 1]})[0] for i in range(len(inputs))])


def agreement(reference, logits) -> dict:
    from edgeprune.pipeline.fidelity import fidelity_metrics

    m = fidelity_metrics(torch.from_numpy(reference), torch.from_numpy(logits))
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in m.items() if k != "top5_overlap"}


def probe(name: str, fp32: Path, calib, held, rows, work: Path):
    from edgeprune.deploy.int8.config import QuantSettings
    from edgeprune.deploy.int8.quantize import depthwise_convs, preprocess
    from edgeprune.deploy.int8.rule import Quantiser

    pre = preprocess(fp32, work / f"{name}.pre.onnx")
    reference = session_logits(fp32, held)
    wbq = ["WeightBiasQuantization"]
    out = []

    def row(variant, path, **kw):
        rec = {"graph": name, "variant": variant, **agreement(reference, session_logits(path, held, **kw))}
        print(json.dumps(rec), flush=True)
        out.append(rec)

    for variant, settings, corrected in (("plain", QuantSettings(), False), ("bias-corrected", QuantSettings(), True),
                                         ("8-bit-weights", QuantSettings(reduce_range=False), False)):
        if variant not in rows:
            continue
        q = Quantiser(pre, work / f"{name}-{variant}", calib, settings, corrected)
        q.workdir.mkdir()
        path = q.build("all", ())["path"]
        row(variant, path, disabled=wbq)
        if variant == "8-bit-weights":
            row(variant + " (as written: QDQ in float)", path, optimise=False)
    if "depthwise-float" in rows:
        q = Quantiser(pre, work / f"{name}-dw", calib, QuantSettings(), True)
        q.workdir.mkdir()
        path = q.build("dw", tuple(depthwise_convs(pre)))["path"]
        row("depthwise-float (WeightBiasQuantization off)", path, disabled=wbq)
        row("depthwise-float (WeightBiasQuantization on: ONNX Runtime's default)", path)
    return out


def distilled(stream: Path, blocks: list[str], steps: int, work: Path) -> Path:
    """The pruned model distilled for ``steps`` steps, exported to ONNX (adapt's stages)."""
    import dataclasses

    from edgeprune.deploy.onnx_export import export_onnx
    from edgeprune.pipeline.options import AdaptOptions, adapt_recipe
    from edgeprune.pipeline.prepare import prepare
    from edgeprune.pipeline.stages import distil, score

    profile = next((TOOLS.parent / "profiles").glob("*/efficientnet_lite0-onnxruntime-fp32-b1-r224.json"))
    opts = AdaptOptions(stream, output=work / "unused", model="efficientnet_lite0", profile=profile, blocks=len(blocks),
                        finetune_images=300, recipe=adapt_recipe(teacher_stats="source", precision="fp32", steps=steps))
    prep = prepare(opts)
    scored = score(prep)
    scored = dataclasses.replace(scored, plan=dataclasses.replace(scored.plan, removed=list(blocks)))  # the bench's plan
    result = distil(prep, scored)
    return export_onnx(result.student, torch.zeros(1, 3, 224, 224), work / f"distilled-{steps}.onnx")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--stream", default=str(TOOLS.parent / "out" / "bench_int8" / "stream-600"))
    ap.add_argument("--pruned", default="", help="comma-separated blocks: also probe the original with them removed")
    ap.add_argument("--distil", type=int, default=0, help="also distil the pruned model for this many steps")
    ap.add_argument("--graph", action="append", default=[], help="NAME=PATH of another exported lite0 graph")
    ap.add_argument("--rows", default=",".join(ROWS))
    ap.add_argument("--no-original", action="store_true")
    ap.add_argument("--out", default=str(TOOLS.parent / "out" / "probe_int8.jsonl"))
    args = ap.parse_args(argv)
    from edgeprune.deploy.onnx_export import export_onnx
    from edgeprune.models.surgery import remove_blocks
    from edgeprune.models.zoo import load_model

    model, entry, _ = load_model("efficientnet_lite0")
    stream = Path(args.stream)
    if not stream.exists():
        sys.path.insert(0, str(TOOLS))
        from make_photo_stream import make_stream

        make_stream(stream, n=600, mix=("clean", "fog", "gaussian_noise"))
    calib, held = data(stream, entry)
    rows = args.rows.split(",")
    results = []
    with tempfile.TemporaryDirectory(prefix="probe-int8-") as scratch:
        work, example = Path(scratch), torch.zeros(1, 3, 224, 224)
        graphs = {} if args.no_original else {"original": export_onnx(model, example, work / "original.onnx")}
        if args.pruned:
            graphs["pruned"] = export_onnx(remove_blocks(model, args.pruned.split(",")), example, work / "pruned.onnx")
        if args.distil:
            graphs[f"distilled-{args.distil}"] = distilled(stream, args.pruned.split(","), args.distil, work)
        graphs.update({g.split("=", 1)[0]: Path(g.split("=", 1)[1]) for g in args.graph})
        for name, path in graphs.items():
            results += probe(name, path, calib, held, rows, work)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("".join(json.dumps(r) + "\n" for r in results))


if __name__ == "__main__":
    main()
