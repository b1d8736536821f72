"""`--help` shows every word of every help text.

Typer renders help through rich markup, where `[...]` is a style tag: "Zoo name [default: from this
device's recorded profile]." printed as "Zoo name ." and "needs edgeprune[fleet]" as "needs
edgeprune". Defaults that are not plain values go in `show_default="..."`; a literal bracket is
written `\\[`.
"""
import json
import re

import click
import typer.main
from typer.testing import CliRunner

from edgeprune.cli import app

_UNESCAPED_BRACKET = re.compile(r"(?<!\\)\[")


def _commands(group, path=()):
    """(argv path, click command) for the app and every sub-command, depth first."""
    yield path, group
    for name, sub in getattr(group, "commands", {}).items():
        yield from _commands(sub, path + (name,))


def _help_texts(command):
    if command.help:
        yield "the command's help", command.help
    for param in command.params:
        if getattr(param, "help", None):
            yield param.name, param.help


def test_no_help_text_has_a_bracket_rich_would_swallow():
    root = typer.main.get_command(app)
    offenders = [f"{' '.join(path) or 'edgeprune'} {name}: {text!r}"
                 for path, command in _commands(root) for name, text in _help_texts(command)
                 if _UNESCAPED_BRACKET.search(text)]
    assert not offenders, "escape [ as \\[ or use show_default=:\n" + "\n".join(offenders)


def _flattened(text: str) -> str:
    """The help screen as one line: box borders dropped, wrapped help joined."""
    return " ".join(text.replace("│", " ").split())


def test_help_screens_show_the_bracketed_defaults_and_extras():
    runner = CliRunner()
    adapt = _flattened(runner.invoke(app, ["adapt", "--help"]).output)
    assert "Zoo name. [default: (from this device's recorded profile)]" in adapt
    assert "Artifact folder. [default: (edgeprune-out/" in adapt  # a narrow screen cuts the rest
    sweep = _flattened(runner.invoke(app, ["sweep", "--help"]).output)
    assert "(needs edgeprune[fleet])" in sweep and "[recipe] options" in sweep
    profiles = _flattened(runner.invoke(app, ["profiles", "list", "--help"]).output)
    assert "[default: $EDGEPRUNE_PROFILES or ./profiles]" in profiles


def test_every_command_has_help():
    root = typer.main.get_command(app)
    missing = [" ".join(path) for path, command in _commands(root)
               if path and isinstance(command, click.Command) and not (command.help or command.short_help)]
    assert not missing


def test_narrow_tables_never_cut_the_names_a_user_types():
    from edgeprune.models.zoo import names

    runner = CliRunner()  # renders 80 columns wide, like a pipe or a small terminal
    listing = runner.invoke(app, ["models"]).output
    assert [n for n in names() if n not in listing] == []
    table = runner.invoke(app, ["blocks", "--model", "efficientnet_lite0"]).output
    listed = json.loads(runner.invoke(app, ["blocks", "--model", "efficientnet_lite0", "--json"]).output)
    assert [b["name"] for b in listed["blocks"] if b["name"] not in table] == []
