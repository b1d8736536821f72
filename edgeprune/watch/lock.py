"""One watcher per deploy folder: an exclusive ``fcntl`` lock on ``DEPLOY/.watch.lock``.

The kernel drops the lock when its process ends, ``kill -9`` included, so a crashed watcher never
blocks the next start (no stale-lock guessing as with adapt's output lock). The file holds the
holder's pid, only for the refusal message.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from ..errors import OutputError

LOCK_NAME = ".watch.lock"


class WatchLock:
    """``with WatchLock(deploy):`` hold the folder's lock or raise OutputError (exit code 6)."""

    def __init__(self, deploy: Path):
        self.deploy = Path(deploy)
        self.path = self.deploy / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> None:
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise OutputError(f"cannot create the lock {self.path}: {exc.strerror}",
                              "check the deploy folder's permissions and free space") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = _holder(fd)
            os.close(fd)
            raise OutputError(f"another edgeprune watch is running on {self.deploy}{holder}",
                              "one watcher per deploy folder: stop that one first, or pass another --deploy") from None
        try:
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
        except OSError:
            pass  # the pid is only for the message; the lock itself is held
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the flock
            self._fd = None

    def __enter__(self) -> "WatchLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> bool:
        self.release()
        return False


def _holder(fd: int) -> str:
    try:
        pid = os.pread(fd, 32, 0).decode().strip()
    except (OSError, UnicodeDecodeError):
        return ""
    return f" (pid {pid})" if pid.isdigit() else ""
