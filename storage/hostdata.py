"""Each server's last minute sample (xyOps `hosts/<id>/data`): what deltas, `test_monitor`, `get_server`,
alert notifications and snapshots read. One msgpack record per server, written by the node that holds the
agent's socket (one writer per server at a time: the socket's node)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from . import codec
from .connection import Database

Record = dict[str, Any]
MGET_BATCH = 200


def _record(raw: Any) -> Record | None:
    if raw is None:
        return None
    found = codec.unpack(raw if isinstance(raw, bytes) else str(raw).encode())
    return dict(found) if isinstance(found, dict) else None


class HostDataStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def get(self, server_id: str) -> Record | None:
        return _record(await self.db.client.get(self.db.keys.host_data(server_id)))

    async def get_many(self, ids: Sequence[str]) -> list[Record | None]:
        out: list[Record | None] = []
        for start in range(0, len(ids), MGET_BATCH):
            raws = await self.db.client.mget([self.db.keys.host_data(i) for i in ids[start : start + MGET_BATCH]])
            out.extend(_record(r) for r in raws)
        return out

    async def put(self, server_id: str, record: Record) -> None:
        await self.db.client.set(self.db.keys.host_data(server_id), codec.pack(record))

    async def delete(self, server_id: str) -> None:
        await self.db.client.delete(self.db.keys.host_data(server_id))
