"""``edgeprune watch``: the field loop. It watches a folder that keeps receiving images, decides
from label-free evidence when the stream has drifted away from what the deployed model was adapted
on, runs ``adapt``'s own stages on the newest images, and promotes the candidate only when a
shadow evaluation says it is better; the deploy folder is versioned with an atomic pointer.

The parts: ``window.py`` (new complete files, the bounded window), ``drift.py`` (the evidence and
the decision), ``gate.py`` (shadow evaluation and the promotion gate), ``versions.py`` (the deploy
folder: versions, the ``current`` pointer, pruning, rollback, clean-up after a crash),
``history.py`` (history.jsonl), ``reference.py`` (what a version keeps for drift and for checking
that it reproduces its outputs), ``lock.py`` (one watcher per deploy folder), ``cycle.py`` (one
cycle), ``loop.py`` (cycles until stopped), ``options.py`` and ``command.py`` (the CLI command).
"""
