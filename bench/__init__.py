"""Benchmarks: pytest-benchmark files (test_*.py) and the tables behind `ila-fast bench`."""
