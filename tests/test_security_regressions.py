"""Regression tests for security findings: query injection, CSRF on GET writes, role escalation,
oversized numbers and secrets in crash logs."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from storage.errors import Conflict
from tests.authkit import Site
from tests.servers import Node, RedisServer, wait_port


async def make_user(site: Site, admin: dict[str, str], name: str, **fields: Any) -> dict[str, str]:
    body = {"username": name, "email": f"{name}@example.com", "full_name": name, "password": "pw-" + name, **fields}
    status, data = await site.call("admin_create", body, ns="user", headers=admin)
    assert status == 200, data
    sid, _ = await site.login(name, "pw-" + name)
    return {"X-Session-ID": sid}


async def test_search_restrictions_cannot_be_escaped(site: Site) -> None:
    sid, _ = await site.login()
    admin = {"X-Session-ID": sid}
    await site.call("create_category", {"id": "secret", "title": "Secret"}, headers=admin)
    for category in ("general", "secret"):
        body = {"title": f"in {category}", "enabled": True, "category": category, "plugin": "shellplug",
                "targets": ["main"], "algo": "random", "params": {"script": "#!/bin/sh\n"},
                "triggers": [{"type": "manual", "enabled": True}]}  # fmt: skip
        _, created = await site.call("create_event", body, headers=admin)
        status, _ = await site.call("run_event", {"id": created["event"]["id"]}, headers=admin)
        assert status == 200
    bob = await make_user(site, admin, "bob", categories=["general"])
    _, everything = await site.call("search_jobs", {"query": "*", "limit": 50}, headers=admin)
    assert sorted(j["category"] for j in everything["rows"]) == ["general", "secret"]  # both jobs exist
    # The job bob may see is found; the other never is, however the query is written.
    for query in ["*", "category:general", '(category = "general")', "category:general|secret"]:
        status, found = await site.call("search_jobs", {"query": query, "limit": 50}, headers=bob)
        assert status == 200, (query, found)
        assert [j["category"] for j in found["rows"]] == ["general"] and found["list"]["length"] == 1, query
    for query in ["category:secret", '(category = "secret")']:
        status, found = await site.call("search_jobs", {"query": query, "limit": 50}, headers=bob)
        assert (status, found["rows"], found["list"]["length"]) == (200, [], 0), query
    status, found = await site.call("search_jobs", {"query": '(category = "secret")) | (code = "abort"', "limit": 50},
                                    headers=bob)  # fmt: skip
    assert status == 400 or {j["category"] for j in found["rows"]} <= {"general"}
    escape = '(action = "x")) | ((action = "user_create")'
    status, found = await site.call("search_revision_history", {"type": "events", "query": escape, "limit": 50},
                                    headers=bob)  # fmt: skip
    assert status == 400 or all(r["action"].startswith("event_") for r in found["rows"])
    status, found = await site.call("search_revision_history", {"type": "events", "limit": 50}, headers=bob)
    assert status == 200 and all(r["event"]["category"] == "general" for r in found["rows"])


async def test_write_calls_over_get_need_the_csrf_token_with_a_cookie(site: Site) -> None:
    sid, token = await site.login()
    cookie = {"Cookie": f"session_id={sid}"}
    resp = await site.client.get("/api/app/update_global_state/v1", params={"x": "1"}, headers=cookie)
    assert resp.status == 401
    # With the token the same GET passes auth (and then fails on its empty body, as a write reads the body).
    resp = await site.client.get("/api/app/update_global_state/v1", headers={**cookie, "X-CSRF-Token": token})
    assert resp.status == 400
    resp = await site.client.get("/api/app/get_global_state/v1", headers=cookie)
    assert resp.status == 200  # reads over GET need no token


async def test_roles_cannot_grant_more_than_the_editor_holds(site: Site) -> None:
    sid, _ = await site.login()
    admin = {"X-Session-ID": sid}
    held = {"create_roles": True, "edit_roles": True}
    await site.call("create_role", {"id": "ops", "title": "Ops", "privileges": held}, headers=admin)
    _, role = await site.call("get_role", {"id": "ops"}, headers=admin)
    assert role["code"] == 0 and role["role"]["privileges"] == held  # the role exists as made
    carol = await make_user(site, admin, "carol", roles=["ops"])
    beyond = "You cannot grant privileges you do not hold: admin"
    status, data = await site.call("update_role", {"id": "ops", "privileges": {**held, "admin": True}},
                                   headers=carol)  # fmt: skip
    assert (status, data["code"], data["description"]) == (403, "access", beyond)
    status, data = await site.call("create_role", {"id": "boss", "title": "Boss", "privileges": {"admin": True}},
                                   headers=carol)  # fmt: skip
    assert (status, data["code"], data["description"]) == (403, "access", beyond)
    # What carol holds she may grant: the edit is made, and reads back with nothing more.
    status, data = await site.call("update_role", {"id": "ops", "title": "Ops 2", "privileges": held},
                                   headers=carol)  # fmt: skip
    assert (status, data["code"]) == (200, 0), data
    _, role = await site.call("get_role", {"id": "ops"}, headers=admin)
    assert (role["role"]["title"], role["role"]["privileges"]) == ("Ops 2", held)
    assert (await site.call("get_role", {"id": "boss"}, headers=admin))[0] == 404
    status, _ = await site.call("admin_get_users", ns="user", headers=carol)
    assert status == 403


async def test_out_of_range_numbers_are_refused_cleanly(site: Site) -> None:
    sid, _ = await site.login()
    resp = await site.client.post("/api/app/user_settings/v1", data=b'{"volume": 100000000000000000000000}',
                                  headers={"X-Session-ID": sid, "Content-Type": "application/json"})  # fmt: skip
    data = await resp.json()
    assert (resp.status, data["code"]) == (400, "api")
    assert "'volume' must be an integer within range" in data["description"]


async def test_crash_logs_carry_no_request_secrets(tmp_path: Path) -> None:
    redis = RedisServer(tmp_path / "redis").start()
    node = Node(0, tmp_path / "node", redis.url).start()
    try:
        wait_port(node.port)
        secret = "hunter3-" + str(time.time_ns())
        async with aiohttp.ClientSession() as http, http.post(f"{node.url}/api/app/test_crash/v1",
                             json={"password": secret, "api_key": secret}) as resp:  # fmt: skip
            assert resp.status == 500
            assert secret not in await resp.text()
        await asyncio.sleep(0.5)
    finally:
        node.terminate()
        redis.stop()
    log = node.log_text()
    failures = [json.loads(line) for line in log.splitlines() if '"handler_failed"' in line]
    assert failures and "exception" in failures[0]  # the traceback is logged ...
    assert secret not in log  # ... without the request's values


async def test_a_stale_user_copy_cannot_overwrite_a_newer_save(site: Site) -> None:
    users = site.node.stores.users
    stale = dict(await users.get("admin") or {})
    await users.save(site.node.fence(), {**stale, "full_name": "Changed by an admin"})
    with pytest.raises(Conflict):
        await users.save(site.node.fence(), {**stale, "full_name": "Slow writer"})
    current = await users.get("admin")
    assert current is not None and current["full_name"] == "Changed by an admin"
    assert current["revision"] == int(stale.get("revision") or 0) + 1
