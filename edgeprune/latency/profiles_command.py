"""``edgeprune profiles list|show|import|export|diff``: the profile registry from the command line.

Registered in cli/app.py as a sub-command group; every command is one call into ``latency.registry``
or ``latency.profile_diff`` and renders the result (``--json`` for machines).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="The registry of latency profiles of many devices: a folder ($EDGEPRUNE_PROFILES or ./profiles) "
                       "or any fsspec URL (needs edgeprune\\[fleet]).")
out = Console()

REGISTRY_HELP = "Registry folder or fsspec URL \\[default: $EDGEPRUNE_PROFILES or ./profiles]."


def _emit(data) -> None:
    sys.stdout.write(json.dumps(data, indent=2) + "\n")


def _registry(location):
    from .registry import ProfileRegistry

    return ProfileRegistry(location)


@app.command("list")
def list_profiles(
    registry: Optional[str] = typer.Option(None, "--registry", "-r", help=REGISTRY_HELP),
    device: Optional[str] = typer.Option(None, help="Only this device slug (e.g. cpu-amd-epyc-2c)."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Only this model."),
    this_device: bool = typer.Option(False, "--this-device", help="Only profiles of this machine's device kinds."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
):
    """List the profiles in the registry by key: device, model, backend, precision, batch, resolution."""
    from .profiles import current_device_slugs

    reg = _registry(registry)
    entries, problems = reg.scan()
    mine = current_device_slugs()
    entries = [e for e in entries if (device is None or e.key.device == device) and (not this_device or e.key.device in mine)
               and (model is None or e.key.model == model)]
    if as_json:
        _emit({"registry": reg.location, "this_device": mine, "problems": problems,
               "profiles": [{**e.key.to_dict(), "key": str(e.key), "location": e.location, "base_ms": e.profile["base"]["median_ms"],
                             "blocks": len(e.profile["blocks"]), "created": e.profile["created"]} for e in entries]})
        return
    table = Table("device", "model", "backend", "precision", "batch", "res", "full model ms", "blocks", "created",
                  title=f"{len(entries)} profile(s) in {reg.location} (this device: {', '.join(mine)})")
    for e in entries:
        k = e.key
        table.add_row(k.device + (" *" if k.device in mine else ""), k.model, k.backend, k.precision, str(k.batch),
                      str(k.resolution), f"{e.profile['base']['median_ms']:.2f}", str(len(e.profile["blocks"])),
                      e.profile["created"][:19])
    out.print(table)
    for p in problems:
        out.print(f"[yellow]not a valid profile:[/] {p}", highlight=False, soft_wrap=True)


@app.command()
def show(
    ref: str = typer.Argument(..., help="A key from `profiles list` (device/model-backend-precision-bB-rR) or a file path."),
    registry: Optional[str] = typer.Option(None, "--registry", "-r", help=REGISTRY_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print the profile JSON."),
):
    """One profile: its device fingerprint and every block's saving."""
    entry = _registry(registry).get(ref)
    prof = entry.profile
    if as_json:
        _emit(prof)
        return
    dev = prof["device"]
    out.print(f"{entry.key}  ({entry.location})")
    out.print(f"device: {dev.get('gpu') or dev.get('cpu')}, {dev.get('logical_cores')} cores, ISA "
              f"{', '.join(dev.get('cpu_isa') or []) or 'n/a'}; backend {prof['backend']['name']} "
              f"({prof['backend']['execution_provider']}); full model {prof['base']['median_ms']:.2f} ms (cv {prof['base']['cv']:.1%})")
    table = Table("block", "saving", "saving ms", "capacity gap", "cv", "n", "flags")
    for b in sorted(prof["blocks"], key=lambda b: -b["saving"]):
        table.add_row(b["name"], f"{b['saving']:.1%}", f"{b['saving_ms']:.3f}", f"{b['capacity_gap']:.4f}", f"{b['cv']:.1%}",
                      str(b["n"]), ", ".join(b["flags"]))
    out.print(table)


