"""``edgeprune models``, ``blocks`` and ``profile``: what can be pruned, and what removing it saves here."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import typer
from rich.table import Column, Table

from .console import RichReporter, emit_json, out

def models(as_json: bool = typer.Option(False, "--json", help="Machine-readable output.")):
    """List the model zoo (torchvision names, efficientnet_lite0/1/2 with real weights; timm:NAME also works)."""
    from ..models.zoo import get_entry, names

    rows = [get_entry(n) for n in names()]
    if as_json:
        emit_json([{"name": e.name, "family": e.family, "resolution": e.resolution, "feature_layer": e.feature_layer,
                     "head": e.head, "notes": e.notes} for e in rows])
        return
    # The name is what a user copies into --model: never cut it, however narrow the screen.
    name_column = Column("model", no_wrap=True, min_width=max(len(e.name) for e in rows))
    table = Table(name_column, "family", "resolution", "pre-GAP feature layer", "head", "notes")
    for e in rows:
        table.add_row(e.name, e.family, str(e.resolution), e.feature_layer, e.head, e.notes)
    out.print(table)


def blocks(
    model: str = typer.Option(..., "--model", "-m", help="Zoo name (e.g. mobilenet_v2, resnet34, efficientnet_lite0, timm:NAME)."),
    resolution: Optional[int] = typer.Option(None, help="Input size used to trace shapes.", show_default="the model's"),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
):
    """List the removable blocks of a model with parameter count and capacity gap G_i = (S - S_-i)/S."""
    import torch

    from ..models.blocks import find_blocks
    from ..models.zoo import load_model

    net, entry, _ = load_model(model, weights="random")
    res = resolution or entry.resolution
    found = find_blocks(net, entry, torch.zeros(1, entry.in_chans, res, res))
    if as_json:
        emit_json({"model": entry.name, "resolution": res, "count": len(found), "blocks": [b.to_dict() for b in found]})
        return
    block_column = Column("block", no_wrap=True, min_width=max((len(b.name) for b in found), default=5))
    table = Table("#", block_column, "type", "params", "capacity gap", "shape", title=f"{entry.name}: {len(found)} removable blocks")
    for i, b in enumerate(found):
        table.add_row(str(i), b.name, b.kind, f"{b.params:,}", f"{b.capacity_gap:.4f}", "x".join(map(str, b.shape)))
    out.print(table)


def profile(
    model: str = typer.Option(..., "--model", "-m", help="Zoo name; profiling uses random weights (latency does not depend on values)."),
    backend: str = typer.Option("onnxruntime", help="Latency backend: onnxruntime | torch | tensorrt."),
    device: str = typer.Option("cpu", help="cpu | cuda."),
    resolution: Optional[int] = typer.Option(None, help="Input resolution; must match the field images' resolution used by adapt.", show_default="the model's"),
    batch: int = typer.Option(1, help="Batch size of the timed inference."),
    precision: str = typer.Option("fp32", help="fp32 | fp16 (fp16 needs CUDA) | int8 (onnxruntime on the CPU: each variant "
                                  "statically quantised as adapt --deploy-precision int8 deploys it, calibrated on random inputs, "
                                  "with the op groups its speed rule keeps in float; tensorrt: INT8 engines)."),
    budget: Optional[float] = typer.Option(None, "--budget", help="Seconds of timing after warm-up.", show_default="scaled to the model"),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Profile JSON path.", show_default="profiles/<device>/<model>-<backend>-<precision>-b<batch>-r<res>.json"),
    as_json: bool = typer.Option(False, "--json", help="Print the profile JSON instead of a table."),
):
    """Measure the latency saving of removing each block on THIS device (run once per target device)."""
    from ..errors import OutputError
    from ..latency.measurement import run_profile
    from ..latency.profiles import default_profile_path, save_profile

    if output is not None and output.is_dir():  # before minutes of timing, not after
        raise OutputError(f"--output {output} is a folder", "give the path of the profile's .json file")
    with RichReporter(quiet=as_json) as rep:
        prof = run_profile(model, backend=backend, device=device, resolution=resolution, batch=batch, precision=precision,
                           budget_s=budget, progress=lambda d, t: rep.progress("timing variants", d, t))
        for w in prof.get("warnings", []):
            rep.warn(w)
    path = output or default_profile_path(prof, root=os.environ.get("EDGEPRUNE_PROFILES", "profiles"))
    save_profile(prof, path)
    if as_json:
        emit_json(prof)
        return
    table = Table("block", "params", "median ms", "saving", "cv", "n", "flags",
                  title=f"{prof['model']} on {prof['backend']['name']} ({prof['device'].get('cpu', '')}), "
                        f"full model {prof['base']['median_ms']:.2f} ms (cv {prof['base']['cv']:.1%})")
    for b in sorted(prof["blocks"], key=lambda b: -b["saving"]):
        table.add_row(b["name"], f"{b['params']:,}", f"{b['median_ms']:.2f}", f"{b['saving']:.1%}", f"{b['cv']:.1%}", str(b["n"]),
                      ", ".join(b.get("flags", [])))
    out.print(table)
    add = prof.get("additivity") or {}
    if add:
        out.print(f"additivity ({', '.join(add['blocks'])}): predicted {add['predicted_saving']:.1%}, measured {add['measured_saving']:.1%}")
    for line in float_rule_lines(prof):
        out.print(line)
    out.print(f"profile written to {path}")


def float_rule_lines(prof: dict) -> list[str]:
    """An INT8 profile's speed-rule decisions, one line per op group (none for other profiles)."""
    rule = ((prof.get("backend") or {}).get("quantisation") or {}).get("float_rule") or {}
    lines = []
    for g in rule.get("groups", []):
        if not g["nodes"]:
            lines.append(f"INT8 float rule: no {g['group']} node in this model")
            continue
        verdict = "kept in float in every variant" if g["kept_float"] else "quantised"
        lines.append(f"INT8 float rule: {g['group']} ({g['nodes']} nodes) {verdict}: {g['median_ms']:.3g} ms in float vs "
                     f"{rule['all_median_ms']:.3g} ms quantised (difference {g['saving_ms']:+.3g} ms, noise {g['noise_ms']:.2g} ms)")
    return lines
