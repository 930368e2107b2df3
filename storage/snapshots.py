"""Snapshots: one msgpack record per snapshot of a server or a group, and the `snapshots` search index.

- A snapshot is written once, by whichever node takes it (a watched server's sample on the node holding its
  socket, an API call or an action on the primary), and never changed: `add` writes the record, its brief form
  and its id in `snapshots_unindexed` in one MULTI, then indexes it and takes the id off the set. A crash in
  between leaves the id for `index_pending` (maintenance drains it), so no snapshot is ever out of reach of
  search or retention.
- The brief form is the record without its heavy parts (what xyOps' `search_snapshots` prunes unless `verbose`):
  a page of briefs is a few KB a row where the full records are tens of KB (a group's hundreds).
- A snapshot whose id is taken already is not written again: an action repeated after a failover derives its id
  from its run's (cluster/monitoring/snapshots.py), so the repeat finds its snapshot there.
- Memory is bounded by a byte budget (`max_bytes`, --snapshot-max-mb): `snapshot_sizes` holds each snapshot's
  packed bytes and `snapshots_bytes` their sum, kept by add and delete; an add past the budget writes nothing
  and raises OverBudget (the primary then drops the oldest, `trim_bytes`). Maintenance recounts the sum.
- Deletes are fenced (the primary's API calls and retention): the records and their index entries go in one
  script, so no crash parts them. A delete that lands between an add's write and its indexing leaves index
  entries with no record: the add looks again after indexing and takes them out.
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
from .hostdata import HEAVY_DATA
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
SAMPLE_REUSE_S = 300  # how long a sample's job or alert snapshot is offered to the next job or alert
# What a brief leaves out: the heavy parts of a sample (HEAVY_DATA), and a group's member data (xyOps
# search_snapshots).
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


# Write a new snapshot within the byte budget, or nothing.
# KEYS[1] record, KEYS[2] brief, KEYS[3] unindexed set, KEYS[4] sizes hash, KEYS[5] total bytes
# ARGV[1] id, ARGV[2] packed record, ARGV[3] packed brief, ARGV[4] budget in bytes (0 = none)
# return 1 written; 0 a snapshot of that id is there already; -1 past the budget (nothing written either way)
ADD = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local size = #ARGV[2] + #ARGV[3]
local budget = tonumber(ARGV[4])
if budget > 0 and tonumber(redis.call('GET', KEYS[5]) or '0') + size > budget then return -1 end
redis.call('SET', KEYS[1], ARGV[2])
redis.call('SET', KEYS[2], ARGV[3])
redis.call('SADD', KEYS[3], ARGV[1])
redis.call('HSET', KEYS[4], ARGV[1], size)
redis.call('INCRBY', KEYS[5], size)
return 1
"""

# Set the total from the sizes (a delete racing an add of the same id can leave it off by one snapshot).
# KEYS[1] sizes hash, KEYS[2] total bytes
# return the total
RECOUNT = """
local total = 0
for _, v in ipairs(redis.call('HVALS', KEYS[1])) do total = total + tonumber(v) end
redis.call('SET', KEYS[2], total)
return total
"""


class OverBudget(Exception):
    """A new snapshot would take the snapshots past their byte budget (nothing was written)."""

    def __init__(self, size: int, used: int, budget: int) -> None:
        super().__init__(f"snapshot storage is full ({used} of {budget} bytes used, this one needs {size})")
        self.size = size


