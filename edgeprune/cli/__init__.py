"""The ``edgeprune`` command line: parses options, calls the Python API, renders with rich.

No logic lives here beyond option parsing and display: each command is one API call. ``app.py``
assembles the commands; ``console.py`` is where output goes; one module per group of commands.
"""

from .app import app, main

__all__ = ["app", "main"]
