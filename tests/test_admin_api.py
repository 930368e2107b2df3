"""The admin calls on an in-process primary (and a satellite) with real Redis: internal jobs and their progress,
maintenance and bulk job deletion as internal jobs, daily and admin stats, bulk data deletion, logging a user out
everywhere, the test email, the run-time config, the bulk export, and who may call them."""

from __future__ import annotations

import csv
import gzip
import io
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from api.app import RUNNER_OPTIONS, create_app
from api.handlers.internaljobs import MAX_RUNNING
from api.settings import Settings
from cluster.node import NodeRuntime
from storage.connection import Database
from storage.stores import Stores
from tests.authkit import Client, NodeTestServer, Site, ok, open_site, wait_until
from tests.sinks import MailSink, eventually
from tests.test_jobs_api import create, make_user, run

Headers = dict[str, str]


@pytest.fixture
async def satellite(site: Site, db: Database, tmp_path: Path) -> AsyncIterator[Client]:
    node = NodeRuntime(db, "n2", "http://127.0.0.1:5532", lease_ms=3000,
                       stores=Stores.open(db, secret_key=site.node.stores.secret_key))  # fmt: skip
    client = TestClient(NodeTestServer(create_app(Settings(data_dir=tmp_path / "sat"), node), **RUNNER_OPTIONS))
    await client.start_server()
    await node.start()
    try:
        await wait_until(lambda: node.stores.bus.healthy and node.election.primary_id == "n1", "satellite")
        yield client
    finally:
        await node.stop()
        await client.close()


async def post(client: Client, api: str, body: dict[str, Any], headers: Headers) -> tuple[int, dict[str, Any]]:
    resp = await client.post(f"/api/app/{api}/v1", json=body, headers=headers)
    data: dict[str, Any] = await resp.json()
    return resp.status, data


async def finished(site: Site, admin: Headers, job_id: str) -> dict[str, Any]:
    """The internal job's final record, once it has one."""

    async def done() -> dict[str, Any] | None:
        rows = (await ok(site, "get_internal_jobs", {"all": True}, admin))["rows"]
        found = [r for r in rows if r["id"] == job_id and r.get("complete")]
        return found[0] if found else None

    final: dict[str, Any] = await eventually(done, 30, f"internal job {job_id} finished")
    return final


def refused(status: int, data: dict[str, Any], code: str, *words: str) -> None:
    assert data["code"] == code, (status, data)
    for word in words:
        assert word in data["description"], data


async def test_internal_job_progress_from_a_satellite(site: Site, admin: Headers, satellite: Client) -> None:
    job_id = (await ok(site, "test_internal_job", {"duration": 2}, admin))["id"]

    async def advanced() -> dict[str, Any] | None:
        _, data = await post(satellite, "get_internal_jobs", {}, admin)
        rows = [r for r in data["rows"] if r["id"] == job_id and r["progress"] > 0]
        return rows[0] if rows else None

    row = await eventually(advanced, 20, "progress seen from the satellite")
    assert row["type"] == "maint" and row["username"] == "admin" and row["node"] == "n1"
    multi = await ok(site, "get_multiple", {"lists": ["tags"], "jobs": True}, admin)
    assert set(multi["internalJobs"]) <= {job_id}
    final = await finished(site, admin, job_id)
    assert final["code"] == 0 and final["progress"] == 1.0 and final["elapsed"] >= 2
    assert (await ok(site, "get_internal_jobs", {}, admin))["rows"] == []
    found = await ok(site, "search_activity", {"query": "action:internal_job"}, admin)
    assert any(r["job"]["id"] == job_id for r in found["rows"]), found

    status, data = await post(satellite, "test_internal_job", {"duration": 1}, admin)
    assert (status, data["code"]) == (500, "master"), data
    status, data = await site.call("test_internal_job", {"duration": 0}, headers=admin)
    refused(status, data, "api", "duration")
    status, data = await site.call("test_internal_job", {"duration": 99999}, headers=admin)
    refused(status, data, "api", "duration")


async def test_privileges(site: Site, admin: Headers) -> None:
    user = await make_user(site, admin, "plain", privileges={"run_jobs": True})
    for api in ("get_internal_jobs", "test_internal_job", "admin_run_maintenance", "admin_stats",
                "admin_reset_daily_stats", "admin_logout_all", "admin_send_test_email", "admin_get_config",
                "admin_update_config", "admin_delete_data"):  # fmt: skip
        status, data = await site.call(api, {"username": "admin", "to": "a@b.cc", "items": [{"type": "users"}]},
                                       headers=user)  # fmt: skip
        assert (status, data["code"]) == (403, "access"), (api, data)
    status, data = await site.call("bulk_search_delete_jobs", {}, headers=user)
    assert (status, data["code"]) == (403, "access"), data
    assert (await ok(site, "dash_stats", {}, user))["stats"]["day"]["timeStart"] > 0
    limited = await make_user(site, admin, "limited", privileges={"delete_jobs": True}, categories=["general"])
    status, data = await site.call("bulk_search_delete_jobs", {}, headers=limited)
    refused(status, data, "access", "restrictions")


