"""One cycle of the watcher: take the new files, decide about drift, maybe adapt, gate, promote.

The adaptation runs ``adapt``'s own stages (``pipeline.prepare``, ``score``, ``distil``,
``export``, ``report``) on the window's newest images, inside an ``AtomicOutputDir`` for the next
version folder: the candidate is gated before it is exported, and a rejected or failed candidate
leaves nothing behind. ``current`` moves only after the version folder is complete.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timezone

import torch
from torch import nn

from ..data.discovery import summarise_skipped
from ..deploy.outputs import AtomicOutputDir
from ..errors import ModelError
from ..models.surgery import load_manifest
from ..models.zoo import RANDOM, ZooEntry, load_model
from ..pipeline.fidelity import fidelity_metrics, logits
from ..pipeline.prepare import Prepared, prepare, resolve_profile
from ..pipeline.publish import export, report
from ..pipeline.stages import Distilled, distil, score
from ..progress import Reporter
from .drift import evaluate, reference_of
from .gate import Verdict, shadow_gate
from .options import WatchOptions
from .reference import PROBE_IMAGES, load_reference, read_record, write_version_files
from .versions import Current, DeployFolder
from .window import WatchState, Window, decode_new, scan


@dataclass
class Context:
    """What every cycle of one process uses: resolved once at start."""

    options: WatchOptions
    folder: DeployFolder
    model_name: str
    entry: ZooEntry
    resolution: int
    original: nn.Module  # the source model, eval mode
    reporter: Reporter


def load_context(options: WatchOptions, folder: DeployFolder, reporter: Reporter) -> Context:
    model_name, location, profile, _ = resolve_profile(options.model, options.profile, reporter)
    options.model, options.profile = model_name, location  # every cycle adapts with this profile
    original, entry, source = load_model(model_name, options.weights)
    if source == RANDOM:
        raise ModelError("refusing to watch with a model with random weights", "pass --weights PATH")
    return Context(options, folder, model_name, entry, int(profile["resolution"]), original.eval(), reporter)


class Rejected(Exception):
    def __init__(self, verdict: Verdict):
        super().__init__("candidate rejected")
        self.verdict = verdict


def _stamp() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def run_cycle(ctx: Context, state: WatchState, window: Window) -> dict:
    """One cycle (module docstring); returns its record (the --json line and history.jsonl entry)."""
    t0 = time.perf_counter()
    rec: dict = {"event": "cycle", "cycle": state.cycles + 1, "time": _stamp(), "seconds": {}}
    found = scan(ctx.options.images, state, ctx.options.settle_s)
    names, pixels, skipped = decode_new(found, state, ctx.resolution, ctx.entry.crop_pct)
    window.add(names, pixels)
    state.unjudged += len(names)
    state.skipped_total += len(skipped)
    rec.update(new_images=len(names), waiting_files=found.waiting, skipped=len(skipped), window=len(window),
               skipped_kinds=summarise_skipped(skipped) if skipped else "", skipped_total=state.skipped_total)
    rec["seconds"]["scan"] = time.perf_counter() - t0
    if skipped:
        ctx.reporter.warn(f"skipped {len(skipped)} unusable file(s): {summarise_skipped(skipped)}")
    cur = ctx.folder.current()
    rec["deployed"] = cur.version if cur else None
    n = _decide(ctx, state, window, cur, rec)
    if n:
        _adapt_and_gate(ctx, state, window, cur, n, rec)
    state.cycles += 1
    now = ctx.folder.current()
    rec["current"] = now.version if now else None
    rec["seconds"]["total"] = time.perf_counter() - t0
    return rec


def _decide(ctx: Context, state: WatchState, window: Window, cur: Current | None, rec: dict) -> int:
    """How many of the newest images to adapt on (0: no adaptation this cycle); sets rec's decision."""
    opts = ctx.options
    if cur is None:  # adapt on the whole window; after a rejected first candidate, only once new images came
        if len(window) >= opts.min_adapt and state.unjudged >= min(opts.min_new, opts.min_adapt):
            state.unjudged = 0
            rec.update(action="adapt", reason="no model deployed yet")
            return len(window)
        rec.update(action="wait", reason=f"no model deployed yet: {len(window)} images ({opts.min_adapt} needed), "
                                         f"{state.unjudged} new since the last attempt")
        return 0
    if state.unjudged < opts.min_new:
        rec.update(action="wait", reason=f"{state.unjudged} new images; a drift decision needs {opts.min_new}")
        return 0
    t = time.perf_counter()
    deployed, _ = load_manifest(cur.path / "model.pt")
    judged = min(state.unjudged, len(window))
    ev = evaluate(deployed, ctx.original, ctx.entry, window.pixels[len(window) - judged:], load_reference(cur.path),
                  opts.thresholds)
    rec["drift"] = ev.to_dict()
    rec["seconds"]["drift"] = time.perf_counter() - t
    state.unjudged = 0
    if not ev.drift:
        state.drift_images = 0
        rec.update(action="none", reason="no drift")
        return 0
    state.drift_images = min(state.drift_images + judged, len(window))
    ctx.reporter.info(f"drift: {'; '.join(ev.reasons)}")
    if state.drift_images < opts.min_adapt:
        rec.update(action="wait", reason=f"drift; {state.drift_images} images since it, adapting needs {opts.min_adapt}")
        return 0
    rec.update(action="adapt", reason="drift: " + "; ".join(ev.reasons))
    return state.drift_images


