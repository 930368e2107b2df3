"""Errors raised by the storage layer; the HTTP edge translates them once."""

from __future__ import annotations


class StorageError(Exception):
    """Base class of storage errors."""


class StoreUnavailable(StorageError):
    """Redis could not be reached (or timed out)."""


class FencedError(StorageError):
    """A primary-only write was refused: the caller no longer holds the lease at its epoch."""


class EmbeddedServerError(StorageError):
    """The embedded Redis-compatible server could not be found or started."""


class BadRedisURL(StorageError):
    """The Redis URL cannot be used."""


class Conflict(StorageError):
    """A write lost a check: `reason` is "exists", "notfound" or "revision"."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(detail or reason)
        self.reason = reason


class PageTooLarge(StorageError):
    """The records of one page hold more than the page byte budget (storage/pages.py)."""

    def __init__(self, fits: int, budget: int) -> None:
        super().__init__(f"the rows asked for hold more than {budget // (1024 * 1024)} MiB; ask for at most {fits}")
        self.fits = fits
