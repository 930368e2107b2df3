"""Auth across three real nodes: one first start, shared sessions, cluster-wide rate limits, fast revocation."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from storage.connection import Database, connect
from storage.keyspace import Keyspace
from tests.servers import Cluster, Node

REVOKE_WITHIN_S = 1.0


async def make_key(c: Cluster, primary: Node, admin: dict[str, str], **fields: Any) -> tuple[str, str]:
    status, data = await c.post(primary, "create_api_key", {"title": "k", **fields}, headers=admin)
    assert status == 200, data
    return str(data["plain_key"]), str(data["api_key"]["id"])


async def refused_everywhere(c: Cluster, headers: dict[str, str], api: str = "get_global_state") -> float:
    """Seconds until every node refuses `headers` (polled)."""
    start = time.monotonic()
    pending = list(c.nodes)
    while pending:
        still = []
        for node in pending:
            status, _ = await c.post(node, api, headers=headers)
            if status not in (401, 403):
                still.append(node)
        pending = still
        if pending:
            assert time.monotonic() - start < 10, "a node kept accepting revoked credentials"
            await asyncio.sleep(0.01)
    return time.monotonic() - start


async def test_concurrent_first_start_makes_one_admin(cluster: Cluster) -> None:
    primary = await cluster.wait_single_primary()
    admin = await cluster.admin_session(primary)
    db = Database(connect(cluster.redis.url), Keyspace("podium"))
    try:
        assert await db.client.zrange(db.keys.users, 0, -1) == [b"admin"]
        assert await db.client.zrange(db.keys.definitions("roles"), 0, -1) == [b"all"]
    finally:
        await db.aclose()
    _, found = await cluster.post(primary, "search_activity", {"query": "action:role_create", "limit": 10},
                          headers=admin)  # fmt: skip
    assert found["list"]["length"] == 1


async def test_sessions_work_on_every_node_and_login_is_primary_only(cluster: Cluster) -> None:
    primary = await cluster.wait_single_primary()
    admin = await cluster.admin_session(primary)
    for node in cluster.nodes:
        status, data = await cluster.post(node, "get_global_state", headers=admin)
        assert status == 200 and data["state"]["scheduler"]["enabled"] is True
    for node in cluster.nodes:
        if node is not primary:
            status, data = await cluster.post(node, "login", {"username": "admin", "password": "admin"}, ns="user")
            assert (status, data["code"], data["url"]) == (500, "master", primary.url)


async def test_rate_limit_holds_across_three_nodes(cluster: Cluster) -> None:
    primary = await cluster.wait_single_primary()
    admin = await cluster.admin_session(primary)
    limit = 10
    plain, _ = await make_key(cluster, primary, admin, max_per_sec=limit)
    headers = {"X-API-Key": plain}
    ok = 0
    limited = 0
    start = time.time()
    stop_at = start + 3.0

    async def hammer(node: Node) -> None:
        nonlocal ok, limited
        while time.time() < stop_at:
            status, data = await cluster.post(node, "get_global_state", headers=headers)
            if status == 200:
                ok += 1
            elif (status, data["code"]) == (429, "rate"):
                limited += 1
            else:
                raise AssertionError(f"unexpected answer {status} {data}")

    await asyncio.gather(*(hammer(n) for n in cluster.nodes for _ in range(4)))
    seconds = int(time.time()) - int(start) + 1  # every Redis-clock second the run touched
    assert limited > 0
    assert limit <= ok <= limit * seconds, (ok, seconds)


async def test_revocation_reaches_every_node_within_a_second(cluster: Cluster) -> None:
    primary = await cluster.wait_single_primary()
    admin = await cluster.admin_session(primary)
    plain, key_id = await make_key(cluster, primary, admin, roles=["ops"])
    key = {"X-API-Key": plain}
    # A role that grants create_roles; the key holds it through the role.
    status, _ = await cluster.post(primary, "create_role", {"id": "ops", "title": "Ops", "privileges":
                                                              {"admin": True}}, headers=admin)  # fmt: skip
    assert status == 200
    for node in cluster.nodes:  # warm every node's caches
        assert (await cluster.post(node, "get_api_keys", headers=key))[0] == 200

    # Role change: disabling the role removes the privilege on every node.
    assert (await cluster.post(primary, "update_role", {"id": "ops", "enabled": False}, headers=admin))[0] == 200
    assert await refused_everywhere(cluster, key, "get_api_keys") < REVOKE_WITHIN_S

    # Key revocation.
    for node in cluster.nodes:
        assert (await cluster.post(node, "get_global_state", headers=key))[0] == 200
    assert (await cluster.post(primary, "delete_api_key", {"id": key_id}, headers=admin))[0] == 200
    assert await refused_everywhere(cluster, key) < REVOKE_WITHIN_S

    # Deleted user: its session stops working everywhere.
    body = {"username": "gina", "email": "g@example.com", "full_name": "Gina", "password": "pw"}
    assert (await cluster.post(primary, "admin_create", body, ns="user", headers=admin))[1]["code"] == 0
    assert cluster.http is not None
    async with cluster.http.post(f"{primary.url}/api/user/login/v1", json={"username": "gina", "password": "pw"}) as r:
        gina = {"X-Session-ID": r.cookies["session_id"].value}
    cluster.http.cookie_jar.clear()
    for node in cluster.nodes:
        assert (await cluster.post(node, "get_global_state", headers=gina))[0] == 200
    assert (await cluster.post(primary, "admin_delete", {"username": "gina"}, ns="user", headers=admin))[0] == 200
    assert await refused_everywhere(cluster, gina) < REVOKE_WITHIN_S

