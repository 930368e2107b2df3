"""Alert invocations: one msgpack record per time an alert fired on a server, and the `alerts` search index.

- The primary's alert evaluator writes a record at `alert_invocation(id)` and adds its id to `alerts_unindexed`
  in the same fenced step, when the alert fires and again when it clears (active false). Every other change
  (tickets, action results, a delete) goes through `AlertStore.update` / `delete` here, fenced as well.
- The index follows the record, never the other way round: `reindex` reads the record and `alert_indexed(id)`
  (the fields the index holds for it now) under WATCH and writes the index commands, the new view and the
  removal from `alerts_unindexed` in one MULTI. A change meanwhile (a clear racing a ticket update, two drains
  at once) makes it start over, so whichever re-index commits last indexes the record as it then is and an id
  leaves the set only once its entries match the record. A crash anywhere leaves the id in the set for
  `index_pending`, which is idempotent.
- Columns are those of xyOps' unbase `alerts` index, so its queries work unchanged: `active:true`,
  `alert:load_avg_high`, `server:s1`, `groups:main`, `start:>2026-01-01`, `end:<today`, `jobs:j..`, `tickets:t..`.
  (⚠ xyOps keeps `start`/`end` to the hour; here they are to the second, a finer answer to the same queries.)
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Callable, Sequence
from typing import Any

from redis.exceptions import WatchError

from . import codec
from .connection import Database
from .errors import Conflict
from .fence import Fence, FencedBatch
from .pages import fetch_page
from .scripts import fenced
from .search.index import Column, Indexer, IndexSpec, Op
from .search.query import parse, restrict

Record = dict[str, Any]
INVOCATION_ID = re.compile(r"^[a-z0-9_]{1,32}$")  # xyOps: ^[a-z0-9_]+$; the index row reserves 32 bytes
MGET_BATCH = 200
WATCH_RETRIES = 20
CAS_RETRIES = 20

ALERTS_INDEX = IndexSpec(
    name="alerts",
    columns=(
        Column("active", "word"),
        Column("alert", "word"),
        Column("groups", "word"),
        Column("server", "word", sparse=True),  # one value per server: sets, not a bitmap per server
        Column("start", "date", source="date"),
        Column("end", "date", source="modified"),
        Column("jobs", "word", sparse=True),
        Column("tickets", "word", sparse=True),
    ),
    sorters=("start", "end"),
)

# Rewrite an invocation if it is still byte for byte what the caller read, and queue it for re-indexing.
# KEYS[1] leader, KEYS[2] epoch, KEYS[3] invocation record, KEYS[4] unindexed set
# ARGV[1] node id, ARGV[2] epoch, ARGV[3] invocation id, ARGV[4] sha1 hex of the record read,
# ARGV[5] msgpack new record
# return 1 written, 0 the record changed (or is gone) since it was read (nothing written)
ALERT_CAS = fenced("""
local raw = redis.call('GET', KEYS[3])
if not raw or redis.sha1hex(raw) ~= ARGV[4] then return 0 end
redis.call('SET', KEYS[3], ARGV[5])
redis.call('SADD', KEYS[4], ARGV[3])
return 1
""")


def valid_invocation_id(invocation_id: Any) -> bool:
    return isinstance(invocation_id, str) and bool(INVOCATION_ID.fullmatch(invocation_id))



def _record(raw: Any) -> Record | None:
    return None if raw is None else dict(codec.unpack(codec.as_bytes(raw)))


def index_fields(record: Record) -> Record:
    """The searchable view of an invocation."""
    return {
        "active": bool(record.get("active")),
        "alert": record.get("alert", ""),
        "groups": list(record.get("groups") or []),
        "server": record.get("server", ""),
        "date": record.get("date", 0),
        "modified": record.get("modified", 0),
        "jobs": list(record.get("jobs") or []),
        "tickets": list(record.get("tickets") or []),
    }


def _order(record: Record) -> float:
    """`_id` order (ms): when the invocation fired. xyOps sorts by id, which is generated at that moment."""
    return float(record.get("date") or time.time()) * 1000


class AlertStore:
    """Alert invocation records and their `alerts` search index."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.index = Indexer(db, ALERTS_INDEX)

    # -- reads --------------------------------------------------------------------------
    async def get(self, invocation_id: str) -> Record | None:
        if not valid_invocation_id(invocation_id):
            return None
        found = _record(await self.db.client.get(self.db.keys.alert_invocation(invocation_id)))
        return None if found is None else (await self._with_results([found]))[0]

    async def _with_results(self, records: list[Record]) -> list[Record]:
        """Records with their action results (kept in a list per invocation, keys.alert_results, appended as each
        action is retired) joined onto `actions`, as xyOps stores them."""
        if not records:
            return records
        async with self.db.client.pipeline(transaction=False) as pipe:
            for record in records:
                pipe.lrange(self.db.keys.alert_results(str(record.get("id"))), 0, -1)  # type: ignore[unused-awaitable]
            replies = await pipe.execute()
        for record, raws in zip(records, replies, strict=True):
            if raws:
                record["actions"] = [*(record.get("actions") or []), *(dict(codec.unpack(r)) for r in raws)]
        return records

    async def get_many(self, ids: Sequence[str]) -> list[Record | None]:
        """The records of `ids`, in order, None where one is missing (or the id is malformed)."""
        out: list[Record | None] = [None] * len(ids)
        wanted = [(i, rid) for i, rid in enumerate(ids) if valid_invocation_id(rid)]
        if not wanted:
            return out
        async with self.db.client.pipeline(transaction=False) as pipe:  # one round trip, in MGET batches
            for start in range(0, len(wanted), MGET_BATCH):
                part = wanted[start : start + MGET_BATCH]
                pipe.mget([self.db.keys.alert_invocation(rid) for _, rid in part])  # type: ignore[unused-awaitable]
            replies = await pipe.execute()
        for start, raws in zip(range(0, len(wanted), MGET_BATCH), replies, strict=True):
            for (i, _), raw in zip(wanted[start : start + MGET_BATCH], raws, strict=True):
                out[i] = _record(raw)
        await self._with_results([r for r in out if r is not None])
        return out

    async def search(
        self, query: str, offset: int, limit: int, sort_dir: int = -1, *, sort_by: str = "_id",
        also: Sequence[str] = (),
    ) -> tuple[list[Record], int]:  # fmt: skip
        """Invocations matching `query` and every query in `also` (each parsed on its own, then ANDed);
        QueryError for a bad query."""
        parsed = restrict(parse(query, ALERTS_INDEX), *(parse(q, ALERTS_INDEX) for q in also))
        found = await self.index.search(parsed, offset=offset, limit=limit, sort_by=sort_by, sort_dir=sort_dir)
        rows = await fetch_page(self.db, [self.db.keys.alert_invocation(i) for i in found.ids])
        return await self._with_results([r for r in rows if r is not None]), found.total

    async def pending(self) -> int:
        """How many invocations wait for their search entries."""
        return int(await self.db.client.scard(self.db.keys.alerts_unindexed))

    # -- writes ----------------------------------------------------------------------------
    async def stored(self, invocation_id: str) -> tuple[Record, str] | None:
        """An invocation's record and the digest of its bytes, for `swap`."""
        if not valid_invocation_id(invocation_id):
            return None
        raw = await self.db.client.get(self.db.keys.alert_invocation(invocation_id))
        if raw is None:
            return None
        data = codec.as_bytes(raw)
        return dict(codec.unpack(data)), hashlib.sha1(data).hexdigest()

    async def swap(self, fence: Fence, invocation_id: str, digest: str, new: Record) -> bool:
        """Rewrite an invocation if it is unchanged since `stored` gave `digest` (fenced), then re-index it. False
        when it changed or went meanwhile (nothing written)."""
        k = self.db.keys
        done = await fence.run(ALERT_CAS, [k.alert_invocation(invocation_id), k.alerts_unindexed],
                               [invocation_id, digest, codec.pack(new)])  # fmt: skip
        if int(done) != 1:
            return False
        await self.reindex(invocation_id)
        return True

    async def update(
        self, fence: Fence, invocation_id: str, change: Callable[[Record], Record | None]
    ) -> Record | None:
        """Read-modify-write one invocation with compare-and-swap behind the fence, then re-index it. `change` gets a
        copy of the record and returns the new one, or None to write nothing (the record is answered as it is).
        None when there is no such invocation. A write meanwhile (the evaluator clearing it, another update) makes
        it read and change again, up to CAS_RETRIES times (then Conflict); FencedError if this node is no
        longer the primary."""
        for _ in range(CAS_RETRIES):
            found = await self.stored(invocation_id)
            if found is None:
                return None
            current, digest = found
            updated = change(dict(current))
            if updated is None:
                return current
            if await self.swap(fence, invocation_id, digest, updated):
                return updated
        raise Conflict("revision", f"alert invocation {invocation_id} kept changing during an update")

    async def delete(self, fence: Fence, invocation_id: str) -> bool:
        """Delete an invocation (fenced) and then its index entries. False if there was no record. The id is
        queued for re-indexing in the same step, so a crash before the entries go leaves them to index_pending
        (searches skip an entry whose record is gone meanwhile)."""
        if not valid_invocation_id(invocation_id):
            return False
        k = self.db.keys
        batch = FencedBatch().add("DEL", [k.alert_invocation(invocation_id)])
        batch.add("DEL", [k.alert_results(invocation_id)])
        batch.add("SADD", [k.alerts_unindexed], invocation_id)
        gone = (await fence.execute(batch))[0]
        await self.reindex(invocation_id)
        return int(gone) == 1

    # -- indexing ----------------------------------------------------------------------------
    async def index_pending(self, limit: int = 1000) -> int:
        """Bring the index entries of up to `limit` queued invocations in line with their records (an entry moves
        when a field changed; a record gone meanwhile just leaves the set). Safe to run on several nodes at once
        and to repeat. Returns how many ids were dealt with."""
        ids = await self.db.client.srandmember(self.db.keys.alerts_unindexed, limit)
        done = 0
        for raw in ids or []:
            invocation_id = codec.as_bytes(raw).decode()
            if not valid_invocation_id(invocation_id):  # nothing can be indexed under it: just drop it
                await self.db.client.srem(self.db.keys.alerts_unindexed, invocation_id)
                continue
            await self.reindex(invocation_id)
            done += 1
        return done

    async def reindex(self, invocation_id: str) -> None:
        """Index one invocation as its record is now (no entries if it is gone) and take it off the queue."""
        k = self.db.keys
        rec_key, view_key = k.alert_invocation(invocation_id), k.alert_indexed(invocation_id)
        for _ in range(WATCH_RETRIES):
            async with self.db.client.pipeline(transaction=True) as pipe:
                try:
                    await pipe.watch(rec_key, view_key)
                    record = _record(await pipe.get(rec_key))
                    view = _record(await pipe.get(view_key))
                    ops: list[Op] = []
                    if view is None and record is not None:
                        ((slot, _),) = await self.index.allocate([invocation_id])
                        order = _order(record)
                        ops = self.index.index_ops(invocation_id, index_fields(record), slot=slot, order=order)
                    elif view is not None and record is None:
                        slot, order = int(view["s"]), float(view["o"])
                        ops = self.index.remove_ops(invocation_id, view["f"], slot=slot, order=order)
                    elif view is not None and record is not None:
                        slot, order = int(view["s"]), float(view["o"])
                        ops = self.index.index_ops(invocation_id, index_fields(record), slot=slot, order=order,
                                                   old=view["f"])  # fmt: skip
                    pipe.multi()  # type: ignore[no-untyped-call]
                    for command, keys, args in ops:
                        pipe.execute_command(command, *keys, *args)
                    if record is None:
                        pipe.delete(view_key)  # type: ignore[unused-awaitable]  # queued
                    else:
                        packed = codec.pack({"s": slot, "o": order, "f": index_fields(record)})
                        pipe.set(view_key, packed)  # type: ignore[unused-awaitable]
                    pipe.srem(k.alerts_unindexed, invocation_id)  # type: ignore[unused-awaitable]
                    await pipe.execute()
                    return
                except WatchError:
                    continue
        raise WatchError(f"alert invocation {invocation_id} kept changing while it was indexed")
