"""Latency backends: how one inference of a model variant is run and timed.

Each backend is a plug-in (one module + one ``@BACKENDS.register("name")`` line) behind the
small ``LatencyBackend`` interface in ``base.py``. Importing this package registers the three
shipped ones; ``get_backend`` builds one and refuses clearly when it cannot run here.
"""

from __future__ import annotations

from .base import BACKENDS, LatencyBackend, get_backend
from . import onnxruntime_backend, tensorrt_backend, torch_backend  # noqa: F401  (they register)

__all__ = ["BACKENDS", "LatencyBackend", "get_backend"]
