"""Benchmarks of the probe engine against the tools users would pick instead (see run.py)."""
