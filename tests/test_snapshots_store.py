"""Snapshots without agents: the store on a real Redis-compatible server (record, brief, the `snapshots` index by
every column of xyOps' unbase index, a crash between the record and its index entries, fenced deletes, a server's
history, retention), the pure builders and their bounds, and the API on one in-process node (bad input, watches in
the global state, `#id:` look-ups, a group-limited caller)."""

from __future__ import annotations

import time
from typing import Any

import pytest

from cluster.maintenance import Maintenance, MaintenanceConfig
from cluster.monitoring import snapshots as snap
from storage import codec
from storage.connection import Database
from storage.errors import FencedError
from storage.fence import Fence
from storage.ids import generate_id
from storage.lease import LeaseStore
from storage.search.query import QueryError
from storage.snapshots import MAX_RECORD_BYTES, SnapshotStore
from tests.authkit import Site, ok

from .test_scripts import elect

DAY = 86400


def host(server: str, date: float, *, procs: int = 3, conns: int = 2, **data: Any) -> dict[str, Any]:
    rows = [{"pid": i, "cpu": float(i % 50), "command": f"p{i}"} for i in range(procs)]
    return {"version": "1.0", "date": date, "server": server, "hostname": f"{server}.example", "ip": "10.0.0.1",
            "groups": ["main"], "data": {"load": [0.1, 0.2, 0.3], "processes": {"all": procs, "list": rows},
                                         "conns": [{"local_port": i} for i in range(conns)],
                                         "mounts": {"root": {"use": 40}}, "commands": {"x": "y"}, **data}}  # fmt: skip


def server_snapshot(server: str, date: float, source: str = "user", **kw: Any) -> dict[str, Any]:
    return snap.build_server_snapshot(host(server, date), {"id": server, "groups": kw.pop("groups", ["main"])},
                                      snapshot_id=generate_id("sn"), source=source, **kw)  # fmt: skip


async def ids(store: SnapshotStore, query: str, **kw: Any) -> list[str]:
    rows, total = await store.search(query, 0, 100, **kw)
    assert total == len(rows)
    return [r["id"] for r in rows]


async def test_records_briefs_and_every_index_column(db: Database) -> None:
    store = SnapshotStore(db)
    now = time.time()
    a = server_snapshot("s1", now - 3 * DAY, alerts=["amx1"], jobs=["jmx1", "jmx2"])
    b = server_snapshot("s1", now - DAY, "watch", groups=["main", "web"])
    c = server_snapshot("s2", now, "job", extra={"job": "jmx9"}, jobs=["jmx9"])
    group = snap.build_group_snapshot({"id": "web", "title": "Web"}, [({"id": "s1"}, False, host("s1", now))],
                                      snapshot_id=generate_id("sn"), source="user", now=now)  # fmt: skip
    for record in (a, b, c, group):
        await store.add(record)
    assert await store.pending() == 0
    assert await ids(store, "*") == [group["id"], c["id"], b["id"], a["id"]]  # newest first (the `_id` order)
    assert await ids(store, "*", sort_dir=1) == [a["id"], b["id"], c["id"], group["id"]]
    assert await ids(store, "server:s1") == [b["id"], a["id"]]
    assert await ids(store, "type:group") == [group["id"]]
    assert await ids(store, "source:watch|job") == [c["id"], b["id"]]
    assert await ids(store, "groups:web") == [group["id"], b["id"]]
    assert await ids(store, "alerts:amx1") == [a["id"]]
    assert await ids(store, "jobs:jmx2") == [a["id"]]
    assert await ids(store, "jobs:jmx9 server:s2") == [c["id"]]
    assert await ids(store, f"date:<{int(now - 2 * DAY)}") == [a["id"]]
    assert await ids(store, "*", sort_by="date", sort_dir=1) == [a["id"], b["id"], c["id"], group["id"]]
    assert await ids(store, "*", also=["groups:web"]) == [group["id"], b["id"]]
    with pytest.raises(QueryError):
        await store.search("nosuchcolumn:x", 0, 10)

    # Briefs leave out the heavy parts (xyOps' search_snapshots without verbose); verbose rows are whole.
    rows, _ = await store.search("server:s2", 0, 10)
    assert rows[0]["data"] == {"load": [0.1, 0.2, 0.3]} and rows[0]["job"] == "jmx9"
    rows, _ = await store.search("type:group", 0, 10)
    assert rows[0]["data"] == {} and not {"servers", "snapshots", "group_def", "quickmons"} & set(rows[0])
    rows, _ = await store.search("type:group", 0, 10, verbose=True)
    assert rows[0]["servers"] == [{"id": "s1", "offline": False}] and rows[0]["snapshots"][0]["server"] == "s1"
    full = await store.get(str(c["id"]))
    assert full is not None and full["data"]["processes"]["all"] == 3 and len(full["data"]["conns"]) == 2
    got = await store.get_many([str(c["id"]), "nope", "BAD ID", str(a["id"])], full=False)
    assert [r and r["id"] for r in got] == [c["id"], None, None, a["id"]]
    assert await store.get("BAD ID") is None


