"""The servers API on real `podium serve` nodes (a primary and a satellite sharing one Redis), with server records
seeded through ServerStore as a gateway would write them: reads answer alike on both nodes, privileges and group
scoping, notfound, update_server pushing `update` onto the agent's command stream, writes on a satellite refused
with `master`, delete_server (with `history`, nothing of the server is left), and agent enrolment
(get_satellite_token, satellite/config)."""

from __future__ import annotations

import hashlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from cluster.servers import merge_join
from storage import codec
from storage.connection import Database, connect
from storage.hostdata import HostDataStore
from storage.ids import generate_id
from storage.keyspace import Keyspace
from storage.servers import ServerStore
from storage.snapshots import SnapshotStore
from storage.timeseries import SYSTEMS, QuickmonStore, TimelineStore
from tests.servers import Cluster, Node

Reply = tuple[int, dict[str, Any]]
TTL = 600_000
LINUX = {"os": {"platform": "linux", "distro": "Debian", "release": "12", "arch": "x64"}, "cpu": {"cores": 2}}


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    async with Cluster(tmp_path, size=2) as c:
        await c.ready()
        yield c


@pytest.fixture
async def store(cluster: Cluster) -> AsyncIterator[ServerStore]:
    db = Database(connect(cluster.redis.url), Keyspace("podium"))
    yield ServerStore(db)
    await db.aclose()


async def call(c: Cluster, node: Node, api: str, body: dict[str, Any] | None = None, *, headers: dict[str, str],
               method: str = "POST", tail: str = "") -> Reply:  # fmt: skip
    assert c.http is not None
    url = f"{node.url}/api/app/{api}/v1{tail}"
    if method == "GET":
        async with c.http.get(url, params={k: str(v) for k, v in (body or {}).items()}, headers=headers) as resp:
            return resp.status, await resp.json(content_type=None)
    async with c.http.post(url, json=body or {}, headers=headers) as resp:
        return resp.status, await resp.json(content_type=None)


async def ok(c: Cluster, node: Node, api: str, body: dict[str, Any] | None, headers: dict[str, str]) -> dict[str, Any]:
    status, data = await call(c, node, api, body, headers=headers)
    assert (status, data.get("code")) == (200, 0), (api, status, data)
    return data


async def api_key(c: Cluster, node: Node, admin: dict[str, str], **fields: Any) -> dict[str, str]:
    data = await ok(c, node, "create_api_key", {"title": "k", **fields}, admin)
    return {"X-API-Key": str(data["plain_key"])}


async def commands(store: ServerStore, server_id: str) -> list[dict[str, Any]]:
    entries: Any = await store.db.client.xrange(store.db.keys.agent_commands(server_id))
    return [dict(codec.unpack(fields[b"f"])) for _, fields in entries]


async def seed(c: Cluster, primary: Node, store: ServerStore, admin: dict[str, str]) -> None:
    groups = (await ok(c, primary, "get_groups", {}, admin))["rows"]
    for sid, host in (("s1", "web01.example.com"), ("s2", "db01.example.com")):
        hello = {"id": sid, "hostname": host, "info": LINUX}
        await store.join(merge_join(None, hello, 1.7e9, groups), f"nx|{sid}", TTL)
    darwin = {"id": "s3", "hostname": "web03.example.com", "info": {"os": {"platform": "darwin"}}}
    await store.save(merge_join(None, darwin, 1.7e9, groups))


def ids(rows: list[dict[str, Any]]) -> list[str]:
    return [r["id"] for r in rows]


