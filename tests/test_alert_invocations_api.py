"""The alert invocations API on real nodes (an in-process primary and satellite sharing one valkey), with
invocations written as the alert evaluator writes them: get_alert_invocations (order, placeholders, group limits,
bounds), search_alerts (every node, group limits, bad queries), manage_alert_invocation_tickets and
delete_alert_invocation (privileges, group-limited refusal, bad input, notfound, activity), and `master` from a
satellite for both writes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from api.app import RUNNER_OPTIONS, create_app
from api.settings import Settings
from cluster.node import NodeRuntime
from storage import codec
from storage.connection import Database
from storage.stores import Stores
from tests.authkit import Client, NodeTestServer, Site, ok, wait_until

Headers = dict[str, str]
T0 = 1_767_225_600  # 2026-01-01 00:00:00 UTC


def invocation(inv_id: str, alert: str, server: str, groups: list[str], date: float, **extra: Any) -> dict[str, Any]:
    return {"id": inv_id, "active": True, "alert": alert, "server": server, "groups": groups, "date": date,
            "modified": date, "exp": "monitors.load_avg >= 1", "message": "High load", "count": 2,
            "notified": True, "jobs": ["j1"], "tickets": [], "actions": [{"type": "email", "code": 0}],
            **extra}  # fmt: skip


async def seed(site: Site) -> list[dict[str, Any]]:
    db = site.node.stores.db
    records = [
        invocation("a1", "load_avg_high", "s1", ["main", "web"], T0),
        invocation("a2", "mem_high", "s2", ["main"], T0 + 60),
        invocation("a3", "load_avg_high", "s2", ["main"], T0 - 60, active=False),
    ]
    for rec in records:  # as the evaluator's fenced script writes them
        await db.client.set(db.keys.alert_invocation(rec["id"]), codec.pack(rec))
        await db.client.sadd(db.keys.alerts_unindexed, rec["id"])
    assert await site.node.stores.alerts.index_pending() == 3
    return records


async def call(client: Client, api: str, body: dict[str, Any] | None, headers: Headers,
               method: str = "POST") -> tuple[int, dict[str, Any]]:  # fmt: skip
    url = f"/api/app/{api}/v1"
    if method == "GET":
        resp = await client.get(url, params={k: str(v) for k, v in (body or {}).items()}, headers=headers)
    else:
        resp = await client.post(url, json=body or {}, headers=headers)
    data: dict[str, Any] = await resp.json()
    return resp.status, data


async def key(site: Site, admin: Headers, **fields: Any) -> Headers:
    plain, _ = await site.admin_key(admin["X-Session-ID"], **fields)
    return {"X-API-Key": plain}


@pytest.fixture
async def satellite(site: Site, db: Database, tmp_path: Path) -> AsyncIterator[Client]:
    node = NodeRuntime(db, "n2", "http://127.0.0.1:5532", lease_ms=3000,
                       stores=Stores.open(db, secret_key=site.node.stores.secret_key))  # fmt: skip
    client = TestClient(NodeTestServer(create_app(Settings(data_dir=tmp_path / "sat"), node), **RUNNER_OPTIONS))
    await client.start_server()
    await node.start()
    try:
        await wait_until(lambda: node.stores.bus.healthy and node.election.primary_id == "n1", "satellite")
        assert not node.is_primary
        yield client
    finally:
        await node.stop()
        await client.close()


@pytest.fixture
async def limited(site: Site, admin: Headers) -> Headers:
    """An API key limited to the `web` group, with the privileges the write calls need."""
    await ok(site, "create_group", {"id": "web", "title": "Web", "hostname_match": "^web"}, admin)
    await ok(site, "create_role", {"id": "webops", "title": "Web ops", "groups": ["web"]}, admin)
    return await key(site, admin, roles=["webops"], privileges={"edit_tickets": True, "delete_alerts": True})


async def test_get_alert_invocations(site: Site, admin: Headers, satellite: Client, limited: Headers) -> None:
    records = await seed(site)
    reader = await key(site, admin)
    for client in (site.client, satellite):
        got = (await call(client, "get_alert_invocations", {"ids": ["a3", "nope", "a1"]}, reader))[1]
        assert got["code"] == 0, got
        assert got["alerts"] == [records[2], {"err": "Failed to locate alert invocation: nope"}, records[0]]
        # CSV in a query string, as xyOps' clients send it.
        status, got = await call(client, "get_alert_invocations", {"ids": "a2,a1"}, reader, method="GET")
        assert status == 200 and [a["id"] for a in got["alerts"]] == ["a2", "a1"]
        # A group-limited caller gets the same placeholder for what it may not see as for what is missing.
        got = (await call(client, "get_alert_invocations", {"ids": ["a1", "a2", "zz"]}, limited))[1]
        assert got["alerts"] == [records[0], {"err": "Failed to locate alert invocation: a2"},
                                 {"err": "Failed to locate alert invocation: zz"}]  # fmt: skip
    bad: list[tuple[dict[str, Any], str]] = [
        ({}, "ids"), ({"ids": []}, "ids"), ({"ids": ""}, "ids"), ({"ids": [f"a{i}" for i in range(1001)]}, "ids"),
        ({"ids": ["x" * 200]}, "ids"), ({"ids": {"a": 1}}, "ids")]  # fmt: skip
    for body, field in bad:
        status, data = await call(site.client, "get_alert_invocations", body, reader)
        assert (status, data["code"]) == (400, "api"), (body, data)
        assert field in data["description"], data
    status, data = await call(site.client, "get_alert_invocations", {"ids": ["a1"]}, {})
    assert status in (401, 403) and data["code"] == "session"


async def test_search_alerts(site: Site, admin: Headers, satellite: Client, limited: Headers) -> None:
    await seed(site)

    async def found(client: Client, body: dict[str, Any], headers: Headers) -> tuple[list[str], int]:
        status, data = await call(client, "search_alerts", body, headers, method="GET")
        assert (status, data["code"]) == (200, 0), data
        return [r["id"] for r in data["rows"]], data["list"]["length"]

    for client in (site.client, satellite):
        assert await found(client, {}, admin) == (["a2"], 3)  # xyOps' default limit is 1
        assert await found(client, {"query": "*", "limit": 10}, admin) == (["a2", "a1", "a3"], 3)
        assert await found(client, {"query": "active:true", "limit": 10}, admin) == (["a2", "a1"], 2)
        assert await found(client, {"query": "alert:load_avg_high", "limit": 10, "sort_dir": 1}, admin) == (
            ["a3", "a1"], 2)  # fmt: skip
        assert await found(client, {"query": "server:s2 start:>=2026-01-01", "limit": 10}, admin) == (["a2"], 1)
        assert await found(client, {"query": "*", "offset": 1, "limit": 1}, admin) == (["a1"], 3)
        assert await found(client, {"query": "*", "limit": 10, "sort_by": "end", "sort_dir": 1}, admin) == (
            ["a3", "a1", "a2"], 3)  # fmt: skip
        assert await found(client, {"query": "*", "limit": 10}, limited) == (["a1"], 1)
        assert await found(client, {"query": "server:s2", "limit": 10}, limited) == ([], 0)
        rows = (await call(client, "search_alerts", {"query": "jobs:j1", "limit": 1}, admin))[1]["rows"]
        assert rows[0]["actions"] == [{"type": "email", "code": 0}]  # whole records
    bad: list[tuple[dict[str, Any], str]] = [
        ({"query": "nosuch:x"}, "nosuch"), ({"query": "start:yesterdayish"}, "start"), ({"query": "(a"}, "query"),
        ({"query": "x" * 5000}, "query"), ({"limit": 1001}, "limit"), ({"offset": -1}, "offset"),
        ({"sort_by": "server"}, "sort_by")]  # fmt: skip
    for body, word in bad:
        status, data = await call(site.client, "search_alerts", body, admin)
        assert (status, data["code"]) == (400, "api"), (body, data)
        assert word in data["description"], data


async def test_manage_alert_invocation_tickets(site: Site, admin: Headers, satellite: Client,
                                               limited: Headers) -> None:  # fmt: skip
    await seed(site)
    for ticket_id in ("t1", "t2", "t3", "t9"):  # linked tickets must exist (their `alerts` list the invocation)
        await ok(site, "create_ticket", {"id": ticket_id, "subject": f"Ticket {ticket_id}"}, admin)
    editor = await key(site, admin, privileges={"edit_tickets": True})
    await ok(site, "manage_alert_invocation_tickets", {"id": "a2", "tickets": ["t1", "t2", "t1"]}, editor)
    got = (await ok(site, "get_alert_invocations", {"ids": ["a2"]}, admin))["alerts"][0]
    assert got["tickets"] == ["t1", "t2"] and got["message"] == "High load"  # the rest of the record is kept
    assert (await ok(site, "search_alerts", {"query": "tickets:t2", "limit": 5}, admin))["list"]["length"] == 1
    # The list is replaced, not merged; an empty list clears it.
    await ok(site, "manage_alert_invocation_tickets", {"id": "a2", "tickets": "t3"}, editor)
    got = (await ok(site, "get_alert_invocations", {"ids": ["a2"]}, admin))["alerts"][0]
    assert got["tickets"] == ["t3"]
    assert (await ok(site, "search_alerts", {"query": "tickets:t1|t2", "limit": 5}, admin))["list"]["length"] == 0
    await ok(site, "manage_alert_invocation_tickets", {"id": "a2", "tickets": []}, editor)
    assert (await ok(site, "get_alert_invocations", {"ids": ["a2"]}, admin))["alerts"][0]["tickets"] == []
    act = await ok(site, "search_activity", {"query": "action:alert_update_tickets", "limit": 10}, admin)
    assert act["list"]["length"] == 3 and act["rows"][0]["alert"]["id"] == "a2"

    refused: list[tuple[dict[str, Any], Headers, int, str, str]] = [
        ({"id": "a2", "tickets": ["t9"]}, await key(site, admin), 403, "access", "Edit Tickets"),
        ({"id": "a1", "tickets": ["t9"]}, limited, 403, "access", "Group-limited"),
        ({"id": "a2"}, editor, 400, "api", "tickets"),
        ({"tickets": ["t9"]}, editor, 400, "api", "id"),
        ({"id": "a2", "tickets": ["T 9"]}, editor, 400, "api", "tickets"),
        ({"id": "a2", "tickets": ["x" * 65]}, editor, 400, "api", "tickets"),
        ({"id": "a2", "tickets": [f"t{i}" for i in range(101)]}, editor, 400, "api", "tickets"),
        ({"id": "a2", "tickets": {"t": 1}}, editor, 400, "api", "tickets"),
        ({"id": "A/2", "tickets": ["t9"]}, editor, 400, "api", "id"),
        ({"id": "a2", "tickets": ["t9"], "active": False}, editor, 400, "api", "active"),
        ({"id": "nope", "tickets": ["t9"]}, editor, 404, "notfound", "nope"),
    ]
    for body, headers, status, code, word in refused:
        got_status, data = await call(site.client, "manage_alert_invocation_tickets", body, headers)
        assert (got_status, data["code"]) == (status, code), (body, data)
        assert word in data["description"], (body, data)
    assert (await ok(site, "get_alert_invocations", {"ids": ["a2"]}, admin))["alerts"][0]["tickets"] == []
    status, data = await call(satellite, "manage_alert_invocation_tickets", {"id": "a2", "tickets": ["t9"]}, editor)
    assert (status, data["code"], data["url"]) == (500, "master", "http://127.0.0.1:5522")
    assert (await ok(site, "get_alert_invocations", {"ids": ["a2"]}, admin))["alerts"][0]["tickets"] == []


async def test_delete_alert_invocation(site: Site, admin: Headers, satellite: Client, limited: Headers) -> None:
    await seed(site)
    deleter = await key(site, admin, privileges={"delete_alerts": True})
    refused: list[tuple[dict[str, Any], Headers, int, str, str]] = [
        ({"id": "a1"}, await key(site, admin, privileges={"edit_alerts": True}), 403, "access", "Delete Alerts"),
        ({"id": "a1"}, limited, 403, "access", "Group-limited"),
        ({}, deleter, 400, "api", "id"),
        ({"id": "a b"}, deleter, 400, "api", "id"),
        ({"id": 5}, deleter, 400, "api", "id"),
        ({"id": "nope"}, deleter, 404, "notfound", "nope"),
    ]
    for body, headers, status, code, word in refused:
        got_status, data = await call(site.client, "delete_alert_invocation", body, headers)
        assert (got_status, data["code"]) == (status, code), (body, data)
        assert word in data["description"], (body, data)
    status, data = await call(satellite, "delete_alert_invocation", {"id": "a1"}, deleter)
    assert (status, data["code"], data["url"]) == (500, "master", "http://127.0.0.1:5522")
    assert (await ok(site, "search_alerts", {"limit": 10}, admin))["list"]["length"] == 3

    status, data = await call(site.client, "delete_alert_invocation", {"id": "a1"}, deleter)  # active: refused
    assert (status, data["code"]) == (500, "alert") and "active" in data["description"], data
    await site.node.stores.alerts.update(site.node.fence(), "a1", lambda r: {**r, "active": False})
    await ok(site, "delete_alert_invocation", {"id": "a1"}, deleter)
    for client in (site.client, satellite):
        got = (await call(client, "get_alert_invocations", {"ids": ["a1", "a2"]}, admin))[1]["alerts"]
        assert got[0] == {"err": "Failed to locate alert invocation: a1"} and got[1]["id"] == "a2"
        data = (await call(client, "search_alerts", {"query": "alert:load_avg_high", "limit": 10}, admin))[1]
        assert [r["id"] for r in data["rows"]] == ["a3"] and data["list"]["length"] == 1
    status, data = await call(site.client, "delete_alert_invocation", {"id": "a1"}, deleter)
    assert (status, data["code"]) == (404, "notfound")
    act = await ok(site, "search_activity", {"query": "action:alert_delete_invocation", "limit": 10}, admin)
    assert act["list"]["length"] == 1
    row = act["rows"][0]
    assert row["alert"]["id"] == "a1" and row["alert"]["alert"] == "load_avg_high" and "a1" in row["keywords"]