async def test_a_crash_before_indexing_is_repaired_and_bad_records_are_refused(db: Database) -> None:
    store = SnapshotStore(db)
    record = server_snapshot("s3", time.time())
    sid = str(record["id"])
    # What add() writes first, and a crash before the index: the record is kept, searchable once drained.
    async with db.client.pipeline(transaction=True) as pipe:
        pipe.set(db.keys.snapshot(sid), codec.pack(record))  # type: ignore[unused-awaitable]
        pipe.set(db.keys.snapshot_brief(sid), codec.pack(record))  # type: ignore[unused-awaitable]
        pipe.sadd(db.keys.snapshots_unindexed, sid, "sngone")  # type: ignore[unused-awaitable]
        await pipe.execute()
    assert await ids(store, "server:s3") == []
    assert await store.index_pending() == 2
    assert (await store.pending(), await ids(store, "server:s3")) == (0, [sid])
    assert await store.index_pending() == 0
    for bad in ({**record, "id": "Not An Id"}, {**record, "id": generate_id("sn"),
                                                "blob": b"x" * (MAX_RECORD_BYTES + 1)}):  # fmt: skip
        with pytest.raises(ValueError):
            await store.add(bad)
        assert await store.get(str(bad["id"])) is None
    assert await store.pending() == 0


async def test_deletes_are_fenced_and_take_the_index_entries(db: Database) -> None:
    store = SnapshotStore(db)
    fence = await elect(LeaseStore(db))
    now = time.time()
    mine = [server_snapshot("s4", now + i) for i in range(5)]
    other = server_snapshot("s5", now)
    for record in (*mine, other):
        await store.add(record)
    for stale in (Fence(db, fence.node_id, fence.epoch - 1), Fence(db, "other", fence.epoch)):
        with pytest.raises(FencedError):
            await store.delete(stale, str(other["id"]))
    assert await store.get(str(other["id"])) is not None
    assert await store.delete(fence, str(other["id"]))
    assert not await store.delete(fence, str(other["id"]))
    assert await store.get(str(other["id"])) is None and await ids(store, "server:s5") == []
    assert await db.client.get(db.keys.snapshot_brief(str(other["id"]))) is None
    assert await store.delete_for_server(fence, "s4", batch=2) == 5
    assert await ids(store, "*") == [] and await store.get_many([str(r["id"]) for r in mine]) == [None] * 5
    assert await store.delete_for_server(fence, "bad id") == 0


async def test_retention_by_age_and_by_count(site: Site) -> None:
    node, store = site.node, site.node.stores.snapshots
    now = time.time()
    old = [server_snapshot("s6", now - 10 * DAY + i) for i in range(4)]
    new = [server_snapshot("s6", now - DAY + i) for i in range(6)]
    for record in (*old, *new):
        await store.add(record)
    off = MaintenanceConfig(job_max_rows=0, activity_max_rows=0, max_sessions_per_user=0, batch=3, step=2,
                            snapshot_max_rows=0, snapshot_expire_days=7)  # fmt: skip
    assert (await Maintenance(node, off).run_once()).snapshots == 4
    assert set(await ids(store, "server:s6")) == {r["id"] for r in new}
    capped = MaintenanceConfig(**{**{f: getattr(off, f) for f in off.__dataclass_fields__},
                                  "snapshot_expire_days": 0, "snapshot_max_rows": 2})  # fmt: skip
    assert (await Maintenance(node, capped).run_once()).snapshots == 4
    assert await ids(store, "*") == [new[-1]["id"], new[-2]["id"]]  # the newest are kept