def _adapt_and_gate(ctx: Context, state: WatchState, window: Window, cur: Current | None, n: int, rec: dict) -> None:
    folder, opts = ctx.folder, ctx.options
    version = folder.next_number()
    images = window.newest(n)
    aopts = opts.adapt_options(len(images), folder.version_dir(version))
    rec["candidate"] = {"version": version, "images": len(images)}
    t = time.perf_counter()
    folder.mark_building(version)
    try:
        with AtomicOutputDir(aopts.output) as tmp:
            prep = prepare(aopts, ctx.reporter, images=images)
            scored = score(prep)
            distilled = distil(prep, scored)
            rec["seconds"]["adapt"] = time.perf_counter() - t
            verdict = _shadow(ctx, prep, distilled, cur)
            rec["gate"] = verdict.to_dict()
            rec["candidate"].update(removed_blocks=scored.plan.removed, teacher_stats=prep.normalisation.get("teacher_stats_used"))
            if not verdict.passed:
                raise Rejected(verdict)
            exported, errors = export(prep, scored, distilled, tmp)
            if errors:
                verdict.passed, verdict.reasons = False, [f"export: {e}" for e in errors]
                raise Rejected(verdict)
            report(prep, scored, distilled, exported, errors, tmp)
            _write_version(ctx, prep, distilled, verdict, rec, tmp, version, cur)
    except Rejected as r:
        rec["gate"] = r.verdict.to_dict()
        rec.update(action="rejected", promoted=False, reason=rec["reason"] + " | rejected: " + "; ".join(r.verdict.reasons))
        ctx.reporter.warn(f"candidate {version} rejected, version {cur.version if cur else 'none'} stays: {'; '.join(r.verdict.reasons)}")
        return
    finally:
        folder.clear_building()
        rec["seconds"]["adapt_total"] = time.perf_counter() - t
    folder.point_to(version, (cur.promoted if cur else []) + [version])
    rec.update(action="promoted", promoted=True, version=version, pruned=folder.prune(opts.keep))
    state.drift_images = state.unjudged = 0
    ctx.reporter.info(f"version {version} promoted (was {cur.version if cur else 'none'})")


def _shadow(ctx: Context, prep: Prepared, distilled: Distilled, cur: Current | None) -> Verdict:
    """The gate on the candidate's held-out images, minus any the deployed version adapted on."""
    names = [prep.images.paths[i] for i in prep.held]
    seen = set(read_record(cur.path)["adapted_on"]["names"]) if cur else set()
    keep = torch.tensor([nm not in seen for nm in names], dtype=torch.bool)
    px = prep.images.pixels[prep.held][keep]
    reference = logits(prep.teacher, ctx.entry, px)
    deployed = logits(load_manifest(cur.path / "model.pt")[0], ctx.entry, px) if cur else None
    return shadow_gate(reference, distilled.logits_after[keep], deployed, distilled.logits_original[keep], ctx.options.gate)


def _write_version(ctx: Context, prep: Prepared, distilled: Distilled, verdict: Verdict, rec: dict, folder, version: int,
                   cur: Current | None) -> None:
    adapted = prep.images.pixels[prep.finetune_idx]
    whole = prep.images.pixels  # the agreement reference: every image of the window, for a steadier figure
    agreement = fidelity_metrics(logits(prep.original, ctx.entry, whole), logits(distilled.student, ctx.entry, whole))["agreement"]
    ref = reference_of(distilled.student, prep.original, ctx.entry, adapted, agreement)
    probe = prep.images.pixels[prep.held][:PROBE_IMAGES]
    record = {"version": version, "cycle": rec["cycle"], "created": _stamp(), "parent": cur.version if cur else None,
              "model": ctx.model_name, "reason": rec.get("reason"), "drift": rec.get("drift"), "gate": verdict.to_dict(),
              "adapted_on": {"images": len(prep.finetune_idx), "names": [prep.images.paths[i] for i in prep.finetune_idx]},
              "held_out": len(prep.held)}
    write_version_files(folder, record, ref, probe, logits(distilled.student, ctx.entry, probe))
