"""AlertStore on a real Redis-compatible server: invocations written as the alert evaluator writes them (the record
and the unindexed set in one step), indexed by index_pending, searched by every column of xyOps' `alerts` index,
entries moved when an invocation clears, multi-get order, compare-and-swap updates under concurrent writes, the
fence, and deletes that take the index entries with them."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from storage import codec
from storage.alerts import AlertStore
from storage.connection import Database
from storage.errors import FencedError
from storage.fence import Fence
from storage.lease import LeaseStore
from storage.search.query import QueryError

from .test_scripts import elect

DAY = 86400
T0 = 1_767_225_600  # 2026-01-01 00:00:00 UTC


def invocation(inv_id: str, alert: str, server: str, date: float, **extra: Any) -> dict[str, Any]:
    return {"id": inv_id, "active": True, "alert": alert, "server": server, "groups": ["main"], "date": date,
            "modified": date, "exp": "monitors.load_avg >= 1", "message": "High load", "count": 2,
            "notified": True, "jobs": [], "tickets": [], "actions": [], **extra}  # fmt: skip


async def evaluator_writes(db: Database, record: dict[str, Any]) -> None:
    """What the evaluator's fenced script does: the record and the id in the unindexed set, together."""
    async with db.client.pipeline(transaction=True) as pipe:
        pipe.set(db.keys.alert_invocation(record["id"]), codec.pack(record))  # type: ignore[unused-awaitable]
        pipe.sadd(db.keys.alerts_unindexed, record["id"])  # type: ignore[unused-awaitable]
        await pipe.execute()


async def ids(store: AlertStore, query: str, **kw: Any) -> list[str]:
    rows, total = await store.search(query, 0, 100, **kw)
    assert total == len(rows)
    return [r["id"] for r in rows]


async def seed(db: Database, store: AlertStore) -> list[dict[str, Any]]:
    records = [
        invocation("a1", "load_avg_high", "s1", T0 + 3600, jobs=["j1", "j2"], groups=["main", "web"]),
        invocation("a2", "mem_high", "s1", T0 + 2 * DAY, tickets=["t1"]),
        invocation("a3", "load_avg_high", "s2", T0 - DAY, active=False, modified=T0 - DAY + 600),
    ]
    for rec in records:
        await evaluator_writes(db, rec)
    assert await store.search("*", 0, 10) == ([], 0)  # nothing is searchable before it is indexed
    assert await store.pending() == 3
    assert await store.index_pending() == 3
    assert await store.pending() == 0
    return records


async def test_every_column_of_the_alerts_index_searches(db: Database) -> None:
    store = AlertStore(db)
    await seed(db, store)
    assert await ids(store, "*") == ["a2", "a1", "a3"]  # `_id`: when they fired, newest first
    assert await ids(store, "*", sort_dir=1) == ["a3", "a1", "a2"]
    assert await ids(store, "active:true") == ["a2", "a1"]
    assert await ids(store, "active:false") == ["a3"]
    assert await ids(store, "alert:load_avg_high") == ["a1", "a3"]
    assert await ids(store, "alert:load_avg_high active:true") == ["a1"]
    assert await ids(store, "server:s1") == ["a2", "a1"]
    assert await ids(store, "server:s2|s9") == ["a3"]
    assert await ids(store, "groups:web") == ["a1"]
    assert await ids(store, "groups:main") == ["a2", "a1", "a3"]
    assert await ids(store, "start:>2026-01-01") == ["a2"]  # after that day
    assert await ids(store, "start:>=2026-01-01") == ["a2", "a1"]
    assert await ids(store, "start:2026-01-01") == ["a1"]
    assert await ids(store, "start:<2026-01-01") == ["a3"]
    assert await ids(store, "end:2025-12-31") == ["a3"]
    assert await ids(store, f"start:{T0}..{T0 + DAY}") == ["a1"]
    assert await ids(store, "jobs:j2") == ["a1"]
    assert await ids(store, "tickets:t1") == ["a2"]
    assert await ids(store, "-server:s1") == ["a3"]
    assert await ids(store, '(alert = "load_avg_high" & server = "s2")') == ["a3"]
    assert await ids(store, "active:true", also=["groups:web|ops"]) == ["a1"]
    assert await ids(store, "*", sort_by="end") == ["a2", "a1", "a3"]
    rows, total = await store.search("*", 1, 1)
    assert ([r["id"] for r in rows], total) == (["a1"], 3)
    assert rows[0]["message"] == "High load" and rows[0]["jobs"] == ["j1", "j2"]  # whole records come back
    with pytest.raises(QueryError):
        await store.search("nosuch:x", 0, 10)
    with pytest.raises(QueryError):
        await store.search("start:notadate", 0, 10)


