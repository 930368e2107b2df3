"""Snapshots: one msgpack record per snapshot of a server or a group, and the `snapshots` search index.

- A snapshot is written once, by whichever node takes it (a watched server's sample on the node holding its
  socket, an API call or an action on the primary), and never changed: `add` writes the record, its brief form
  and its id in `snapshots_unindexed` in one MULTI, then indexes it and takes the id off the set. A crash in
  between leaves the id for `index_pending` (maintenance drains it), so no snapshot is ever out of reach of
  search or retention.
- The brief form is the record without its heavy parts (what xyOps' `search_snapshots` prunes unless `verbose`):
  a page of briefs is a few KB a row where the full records are tens of KB (a group's hundreds).
- Deletes are fenced (the primary's API calls and retention): the records and their index entries go in one
  script, so no crash parts them.
- Columns are those of xyOps' unbase `snapshots` index, so its queries work unchanged: `type:group`,
  `source:watch`, `server:s1`, `groups:main`, `date:>2026-01-01`, `alerts:a..`, `jobs:j..`.
  (⚠ xyOps keeps `date` to the hour; here it is to the second, a finer answer to the same queries.)
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Sequence
from typing import Any

from . import codec
from .connection import Database
from .fence import Fence
from .pages import fetch_page
from .search.index import Column, Indexer, IndexSpec, Op
from .search.query import Everything, Query, Range, parse, restrict
from .search.spec import order_from_id
from .servers import valid_server_id

Record = dict[str, Any]
SNAPSHOT_ID = re.compile(r"^[a-z0-9_]{1,32}$")  # xyOps: ^[a-z0-9_]+$; the index row reserves 32 bytes
ID_PREFIX = "sn"
MAX_RECORD_BYTES = 32 * 1024 * 1024  # the last guard: the builders (cluster/monitoring/snapshots.py) stay far below
MGET_BATCH = 200
# What a brief leaves out: the heavy parts of a sample, and a group's member data (xyOps search_snapshots).
HEAVY_DATA = ("conns", "processes", "mounts", "commands")
GROUP_PARTS = ("servers", "snapshots", "group_def", "quickmons")

SNAPSHOTS_INDEX = IndexSpec(
    name="snapshots",
    columns=(
        Column("type", "word"),
        Column("source", "word"),
        Column("server", "word", sparse=True),  # one value per server: sets, not a bitmap per server
        Column("groups", "word"),
        Column("date", "date"),
        Column("alerts", "word", sparse=True),
        Column("jobs", "word", sparse=True),
    ),
    sorters=("date",),
)


def valid_snapshot_id(snapshot_id: Any) -> bool:
    return isinstance(snapshot_id, str) and bool(SNAPSHOT_ID.fullmatch(snapshot_id))


def _raw(value: Any) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode()


def _record(raw: Any) -> Record | None:
    if raw is None:
        return None
    found = codec.unpack(_raw(raw))
    return dict(found) if isinstance(found, dict) else None


def _words(value: Any) -> list[str]:
    return [str(v) for v in value] if isinstance(value, list) else []


def index_fields(record: Record) -> Record:
    """The searchable view of a snapshot."""
    return {
        "type": str(record.get("type") or ""),
        "source": str(record.get("source") or ""),
        "server": str(record.get("server") or ""),
        "groups": _words(record.get("groups")),
        "date": record.get("date") or 0,
        "alerts": _words(record.get("alerts")),
        "jobs": _words(record.get("jobs")),
    }


def brief(record: Record) -> Record:
    """A snapshot as search answers it unless `verbose`: no process or connection lists, mounts or plugin output,
    and for a group no member list, member data, group definition or QuickMon samples."""
    out = {k: v for k, v in record.items() if k not in GROUP_PARTS}
    data = record.get("data")
    out["data"] = {k: v for k, v in data.items() if k not in HEAVY_DATA} if isinstance(data, dict) else {}
    return out


def _order(snapshot_id: str) -> float:
    """`_id` order (ms): when the snapshot was taken, read from its time-sortable id (xyOps sorts by id)."""
    try:
        return order_from_id(snapshot_id, ID_PREFIX)
    except ValueError:
        return time.time() * 1000


class SnapshotStore:
    """Snapshot records, their brief forms and the `snapshots` search index."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.index = Indexer(db, SNAPSHOTS_INDEX)

    # -- reads ---------------------------------------------------------------------------------
    async def get(self, snapshot_id: str) -> Record | None:
        if not valid_snapshot_id(snapshot_id):
            return None
        return _record(await self.db.client.get(self.db.keys.snapshot(snapshot_id)))

    async def get_many(self, ids: Sequence[str], *, full: bool = True) -> list[Record | None]:
        """The records (or with `full` False the briefs) of `ids`, in order, None where one is missing."""
        key = self.db.keys.snapshot if full else self.db.keys.snapshot_brief
        out: list[Record | None] = [None] * len(ids)
        wanted = [(i, sid) for i, sid in enumerate(ids) if valid_snapshot_id(sid)]
        for start in range(0, len(wanted), MGET_BATCH):
            part = wanted[start : start + MGET_BATCH]
            raws = await self.db.client.mget([key(sid) for _, sid in part])
            for (i, _), raw in zip(part, raws, strict=True):
                out[i] = _record(raw)
        return out

    async def search(
        self, query: str, offset: int, limit: int, sort_dir: int = -1, *, sort_by: str = "_id",
        also: Sequence[str] = (), verbose: bool = False,
    ) -> tuple[list[Record], int]:  # fmt: skip
        """Snapshots matching `query` and every query in `also` (each parsed on its own, then ANDed), as briefs
        unless `verbose`; QueryError for a bad query, PageTooLarge for a verbose page past the byte budget."""
        parsed = restrict(parse(query, SNAPSHOTS_INDEX), *(parse(q, SNAPSHOTS_INDEX) for q in also))
        found = await self.index.search(parsed, offset=offset, limit=limit, sort_by=sort_by, sort_dir=sort_dir)
        key = self.db.keys.snapshot if verbose else self.db.keys.snapshot_brief
        rows = await fetch_page(self.db, [key(i) for i in found.ids])
        return [r for r in rows if r is not None], found.total

    async def pending(self) -> int:
        """How many snapshots wait for their search entries."""
        return int(await self.db.client.scard(self.db.keys.snapshots_unindexed))

    # -- writes ----------------------------------------------------------------------------------
    async def add(self, record: Record) -> None:
        """Store a new snapshot (its record, its brief and its place in the unindexed set in one MULTI), then
        index it. ValueError for a malformed id or a record past MAX_RECORD_BYTES (nothing written)."""
        snapshot_id = str(record.get("id", ""))
        if not valid_snapshot_id(snapshot_id):
            raise ValueError(f"invalid snapshot id {snapshot_id[:40]!r}")
        packed = codec.pack(record)
        if len(packed) > MAX_RECORD_BYTES:
            raise ValueError(f"a snapshot packs to at most {MAX_RECORD_BYTES} bytes (this one {len(packed)})")
        k = self.db.keys
        async with self.db.client.pipeline(transaction=True) as pipe:
            pipe.set(k.snapshot(snapshot_id), packed)  # type: ignore[unused-awaitable]  # queued
            pipe.set(k.snapshot_brief(snapshot_id), codec.pack(brief(record)))  # type: ignore[unused-awaitable]
            pipe.sadd(k.snapshots_unindexed, snapshot_id)  # type: ignore[unused-awaitable]
            await pipe.execute()
        await self._index_one(snapshot_id, record)

    async def _index_one(self, snapshot_id: str, record: Record) -> None:
        with contextlib.suppress(ValueError):  # in already (a drain of the unindexed set got there first)
            await self.index.add(snapshot_id, index_fields(record), order=_order(snapshot_id))
        await self.db.client.srem(self.db.keys.snapshots_unindexed, snapshot_id)

    async def index_pending(self, limit: int = 1000) -> int:
        """Index snapshots whose indexing a crash interrupted (safe to repeat, on any node). Returns how many ids
        were dealt with."""
        ids = [_raw(i).decode() for i in await self.db.client.srandmember(self.db.keys.snapshots_unindexed, limit)
               or []]  # fmt: skip
        for snapshot_id, found in zip(ids, await self.get_many(ids, full=False), strict=True):
            if found is None:  # deleted meanwhile, or never a valid id: nothing to index
                await self.db.client.srem(self.db.keys.snapshots_unindexed, snapshot_id)
            else:
                await self._index_one(snapshot_id, found)
        return len(ids)

    async def delete(self, fence: Fence, snapshot_id: str) -> bool:
        """Delete one snapshot and its index entries (fenced); False if there was none."""
        done, _ = await self.delete_many(fence, [snapshot_id])
        return done == 1

    async def delete_many(self, fence: Fence, ids: Sequence[str]) -> tuple[int, list[str]]:
        """Delete snapshots, their briefs and their index entries in one fenced step (delete, retention, a
        server's history). Returns how many went, and the ids whose record was already gone."""
        k = self.db.keys
        found = await self.get_many(ids, full=False)
        records = {sid: index_fields(rec) for sid, rec in zip(ids, found, strict=True) if rec is not None}
        also: list[Op] = []
        for sid in records:
            also += [("DEL", [k.snapshot(sid)], []), ("DEL", [k.snapshot_brief(sid)], []),
                     ("SREM", [k.snapshots_unindexed], [sid])]  # fmt: skip
        await self.index.remove_fenced(fence, records, also)
        return len(records), [sid for sid, rec in zip(ids, found, strict=True) if rec is None]

    async def delete_for_server(self, fence: Fence, server_id: str, batch: int = 200) -> int:
        """Delete every snapshot of one server (delete_server with `history`; xyOps `server:<id>`), a fenced
        batch at a time. Returns how many went."""
        if not valid_server_id(server_id):
            return 0
        query = parse(f"server:{server_id}", SNAPSHOTS_INDEX)
        removed = skipped = 0
        while True:
            found = await self.index.search(query, offset=skipped, limit=batch, sort_dir=1)
            if not found.ids:
                return removed
            done, gone = await self.delete_many(fence, found.ids)
            removed += done
            skipped += len(gone)  # entries whose record is gone already cannot be told apart here

    # -- retention (cluster/maintenance.py) ----------------------------------------------------------
    async def oldest(self, limit: int, *, before: float | None = None, offset: int = 0) -> tuple[list[str], int]:
        """Ids of snapshots, earliest taken first, and how many there are; with `before` (epoch s) only those dated
        before it. Answered by the index, so no record is read."""
        root = Everything() if before is None else Range("date", high=before, high_open=True)
        found = await self.index.search(Query(root), offset=offset, limit=limit, sort_dir=1)
        return found.ids, found.total
