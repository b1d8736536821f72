"""results.json, results.md (hand-written prose outside the markers is kept) and the plots."""

from __future__ import annotations

import json
from pathlib import Path

from edgeprune.deploy.outputs import atomic_write

from .markdown import BEGIN, END, render_markdown
from .plots import render_plots
from .summary import summarise


def merge_markdown(old: str, generated: str) -> str:
    body = f"{BEGIN}\n{generated}{END}\n"
    if BEGIN in old and END in old:
        return old[: old.index(BEGIN)] + body + old[old.index(END) + len(END):].lstrip("\n")
    return body


def write_outputs(result: dict, cfg) -> None:
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    result["summary"] = summarise(result)
    atomic_write(out / "results.json", json.dumps(result, indent=1, default=float))
    md_path = out / "results.md"
    old = md_path.read_text() if md_path.is_file() else ""
    atomic_write(md_path, merge_markdown(old, render_markdown(result)))
    if result["rows"]:
        render_plots(result, out)