async def test_a_clear_moves_the_entries_and_the_old_ones_are_gone(db: Database) -> None:
    store = AlertStore(db)
    records = await seed(db, store)
    cleared = {**records[0], "active": False, "modified": T0 + 5 * DAY, "jobs": ["j3"]}
    await evaluator_writes(db, cleared)
    assert await ids(store, "active:true") == ["a2", "a1"]  # until the drain, the old entries answer
    assert await store.index_pending() == 1
    assert await ids(store, "active:true") == ["a2"]
    assert await ids(store, "active:false") == ["a1", "a3"]
    assert await ids(store, "jobs:j2") == [] and await ids(store, "jobs:j3") == ["a1"]
    assert await ids(store, "end:2026-01-06") == ["a1"]
    assert await ids(store, "end:2026-01-01") == []
    assert await ids(store, "start:2026-01-01") == ["a1"]  # unchanged fields keep their entries
    # Draining again, or an id queued with nothing changed, leaves the index as it is.
    await db.client.sadd(db.keys.alerts_unindexed, "a1", "a2")
    assert await store.index_pending() == 2
    assert await store.index_pending() == 0
    assert await ids(store, "active:false") == ["a1", "a3"]
    assert await ids(store, "*") == ["a2", "a1", "a3"]


async def test_concurrent_drains_index_each_record_once(db: Database) -> None:
    store, other = AlertStore(db), AlertStore(db)
    made = [invocation(f"x{i:03d}", "a", f"s{i % 7}", T0 + i, active=i % 2 == 0) for i in range(60)]
    for rec in made:
        await evaluator_writes(db, rec)
    # Two nodes drain at once while the evaluator clears some of the records.
    clears = [evaluator_writes(db, {**rec, "active": False, "modified": T0 + DAY}) for rec in made[:20]]
    await asyncio.gather(store.index_pending(), other.index_pending(), *clears, store.index_pending())
    await store.index_pending()
    assert await store.pending() == 0
    assert sorted(await ids(store, "active:true")) == sorted(r["id"] for i, r in enumerate(made) if i % 2 == 0
                                                           and i >= 20)  # fmt: skip
    assert len(await ids(store, "active:false")) == 40
    assert (await store.search("*", 0, 1))[1] == 60
    assert sorted(await ids(store, "server:s3")) == sorted(r["id"] for r in made if r["server"] == "s3")


async def test_a_record_gone_before_its_drain_just_leaves_the_set(db: Database) -> None:
    store = AlertStore(db)
    await evaluator_writes(db, invocation("a9", "x", "s1", T0))
    await db.client.delete(db.keys.alert_invocation("a9"))
    await db.client.sadd(db.keys.alerts_unindexed, "BAD ID")  # nothing could be indexed under it
    assert await store.index_pending() == 1
    assert await store.pending() == 0
    assert await store.search("*", 0, 10) == ([], 0)


async def test_get_and_get_many_answer_in_order(db: Database) -> None:
    store = AlertStore(db)
    records = await seed(db, store)
    assert await store.get("a2") == records[1]
    assert await store.get("nope") is None and await store.get("BAD/ID") is None
    assert await store.get_many(["a3", "nope", "a1", "BAD ID", "a3"]) == [records[2], None, records[0], None,
                                                                          records[2]]  # fmt: skip
    assert await store.get_many([]) == []
    many = [f"m{i:04d}" for i in range(450)]  # more than one MGET batch
    for inv_id in many[::50]:
        await evaluator_writes(db, invocation(inv_id, "x", "s1", T0))
    got = await store.get_many(many)
    assert [g is not None for g in got] == [i % 50 == 0 for i in range(450)]
    assert [g["id"] for g in got if g is not None] == many[::50]


