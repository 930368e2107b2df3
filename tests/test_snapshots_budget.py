"""Snapshot bounds on a real Redis-compatible server: the byte budget (refused past it, the primary drops the
oldest, deletes give bytes back, maintenance recounts), a repeated add and a repeated action run keep one snapshot,
two job errors on one server's sample share one, a delete racing an add's indexing leaves no index entry, a broken
unindexed entry holds up no retention, group snapshots keep brief member samples, and the monitor read handlers'
bounds (limit, date, a value too long for data_match)."""

from __future__ import annotations

import time
from typing import Any

import pytest

from cluster.maintenance import Maintenance, MaintenanceConfig
from cluster.monitoring import snapshots as snap
from storage import codec
from storage.connection import Database
from storage.lease import LeaseStore
from storage.snapshots import OverBudget, SnapshotStore, brief, valid_snapshot_id
from tests.authkit import Site, ok

from .test_scripts import elect
from .test_snapshots_store import host, ids, join, server_snapshot

OFF = MaintenanceConfig(job_max_rows=0, activity_max_rows=0, max_sessions_per_user=0, snapshot_max_rows=0)


def size_of(record: dict[str, Any]) -> int:
    return len(codec.pack(record)) + len(codec.pack(brief(record)))


async def test_the_byte_budget_refuses_and_deletes_give_bytes_back(db: Database) -> None:
    now = time.time()
    records = [server_snapshot("s1", now + i) for i in range(4)]
    one = size_of(records[0])
    store = SnapshotStore(db, max_bytes=3 * one + one // 2)
    for record in records[:3]:
        assert await store.add(record)
    assert await store.used_bytes() == sum(size_of(r) for r in records[:3])
    used = await store.used_bytes()
    with pytest.raises(OverBudget):
        await store.add(records[3])
    assert await store.get(records[3]["id"]) is None and await store.pending() == 0  # nothing written
    assert await store.used_bytes() == used and len(await ids(store, "*")) == 3

    fence = await elect(LeaseStore(db))
    assert await store.delete(fence, records[0]["id"])
    assert await store.used_bytes() == used - size_of(records[0])
    assert await store.add(records[3])
    await db.client.set(db.keys.snapshots_bytes, 1)  # drifted: maintenance's recount puts it right
    assert await store.recount() == await store.used_bytes() == sum(size_of(r) for r in records[1:])
    assert await store.trim_bytes(fence, size_of(records[3])) == 2  # the oldest go first
    assert await ids(store, "*") == [records[3]["id"]] and await store.used_bytes() == size_of(records[3])


async def test_a_repeated_add_keeps_one_and_a_delete_racing_the_index_leaves_no_entry(db: Database) -> None:
    store = SnapshotStore(db)
    record = server_snapshot("s2", time.time())
    assert await store.add(record)
    assert not await store.add({**record, "source": "changed"})  # the same id: the first stays, counted once
    assert await ids(store, "*") == [record["id"]] and (await store.get(record["id"]) or {})["source"] == "user"
    assert await store.used_bytes() == size_of(record)

    # add() wrote a second one, then a delete came before its indexing: the indexing finds it gone.
    fence = await elect(LeaseStore(db))
    late = server_snapshot("s2", time.time() + 1)
    sid = str(late["id"])
    await db.client.set(db.keys.snapshot(sid), codec.pack(late))
    await db.client.set(db.keys.snapshot_brief(sid), codec.pack(brief(late)))
    assert await store.delete(fence, sid)
    await store._index_one(sid, late)
    rows, total = await store.search("server:s2", 0, 10)
    assert (total, [r["id"] for r in rows]) == (1, [record["id"]])


def test_run_snapshot_ids_are_stable_and_valid() -> None:
    first, again, other = snap.run_snapshot_id("ar1x"), snap.run_snapshot_id("ar1x"), snap.run_snapshot_id("ar2x")
    assert first == again != other and valid_snapshot_id(first) and first.startswith("sn")


async def test_actions_share_a_sample_and_a_repeat_keeps_its_id(site: Site) -> None:
    stores = site.node.stores
    now = time.time()
    await join(site, "sj1", ["main"], sample=host("sj1", now))
    run_a, run_b = snap.run_snapshot_id("run_a"), snap.run_snapshot_id("run_b")
    first = await snap.take_server_snapshot(site.node, "sj1", "job", {"job": "j1"}, snapshot_id=run_a,
                                            per_sample=True)  # fmt: skip
    second = await snap.take_server_snapshot(site.node, "sj1", "job", {"job": "j2"}, snapshot_id=run_b,
                                             per_sample=True)  # fmt: skip
    assert first == second == run_a  # two job errors, one sample: one snapshot
    assert await ids(stores.snapshots, "source:job") == [run_a]
    await stores.hosts.put("sj1", host("sj1", now + 60))  # the next minute's sample
    assert await snap.take_server_snapshot(site.node, "sj1", "job", snapshot_id=run_a, per_sample=True) == run_a
    third = await snap.take_server_snapshot(site.node, "sj1", "job", {"job": "j3"}, snapshot_id=run_b,
                                            per_sample=True)  # fmt: skip
    assert third == run_b and len(await ids(stores.snapshots, "source:job")) == 2
    assert await snap.take_server_snapshot(site.node, "sj1", "user", snapshot_id=run_b) == run_b  # a repeat
    assert len(await ids(stores.snapshots, "*")) == 2


async def test_the_primary_drops_the_oldest_past_the_budget(site: Site) -> None:
    stores = site.node.stores
    now = time.time()
    await join(site, "sb1", ["main"], sample=host("sb1", now))
    taken = [await snap.take_server_snapshot(site.node, "sb1", "user") for _ in range(3)]
    stores.snapshots.max_bytes = await stores.snapshots.used_bytes() + 100
    newest = await snap.take_server_snapshot(site.node, "sb1", "user")
    left = await ids(stores.snapshots, "*")
    assert newest in left and taken[0] not in left and len(left) < 4
    assert await stores.snapshots.used_bytes() <= stores.snapshots.max_bytes
    stores.snapshots.max_bytes = 10  # smaller than any snapshot: refused, code `snapshot`
    with pytest.raises(snap.SnapshotError) as refused:
        await snap.take_server_snapshot(site.node, "sb1", "user")
    assert refused.value.code == "snapshot" and "full" in refused.value.message


async def test_a_broken_unindexed_entry_holds_up_no_retention(site: Site) -> None:
    store = site.node.stores.snapshots
    now = time.time()
    for i in range(4):
        await store.add(server_snapshot("sr1", now + i))
    db = site.node.db
    await db.client.sadd(db.keys.snapshots_unindexed, "snbroken")
    await db.client.set(db.keys.snapshot_brief("snbroken"), b"\xc1")  # msgpack never uses 0xc1: unreadable
    config = MaintenanceConfig(**{**{f: getattr(OFF, f) for f in OFF.__dataclass_fields__}, "snapshot_max_rows": 1})
    assert (await Maintenance(site.node, config).run_once()).snapshots == 3
    assert len(await ids(store, "*")) == 1


async def test_group_snapshots_keep_brief_member_samples(site: Site, admin: dict[str, str]) -> None:
    stores = site.node.stores
    now = time.time()
    members = 200
    await ok(site, "create_group", {"id": "bulk", "title": "Bulk", "hostname_match": "^nomatch$"}, admin)
    for i in range(members):
        await join(site, f"sg{i}", ["bulk"], sample=host(f"sg{i}", now, procs=1000, conns=500))
    assert "processes" not in ((await stores.hosts.get_briefs(["sg0"]))[0] or {})["data"]
    await stores.db.client.delete(stores.db.keys.host_brief("sg1"))  # a sample stored before briefs were
    started = time.perf_counter()
    made = await ok(site, "create_group_snapshot", {"group": "bulk"}, admin)
    print(f"\ngroup snapshot of {members} members: {time.perf_counter() - started:.3f} s")
    (whole,) = await stores.snapshots.get_many([made["id"]])
    assert whole is not None and len(whole["snapshots"]) == members
    for part in whole["snapshots"][:2]:
        assert "processes" not in part["data"] and "conns" not in part["data"] and part["data"]["load"]


async def test_monitor_reads_are_bounded(site: Site, admin: dict[str, str]) -> None:
    await join(site, "sm1", ["main"], sample=host("sm1", time.time(), note="x" * 70_000))
    for api, body, field in (
        ("get_latest_monitor_data", {"server": "sm1", "sys": "hourly", "limit": 1001}, "limit"),
        ("get_historical_monitor_data", {"server": "sm1", "sys": "hourly", "date": 1e300, "limit": 10}, "date"),
        ("get_historical_monitor_data", {"server": "sm1", "sys": "hourly", "limit": 10}, "date"),
    ):  # fmt: skip
        _, reply = await site.call(api, body, headers=admin)
        assert reply["code"] == "api" and field in reply["description"], (api, body, reply)
    rows = await ok(site, "get_historical_monitor_data", {"server": "sm1", "sys": "hourly", "date": 0,
                                                          "limit": 1000}, admin)  # fmt: skip
    assert rows["rows"] == []
    body = {"server": "sm1", "source": "note", "data_type": "integer", "data_match": "(x+)"}
    _, reply = await site.call("test_monitor", body, headers=admin)
    assert reply["code"] == "monitor" and "too long" in reply["description"], reply
    _, listed = await site.call("get_quickmon_data", {"servers": ["sm1"]}, headers=admin)
    assert listed["code"] == 0  # the unused `servers` parameter is gone (an unknown one is ignored)