def valid_snapshot_id(snapshot_id: Any) -> bool:
    return isinstance(snapshot_id, str) and bool(SNAPSHOT_ID.fullmatch(snapshot_id))




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

    def __init__(self, db: Database, max_bytes: int = 512 * 1024 * 1024) -> None:
        self.db = db
        self.index = Indexer(db, SNAPSHOTS_INDEX)
        self.max_bytes = max_bytes  # 0 = no budget (api/server.py sets --snapshot-max-mb)

    # -- reads ---------------------------------------------------------------------------------
    async def get(self, snapshot_id: str) -> Record | None:
        if not valid_snapshot_id(snapshot_id):
            return None
        return codec.unpack_record(await self.db.client.get(self.db.keys.snapshot(snapshot_id)))

    async def exists(self, snapshot_id: str) -> bool:
        return valid_snapshot_id(snapshot_id) and bool(await self.db.client.exists(self.db.keys.snapshot(snapshot_id)))

    async def get_many(self, ids: Sequence[str], *, full: bool = True) -> list[Record | None]:
        """The records (or with `full` False the briefs) of `ids`, in order, None where one is missing."""
        key = self.db.keys.snapshot if full else self.db.keys.snapshot_brief
        out: list[Record | None] = [None] * len(ids)
        wanted = [(i, sid) for i, sid in enumerate(ids) if valid_snapshot_id(sid)]
        for start in range(0, len(wanted), MGET_BATCH):
            part = wanted[start : start + MGET_BATCH]
            raws = await self.db.client.mget([key(sid) for _, sid in part])
            for (i, _), raw in zip(part, raws, strict=True):
                out[i] = codec.unpack_record(raw)
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

    async def used_bytes(self) -> int:
        """Packed bytes of every stored snapshot."""
        return int(await self.db.client.get(self.db.keys.snapshots_bytes) or 0)

    async def pending(self) -> int:
        """How many snapshots wait for their search entries."""
        return int(await self.db.client.scard(self.db.keys.snapshots_unindexed))

    # -- writes ----------------------------------------------------------------------------------
    async def add(self, record: Record) -> bool:
        """Store a new snapshot (its record, its brief, its size and its place in the unindexed set in one script),
        then index it. False when a snapshot of that id is there already (nothing written: a repeat). ValueError
        for a malformed id or a record past MAX_RECORD_BYTES, OverBudget past `max_bytes` (nothing written)."""
        snapshot_id = str(record.get("id", ""))
        if not valid_snapshot_id(snapshot_id):
            raise ValueError(f"invalid snapshot id {snapshot_id[:40]!r}")
        packed = codec.pack(record)
        if len(packed) > MAX_RECORD_BYTES:
            raise ValueError(f"a snapshot packs to at most {MAX_RECORD_BYTES} bytes (this one {len(packed)})")
        k = self.db.keys
        packed_brief = codec.pack(brief(record))
        written = await self.db.script(ADD)(
            keys=[k.snapshot(snapshot_id), k.snapshot_brief(snapshot_id), k.snapshots_unindexed, k.snapshot_sizes,
                  k.snapshots_bytes], args=[snapshot_id, packed, packed_brief, self.max_bytes],
        )  # fmt: skip
        if int(written) < 0:
            raise OverBudget(len(packed) + len(packed_brief), await self.used_bytes(), self.max_bytes)
        if not int(written):
            return False
        await self._index_one(snapshot_id, record)
        return True

    async def _index_one(self, snapshot_id: str, record: Record) -> None:
        fields = index_fields(record)
        with contextlib.suppress(ValueError):  # in already (a drain of the unindexed set got there first)
            await self.index.add(snapshot_id, fields, order=_order(snapshot_id))
        await self.db.client.srem(self.db.keys.snapshots_unindexed, snapshot_id)
        if not await self.db.client.exists(self.db.keys.snapshot(snapshot_id)):
            # deleted between its write and these entries (the delete found nothing indexed to take out)
            await self.index.remove(snapshot_id, fields)

    # -- one snapshot per sample for jobs and alerts -----------------------------------------------
    async def claim_sample(self, server_id: str, source: str, date: float, snapshot_id: str) -> str | None:
        """Offer `snapshot_id` as the `source` snapshot of one server's sample dated `date`. Returns the id of a
        stored one of that sample taken earlier (to record instead of a new copy), or None: take `snapshot_id`."""
        key = self.db.keys.snapshot_of_sample(server_id, source, repr(float(date)))
        if await self.db.client.set(key, snapshot_id, nx=True, ex=SAMPLE_REUSE_S):
            return None
        found = await self.db.client.get(key)
        other = codec.as_bytes(found).decode() if found is not None else ""
        if other and other != snapshot_id and valid_snapshot_id(other) \
                and await self.db.client.exists(self.db.keys.snapshot(other)):  # fmt: skip
            return other
        return None  # its own claim (a repeat), or a claimer that has not stored it (yet): no reuse

    async def index_pending(self, limit: int = 1000) -> int:
        """Index snapshots whose indexing a crash interrupted (safe to repeat, on any node). Returns how many ids
        were dealt with."""
        found_ids = await self.db.client.srandmember(self.db.keys.snapshots_unindexed, limit) or []
        ids = [codec.as_bytes(i).decode() for i in found_ids]
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
        freed = 0
        if records:
            sizes = await self.db.client.hmget(k.snapshot_sizes, list(records))
            freed = sum(int(n) for n in sizes if n is not None)
        for sid in records:
            also += [("DEL", [k.snapshot(sid)], []), ("DEL", [k.snapshot_brief(sid)], []),
                     ("SREM", [k.snapshots_unindexed], [sid]), ("HDEL", [k.snapshot_sizes], [sid])]  # fmt: skip
        if freed:
            also.append(("DECRBY", [k.snapshots_bytes], [freed]))
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
    async def recount(self) -> int:
        """Set the byte total from the per-snapshot sizes; returns it."""
        k = self.db.keys
        return int(await self.db.script(RECOUNT)(keys=[k.snapshot_sizes, k.snapshots_bytes], args=[]))

    async def trim_bytes(self, fence: Fence, target: int, step: int = 50, most: int = 100_000) -> int:
        """Delete the oldest snapshots (fenced, `step` a script) until they take at most `target` bytes, or
        `most` went. Returns how many went."""
        removed = skipped = 0
        while removed < most and (excess := await self.used_bytes() - target) > 0:
            found, _ = await self.oldest(step, offset=skipped)
            if not found:
                break
            sizes = await self.db.client.hmget(self.db.keys.snapshot_sizes, found)
            upto = 0
            while upto < len(found) and excess > 0:  # only as many as the excess needs
                excess -= int(sizes[upto] or 0)
                upto += 1
            done, gone = await self.delete_many(fence, found[:upto])
            removed += done
            skipped += len(gone)
        return removed

    async def oldest(self, limit: int, *, before: float | None = None, offset: int = 0) -> tuple[list[str], int]:
        """Ids of snapshots, earliest taken first, and how many there are; with `before` (epoch s) only those dated
        before it. Answered by the index, so no record is read."""
        root = Everything() if before is None else Range("date", high=before, high_open=True)
        found = await self.index.search(Query(root), offset=offset, limit=limit, sort_dir=1)
        return found.ids, found.total