async def test_bulk_delete_maintenance_and_daily_stats(site: Site, admin: Headers) -> None:
    first = await create(site, admin, title="First")
    second = await create(site, admin, title="Second")
    mine = [await run(site, admin, id=first["id"]) for _ in range(3)]
    theirs = [await run(site, admin, id=second["id"]) for _ in range(3)]

    async def history() -> list[str]:
        rows = (await ok(site, "search_jobs", {"query": "*", "limit": 100}, admin))["rows"]
        return [r["id"] for r in rows]

    await eventually(lambda: _all_in(history, mine + theirs), 20, "jobs in the history")
    day = (await ok(site, "dash_stats", {}, admin))["stats"]["day"]
    assert day["transactions"]["job_complete"] == 6, day
    assert day["events"][first["id"]]["job_complete"] == 3 and day["transactions"]["event_create"] == 2, day

    status, data = await site.call("bulk_search_delete_jobs", {"query": "event:("}, headers=admin)
    refused(status, data, "api", "query")
    job_id = (await ok(site, "bulk_search_delete_jobs", {"query": f"event:{first['id']}"}, admin))["id"]
    final = await finished(site, admin, job_id)
    assert final["code"] == 0 and final["result"] == {"count": 3, "total": 3}, final
    assert sorted(await history()) == sorted(theirs)
    for job in mine:  # gone by the one delete path: get_job does not find them
        status, data = await site.call("get_job", {"id": job}, headers=admin)
        assert data["code"] != 0, data

    # Maintenance with a cluster-wide retention limit set at run time keeps the newest job only.
    await ok(site, "admin_update_config", {"job_max_rows": 1}, admin)
    job_id = (await ok(site, "admin_run_maintenance", {}, admin))["id"]
    final = await finished(site, admin, job_id)
    assert final["code"] == 0 and final["result"]["removed"]["jobs"] == 2, final
    assert await history() == [theirs[-1]]
    stats = (await ok(site, "admin_stats", {}, admin))["stats"]
    assert stats["db"]["records"]["jobs"] == 1 and stats["nodes"][0]["id"] == "n1", stats
    assert "definitions" in stats["cache"] and stats["internal_jobs"] == 0

    before = (await ok(site, "dash_stats", {}, admin))["stats"]["day"]
    await ok(site, "admin_reset_daily_stats", {}, admin)
    after = (await ok(site, "dash_stats", {}, admin))["stats"]["day"]
    assert after["timeStart"] >= before["timeStart"] and "job_complete" not in after["transactions"], after


async def _all_in(history: Any, wanted: list[str]) -> bool:
    return set(wanted) <= set(await history())


async def test_delete_data(site: Site, admin: Headers) -> None:
    await make_user(site, admin, "doomed")
    await ok(site, "create_tag", {"id": "gone", "title": "Gone"}, admin)
    for items, field in (([{"type": "everything"}], "items[0].type"),
                         ([{"type": "list", "key": "nope"}], "items[0].key"),
                         ([{"type": "users"}, {"type": "index", "index": "servers"}], "items[1].index"),
                         ([{"type": "index", "index": "jobs", "query": "event:("}], "Invalid search query"),
                         ([], "No data")):  # fmt: skip
        status, data = await site.call("admin_delete_data", {"items": items}, headers=admin)
        assert status in (400, 500) and data["code"] in ("api", "admin") and field in data["description"], data
    assert (await ok(site, "get_global_state", {}, admin))["state"]["scheduler"]["enabled"] is True  # nothing done

    assert (await ok(site, "search_activity", {"query": "action:tag_create"}, admin))["rows"]
    items = [{"type": "list", "key": "tags"}, {"type": "users"},
             {"type": "index", "index": "activity", "query": "action:tag_create"}]  # fmt: skip
    job_id = (await ok(site, "admin_delete_data", {"items": items}, admin))["id"]
    final = await finished(site, admin, job_id)
    stats = final["result"]["stats"]
    assert final["code"] == 0 and stats["keys"] >= 2 and stats["records"] >= 1 and final["result"]["warnings"], final
    assert (await ok(site, "search_activity", {"query": "action:tag_create"}, admin))["rows"] == []
    assert (await ok(site, "get_tags", {}, admin))["rows"] == []
    users = (await ok(site, "admin_get_users", {}, admin, ns="user"))["rows"]
    assert [u["username"] for u in users] == ["admin"]
    assert (await ok(site, "get_global_state", {}, admin))["state"]["scheduler"]["enabled"] is False


async def test_logout_all(site: Site, admin: Headers) -> None:
    sessions = [await make_user(site, admin, "roamer")]
    sessions.append({"X-Session-ID": (await site.login("roamer", "pw-roamer"))[0]})
    for headers in sessions:
        await ok(site, "get_user_activity", {}, headers)
    status, data = await site.call("admin_logout_all", {"username": "bad name!"}, headers=admin)
    refused(status, data, "api", "username")
    job_id = (await ok(site, "admin_logout_all", {"username": "roamer"}, admin))["id"]
    final = await finished(site, admin, job_id)
    assert final["result"] == {"sessions": 2}, final
    for headers in sessions:
        status, data = await site.call("get_user_activity", {}, headers=headers)
        assert (status, data["code"]) == (401, "session"), data
    await ok(site, "get_user_activity", {}, admin)  # the caller's own session stays


