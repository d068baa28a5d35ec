"""Benchmarks, run as ``python -m bench <name>``; apart from the tests, never gating CI."""
