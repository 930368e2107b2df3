"""Coordination: node runtime, lease election with fencing, node registry, primary-only services."""

__version__ = "0.1.0"
