"""Cluster-wide settings changed at run time (admin_update_config): one msgpack map, written by the primary only."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from . import codec
from .connection import Database
from .fence import Fence, FencedBatch


class ConfigStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def overrides(self) -> dict[str, Any]:
        raw = await self.db.client.get(self.db.keys.config_overrides)
        return {} if raw is None else dict(codec.unpack(codec.as_bytes(raw)))

    async def update(self, fence: Fence, changes: Mapping[str, Any]) -> dict[str, Any]:
        """Merge `changes` into the overrides (a None value removes one) and store them (fenced); returns them.
        Only the primary writes, one admin call at a time, so the read and the write need no compare-and-set."""
        merged = {**await self.overrides(), **changes}
        merged = {k: v for k, v in merged.items() if v is not None}
        await fence.execute(FencedBatch().add("SET", [self.db.keys.config_overrides], codec.pack(merged)))
        return merged
