"""The benchmark harness behind tools/bench.py, one concern per module.

    config      what a run measures (BenchConfig) and how each method is fine-tuned (recipes)
    provenance  the git commit and tree state a run is published from
    order       the balanced order methods run in
    streams     the corrupted streams: severities, per-unit image splits, accuracy
    latency     latency saving of each removed-block set (ONNX Runtime)
    methods     fine-tuning and test-time adaptation of one method, as result rows
    unit        every method on one (model, seed, corruption) stream
    driver      the run: models, seeds, streams, time budget, partial results
    summary     aggregation and the per-goal numbers
    markdown    results.md (tables, differences between methods, EATA's selection)
    plots       the PNG plots
    outputs     results.json / results.md / plots written atomically
"""
