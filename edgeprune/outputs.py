"""Atomic output folders with a lock: an interrupted run leaves nothing half-written.

Artifacts are written into a hidden temporary sibling folder and moved into place only when
everything succeeded; earlier output at the same path survives any failure. A lock file next
to the output stops two runs writing to the same place; a lock whose process is gone (a
killed run) is detected and cleared.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import signal
import socket
import tempfile
import threading
from pathlib import Path

from .errors import OutputError

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


def check_output_dir(target: Path, force: bool) -> None:
    if target.exists() and not target.is_dir():
        raise OutputError(f"output path {target} is a file, not a folder", "choose another --output")
    if target.is_dir() and any(target.iterdir()) and not force:
        raise OutputError(f"output folder {target} is not empty", "use --force to replace it, or choose another --output")


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
                with _signals_deferred():
                    self._publish()
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