async def test_send_test_email(db: Database, tmp_path: Path) -> None:
    with MailSink() as sink:
        async for mailer in open_site(db, tmp_path / "mail", login_ip_limit=0, smtp_host="127.0.0.1",
                                      smtp_port=sink.port, smtp_tls="none"):  # fmt: skip
            admin = {"X-Session-ID": (await mailer.login())[0]}
            status, data = await mailer.call("admin_send_test_email", {"to": "not-an-address"}, headers=admin)
            refused(status, data, "api", "to")
            reply = await ok(mailer, "admin_send_test_email", {"to": "ops@example.com, dev@example.com"}, admin)
            assert reply["err"] is False and "ops@example.com" in reply["description"], reply
            mail = await eventually(lambda: sink.messages, 10, "the test mail")
            assert sorted(mail[0].to) == ["dev@example.com", "ops@example.com"]
            assert "Send Test Email" in mail[0].subject and "This is a test." in mail[0].text


async def test_config_redacts_and_validates(db: Database, tmp_path: Path) -> None:
    async for s in open_site(db, tmp_path / "cfg", login_ip_limit=0, smtp_password="hunter2-pw",
                             secret_key="very-secret-key", redis_url="redis://:redis-pw@127.0.0.1:1/0"):  # fmt: skip
        admin = {"X-Session-ID": (await s.login())[0]}
        got = await ok(s, "admin_get_config", {}, admin)
        text = json.dumps(got)
        for secret in ("hunter2-pw", "very-secret-key", "redis-pw"):
            assert secret not in text
        assert got["config"]["smtp_password"] == "(redacted)" and got["config"]["job_max_rows"] == 100_000
        assert set(got["editable"]) >= {"job_max_rows", "activity_expire_days"}
        for body, field in (({"port": 1}, "port"), ({"job_max_rows": -1}, "job_max_rows"),
                            ({"job_expire_days": "3"}, "job_expire_days"), ({}, "No configuration")):  # fmt: skip
            status, data = await s.call("admin_update_config", body, headers=admin)
            refused(status, data, "api", field)
        assert (await ok(s, "admin_get_config", {}, admin))["overrides"] == {}
        await ok(s, "admin_update_config", {"job_max_rows": 500, "activity_expire_days": 30}, admin)
        got = await ok(s, "admin_get_config", {}, admin)
        assert got["overrides"] == {"job_max_rows": 500, "activity_expire_days": 30}
        assert got["config"]["job_max_rows"] == 500
        await ok(s, "admin_update_config", {"job_max_rows": None}, admin)
        assert (await ok(s, "admin_get_config", {}, admin))["overrides"] == {"activity_expire_days": 30}


async def test_bulk_export(site: Site, admin: Headers) -> None:
    event = await create(site, admin, title="Exported")
    ids = [await run(site, admin, id=event["id"]) for _ in range(3)]
    await eventually(lambda: _all_in(_history(site, admin), ids), 20, "jobs in the history")
    body = {"index": "jobs", "format": "csv", "columns": "id,code,event", "query": f"event:{event['id']}"}
    resp = await site.client.post("/api/app/bulk_search_export/v1", json=body, headers=admin)
    assert resp.status == 200 and "attachment" in resp.headers["Content-Disposition"]
    rows = list(csv.reader(io.StringIO((await resp.read()).decode("utf-8-sig"))))
    assert rows[0] == ["id", "code", "event"] and sorted(r[0] for r in rows[1:]) == sorted(ids), rows
    resp = await site.client.post("/api/app/bulk_search_export/v1", headers=admin,
                                  json={**body, "format": "ndjson", "compress": True, "max_rows": 2})  # fmt: skip
    lines = gzip.decompress(await resp.read()).decode("utf-8-sig").splitlines()
    assert len(lines) == 2 and json.loads(lines[0])["event"] == event["id"]
    status, data = await site.call("bulk_search_export", {**body, "format": "xml"}, headers=admin)
    refused(status, data, "api", "format")


def _history(site: Site, admin: Headers) -> Any:
    async def ids() -> list[str]:
        rows = (await ok(site, "search_jobs", {"query": "*", "limit": 100}, admin))["rows"]
        return [r["id"] for r in rows]

    return ids


async def test_internal_jobs_at_once_are_bounded(site: Site, admin: Headers) -> None:
    started = [(await ok(site, "test_internal_job", {"duration": 3}, admin))["id"] for _ in range(MAX_RUNNING)]
    status, data = await site.call("test_internal_job", {"duration": 3}, headers=admin)
    refused(status, data, "admin", "running already")
    running = {r["id"] for r in (await ok(site, "get_internal_jobs", {}, admin))["rows"]}
    assert running == set(started)  # the refused one left no record
    status, data = await site.call("admin_run_maintenance", {}, headers=admin)
    refused(status, data, "admin", "running already")
    for job_id in started:  # let them end on their own: none is cut off mid-write by the teardown
        assert (await finished(site, admin, job_id))["code"] == 0
