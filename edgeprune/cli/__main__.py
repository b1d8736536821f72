"""``python -m edgeprune.cli``: the same as the ``edgeprune`` script."""

from .app import main

main()