async def test_server_reads_updates_scoping_and_delete(cluster: Cluster, store: ServerStore) -> None:
    primary = await cluster.wait_single_primary()
    satellite = next(n for n in cluster.nodes if n is not primary)
    admin = await cluster.admin_session(primary)
    await ok(cluster, primary, "create_group", {"id": "web", "title": "Web", "hostname_match": "^web"}, admin)
    await ok(cluster, primary, "create_role", {"id": "webops", "title": "Web ops", "groups": ["web"],
                                               "privileges": {"update_servers": True}}, admin)  # fmt: skip
    limited = await api_key(cluster, primary, admin, roles=["webops"])
    reader = await api_key(cluster, primary, admin)
    await seed(cluster, primary, store, admin)

    for node in (primary, satellite):  # every read answers the same on both nodes
        rows = (await ok(cluster, node, "get_active_servers", {}, admin))["rows"]
        assert ids(rows) == ["s1", "s2"] and rows[0]["groups"] == ["main", "web"]
        assert ids((await ok(cluster, node, "get_active_servers", {}, limited))["rows"]) == ["s1"]
        assert (await ok(cluster, node, "get_active_server", {"id": "s1"}, reader))["server"]["hostname"] == (
            "web01.example.com")  # fmt: skip
        status, data = await call(cluster, node, "get_active_server", {"id": "s3"}, headers=admin)
        assert (status, data["code"]) == (404, "notfound")
        got = await ok(cluster, node, "get_server", {"id": "s3"}, admin)
        assert (got["server"]["id"], got["online"], got["data"]) == ("s3", False, None)
        assert (await ok(cluster, node, "get_server", {"id": "s1"}, admin))["online"] is True
        status, data = await call(cluster, node, "get_server", {"id": "s2"}, headers=limited)
        assert (status, data["code"]) == (403, "access")
        status, data = await call(cluster, node, "get_server", {"id": "nope"}, headers=admin)
        assert (status, data["code"]) == (404, "notfound")
        status, data = await call(cluster, node, "get_server", {"id": "BAD/ID"}, headers=admin)
        assert (status, data["code"]) == (400, "api")
        assert sorted((await ok(cluster, node, "get_servers", {}, admin))["servers"]) == ["s1", "s2"]
        assert sorted((await ok(cluster, node, "get_servers", {}, limited))["servers"]) == ["s1"]
        found = await ok(cluster, node, "search_servers", {"query": "*", "limit": 10}, admin)
        assert sorted(ids(found["rows"])) == ["s1", "s2", "s3"] and found["list"]["length"] == 3
        found = await ok(cluster, node, "search_servers", {"query": "web03", "limit": 10}, admin)
        assert ids(found["rows"]) == ["s3"]
        found = await ok(cluster, node, "search_servers", {"query": "*", "limit": 10}, limited)
        assert sorted(ids(found["rows"])) == ["s1", "s3"]
        status, data = await call(cluster, node, "search_servers", {"query": "bogus:x"}, headers=admin)
        assert (status, data["code"]) == (400, "api")
        sums = (await ok(cluster, node, "get_server_summaries", {}, admin))["summaries"]
        assert sums["os_platform"] == {"linux": 2, "darwin": 1} and sums["cpu_cores"] == {"2": 2}
        assert (await ok(cluster, node, "get_server_summaries", {}, limited))["summaries"]["os_platform"] == {
            "linux": 1, "darwin": 1}  # fmt: skip

    # update_server: scoped before and after, pushed to the agent when it is online.
    body = {"id": "s1", "title": "Front", "autoGroup": False, "groups": ["web"], "maxJobs": 2}
    await ok(cluster, primary, "update_server", body, limited)
    s1 = (await ok(cluster, satellite, "get_server", {"id": "s1"}, admin))["server"]
    assert (s1["title"], s1["autoGroup"], s1["groups"], s1["maxJobs"]) == ("Front", False, ["web"], 2)
    assert "Front" in s1["keywords"]
    assert (await commands(store, "s1"))[-1] == {"cmd": "update", "data": {"groups": ["web"]}}
    in_main = await ok(cluster, satellite, "search_servers", {"query": "groups:main", "limit": 9}, admin)
    assert sorted(ids(in_main["rows"])) == ["s2", "s3"]
    refusals: list[tuple[dict[str, Any], int]] = [
        ({"id": "s2", "title": "x"}, 403), ({"id": "s1", "autoGroup": False, "groups": ["main"]}, 403),
        ({"id": "s1", "groups": ["nosuch"], "autoGroup": False}, 400)]  # fmt: skip
    for refused, code in refusals:
        status, data = await call(cluster, primary, "update_server", refused, headers=limited)
        assert status == code, (refused, data)
    status, data = await call(cluster, primary, "update_server", {"id": "s2", "groups": ["web"]}, headers=admin)
    assert (status, data["code"]) == (400, "api") and "autoGroup" in data["description"]
    status, data = await call(cluster, primary, "update_server", {"id": "s2", "bogus": 1}, headers=admin)
    assert (status, data["code"]) == (400, "api")
    status, data = await call(cluster, primary, "update_server", {"id": "s2", "title": "x"}, headers=reader)
    assert (status, data["code"]) == (403, "access")
    status, data = await call(cluster, primary, "update_server", {"id": "zz", "title": "x"}, headers=admin)
    assert (status, data["code"]) == (404, "notfound")
    # Back to automatic groups; query parameters work too (xyOps merges them for this call).
    status, data = await call(cluster, primary, "update_server", {"id": "s1", "autoGroup": "true"}, headers=admin,
                              method="GET")  # fmt: skip
    assert (status, data["code"]) == (200, 0), data
    assert (await commands(store, "s1"))[-1]["data"] == {"groups": ["main", "web"]}
    # An offline server is updated too, and nothing is queued for it.
    await ok(cluster, primary, "update_server", {"id": "s3", "enabled": False}, admin)
    assert (await ok(cluster, primary, "get_server", {"id": "s3"}, admin))["server"]["enabled"] is False
    assert await commands(store, "s3") == []
    # Writes on the satellite answer `master`.
    writes: list[tuple[str, dict[str, Any]]] = [
        ("update_server", {"id": "s1", "title": "x"}), ("update_server_data", {"id": "s1", "data": {}}),
        ("delete_server", {"id": "s1"}), ("get_satellite_token", {})]  # fmt: skip
    for api, wbody in writes:
        status, data = await call(cluster, satellite, api, wbody, headers=admin)
        assert (status, data["code"], data["url"]) == (500, "master", primary.url), (api, data)

    # update_server_data: merge, alias, replace, bounds.
    first = await ok(cluster, primary, "update_server_data", {"id": "s1", "data": {"a": 1}}, limited)
    assert first["data"] == {"a": 1}
    merged = await ok(cluster, primary, "update_server_data", {"id": "s1", "userData": {"b": 2}}, limited)
    assert merged["data"] == {"a": 1, "b": 2}
    replaced = await ok(cluster, primary, "update_server_data", {"id": "s1", "data": {"c": 3}, "replace": True}, admin)
    assert replaced["data"] == {"c": 3}
    assert (await ok(cluster, satellite, "get_server", {"id": "s1"}, admin))["server"]["userData"] == {"c": 3}
    bad_data: list[tuple[dict[str, Any], int]] = [
        ({"id": "s1"}, 400), ({"id": "s1", "data": [1]}, 400), ({"id": "s1", "data": {"x": "y" * 70_000}}, 400),
        ({"id": "s2", "data": {"a": 1}}, 403)]  # fmt: skip
    for bad, code in bad_data:
        status, data = await call(cluster, primary, "update_server_data", bad, headers=limited)
        assert status == code, (bad, data)

    # delete_server: admin only; offline needs history; online tells the agent to uninstall.
    status, data = await call(cluster, primary, "delete_server", {"id": "s3"}, headers=limited)
    assert (status, data["code"]) == (403, "access")
    status, data = await call(cluster, primary, "delete_server", {"id": "s3"}, headers=admin)
    assert (status, data["code"]) == (500, "server")
    await ok(cluster, primary, "delete_server", {"id": "s3", "history": True}, admin)
    await ok(cluster, primary, "delete_server", {"id": "s2"}, admin)
    assert (await commands(store, "s2"))[-1] == {"cmd": "uninstall", "data": {}}
    for node in (primary, satellite):
        for gone in ("s2", "s3"):
            status, data = await call(cluster, node, "get_server", {"id": gone}, headers=admin)
            assert (status, data["code"]) == (404, "notfound")
        assert ids((await ok(cluster, node, "get_active_servers", {}, admin))["rows"]) == ["s1"]
        assert ids((await ok(cluster, node, "search_servers", {"limit": 10}, admin))["rows"]) == ["s1"]
    status, data = await call(cluster, primary, "delete_server", {"id": "s3", "history": True}, headers=admin)
    assert (status, data["code"]) == (404, "notfound")