def test_builders_bound_what_an_agent_sends() -> None:
    now = time.time()
    rows = [{"pid": i, "cpu": float(i), **({"job": "j1"} if i == 0 else {})} for i in range(1500)]
    big = host("s1", now, conns=2500)
    big["data"]["processes"]["list"] = rows
    out = snap.bounded_host(big)
    kept = out["data"]["processes"]["list"]
    assert len(kept) == snap.MAX_PROCESSES and kept[0]["pid"] == 0  # the job's process first, then the busiest
    assert kept[1]["cpu"] == 1499.0 and len(out["data"]["conns"]) == snap.MAX_CONNS
    assert len(big["data"]["processes"]["list"]) == 1500  # the input is not changed
    assert "truncated" not in out
    huge = host("s1", now, blob="x" * 3_000_000)
    cut = snap.bounded_host(huge)
    assert cut["truncated"] is True and cut["data"] == {}
    heavy = host("s1", now, commands={"big": "y" * 3_000_000})
    cut = snap.bounded_host(heavy)
    assert cut["truncated"] is True and cut["data"] == {"load": [0.1, 0.2, 0.3]}  # only the heavy parts went

    active = {"s1-load": "a1", "s10-load": "a2", "s1-disk": "a3", "s2-load": "a4"}
    assert snap.server_alerts(active, "s1") == ["a1", "a3"]  # not s10's
    jobs: list[dict[str, Any]] = [{"id": "j1", "server": "s1", "workflow": {"job": "w1"}}, {"id": "j2", "server": "s2"},
            {"id": "j3", "server": "s1"}, {"id": "w1", "server": ""}]  # fmt: skip
    assert snap.server_jobs(jobs, {"s1"}) == ["j1", "j3", "w1"]
    assert snap.server_jobs(jobs, {"s1", "s2"}, parents=False) == ["j1", "j2", "j3"]

    quick = [{"date": 1, "_qm_cpu_usage": 5}]
    record = snap.build_server_snapshot(host("s1", now - 30), {"id": "s1", "groups": ["g1"]}, snapshot_id="snx",
                                        source="job", extra={"job": "j1", "source": "ignored", "id": "ignored"},
                                        alerts=["a1"], jobs=["j1"], quickmon=quick)  # fmt: skip
    assert (record["id"], record["type"], record["source"], record["server"], record["groups"]) == \
        ("snx", "server", "job", "s1", ["g1"])  # fmt: skip
    assert (record["date"], record["job"], record["alerts"], record["quickmon"]) == \
        (now - 30, "j1", ["a1"], [{"date": 1, "_qm_cpu_usage": 5}])  # fmt: skip  # the sample's date, as xyOps

    members = [({"id": f"s{i}"}, i % 2 == 1, host(f"s{i}", now)) for i in range(snap.MAX_GROUP_SERVERS + 5)]
    group = snap.build_group_snapshot({"id": "g1"}, members, snapshot_id="sny", source="watch", now=now,
                                      quickmons=[[{"date": i}] for i in range(len(members))])  # fmt: skip
    assert len(group["servers"]) == len(group["snapshots"]) == len(group["quickmons"]) == snap.MAX_GROUP_SERVERS
    assert group["servers"][1] == {"id": "s1", "offline": True} and group["snapshots"][1]["server"] == "s1"
    assert (group["type"], group["server"], group["groups"], group["date"]) == ("group", "", ["g1"], now)

    state = {"watches": {"servers": {"s1": now + 60, "s2": now - 1, "s3": 0, "s4": "soon"}}}
    assert snap.watched(state, "servers", now) == {"s1": now + 60}
    assert snap.watched(state, "groups", now) == {} and snap.watched({"watches": 5}, "servers", now) == {}
    assert snap.seconds_to_mark(120.0) == 30.0 and snap.seconds_to_mark(150.0) == 60.0
    assert snap.seconds_to_mark(175.5) == 34.5 and snap.seconds_to_mark(125.0) == 25.0


async def join(site: Site, server_id: str, groups: list[str], *, sample: dict[str, Any] | None) -> None:
    stores = site.node.stores
    await stores.servers.join({"id": server_id, "hostname": f"{server_id}.example", "groups": groups,
                               "enabled": True, "autoGroup": False}, f"n1|{server_id}", 60_000)  # fmt: skip
    if sample is not None:
        await stores.hosts.put(server_id, sample)


