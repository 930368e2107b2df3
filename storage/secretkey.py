"""The cluster secret key: given by config, or generated once and shared through Redis."""

from __future__ import annotations

import secrets

from .connection import Database
from .errors import StorageError


class SecretKeyMismatch(StorageError):
    """The configured secret key is not the one this cluster already uses."""


async def ensure_secret_key(db: Database, configured: str | None) -> str:
    """The first node to start stores its key (the configured one, else a random one) with SET NX;
    every later node uses the stored key, and a node configured with a different one is refused,
    because secrets encrypted under one key cannot be read with another."""
    await db.client.set(db.keys.secret_key, configured or secrets.token_hex(32), nx=True)
    stored = await db.client.get(db.keys.secret_key)
    assert stored is not None
    value = stored.decode() if isinstance(stored, bytes) else str(stored)
    if configured and not secrets.compare_digest(value, configured):
        raise SecretKeyMismatch("the configured secret key differs from the one this cluster already uses")
    return value