async def test_enrolment_tokens_and_config(cluster: Cluster, store: ServerStore) -> None:
    primary = await cluster.wait_single_primary()
    satellite = next(n for n in cluster.nodes if n is not primary)
    admin = await cluster.admin_session(primary)
    adder = await api_key(cluster, primary, admin, privileges={"add_servers": True})
    reader = await api_key(cluster, primary, admin)
    raw = await store.db.client.get(store.db.keys.secret_key)
    assert isinstance(raw, bytes)
    secret = raw.decode()

    status, data = await call(cluster, primary, "get_satellite_token", {}, headers=reader)
    assert (status, data["code"]) == (403, "access")
    status, data = await call(cluster, primary, "get_satellite_token", {"expires": 5}, headers=adder)
    assert (status, data["code"]) == (400, "api")
    grant = await ok(cluster, primary, "get_satellite_token", {"groups": ["main"], "title": "Edge"}, adder)
    assert grant["base_url"] == primary.url and len(grant["token"]) >= 32

    async def config(node: Node, query: dict[str, str], tail: str = "/config") -> Reply:
        assert cluster.http is not None
        async with cluster.http.get(f"{node.url}/api/app/satellite{tail}", params=query) as resp:
            return resp.status, await resp.json(content_type=None)

    for node in (satellite, primary):  # any node enrols
        status, conf = await config(node, {"t": grant["token"]})
        assert status == 200, conf
        sid = conf["server_id"]
        assert sid.startswith("s") and len(sid) == 16 and "code" not in conf
        assert conf["auth_token"] == hashlib.sha256((sid + secret).encode()).hexdigest()
        assert (conf["hosts"], conf["port"], conf["secure"]) == (["127.0.0.1"], node.port, False)
        assert conf["initial"] == {"groups": ["main"], "title": "Edge"}
    status, conf = await config(satellite, {"t": adder["X-API-Key"]}, tail="/v1/config")
    assert status == 200 and "initial" not in conf
    for query, code in [({"t": "not-a-token"}, "satellite"), ({"t": reader["X-API-Key"]}, "access"),
                        ({"t": "bad token!"}, "api"), ({}, "api")]:  # fmt: skip
        status, data = await config(satellite, query)
        assert data["code"] == code and status in (400, 403), (query, status, data)
    # A stored server's own token re-enrols it; an unknown server's does not.
    await store.save(merge_join(None, {"id": "s9", "hostname": "h9"}, 1.7e9, []))
    own = hashlib.sha256(("s9" + secret).encode()).hexdigest()
    assert (await config(satellite, {"t": own, "s": "s9"}))[0] == 200
    other = hashlib.sha256(("s8" + secret).encode()).hexdigest()
    assert (await config(satellite, {"t": other, "s": "s8"}))[1]["code"] == "satellite"
    status, data = await config(satellite, {"t": grant["token"]}, tail="/install")
    assert (status, data["code"]) == (404, "satellite")


