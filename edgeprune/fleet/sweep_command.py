"""``edgeprune sweep CONFIG``: the command (registered in cli/app.py); the work is ``fleet.sweep.run_sweep``."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

err = Console(stderr=True)


def sweep(
    config: Path = typer.Argument(..., help="Sweep config (TOML, or YAML with pyyaml): models, streams, criteria, k, seeds "
                                  "and \\[recipe] options; a list in \\[recipe] is one more axis (README: Sweeps)."),
    engine: str = typer.Option("ray", help="ray: each unit a Ray task (needs edgeprune\\[fleet]); local: one after another here."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Results folder. Run again with the same folder to resume: finished "
                                       "units are skipped.",
                                       show_default="the config's `out`, else sweep-out next to it"),
    address: Optional[str] = typer.Option(None, help="Ray cluster address (e.g. ray://head:10001).",
                                          show_default="a local Ray started for this sweep"),
    workers: Optional[int] = typer.Option(None, help="CPUs of the local Ray.", show_default="the CPUs this process may use"),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
):
    """Run many adaptations (models x streams x criteria x k x seeds x recipe options) and collect one results table."""
    from .sweep import run_sweep

    progress = Progress(TextColumn("[bold]sweep"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
                        TimeElapsedColumn(), console=err, disable=as_json)
    task = {}

    def on_unit(done, total, unit, outcome):
        if "id" not in task:
            task["id"] = progress.add_task("sweep", total=total, info="")
        p = unit.params
        info = f"{p['model']} {Path(p['stream']).name} {p['criterion']} k={p['k']} seed={p['seed']}: {outcome['status']}"
        progress.update(task["id"], completed=done, total=total, info=info)
        if outcome["status"] != "ok":
            progress.console.print(f"[yellow]unit {unit.key} failed:[/] {outcome['error']}", highlight=False, soft_wrap=True)

    with progress:
        summary = run_sweep(config, engine=engine, out=out, address=address, workers=workers, on_unit=on_unit)
    if as_json:
        sys.stdout.write(json.dumps(summary, indent=2) + "\n")
    else:
        Console().print(f"{summary['total']} units: {summary['skipped']} finished before, {summary['ran']} run now, "
                        f"{summary['failed']} failed; results in {summary['folder']}/results.md", highlight=False)
    if summary["failed"]:
        raise typer.Exit(1)
