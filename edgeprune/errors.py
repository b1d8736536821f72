"""Errors a user can act on, each with a documented exit code.

Library code raises these; the CLI prints the message on one line and exits with ``exit_code``
(a traceback only with ``--debug``). Exit codes are listed in the README.
"""

from __future__ import annotations


class EdgepruneError(Exception):
    """Base class: a problem with the user's input or environment, not a bug."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.hint = hint

    def __str__(self) -> str:
        msg = super().__str__()
        return f"{msg} ({self.hint})" if self.hint else msg


class UsageError(EdgepruneError):
    """Bad option values or combinations (k out of range, negative steps, ...)."""

    exit_code = 2


class ModelError(EdgepruneError):
    """Unknown model, missing or mismatched weights."""

    exit_code = 3


class ImageError(EdgepruneError):
    """Missing/empty image folder or too few usable images."""

    exit_code = 4


class ProfileError(EdgepruneError):
    """Missing, corrupted, mismatched or wrong-schema latency profile."""

    exit_code = 5


class OutputError(EdgepruneError):
    """Output path is a file, non-empty without --force, locked, or unwritable."""

    exit_code = 6


class BackendUnavailable(EdgepruneError):
    """A requested backend (TensorRT, CUDA, onnxruntime-gpu) is not installed here."""

    exit_code = 7


class BackendError(EdgepruneError):
    """A backend reported a failure (a TensorRT parse/build/run step), or an engine built for
    another device or TensorRT version was given."""

    exit_code = 9


class ExportError(EdgepruneError):
    """ONNX export or runtime parity failed (the PyTorch manifest is still saved)."""

    exit_code = 8


class Interrupted(EdgepruneError):
    """SIGINT/SIGTERM: stopped, nothing partial left behind."""

    exit_code = 130
