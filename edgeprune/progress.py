"""How library code tells the caller what it is doing, without printing.

Library functions take a ``Reporter``; the default does nothing. The CLI passes one that
draws rich progress bars (NNCF-style) and prints warnings.
"""

from __future__ import annotations


class Reporter:
    def stage(self, name: str) -> None:
        """A new phase starts (scoring, pseudo-labels, distillation, export...)."""

    def progress(self, task: str, done: int, total: int, **info) -> None:
        """``done`` of ``total`` units of ``task``; ``info`` e.g. loss=0.12."""

    def warn(self, message: str) -> None:
        """Something the user should know; the run goes on."""

    def info(self, message: str) -> None:
        """A decision the tool made on the user's behalf (defaults picked, files chosen)."""


class CollectingReporter(Reporter):
    """Keeps warnings and infos (used by the Python API so results carry them)."""

    def __init__(self, inner: Reporter | None = None):
        self.inner = inner or Reporter()
        self.warnings: list[str] = []
        self.infos: list[str] = []

    def stage(self, name):
        self.inner.stage(name)

    def progress(self, task, done, total, **info):
        self.inner.progress(task, done, total, **info)

    def warn(self, message):
        self.warnings.append(message)
        self.inner.warn(message)

    def info(self, message):
        self.infos.append(message)
        self.inner.info(message)
