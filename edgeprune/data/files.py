"""File-system helpers for reading untrusted folders: printable paths, one-line reasons, and
opening a file without hanging on a FIFO or device named like an image."""

from __future__ import annotations

import errno
import os
import sys


def display_path(path: str | bytes | os.PathLike) -> str:
    """A printable, JSON/UTF-8-safe form of ``path``: undecodable bytes become ``\\xNN``."""
    raw = os.fsencode(path)
    return raw.decode(sys.getfilesystemencoding() or "utf-8", "backslashreplace")


def safe_text(text: object, limit: int = 200) -> str:
    """One line, at most ``limit`` characters, encodable as UTF-8 (no lone surrogates)."""
    s = str(text).strip().splitlines()[0] if str(text).strip() else ""
    s = s.encode("utf-8", "backslashreplace").decode("utf-8")
    return s if len(s) <= limit else s[: limit - 3] + "..."


def os_reason(exc: OSError) -> str:
    if exc.errno in (errno.EACCES, errno.EPERM):
        return "permission denied"
    if exc.errno == errno.ELOOP:
        return "symlink loop"
    if exc.errno == errno.ENOENT:
        return "no such file"
    return safe_text(exc.strerror or exc) or type(exc).__name__


def open_for_reading(path: str | os.PathLike) -> int:
    """``os.open`` read-only; O_NONBLOCK so a FIFO or device named ``x.jpg`` cannot hang us."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
    return os.open(path, flags)
