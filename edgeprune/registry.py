"""A tiny plug-in registry: one per kind (latency backends, criteria, fine-tuners).

Adding a plug-in is one module plus one ``@REGISTRY.register("name")`` line.
"""

from __future__ import annotations

import difflib
from typing import Callable, Generic, TypeVar

from .errors import UsageError

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def decorator(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} registered twice")
            self._items[name] = obj
            return obj

        return decorator

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            close = difflib.get_close_matches(name, self._items, n=3)
            hint = f"did you mean {', '.join(close)}?" if close else f"choose from {', '.join(self.names())}"
            raise UsageError(f"unknown {self.kind} {name!r}", hint) from None

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: str) -> bool:
        return name in self._items
