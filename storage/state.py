"""The global state document ({scheduler: {enabled}}, counters ...), cached on every node."""

from __future__ import annotations

import copy
from typing import Any

from redis.exceptions import ResponseError

from . import codec
from .bus import InvalidationBus
from .cache import CachedValue
from .connection import Database
from .errors import Conflict
from .fence import Fence
from .scripts import fenced

STATE_KIND = "state"

# Replace the state document if nobody changed it since it was read.
# KEYS[1] leader, KEYS[2] epoch, KEYS[3] state, KEYS[4] versions hash
# ARGV[1] node id, ARGV[2] epoch, ARGV[3] msgpack state, ARGV[4] version read ("" = never written),
# ARGV[5] channel
# return the new version; error "REVISION" when the state changed meanwhile
STATE_WRITE = fenced("""
local v = redis.call('HGET', KEYS[4], 'state') or ''
if v ~= ARGV[4] then return redis.error_reply('REVISION') end
redis.call('SET', KEYS[3], ARGV[3])
local nv = redis.call('HINCRBY', KEYS[4], 'state', 1)
redis.call('PUBLISH', ARGV[5], 'state|*')
return nv
""")


def set_path(doc: dict[str, Any], path: str, value: Any) -> None:
    """Set `a.b.c` in a nested dict, creating levels (a non-dict level is replaced)."""
    parts = path.split(".")
    node = doc
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = node[part] = {}
        node = child
    node[parts[-1]] = value


class StateStore:
    def __init__(self, db: Database, bus: InvalidationBus) -> None:
        self.db = db
        self.cache: CachedValue[dict[str, Any]] = CachedValue(bus, STATE_KIND, self._load)

    async def _load(self) -> dict[str, Any]:
        raw = await self.db.client.get(self.db.keys.state)
        return dict(codec.unpack(raw if isinstance(raw, bytes) else raw.encode())) if raw is not None else {}

    async def get(self) -> dict[str, Any]:
        """The state document. Callers must not mutate it."""
        return await self.cache.get()

    async def update(self, fence: Fence, changes: dict[str, Any], attempts: int = 5) -> dict[str, Any]:
        """Apply dot-path changes atomically (read, merge, compare-and-set; retried on a race)."""
        k = self.db.keys
        for _ in range(attempts):
            async with self.db.client.pipeline(transaction=True) as pipe:
                pipe.get(k.state)  # type: ignore[unused-awaitable]  # queued
                pipe.hget(k.versions, STATE_KIND)  # type: ignore[unused-awaitable]
                raw, version = await pipe.execute()
            doc = copy.deepcopy(codec.unpack(raw)) if raw is not None else {}
            for path, value in changes.items():
                set_path(doc, path, value)
            read = version.decode() if isinstance(version, bytes) else (str(version) if version else "")
            try:
                await fence.run(STATE_WRITE, [k.state, k.versions], [codec.pack(doc), read, k.invalidate_channel])
            except ResponseError as exc:
                if str(exc).startswith("REVISION"):
                    continue
                raise
            self.cache.invalidate()
            return dict(doc)
        raise Conflict("revision", "global state kept changing; try again")