async def test_api_refusals_watches_and_lookups_on_one_node(site: Site, admin: dict[str, str]) -> None:
    stores = site.node.stores
    await join(site, "sa1", ["main"], sample=host("sa1", time.time()))
    await join(site, "sa2", ["main"], sample=None)  # joined, no sample yet
    await join(site, "sa3", ["main"], sample={**host("sa3", time.time()), "data": {"dummy": True}})
    await stores.servers.save({"id": "sa4", "hostname": "sa4.example", "groups": ["main"]})  # known, offline
    await stores.hosts.put("sa4", host("sa4", time.time()))
    for body, code, words in (
        ({"server": "nope"}, "notfound", "nope"), ({"server": "sa4"}, "notfound", "inactive"),
        ({"server": "sa2"}, "snapshot", "No monitoring data"), ({"server": "sa3"}, "snapshot", "disabled"),
        ({"server": "BAD ID"}, "api", "server"), ({}, "api", "server"),
    ):  # fmt: skip
        _, reply = await site.call("create_snapshot", body, headers=admin)
        assert reply["code"] == code and words in reply["description"], (body, reply)
    assert await stores.snapshots.search("*", 0, 10) == ([], 0)  # nothing half-written

    created = await ok(site, "create_snapshot", {"server": "sa1"}, admin)
    found = await ok(site, "search_snapshots", {"query": f"#id:{created['id']}", "verbose": True}, admin)
    (row,) = found["rows"]
    assert (row["source"], row["username"], row["server"], row["type"]) == ("user", "admin", "sa1", "server")
    assert len(row["data"]["processes"]["list"]) == 3
    brief = await ok(site, "search_snapshots", {"query": f"#id:{created['id']}"}, admin)
    assert "processes" not in brief["rows"][0]["data"]
    assert (await ok(site, "search_snapshots", {"query": "#id:snnothere"}, admin))["rows"] == []

    # Watches: the expiry in the global state; 0 cancels (the UI reads a past or zero expiry as no watch).
    await ok(site, "watch_server", {"id": "sa1", "duration": 300}, admin)
    expiry = (await stores.state.get())["watches"]["servers"]["sa1"]
    assert time.time() + 290 < expiry <= time.time() + 300
    await ok(site, "watch_server", {"id": "sa1", "duration": 0}, admin)
    assert (await stores.state.get())["watches"]["servers"]["sa1"] == 0
    for api, args, code in (("watch_server", {"id": "nope", "duration": 5}, "notfound"),
                            ("watch_server", {"id": "sa1", "duration": -1}, "api"),
                            ("watch_server", {"id": "sa1", "duration": snap.WATCH_MAX_S + 1}, "api"),
                            ("watch_server", {"id": "sa1"}, "api"),
                            ("watch_group", {"id": "nogroup", "duration": 5}, "notfound"),
                            ("create_group_snapshot", {"group": "nogroup"}, "notfound"),
                            ("delete_snapshot", {"id": "snnothere"}, "notfound"),
                            ("search_snapshots", {"query": "bogus:1"}, "api")):  # fmt: skip
        _, reply = await site.call(api, args, headers=admin)
        assert reply["code"] == code, (api, args, reply)
    await ok(site, "watch_group", {"id": "main", "duration": 60}, admin)
    assert snap.watched(await stores.state.get(), "groups", time.time()).keys() == {"main"}
    assert await snap.watch_groups(site.node) and (await snap.watch_groups(site.node, time.time() + 120)) == []
    grouped = await stores.snapshots.search("type:group source:watch", 0, 10, verbose=True)
    assert grouped[1] == 1
    members = {s["id"]: s["offline"] for s in grouped[0][0]["servers"]}
    assert members == {"sa1": False, "sa3": False, "sa4": True}  # sa2 has no sample: nothing to show

    # A group-limited caller: only its groups' servers, groups and snapshots; it may not delete.
    await ok(site, "create_group", {"id": "web", "title": "Web", "hostname_match": "^web"}, admin)
    privileges = {"create_snapshots": True, "delete_snapshots": True}
    await ok(site, "create_role", {"id": "webonly", "title": "Web only", "groups": ["web"],
                                   "privileges": privileges}, admin)  # fmt: skip
    key = await ok(site, "create_api_key", {"title": "web key", "roles": ["webonly"],
                                            "privileges": {}}, admin)  # fmt: skip
    limited = {"X-API-Key": key["plain_key"]}
    _, reply = await site.call("create_snapshot", {"server": "sa1"}, headers=limited)
    assert reply["code"] == "access", reply
    _, reply = await site.call("watch_group", {"id": "main", "duration": 60}, headers=limited)
    assert reply["code"] == "access", reply
    assert (await ok(site, "search_snapshots", {"limit": 10}, limited))["rows"] == []
    assert (await ok(site, "search_snapshots", {"query": f"#id:{created['id']}"}, limited))["rows"] == []
    _, reply = await site.call("delete_snapshot", {"id": created["id"]}, headers=limited)
    assert reply["code"] == "access", reply
    await ok(site, "delete_snapshot", {"id": created["id"]}, admin)
    assert await stores.snapshots.get(created["id"]) is None
