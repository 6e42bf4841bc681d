"""Benchmarks of output-service: load generator, SQLite ceiling, naive baseline, driver.

Run from the repository root with `make bench` (see BENCHMARKS.md); nothing here
is imported by the service or run by CI.
"""
