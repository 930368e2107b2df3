"""Each server's last minute sample (xyOps `hosts/<id>/data`): what deltas, `test_monitor`, `get_server`,
alert notifications and snapshots read. One msgpack record per server, written by the node that holds the
agent's socket (one writer per server at a time: the socket's node).

Each sample is written twice in one MULTI: whole, and as a brief (no process or connection lists, mounts or
plugin output), which is what a group snapshot keeps of each member: reading 200 briefs is a fraction of the
time of decoding 200 whole samples, so a group snapshot never holds the primary's loop for long."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from . import codec
from .connection import Database

Record = dict[str, Any]
MGET_BATCH = 200
# What a brief sample leaves out (xyOps search_snapshots prunes the same parts unless `verbose`).
HEAVY_DATA = ("conns", "processes", "mounts", "commands")


def brief_host(record: Record) -> Record:
    """A host record without its heavy data."""
    data = record.get("data")
    return {**record, "data": {k: v for k, v in data.items() if k not in HEAVY_DATA} if isinstance(data, dict) else {}}



class HostDataStore:
    """Each server's last sample, whole and brief."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def get(self, server_id: str) -> Record | None:
        return codec.unpack_record(await self.db.client.get(self.db.keys.host_data(server_id)))

    async def _mget(self, key: Callable[[str], str], ids: Sequence[str]) -> list[Record | None]:
        out: list[Record | None] = []
        for start in range(0, len(ids), MGET_BATCH):
            raws = await self.db.client.mget([key(i) for i in ids[start : start + MGET_BATCH]])
            out.extend(codec.unpack_record(r) for r in raws)
        return out

    async def get_many(self, ids: Sequence[str]) -> list[Record | None]:
        return await self._mget(self.db.keys.host_data, ids)

    async def get_briefs(self, ids: Sequence[str]) -> list[Record | None]:
        """The brief samples of `ids`, in order (a sample stored before briefs were: read whole, then briefed)."""
        out = await self._mget(self.db.keys.host_brief, ids)
        missing = [i for i, found in enumerate(out) if found is None]
        if missing:
            for i, whole in zip(missing, await self.get_many([ids[i] for i in missing]), strict=True):
                out[i] = brief_host(whole) if whole is not None else None
        return out

    async def put(self, server_id: str, record: Record) -> None:
        """Store the last sample and its brief together."""
        k = self.db.keys
        async with self.db.client.pipeline(transaction=True) as pipe:
            pipe.set(k.host_data(server_id), codec.pack(record))  # type: ignore[unused-awaitable]  # queued
            pipe.set(k.host_brief(server_id), codec.pack(brief_host(record)))  # type: ignore[unused-awaitable]
            await pipe.execute()

    async def delete(self, server_id: str) -> None:
        await self.db.client.delete(self.db.keys.host_data(server_id), self.db.keys.host_brief(server_id))
