"""The ``edgeprune`` typer app: the commands registered in pipeline order, and ``main`` (exit codes).

Each command lives in a module named for what it does and is one call into the Python API; this
module only assembles them and turns errors and signals into a one-line message and an exit code.
"""

from __future__ import annotations

import signal
import sys
import traceback

import typer
from rich.markup import escape

from ..errors import EdgepruneError, Interrupted
from ..fleet.sweep_command import sweep
from ..latency.profiles_command import app as profiles_app
from ..version import __version__
from ..watch.command import register as register_watch
from .adapt_command import adapt
from .artifact_commands import demo, evaluate, export
from .console import STATE, RichReporter, err, out
from .inspect_commands import blocks, models, profile

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Make a pretrained image classifier faster on the device where it runs, using the images it sees there "
                       "(TT-MPD: test-time block pruning and distillation).")


def _version(value: bool):
    if value:
        out.print(f"edgeprune {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks for errors."),
):
    STATE["debug"] = debug


for _command in (models, blocks, profile, adapt, export):
    app.command()(_command)
app.command(name="eval")(evaluate)
app.command()(demo)
# fleet scale and the field loop, each in its own module
app.add_typer(profiles_app, name="profiles")
app.command(name="sweep")(sweep)
register_watch(app, RichReporter)


def _on_signal(signum, frame):
    STATE["interrupted"] = True
    raise KeyboardInterrupt


def _exit_interrupted() -> None:
    err.print("[red]interrupted:[/] stopped; no partial output was left and earlier output is intact",
              highlight=False, soft_wrap=True)
    sys.exit(Interrupted.exit_code)


def main() -> None:
    signal.signal(signal.SIGTERM, _on_signal)
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:  # an ignored SIGINT stays ignored
        signal.signal(signal.SIGINT, _on_signal)
    try:
        # typer turns KeyboardInterrupt into a *returned* 130 when not standalone: check the result.
        rc = app(standalone_mode=False)
    except EdgepruneError as exc:
        if STATE["debug"]:
            traceback.print_exc()
        err.print(f"[red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        _exit_interrupted()
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        _exit_interrupted()
    except Exception as exc:  # click usage errors and the unexpected
        # click's, or the copy of click that typer >= 0.2x vendors (typer._click): duck-typed
        if callable(getattr(exc, "show", None)) and isinstance(getattr(exc, "exit_code", None), int):
            exc.show()
            sys.exit(exc.exit_code)
        if STATE["debug"]:
            raise
        err.print(f"[red]internal error:[/] {type(exc).__name__}: {escape(str(exc))} (rerun with --debug for the traceback and report it)",
                  highlight=False, soft_wrap=True)
        sys.exit(70)
    if STATE.get("interrupted") or rc == Interrupted.exit_code:
        _exit_interrupted()
    if isinstance(rc, int) and rc:
        sys.exit(rc)
