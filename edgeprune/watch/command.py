"""The ``edgeprune watch`` command: options to a ``WatchOptions``, one call into ``loop``.

Registered on the CLI's typer app by ``register`` (cli/app.py passes its reporter class, so this
module does not import the cli package). No torch import here: the CLI starts fast.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer

from ..errors import UsageError
from ..formatting import json_safe
from . import options as defaults
from .rules import GateRules, Thresholds


def _line(rec: dict) -> str:
    """The human one-liner of a cycle record."""
    if rec.get("event") != "cycle":
        return f"{rec.get('event')}: {rec.get('reason', '')} (current {rec.get('current')})"
    drift = rec.get("drift") or {}
    bn = f", BN divergence {drift['bn_divergence']:.3f}" if "bn_divergence" in drift else ""
    took = (rec.get("seconds") or {}).get("total")
    return (f"cycle {rec['cycle']}: {rec.get('new_images', 0)} new, {rec.get('skipped', 0)} skipped, window {rec.get('window', 0)}"
            f"{bn}; {rec['action']}: {rec.get('reason', rec.get('error', ''))}; current {rec.get('current')}"
            + (f" ({took:.1f} s)" if took is not None else ""))


def register(app: typer.Typer, reporter_factory) -> None:
    @app.command()
    def watch(
        images: Optional[Path] = typer.Option(None, "--images", "-i", help="Folder that keeps receiving field images (new files only)."),
        deploy: Path = typer.Option(..., "--deploy", "-d", help="Versioned deploy folder (versions/<n>, current.json, history.jsonl)."),
        model: Optional[str] = typer.Option(None, "--model", "-m", help="Zoo name.", show_default="from this device's recorded profile"),
        profile: Optional[Path] = typer.Option(None, help="Latency profile JSON.", show_default="the one recorded for this device"),
        weights: Optional[Path] = typer.Option(None, help="State dict of the pretrained model.", show_default="the zoo's local weights"),
        blocks: Optional[int] = typer.Option(None, "--blocks", "-k", help="Remove K blocks.", show_default="3 when no other plan is given"),
        target_saving: Optional[float] = typer.Option(None, help="Remove the fewest blocks whose predicted saving reaches F."),
        latency_budget_ms: Optional[float] = typer.Option(None, help="Remove blocks until the predicted latency is within M ms."),
        steps: Optional[int] = typer.Option(None, help="Distillation steps of each adaptation.", show_default="adapt's"),
        prune_images: int = typer.Option(64, help="Images used to score blocks (part of the fine-tune images)."),
        finetune_images: int = typer.Option(1000, help="Most images distilled on per adaptation."),
        seed: int = typer.Option(0, help="Seed of each adaptation's split and training order."),
        latency: bool = typer.Option(False, "--latency/--no-latency", help="Measure each candidate's ONNX latency (off: faster cycles)."),
        window: int = typer.Option(defaults.WINDOW, help="Newest images kept in the window (older ones are forgotten, never deleted)."),
        min_new: int = typer.Option(defaults.MIN_NEW, help="New images needed before a drift decision."),
        min_adapt: int = typer.Option(defaults.MIN_ADAPT, help="Images since the drift point (or in all, before the first version) needed to adapt."),
        shadow_fraction: float = typer.Option(defaults.SHADOW_FRACTION, help="Share of the adapted images held out for the shadow evaluation."),
        settle: float = typer.Option(defaults.SETTLE_S, help="Seconds a file's size and mtime must be stable before it is read."),
        keep: int = typer.Option(defaults.KEEP, help="Versions kept (older ones are pruned; never the current one)."),
        interval: float = typer.Option(defaults.INTERVAL_S, help="Seconds between cycles."),
        once: bool = typer.Option(False, "--once", help="Run one cycle and exit (cron, tests)."),
        drift_threshold: float = typer.Option(Thresholds.bn, help="BatchNorm input divergence above which the stream has drifted."),
        min_agreement: float = typer.Option(GateRules.min_agreement, help="Gate: the candidate's least agreement with the reference."),
        min_gain: float = typer.Option(GateRules.min_gain, help="Gate: the candidate's least agreement gain over the deployed model."),
        rollback: bool = typer.Option(False, "--rollback", help="Point current back at the previous version and exit."),
        status: bool = typer.Option(False, "--status", help="Print the current version (checked), the versions kept and the last decisions."),
        as_json: bool = typer.Option(False, "--json", help="One JSON line per cycle on stdout."),
    ):
        """Watch a folder of field images: re-adapt when the stream drifts, promote only a better model (versioned, with rollback)."""
        from .loop import run_rollback, run_watch, watch_status

        emit = _emitter(as_json)
        if rollback or status:
            result = run_rollback(deploy) if rollback else watch_status(deploy)
            sys.stdout.write((json.dumps(result) if as_json else _summary(result, rollback)) + "\n")
            return
        if images is None:
            raise UsageError("--images is required to watch", "pass the folder that receives the field images")
        opts = defaults.WatchOptions(images, deploy, model=model, profile=profile, weights=weights, blocks=blocks,
                                     target_saving=target_saving, latency_budget_ms=latency_budget_ms, steps=steps,
                                     prune_images=prune_images, finetune_images=finetune_images, seed=seed,
                                     measure_latency=latency, window=window, min_new=min_new, min_adapt=min_adapt,
                                     shadow_fraction=shadow_fraction, settle_s=settle, keep=keep, interval_s=interval,
                                     once=once, thresholds=Thresholds(bn=drift_threshold),
                                     gate=GateRules(min_agreement=min_agreement, min_gain=min_gain))
        with reporter_factory(quiet=False) as rep:
            code = run_watch(opts, rep, emit)
        if code:
            raise typer.Exit(code)


def _emitter(as_json: bool):
    def emit(rec: dict) -> None:
        sys.stdout.write((json.dumps(json_safe(rec)) if as_json else _line(rec)) + "\n")
        sys.stdout.flush()
    return emit


def _summary(result: dict, rollback: bool) -> str:
    check = result.get("current_check") or {}
    verified = f" (loads, probe max |diff| {check['max_abs_diff']:.1e})" if check.get("ok") else (" (probe check FAILED)" if check else "")
    if rollback:
        return f"rolled back: current is version {result['to']} (was {result['from']}){verified}"
    lines = [f"deploy {result['deploy']}: model {result['model']}, current version {result['current']}{verified}, "
             f"versions kept {result['versions']}"]
    lines += [_line(h) for h in result["history"]]
    return "\n".join(lines)