async def test_update_is_a_compare_and_swap_and_reindexes(db: Database) -> None:
    store = AlertStore(db)
    await seed(db, store)
    fence = await elect(LeaseStore(db))
    found = await store.stored("a1")
    assert found is not None
    before, digest = found
    # The evaluator clears the invocation between the read and the write: the swap writes nothing.
    await evaluator_writes(db, {**before, "active": False, "modified": T0 + DAY})
    assert not await store.swap(fence, "a1", digest, {**before, "tickets": ["lost"]})
    now = await store.get("a1")
    assert now is not None and now["active"] is False and now["tickets"] == []
    await store.index_pending()

    # Concurrent updates each add a ticket: every one is kept, none overwrites another.
    def adding(ticket: str) -> Any:
        return lambda rec: {**rec, "tickets": [*rec["tickets"], ticket]}

    tickets = [f"u{i}" for i in range(12)]
    await asyncio.gather(*(store.update(fence, "a1", adding(t)) for t in tickets))
    final = await store.get("a1")
    assert final is not None and sorted(final["tickets"]) == sorted(tickets)
    assert final["active"] is False  # the clear is kept too
    assert await store.pending() == 0
    assert await ids(store, "tickets:u7") == ["a1"]
    assert await ids(store, "active:false") == ["a1", "a3"]

    # A change that writes nothing answers the record as it is; a missing invocation answers None.
    assert await store.update(fence, "a1", lambda rec: None) == final
    assert await store.update(fence, "nope", adding("x")) is None
    assert await store.update(fence, "BAD ID", adding("x")) is None
    replaced = await store.update(fence, "a2", lambda rec: {**rec, "tickets": ["t9"]})
    assert replaced is not None and replaced["tickets"] == ["t9"]
    assert await ids(store, "tickets:t1") == [] and await ids(store, "tickets:t9") == ["a2"]


async def test_a_stale_fence_changes_nothing(db: Database) -> None:
    store = AlertStore(db)
    records = await seed(db, store)
    fence = await elect(LeaseStore(db))
    for stale in (Fence(db, fence.node_id, fence.epoch - 1), Fence(db, "other", fence.epoch)):
        with pytest.raises(FencedError):
            await store.update(stale, "a1", lambda rec: {**rec, "tickets": ["t5"]})
        with pytest.raises(FencedError):
            await store.delete(stale, "a2")
    assert await store.get_many(["a1", "a2"]) == records[:2]
    assert await store.pending() == 0
    assert await ids(store, "tickets:t5") == [] and await ids(store, "*") == ["a2", "a1", "a3"]


async def test_delete_removes_the_record_and_its_entries(db: Database) -> None:
    store = AlertStore(db)
    await seed(db, store)
    fence = await elect(LeaseStore(db))
    assert await store.delete(fence, "a1")
    assert await store.get("a1") is None
    assert await ids(store, "*") == ["a2", "a3"]
    for query in ("alert:load_avg_high", "jobs:j1", "groups:web", "start:2026-01-01", "active:true"):
        assert "a1" not in await ids(store, query), query
    assert not await db.client.exists(db.keys.alert_indexed("a1"))
    assert await store.pending() == 0
    assert not await store.delete(fence, "a1")  # gone already
    assert not await store.delete(fence, "BAD ID")
    # An id can be used again afterwards (the evaluator never does, but nothing breaks).
    await evaluator_writes(db, invocation("a1", "disk_full", "s4", T0))
    await store.index_pending()
    assert await ids(store, "server:s4") == ["a1"] and await ids(store, "alert:load_avg_high") == ["a3"]


async def test_an_id_leaves_the_queue_only_once_its_entries_match_the_record(db: Database) -> None:
    store = AlertStore(db)
    rec = invocation("a1", "x", "s1", T0)
    await evaluator_writes(db, rec)

    async def later(record: dict[str, Any], delay: float) -> None:
        await asyncio.sleep(delay)
        await evaluator_writes(db, record)

    for round_no in range(100):  # re-indexes racing the evaluator flipping the invocation, at varied moments
        rec = {**rec, "active": round_no % 2 == 1, "modified": T0 + round_no}
        await asyncio.gather(store.reindex("a1"), later(rec, (round_no % 10) * 0.0002), store.reindex("a1"))
        if not await store.pending():  # off the queue: the index must say what the record says
            assert await ids(store, f"active:{str(rec['active']).lower()}") == ["a1"], round_no
            assert await ids(store, f"end:{T0 + round_no}") == ["a1"], round_no
        await store.index_pending()