async def test_group_writes_regroup_stored_servers(cluster: Cluster, store: ServerStore) -> None:
    """Creating a group, changing its hostname_match and deleting it re-derive every stored server's groups (the
    search index with them); online agents get `update {groups}`, offline ones nothing."""
    primary = await cluster.wait_single_primary()
    admin = await cluster.admin_session(primary)
    await seed(cluster, primary, store, admin)  # s1 web01 and s2 db01 online, s3 web03 offline: all in [main]

    async def groups_of() -> dict[str, tuple[bool, list[str]]]:
        found = await ok(cluster, primary, "search_servers", {"query": "*", "limit": 10}, admin)
        return {r["id"]: (r["autoGroup"], r["groups"]) for r in found["rows"]}

    async def pushed(server_id: str) -> list[dict[str, Any]]:
        return [c["data"] for c in await commands(store, server_id) if c["cmd"] == "update"]

    assert await groups_of() == {"s1": (True, ["main"]), "s2": (True, ["main"]), "s3": (True, ["main"])}
    many = 450  # more than a page of the pass
    for n in range(many):
        await store.save(merge_join(None, {"id": f"w{n}", "hostname": f"web-{n}.example.com"}, 1.8e9, []))
    await ok(cluster, primary, "create_group", {"id": "web", "title": "Web", "hostname_match": "^web"}, admin)
    found = await ok(cluster, primary, "search_servers", {"query": "groups:web", "limit": 1}, admin)
    assert found["list"]["length"] == many + 2
    for n in range(many):
        await store.delete(f"w{n}")
    assert await groups_of() == {"s1": (True, ["main", "web"]), "s2": (True, ["main"]), "s3": (True, ["main", "web"])}
    assert (await pushed("s1"), await pushed("s2"), await commands(store, "s3")) == ([{"groups": ["main", "web"]}],
                                                                                     [], [])  # fmt: skip
    found = await ok(cluster, primary, "search_servers", {"query": "groups:web", "limit": 10}, admin)
    assert sorted(ids(found["rows"])) == ["s1", "s3"]

    # Manual groups stay manual when a group appears; a title change moves nothing.
    await ok(cluster, primary, "update_server", {"id": "s2", "autoGroup": False, "groups": ["web"]}, admin)
    await ok(cluster, primary, "create_group", {"id": "db", "title": "DB", "hostname_match": "^db"}, admin)
    await ok(cluster, primary, "update_group", {"id": "web", "title": "Web servers"}, admin)
    assert (await groups_of())["s2"] == (False, ["web"]) and len(await pushed("s1")) == 1

    # A narrower hostname_match: s3 leaves the group, s1 (unchanged) is told nothing new.
    await ok(cluster, primary, "update_group", {"id": "web", "hostname_match": "^web01"}, admin)
    assert await groups_of() == {"s1": (True, ["main", "web"]), "s2": (False, ["web"]), "s3": (True, ["main"])}
    assert len(await pushed("s1")) == 1 and await commands(store, "s3") == []

    # Deleting a group prunes it; a manual list left empty goes back to automatic groups.
    await ok(cluster, primary, "delete_group", {"id": "web"}, admin)
    assert await groups_of() == {"s1": (True, ["main"]), "s2": (True, ["main", "db"]), "s3": (True, ["main"])}
    assert (await pushed("s1"))[-1] == {"groups": ["main"]} and (await pushed("s2"))[-1] == {"groups": ["main", "db"]}
    s2 = (await ok(cluster, primary, "get_server", {"id": "s2"}, admin))["server"]
    assert "db" in s2["keywords"].split(",") and "web" not in s2["keywords"].split(",")


