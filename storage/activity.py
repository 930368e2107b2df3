"""The activity log: one msgpack record per mutation, searchable by action, keywords and date."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from . import codec
from .connection import Database
from .search.index import Column, Indexer, IndexSpec
from .search.query import parse, restrict

Record = dict[str, Any]

ACTIVITY_INDEX = IndexSpec(
    name="activity",
    columns=(Column("action", "word"), Column("keywords", "word"), Column("date", "date")),
    default_column="keywords",
)


def _raw(value: Any) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode()


class ActivityStore:
    def __init__(self, db: Database) -> None:
        self.db = db
        self.index = Indexer(db, ACTIVITY_INDEX)

    async def add(self, record: Record) -> None:
        """Store one record, then index it (a record without index entries is harmless; the reverse
        would not be, so the record goes first)."""
        rid = str(record["id"])
        await self.db.client.set(self.db.keys.activity(rid), codec.pack(record))
        fields = {"action": record.get("action", ""), "keywords": record.get("keywords", []),
                  "date": record.get("epoch", 0)}  # fmt: skip
        await self.index.add(rid, fields, order=time.time() * 1000)

    async def get_many(self, ids: list[str]) -> list[Record]:
        if not ids:
            return []
        raws = await self.db.client.mget([self.db.keys.activity(i) for i in ids])
        return [dict(codec.unpack(_raw(r))) for r in raws if r is not None]

    async def search(
        self, query: str, offset: int, limit: int, sort_dir: int = -1, *, also: Sequence[str] = ()
    ) -> tuple[list[Record], int]:
        """Records matching `query` and every query in `also` (each parsed on its own, then ANDed)."""
        parsed = restrict(parse(query, ACTIVITY_INDEX), *(parse(q, ACTIVITY_INDEX) for q in also))
        found = await self.index.search(parsed, offset=offset, limit=limit, sort_dir=sort_dir)
        return await self.get_many(found.ids), found.total
