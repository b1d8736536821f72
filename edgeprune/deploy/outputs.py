"""Atomic outputs: files and folders that are either complete or absent, never half-written.

Files: ``atomic_write`` / ``atomic_path`` write to a temporary name beside the target and
rename it over the target on success (a crash leaves the earlier file).

Folders: artifacts are written into a hidden temporary sibling folder and moved into place only
when everything succeeded; earlier output at the same path survives any failure. Every folder
published here carries a marker (``OUTPUT_MARKER``) listing the files edgeprune wrote: ``--force``
replaces only such a folder, and only while it holds nothing else, so a mistyped ``--output``
never deletes a user's data. A lock file next to the output stops two runs writing to the same
place; a lock whose process is gone (a killed run) is detected and cleared.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import signal
import socket
import tempfile
import threading
from pathlib import Path
from typing import Iterator

from ..errors import OutputError

OUTPUT_MARKER = ".edgeprune-output.json"  # in every folder AtomicOutputDir publishes
MARKER_FORMAT = "edgeprune.output"

# OSErrors that mean "cannot write here" (disk full, quota, read-only, permissions): an OutputError.
WRITE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO, errno.EFBIG})


def write_error(exc: OSError, target: Path) -> OutputError:
    """The OutputError for a failed write of the output ``target`` (nothing was published)."""
    what = exc.strerror or str(exc)
    where = f" ({exc.filename})" if exc.filename else ""
    kept = ", the earlier output there is intact" if target.exists() else ""
    return OutputError(f"could not write the output {target}: {what}{where}",
                       f"free some disk space or check the folder's permissions; nothing was published{kept}")


@contextlib.contextmanager
def _signals_deferred():
    """Hold SIGINT/SIGTERM while the output is swapped into place (delivered right after)."""
    mask = getattr(signal, "pthread_sigmask", None)
    if mask is None or threading.current_thread() is not threading.main_thread():
        yield
        return
    old = mask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        yield
    finally:
        mask(signal.SIG_SETMASK, old)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class OutputLock:
    def __init__(self, target: Path):
        self.path = target.with_name(f".{target.name}.lock")
        self.cleared_stale = False

    def acquire(self) -> None:
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                if not self._clear_if_stale():
                    raise OutputError(
                        f"another edgeprune run is writing to {self.path.parent / self.path.name[1:-5]} (lock {self.path})",
                        "wait for it to finish, or delete the lock if that run is gone",
                    ) from None
                continue
            except OSError as exc:
                raise OutputError(f"cannot write in {self.path.parent}: {exc.strerror}",
                                  "check the folder's permissions and free space, or choose another --output") from None
            with os.fdopen(fd, "w") as f:
                f.write(f"{os.getpid()} {socket.gethostname()}\n")
            return
        raise OutputError(f"could not take the lock {self.path}")

    def _clear_if_stale(self) -> bool:
        try:
            pid_text, host = self.path.read_text().split()[:2]
            pid = int(pid_text)
        except (OSError, ValueError):
            # Unreadable/garbled lock: treat as stale only if it is old (a writer may be mid-write).
            try:
                import time

                if time.time() - self.path.stat().st_mtime < 10:
                    return False
            except OSError:
                return True
            pid, host = -1, socket.gethostname()
        if host != socket.gethostname() or (pid > 0 and _pid_alive(pid)):
            return False
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass
        self.cleared_stale = True
        return True

    def release(self) -> None:
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass

    def __enter__(self) -> "OutputLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> bool:
        self.release()
        return False


# ------------------------------------------------------------------ files
@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """``with atomic_path(p) as tmp:`` write ``tmp``; it replaces ``p`` when the block succeeds.

    The temporary file is a hidden sibling (same file system, so the rename is atomic), created
    with the usual permissions (umask applies); it is removed when the block fails. Parent
    folders are created. OSErrors are raised as they are (callers word them for their output).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _fresh_temp_name(path)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write(path: str | os.PathLike, data: bytes | str) -> Path:
    """Write ``data`` (text as UTF-8) to ``path`` atomically; returns the path."""
    payload = data.encode("utf-8") if isinstance(data, str) else bytes(data)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(payload)
    return Path(path)


def _fresh_temp_name(path: Path) -> Path:
    for _ in range(100):
        tmp = path.with_name(f".{path.name}.{os.getpid()}-{os.urandom(4).hex()}.tmp")
        try:
            os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
            return tmp
        except FileExistsError:
            continue
    raise OutputError(f"cannot create a temporary file beside {path}")


