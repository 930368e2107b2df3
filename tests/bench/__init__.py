"""Benchmark scripts: they start real processes and print figures; they are not collected as tests."""
