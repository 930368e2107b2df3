"""ServerStore on a real Redis-compatible server: joins and ownership races, liveness expiry, the index kept
in step with the record (search, updates, delete) and enrolment grants."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from cluster.servers import merge_join
from storage.connection import Database
from storage.search.query import QueryError
from storage.servers import ServerStore

GROUPS = [{"id": "main", "hostname_match": ".+"}, {"id": "web", "hostname_match": "^web"}]
LINUX = {"os": {"platform": "linux", "distro": "Debian", "release": "12", "arch": "arm64"}, "cpu": {"cores": 2}}
TTL = 60_000


def record(server_id: str, hostname: str, info: dict[str, Any] | None = None,
           now: float = 1_700_000_000) -> dict[str, Any]:  # fmt: skip
    return merge_join(None, {"id": server_id, "hostname": hostname, "info": info or LINUX}, now, GROUPS, ip="10.1.1.1")


async def ids(store: ServerStore, query: str, **kw: Any) -> list[str]:
    rows, total = await store.search(query, 0, 100, **kw)
    assert total == len(rows)
    return [r["id"] for r in rows]


async def test_join_stores_marks_online_and_indexes(db: Database) -> None:
    store = ServerStore(db)
    await store.join(record("s1", "web01"), "n1|c1", TTL)
    await store.join(record("s2", "db01"), "n2|c7", TTL)
    online = await store.online()
    assert list(online) == ["s1", "s2"]  # join order
    assert online["s1"]["groups"] == ["main", "web"]
    assert await store.owner("s1") == "n1|c1" and await store.owner("s2") == "n2|c7"
    assert await store.is_online("s1") and not await store.is_online("s3")
    assert (await store.get("s2") or {})["hostname"] == "db01"
    assert await store.get_many(["s2", "nope", "BAD ID", "s1"]) == [online["s2"], None, None, online["s1"]]
    assert sorted(await ids(store, "*")) == ["s1", "s2"]
    assert await ids(store, "groups:web") == ["s1"]
    assert await ids(store, "web01") == ["s1"]  # bare words search keywords
    assert sorted(await ids(store, "os_platform:linux os_arch:arm64")) == ["s1", "s2"]
    assert await ids(store, "hostname:db01") == ["s2"]
    assert await ids(store, '(hostname = "web01" | ip = "10.9.9.9")') == ["s1"]
    with pytest.raises(QueryError):
        await store.search("nosuchcolumn:x", 0, 10)


async def test_a_newer_join_wins_and_touch_reports_lost_servers(db: Database) -> None:
    store = ServerStore(db)
    await store.join(record("s1", "web01"), "n1|c1", TTL)
    await store.join(record("s2", "web02"), "n1|c2", TTL)
    assert await store.touch({"s1": "n1|c1", "s2": "n1|c2"}, TTL) == []
    # The agent of s1 reconnects through another node: the newer socket owns it from now on.
    await store.join(record("s1", "web01"), "n2|c9", TTL)
    assert await store.touch({"s1": "n1|c1", "s2": "n1|c2"}, TTL) == ["s1"]
    assert await store.owner("s1") == "n2|c9"
    # The old socket closing changes nothing; the new one closing takes the server offline.
    assert not await store.leave("s1", "n1|c1")
    assert await store.is_online("s1")
    assert await store.leave("s1", "n2|c9")
    assert not await store.is_online("s1") and await store.owner("s1") is None
    assert list(await store.online()) == ["s2"]
    assert await store.get("s1") is not None  # the record is kept after a disconnect
    assert await store.touch({}, TTL) == []


async def test_concurrent_joins_leave_exactly_one_owner(db: Database) -> None:
    store = ServerStore(db)
    owners = [f"n{i}|c{i}" for i in range(20)]
    await asyncio.gather(*(store.join(record("s1", "web01"), o, TTL) for o in owners))
    winner = await store.owner("s1")
    assert winner in owners
    lost = await asyncio.gather(*(store.touch({"s1": o}, TTL) for o in owners))
    assert sum(1 for x in lost if not x) == 1
    assert await ids(store, "*") == ["s1"]  # indexed once however many joins raced


async def test_expiry_takes_a_server_offline_and_touch_brings_it_back(db: Database) -> None:
    store = ServerStore(db)
    await store.join(record("s1", "web01"), "n1|c1", 150)
    await store.join(record("s2", "web02"), "n1|c2", TTL)
    await asyncio.sleep(0.3)
    assert list(await store.online()) == ["s2"] and not await store.is_online("s1")
    assert await store.prune() == 1
    # The node holding the socket was only late: it still owns the server, so its renewal counts.
    assert await store.touch({"s1": "n1|c1"}, TTL) == []
    assert await store.is_online("s1")


async def test_updates_reindex_and_delete_removes_everything(db: Database) -> None:
    store = ServerStore(db)
    await store.join(record("s1", "web01"), "n1|c1", TTL)

    async def to_manual(rec: dict[str, Any]) -> dict[str, Any]:
        return {**rec, "autoGroup": False, "groups": ["main"], "modified": 1_800_000_000}

    updated = await store.modify("s1", to_manual)
    assert updated is not None and updated["groups"] == ["main"]
    assert await ids(store, "groups:web") == [] and await ids(store, "groups:main") == ["s1"]
    assert await ids(store, "autoGroup:false") == ["s1"]
    assert await ids(store, "modified:>=2027-01-01") == ["s1"]

    async def untouched(rec: dict[str, Any]) -> None:
        return None

    assert await store.modify("s1", untouched) == updated
    assert await store.modify("nope", to_manual) is None
    saved = {**updated, "info": {"os": {"platform": "darwin"}}}
    await store.save(saved)
    assert await ids(store, "os_platform:darwin") == ["s1"] and await ids(store, "os_platform:linux") == []

    assert await store.delete("s1")
    assert await store.get("s1") is None and not await store.is_online("s1") and await store.owner("s1") is None
    assert await ids(store, "*") == [] and await ids(store, "groups:main") == []
    assert not await store.delete("s1")
    assert not await db.client.exists(db.keys.server_indexed("s1"))
    # Joining again after a delete starts a fresh record and index entry.
    await store.join(record("s1", "web01"), "n1|c1", TTL)
    assert await ids(store, "groups:web") == ["s1"]


async def test_delete_keeping_the_socket(db: Database) -> None:
    store = ServerStore(db)
    await store.join(record("s1", "web01"), "n1|c1", TTL)
    await store.delete("s1", keep_online=True)
    assert await store.is_online("s1") and await store.owner("s1") == "n1|c1"
    assert await store.online() == {}  # no record: not listed
    assert await store.touch({"s1": "n1|c1"}, TTL) == []


async def test_concurrent_modifications_are_not_lost(db: Database) -> None:
    store = ServerStore(db)
    await store.join(record("s1", "web01"), "n1|c1", TTL)

    def add(key: str) -> Any:
        async def change(rec: dict[str, Any]) -> dict[str, Any]:
            await asyncio.sleep(0.001)
            return {**rec, "userData": {**rec["userData"], key: True}}

        return change

    await asyncio.gather(*(store.modify("s1", add(f"k{i}")) for i in range(15)))
    assert set((await store.get("s1") or {})["userData"]) == {f"k{i}" for i in range(15)}


async def test_sorting_and_paging(db: Database) -> None:
    store = ServerStore(db)
    for i in range(5):
        await store.save(record(f"s{i}", f"host{i}", now=1_700_000_000 + (5 - i) * 3600))
    newest_created = await ids(store, "*", sort_by="created", sort_dir=-1)
    assert newest_created == ["s0", "s1", "s2", "s3", "s4"]
    rows, total = await store.search("*", 1, 2, "created", 1)
    assert total == 5 and [r["id"] for r in rows] == ["s3", "s2"]


async def test_bad_ids_are_refused_before_any_write(db: Database) -> None:
    store = ServerStore(db)
    with pytest.raises(ValueError):
        await store.join({"id": "Bad:Id", "hostname": "x"}, "n1|c1", TTL)
    with pytest.raises(ValueError):
        await store.save({"hostname": "x"})
    assert [k async for k in db.client.scan_iter(match=f"{db.keys.cluster}:*")] == []


async def test_enrolment_grants_expire_and_are_keyed_by_hash(db: Database) -> None:
    store = ServerStore(db)
    await store.grant_enrolment("tok-123", {"params": {"groups": ["web"]}}, 1)
    assert await store.enrolment("tok-123") == {"params": {"groups": ["web"]}}
    assert await store.enrolment("tok-124") is None
    keys = [k async for k in db.client.scan_iter(match=f"{db.keys.cluster}:enrol:*")]
    assert len(keys) == 1 and b"tok-123" not in keys[0]
    await asyncio.sleep(1.2)
    assert await store.enrolment("tok-123") is None
