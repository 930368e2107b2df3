"""The cluster secret key: given by config, or generated once and shared through Redis."""

from __future__ import annotations

import secrets

from .connection import Database


async def ensure_secret_key(db: Database, configured: str | None) -> str:
    """The configured key wins; otherwise the first node to start stores one (SET NX) for all."""
    if configured:
        return configured
    await db.client.set(db.keys.secret_key, secrets.token_hex(32), nx=True)
    stored = await db.client.get(db.keys.secret_key)
    assert stored is not None
    return stored.decode() if isinstance(stored, bytes) else str(stored)
