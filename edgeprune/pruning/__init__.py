"""Which blocks to remove: block-scoring criteria (plug-ins) and the removal plan (k, saving or latency budget)."""
