"""The node registry: heartbeats scored by expiry on the Redis clock, plus one record per node."""

from __future__ import annotations

from . import codec
from .connection import Database
from .models import LiveNode, NodeRecord
from .scripts import NODE_HEARTBEAT, NODE_LIVE


class NodeStore:
    def __init__(self, db: Database, ttl_ms: int = 2500) -> None:
        self.db = db
        self.ttl_ms = ttl_ms

    async def heartbeat(self, record: NodeRecord) -> int:
        """Write the record and push its expiry; returns the Redis time (ms)."""
        k = self.db.keys
        return int(
            await self.db.script(NODE_HEARTBEAT)(
                keys=[k.nodes, k.node(record.id)],
                args=[record.id, self.ttl_ms, codec.pack(record.to_dict())],
            )
        )

    async def remove(self, node_id: str) -> None:
        k = self.db.keys
        async with self.db.client.pipeline(transaction=True) as pipe:
            pipe.zrem(k.nodes, node_id)  # type: ignore[unused-awaitable]  # queued, not awaited
            pipe.delete(k.node(node_id))  # type: ignore[unused-awaitable]
            await pipe.execute()

    async def live(self) -> list[LiveNode]:
        """Nodes heard from within their TTL, ordered by id."""
        reply = await self.db.script(NODE_LIVE)(keys=[self.db.keys.nodes])
        now = int(reply[0])
        ids = [i.decode() if isinstance(i, bytes) else str(i) for i in reply[1::2]]
        expiries = [int(e) for e in reply[2::2]]
        if not ids:
            return []
        records = await self.db.client.mget([self.db.keys.node(i) for i in ids])
        out = []
        for expiry, raw in zip(expiries, records, strict=True):
            if raw is None:
                continue
            rec = NodeRecord.from_dict(codec.unpack(raw if isinstance(raw, bytes) else raw.encode()))
            out.append(LiveNode(record=rec, expires_ms=expiry, now_ms=now, ttl_ms=self.ttl_ms))
        return sorted(out, key=lambda n: n.record.id)
