"""The performance benchmark of scenario-batch: `python -m bench.run` (see RESULTS.md)."""
