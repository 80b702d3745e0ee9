"""Benchmarks of locust-inference against baselines measured in the same run: ``python -m bench.run``."""
