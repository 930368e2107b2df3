"""The generic definition store: one msgpack record per object plus an ordered index per family.

Every family (roles, API keys, categories, plugins, events, ...) is declared once as a `Family` and
stored the same way. Reads come from a per-node cache of the whole family that the invalidation bus
keeps fresh; writes are fenced Lua scripts that also bump the family version and publish the
invalidation in the same atomic step.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from redis.exceptions import ResponseError

from . import codec
from .bus import InvalidationBus
from .cache import CachedValue
from .connection import Database
from .errors import Conflict
from .fence import Fence
from .scripts import fenced

Record = dict[str, Any]

# Create, update or delete one definition, bump its family's version and announce it.
# KEYS[1] leader, KEYS[2] epoch, KEYS[3] record, KEYS[4] family index zset, KEYS[5] versions hash
# ARGV[1] node id, ARGV[2] epoch, ARGV[3] "create" | "update" | "delete", ARGV[4] object id,
# ARGV[5] msgpack record (create/update), ARGV[6] index score (create),
# ARGV[7] expected stored revision for update/delete ("" = any), ARGV[8] family, ARGV[9] channel
# return the family's new version; errors "EXISTS", "NOTFOUND", "REVISION <stored>"
DEF_WRITE = fenced("""
local mode = ARGV[3]
local cur = redis.call('GET', KEYS[3])
if mode == 'create' then
  if cur then return redis.error_reply('EXISTS') end
  redis.call('SET', KEYS[3], ARGV[5])
  redis.call('ZADD', KEYS[4], ARGV[6], ARGV[4])
else
  if not cur then return redis.error_reply('NOTFOUND') end
  if ARGV[7] ~= '' then
    local rev = cmsgpack.unpack(cur)['revision']
    if tostring(rev) ~= ARGV[7] then return redis.error_reply('REVISION ' .. tostring(rev)) end
  end
  if mode == 'update' then
    redis.call('SET', KEYS[3], ARGV[5])
  else
    redis.call('DEL', KEYS[3])
    redis.call('ZREM', KEYS[4], ARGV[4])
  end
end
local v = redis.call('HINCRBY', KEYS[5], ARGV[8], 1)
redis.call('PUBLISH', ARGV[9], ARGV[8] .. '|' .. ARGV[4])
return v
""")


@dataclass(frozen=True, slots=True)
class Family:
    """A definition family as stored: its name (also the cache kind) and list order."""

    name: str
    newest_first: bool = False  # xyOps "unshift" lists (API keys) list the newest first


@dataclass(slots=True)
class Snapshot:
    rows: list[Record] = field(default_factory=list)
    by_id: dict[str, Record] = field(default_factory=dict)


def _conflict(exc: ResponseError) -> Conflict | None:
    text = str(exc)
    for reason in ("EXISTS", "NOTFOUND", "REVISION"):
        if text.startswith(reason):
            return Conflict(reason.lower(), text)
    return None


class DefinitionStore:
    def __init__(self, db: Database, bus: InvalidationBus) -> None:
        self.db = db
        self.bus = bus
        self._caches: dict[str, CachedValue[Snapshot]] = {}

    def cache_counts(self) -> tuple[int, int]:
        """(hits, misses) of every family's cache together."""
        caches = list(self._caches.values())
        return sum(c.hits for c in caches), sum(c.misses for c in caches)

    def _cache(self, family: Family) -> CachedValue[Snapshot]:
        cache = self._caches.get(family.name)
        if cache is None:
            cache = self._caches[family.name] = CachedValue(self.bus, family.name, lambda: self._load(family))
        return cache

    async def _load(self, family: Family) -> Snapshot:
        k = self.db.keys
        ids = await self.db.client.zrange(k.definitions(family.name), 0, -1)
        if not ids:
            return Snapshot()
        names = [i.decode() if isinstance(i, bytes) else str(i) for i in ids]
        raws = await self.db.client.mget([k.definition(family.name, i) for i in names])
        snap = Snapshot()
        for raw in raws:
            if raw is None:
                continue  # deleted between the two reads; the invalidation will reload
            rec: Record = codec.unpack(raw if isinstance(raw, bytes) else raw.encode())
            snap.rows.append(rec)
            snap.by_id[str(rec.get("id"))] = rec
        return snap

    async def all(self, family: Family) -> list[Record]:
        """Every object of a family in list order. Callers must not mutate the records."""
        return (await self._cache(family).get()).rows

    async def get(self, family: Family, obj_id: str) -> Record | None:
        return (await self._cache(family).get()).by_id.get(obj_id)

    async def _write(
        self, fence: Fence, family: Family, mode: str, obj_id: str, record: Record | None, expected: str
    ) -> int:
        k = self.db.keys
        score = 0.0
        if mode == "create":
            score = time.time() * 1000 * (-1 if family.newest_first else 1)
        try:
            version = await fence.run(
                DEF_WRITE,
                [k.definition(family.name, obj_id), k.definitions(family.name), k.versions],
                [mode, obj_id, codec.pack(record) if record is not None else b"", score, expected,
                 family.name, k.invalidate_channel],
            )  # fmt: skip
        except ResponseError as exc:
            conflict = _conflict(exc)
            if conflict is None:
                raise
            raise conflict from None
        self._cache(family).invalidate()  # our own next read sees the write even before the message
        return int(version)

    async def create(self, fence: Fence, family: Family, record: Record) -> Record:
        await self._write(fence, family, "create", str(record["id"]), record, "")
        return record

    async def replace(self, fence: Fence, family: Family, record: Record, expected_revision: Any) -> Record:
        """Store `record` in place of the version whose revision was `expected_revision`."""
        await self._write(fence, family, "update", str(record["id"]), record, str(expected_revision))
        return record

    async def delete(self, fence: Fence, family: Family, obj_id: str, expected_revision: Any = "") -> None:
        await self._write(fence, family, "delete", obj_id, None, str(expected_revision))

    async def version(self, family: Family) -> int:
        raw = await self.db.client.hget(self.db.keys.versions, family.name)
        return int(raw or 0)

