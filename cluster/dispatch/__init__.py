"""Dispatch on the primary: the job state machine, server selection, limits, queues, retries, finish."""