@app.command("import")
def import_profiles(
    paths: List[Path] = typer.Argument(..., help="Profile files, or folders searched for *.json."),
    registry: Optional[str] = typer.Option(None, "--registry", "-r", help=REGISTRY_HELP),
    force: bool = typer.Option(False, "--force", help="Replace a different profile already filed under the same key."),
):
    """Validate profiles and file them in the registry under their key."""
    from ..errors import ProfileError
    from .profiles import load_profile

    reg = _registry(registry)
    files = [f for p in paths for f in (sorted(p.rglob("*.json")) if p.is_dir() else [p])]
    if not files:
        raise ProfileError(f"no profile files in {', '.join(map(str, paths))}")
    for f in files:
        entry = reg.put(load_profile(f), force=force)
        out.print(f"imported {f} as {entry.key} -> {entry.location}", highlight=False)


@app.command()
def export(
    ref: str = typer.Argument(..., help="A key from `profiles list`, or a file path."),
    dest: str = typer.Argument(..., help="A .json file path, or a registry (folder or fsspec URL) to file it in under its key."),
    registry: Optional[str] = typer.Option(None, "--registry", "-r", help=REGISTRY_HELP),
    force: bool = typer.Option(False, "--force", help="Replace a different profile at the destination."),
):
    """Copy one profile out of the registry: to a file, or into another registry (e.g. a shared bucket)."""
    from ..errors import OutputError
    from .profiles import save_profile
    from .registry import ProfileRegistry, is_url

    entry = _registry(registry).get(ref)
    if dest.endswith(".json") and not is_url(dest):
        if Path(dest).exists() and not force:
            raise OutputError(f"{dest} exists", "pass --force to replace it")
        where = str(save_profile(entry.profile, dest))
    else:
        where = ProfileRegistry(dest).put(entry.profile, force=force).location
    out.print(f"exported {entry.key} -> {where}", highlight=False)


@app.command()
def diff(
    a: str = typer.Argument(..., help="First profile: a key from `profiles list`, or a file path."),
    b: str = typer.Argument(..., help="Second profile (the same model, e.g. on another device)."),
    k: int = typer.Option(3, "--blocks", "-k", help="Blocks in the plan compared."),
    scores: str = typer.Option("gap", help="Scores the plan uses (a diff has no images for TT-MPD's noise term L_i): gap = "
                               "G_i / LS_i (capacity gap over saving: TT-MPD's importance with L_i = 1, so a change of plan "
                               "comes from latency alone); saving = 1 / LS_i (the k largest savings)."),
    registry: Optional[str] = typer.Option(None, "--registry", "-r", help=REGISTRY_HELP),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
):
    """Per-block saving differences of two profiles, and whether the k-block plan changes between them."""
    from .profile_diff import diff_profiles

    reg = _registry(registry)
    ea, eb = reg.get(a), reg.get(b)
    d = diff_profiles(ea.profile, eb.profile, k=k, view=scores)
    d.update({"a": str(ea.key), "b": str(eb.key), "location_a": ea.location, "location_b": eb.location})
    if as_json:
        _emit(d)
        return
    table = Table("block", "saving A", "saving B", "B - A", "rank A", "rank B",
                  title=f"{d['model']}: A = {d['a']} ({d['base_ms_a']:.2f} ms), B = {d['b']} ({d['base_ms_b']:.2f} ms)")
    for r in d["blocks"]:
        table.add_row(r["name"], f"{r['saving_a']:.1%}", f"{r['saving_b']:.1%}", f"{100 * r['diff']:+.1f} pp",
                      str(r["rank_a"]), str(r["rank_b"]))
    out.print(table)
    verdict = "CHANGES" if d["plan_changes"] else "is the same"
    out.print(f"k = {k} plan ({scores} scores): A removes {', '.join(d['plan_a'])}; B removes {', '.join(d['plan_b'])}: "
              f"the plan {verdict}", highlight=False)
    for side in ("a", "b"):
        if d[f"only_in_{side}"]:
            out.print(f"blocks only in {side.upper()}: {', '.join(d[f'only_in_{side}'])}", highlight=False)
