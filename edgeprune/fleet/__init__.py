"""Fleet scale: sweeps of many adaptation runs, serially or on Ray (engine, sweep, results table)."""