async def test_delete_server_with_history_leaves_nothing(cluster: Cluster, store: ServerStore) -> None:
    primary = await cluster.wait_single_primary()
    admin = await cluster.admin_session(primary)
    await seed(cluster, primary, store, admin)
    db, now = store.db, time.time()
    hosts, timelines, quick, snapshots = HostDataStore(db), TimelineStore(db), QuickmonStore(db), SnapshotStore(db)
    for sid in ("s2", "s3"):  # s2 online, s3 offline
        await hosts.put(sid, {"date": now, "server": sid, "data": {"load": [1.0], "processes": {"list": []}}})
        assert await timelines.add(sid, now, {"cpu": 1.0})
        await quick.add_many([(sid, {"date": now, "cpu": 1})])
        await snapshots.add({"id": generate_id("sn"), "type": "server", "source": "user", "server": sid,
                             "groups": [], "date": now, "data": {}})  # fmt: skip
    await store.db.client.xadd(db.keys.agent_commands("s3"), {"f": codec.pack({"cmd": "x", "data": {}})})

    async def left(sid: str) -> list[str]:
        keys = [db.keys.host_data(sid), db.keys.host_brief(sid), db.keys.quickmon(sid), db.keys.agent_commands(sid),
                *(db.keys.timeline(sid, system) for system in SYSTEMS)]  # fmt: skip
        found = [k for k in keys if await db.client.exists(k)]
        rows, _ = await snapshots.search(f"server:{sid}", 0, 10)
        return found + [r["id"] for r in rows]

    assert len(await left("s3")) == 9  # 8 keys and a snapshot
    await ok(cluster, primary, "delete_server", {"id": "s3", "history": True}, admin)
    assert await left("s3") == [] and await store.get("s3") is None
    await ok(cluster, primary, "delete_server", {"id": "s2", "history": True}, admin)
    assert (await commands(store, "s2"))[-1] == {"cmd": "uninstall", "data": {}}
    assert await left("s2") == [db.keys.agent_commands("s2")]  # the uninstall waits for the agent there
    assert await store.get("s2") is None
