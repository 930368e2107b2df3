"""The activity log: one msgpack record per mutation, searchable by action, keywords and date."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from . import codec
from .connection import Database
from .dailystats import DailyStats, activity_field
from .fence import Fence
from .pages import fetch_page
from .search.index import Column, Indexer, IndexSpec, Op
from .search.query import Everything, Query, Range, parse, restrict

Record = dict[str, Any]

ACTIVITY_INDEX = IndexSpec(
    name="activity",
    columns=(Column("action", "word"), Column("keywords", "word"), Column("date", "date")),
    default_column="keywords",
)



def index_fields(record: Record) -> Record:
    """The searchable view of an activity record."""
    return {"action": record.get("action", ""), "keywords": record.get("keywords", []), "date": record.get("epoch", 0)}


class ActivityStore:
    def __init__(self, db: Database, stats: DailyStats | None = None) -> None:
        self.db = db
        self.index = Indexer(db, ACTIVITY_INDEX)
        self.stats = stats  # each record counts in the daily stats, as xyOps' transactions

    async def add(self, record: Record) -> None:
        """Store one record, then index it (a record without index entries is harmless; the reverse
        would not be, so the record goes first)."""
        rid = str(record["id"])
        await self.db.client.set(self.db.keys.activity(rid), codec.pack(record))
        await self.index.add(rid, index_fields(record), order=time.time() * 1000)
        name = activity_field(str(record.get("action", "")))
        if self.stats is not None and name is not None:
            await self.stats.bump([name], time.time())

    async def get_many(self, ids: list[str]) -> list[Record]:
        return [r for r in await self._fetch(ids) if r is not None]

    async def _fetch(self, ids: Sequence[str]) -> list[Record | None]:
        """The records at `ids`, in order, None where one is gone."""
        if not ids:
            return []
        raws = await self.db.client.mget([self.db.keys.activity(i) for i in ids])
        return [None if r is None else dict(codec.unpack(codec.as_bytes(r))) for r in raws]

    async def search(
        self, query: str, offset: int, limit: int, sort_dir: int = -1, *, also: Sequence[str] = ()
    ) -> tuple[list[Record], int]:
        """Records matching `query` and every query in `also` (each parsed on its own, then ANDed)."""
        parsed = restrict(parse(query, ACTIVITY_INDEX), *(parse(q, ACTIVITY_INDEX) for q in also))
        found = await self.index.search(parsed, offset=offset, limit=limit, sort_dir=sort_dir)
        rows = await fetch_page(self.db, [self.db.keys.activity(i) for i in found.ids])
        return [r for r in rows if r is not None], found.total

    async def oldest(self, limit: int, *, before: float | None = None, offset: int = 0) -> tuple[list[str], int]:
        """Ids of records, oldest first, and how many there are; with `before` (epoch s) only those
        dated before it. Answered by the index, so no record is read."""
        root = Everything() if before is None else Range("date", high=before, high_open=True)
        found = await self.index.search(Query(root), offset=offset, limit=limit, sort_dir=1)
        return found.ids, found.total

    async def delete_many(self, fence: Fence, ids: Sequence[str]) -> tuple[int, list[str]]:
        """Delete records and their index entries in one fenced step (retention). Returns how many
        went, and the ids whose record was already gone."""
        found = await self._fetch(ids)
        records = {rid: index_fields(rec) for rid, rec in zip(ids, found, strict=True) if rec is not None}
        also: list[Op] = [("DEL", [self.db.keys.activity(rid)], []) for rid in records]
        await self.index.remove_fenced(fence, records, also)
        return len(records), [rid for rid, rec in zip(ids, found, strict=True) if rec is None]