# ------------------------------------------------------------------ folders
def write_marker(folder: Path) -> None:
    """Record in ``folder`` that edgeprune wrote it, with the files it holds now."""
    files = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file() and p.name != OUTPUT_MARKER)
    from ..version import __version__

    marker = {"format": MARKER_FORMAT, "version": 1, "edgeprune": __version__, "files": files}
    atomic_write(folder / OUTPUT_MARKER, json.dumps(marker, indent=1) + "\n")


def foreign_files(folder: Path) -> list[str] | None:
    """Files in ``folder`` that edgeprune did not write; None when no valid marker is there."""
    try:
        marker = json.loads((folder / OUTPUT_MARKER).read_text())
        ours = set(marker["files"]) if marker.get("format") == MARKER_FORMAT else None
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if ours is None:
        return None
    present = (str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file() or p.is_symlink())
    return sorted(f for f in present if f != OUTPUT_MARKER and f not in ours)


def check_output_dir(target: Path, force: bool) -> None:
    """Refuse an output that is a file, non-empty without ``force``, or not edgeprune's to replace."""
    if target.exists() and not target.is_dir():
        raise OutputError(f"output path {target} is a file, not a folder", "choose another --output")
    if not target.is_dir() or not any(target.iterdir()):
        return
    if not force:
        raise OutputError(f"output folder {target} is not empty", "use --force to replace it, or choose another --output")
    foreign = foreign_files(target)
    if foreign is None:
        raise OutputError(f"--force refused: {target} was not written by edgeprune (no {OUTPUT_MARKER} in it)",
                          "--force replaces only edgeprune's own output folders; choose another --output")
    if foreign:
        shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        raise OutputError(f"--force refused: {target} holds files edgeprune did not write: {shown}",
                          "move them elsewhere first, or choose another --output")


class AtomicOutputDir:
    """``with AtomicOutputDir(path, force) as tmp:`` write into ``tmp``; published on success.

    ``lock``: an ``OutputLock`` of ``path`` the caller already holds (taken when the run started);
    it is used, not acquired or released here. An OSError meaning "cannot write" (disk full,
    read-only, permissions) while writing or publishing becomes an ``OutputError``.
    """

    def __init__(self, target: str | os.PathLike, force: bool = False, lock: OutputLock | None = None):
        self.target = Path(target).absolute()
        self.force = force
        self._own_lock = lock is None
        self.lock = OutputLock(self.target) if lock is None else lock
        self.tmp: Path | None = None

    def __enter__(self) -> Path:
        check_output_dir(self.target, self.force)
        try:
            self.target.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(f"cannot create {self.target.parent}: {exc.strerror}") from None
        if self._own_lock:
            self.lock.acquire()
        try:
            self.tmp = Path(tempfile.mkdtemp(prefix=f".{self.target.name}.tmp-", dir=self.target.parent))
        except OSError as exc:
            if self._own_lock:
                self.lock.release()
            raise OutputError(f"cannot write in {self.target.parent}: {exc.strerror}") from None
        return self.tmp

    def __exit__(self, exc_type, exc, tb) -> bool:
        try:
            if exc_type is None:
                try:
                    with _signals_deferred():
                        self._publish()
                except BaseException:
                    shutil.rmtree(self.tmp, ignore_errors=True)
                    raise
            else:
                shutil.rmtree(self.tmp, ignore_errors=True)
        except OSError as err:  # publishing failed: nothing published, the earlier output is back
            raise write_error(err, self.target) from err
        finally:
            if self._own_lock:
                self.lock.release()
        cause = exc.__cause__ if isinstance(exc, OutputError) else exc  # export_onnx's OutputError names a temp file
        if isinstance(cause, OSError) and cause.errno in WRITE_ERRNOS:
            raise write_error(cause, self.target) from cause
        return False

    def _publish(self) -> None:
        write_marker(self.tmp)
        check_output_dir(self.target, self.force)  # again: files may have appeared during the run
        backup = None
        if self.target.exists():
            backup = self.target.with_name(f".{self.target.name}.old-{os.getpid()}")
            os.replace(self.target, backup)
        try:
            os.replace(self.tmp, self.target)
        except OSError:
            if backup is not None:
                os.replace(backup, self.target)  # put the earlier output back
            shutil.rmtree(self.tmp, ignore_errors=True)
            raise
        if backup is not None:
            shutil.rmtree(backup, ignore_errors=True)
