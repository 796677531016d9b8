"""Benchmark suite for wsgi_observe: ``bash scripts/bench`` or ``python benchmarks/run.py``."""
