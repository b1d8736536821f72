"""The watcher: cycles until stopped (or one with ``--once``), plus ``--rollback`` and ``--status``.

Every start takes the deploy folder's lock (one watcher per folder), then cleans up what a killed
run left (versions.recover) and logs it. Each cycle's record is emitted (the ``--json`` line) and
appended to history.jsonl; the state is saved after each cycle. SIGINT/SIGTERM arrive as
KeyboardInterrupt (the CLI's handlers): the version being built is discarded by its
AtomicOutputDir, ``current`` is untouched, a "stopped" entry is logged, and the CLI exits 130.
A cycle that fails (a full disk while publishing, an unreadable model) is recorded with its
error; ``--once`` then exits with the error's code, a long-running watcher carries on.
"""

from __future__ import annotations

import time
from typing import Callable

from ..errors import EdgepruneError, OutputError
from ..progress import Reporter
from . import history
from .cycle import Context, _stamp, load_context, run_cycle
from .lock import WatchLock
from .options import WatchOptions
from .reference import verify_version
from .versions import DeployFolder
from .window import load_state, save_state

Emit = Callable[[dict], None]


def run_watch(options: WatchOptions, reporter: Reporter | None = None, emit: Emit | None = None) -> int:
    """Watch until stopped (``options.once``: one cycle); returns the exit code."""
    reporter, emit = reporter or Reporter(), emit or (lambda rec: None)
    options.validate()
    if not options.images.is_dir():
        from ..data.discovery import check_root

        check_root(options.images)  # the ImageError (exit 4) naming what is wrong
    folder = DeployFolder(options.deploy)
    with WatchLock(_prepare_folder(folder, options, reporter)):
        _recover(folder, reporter, emit)
        ctx = load_context(options, folder, reporter)
        state, window, note = load_state(folder.root, options.window, ctx.resolution)
        if note:
            reporter.warn(note)
        try:
            while True:
                code, error = _one(ctx, state, window, emit)
                if options.once:
                    if error is not None:
                        raise error  # the CLI prints it on one line and exits with its code
                    return code
                _sleep(options.interval_s)
        except KeyboardInterrupt:
            history.append(folder.root, {"event": "stopped", "time": _stamp(), "reason": "SIGINT/SIGTERM"})
            raise


def _prepare_folder(folder: DeployFolder, options: WatchOptions, reporter: Reporter):
    from ..pipeline.prepare import resolve_profile

    if options.model is None:  # the deploy folder records the model: resolve the short form first
        options.model, options.profile, _, _ = resolve_profile(None, options.profile, reporter)
    folder.open(options.model, options.images)
    return folder.root


def _recover(folder: DeployFolder, reporter: Reporter, emit: Emit) -> None:
    found = folder.recover()
    if not found["removed"] and not found["interrupted"]:
        return
    was = found["interrupted"]
    entry = {"event": "recovered", "time": _stamp(), "removed": found["removed"],
             "interrupted_version": was.get("version") if was else None,
             "reason": (f"the previous watcher stopped while building version {was.get('version')} (killed?); "
                        if was else "") + "left-over files removed; current is unchanged"}
    cur = folder.current()
    entry["current"] = cur.version if cur else None
    if cur is not None:
        entry["current_check"] = verify_version(cur.path)
    reporter.warn(entry["reason"] + (f": {', '.join(found['removed'])}" if found["removed"] else ""))
    history.append(folder.root, entry)
    emit(entry)


def _one(ctx: Context, state, window, emit: Emit) -> tuple[int, EdgepruneError | None]:
    """One cycle, its state saved and its record logged and emitted: (exit code, the error if it failed)."""
    error = None
    try:
        rec = run_cycle(ctx, state, window)
    except EdgepruneError as exc:
        cur = ctx.folder.current()
        rec = {"event": "cycle", "cycle": state.cycles + 1, "time": _stamp(), "action": "failed", "error": str(exc),
               "current": cur.version if cur else None}
        ctx.reporter.warn(f"cycle failed, current version {rec['current']} unchanged: {exc}")
        error = exc
    try:
        save_state(ctx.folder.root, state, window)
    except OSError as exc:
        err = OutputError(f"could not save the watcher's state in {ctx.folder.root}: {exc.strerror}", "free some disk space")
        rec.setdefault("warnings", []).append(str(err))
        ctx.reporter.warn(str(err))
        error = error or err
    problem = history.append(ctx.folder.root, rec)
    if problem:
        rec.setdefault("warnings", []).append(problem)
        ctx.reporter.warn(problem)
    emit(rec)
    return (error.exit_code if error else 0), error


def _sleep(seconds: float) -> None:
    end = time.monotonic() + seconds
    while (left := end - time.monotonic()) > 0:
        time.sleep(min(left, 1.0))


def run_rollback(deploy, reporter: Reporter | None = None) -> dict:
    """``--rollback``: current goes back one version (under the watcher's lock)."""
    folder = DeployFolder(deploy)
    folder.marker()
    with WatchLock(folder.root):
        old, new = folder.rollback()
        entry = {"event": "rollback", "time": _stamp(), "from": old, "to": new, "current": new,
                 "current_check": verify_version(folder.version_dir(new))}
        problem = history.append(folder.root, entry)
        if problem and reporter:
            reporter.warn(problem)
    return entry


def watch_status(deploy, last: int = 5) -> dict:
    """``--status``: the current version (checked against its probe), the versions kept, the last decisions."""
    folder = DeployFolder(deploy)
    marker = folder.marker()
    cur = folder.current()
    return {"deploy": str(folder.root), "model": marker.get("model"), "images": marker.get("images"),
            "current": cur.version if cur else None, "current_check": verify_version(cur.path) if cur else None,
            "versions": folder.complete_versions(), "history": history.read(folder.root)[-last:]}
