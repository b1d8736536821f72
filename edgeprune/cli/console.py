"""Where the command line writes: results to stdout, progress/warnings/errors to stderr (rich)."""

from __future__ import annotations

import json
import sys

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from ..formatting import json_safe
from ..progress import Reporter

out = Console()  # results
err = Console(stderr=True)  # progress, warnings, errors
STATE = {"debug": False}


class RichReporter(Reporter):
    """Progress bars on stderr (one per task), warnings in yellow."""

    def __init__(self, quiet: bool = False):
        self.quiet = quiet
        self.progress_ui = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                    TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                                    console=err, transient=False, disable=quiet)
        self.tasks: dict[str, int] = {}

    def __enter__(self):
        self.progress_ui.__enter__()
        return self

    def __exit__(self, *exc):
        self.progress_ui.__exit__(*exc)

    def stage(self, name):
        pass

    def progress(self, task, done, total, **info):
        text = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in info.items())
        if task not in self.tasks:
            self.tasks[task] = self.progress_ui.add_task(task, total=total, info=text)
        self.progress_ui.update(self.tasks[task], completed=done, total=total, info=text)

    def warn(self, message):
        self.progress_ui.console.print(f"[yellow]warning:[/] {escape(str(message))}", highlight=False, soft_wrap=True)

    def info(self, message):
        if not self.quiet:
            self.progress_ui.console.print(f"[cyan]info:[/] {escape(str(message))}", highlight=False, soft_wrap=True)


def emit_json(data) -> None:
    """Print a result as JSON on stdout (NaN/inf and paths made JSON-safe as report.json writes them)."""
    sys.stdout.write(json.dumps(json_safe(data), indent=2) + "\n")
