"""Podium's client: `Client` (blocking) and `AsyncClient` over several nodes, and the errors they raise.

It needs aiohttp only: nothing here imports the server packages.
"""

from __future__ import annotations

from .client import AsyncClient, JobEvent
from .errors import (
    AccessDenied,
    AuthError,
    BadRequest,
    ConnectionFailed,
    NoPrimary,
    NotFound,
    PodiumError,
    RateLimited,
)
from .sync import Client

__all__ = [
    "AccessDenied",
    "AsyncClient",
    "AuthError",
    "BadRequest",
    "Client",
    "ConnectionFailed",
    "JobEvent",
    "NoPrimary",
    "NotFound",
    "PodiumError",
    "RateLimited",
]
