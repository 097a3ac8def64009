"""Benchmarks: each module runs on its own with `python -m e2e.bench.<name>`."""
