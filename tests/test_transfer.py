"""Export and import (admin_export_data, admin_import_data, get_transfer_token) between two real in-process primaries,
each on its own Redis server; and an export in the xyOps format built from its documentation (tests/xyopsexport.py)."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import make_mocked_request

from api import xyformat
from api.call import Call
from api.handlers import transfer
from api.importer import Importer
from api.principal import effective
from storage.connection import Database, connect
from storage.keyspace import Keyspace
from storage.transfer import TransferTokens
from tests import xyopsexport
from tests.authkit import Site, ok, open_site
from tests.servers import RedisServer

pytestmark = pytest.mark.timeout(180)
SECRET_KEY = "export-passphrase-1"
VOLATILE = {"modified"}  # nothing else may differ between the two systems' answers


@pytest.fixture
async def fresh(tmp_path: Path) -> AsyncIterator[Site]:
    """A second primary on a Redis server of its own (a fresh, empty system)."""
    server = RedisServer(tmp_path / "redis2").start()
    db = Database(connect(server.url), Keyspace("fresh"))
    try:
        async for s in open_site(db, tmp_path / "data2", login_ip_limit=0):
            yield s
    finally:
        await db.aclose()
        server.stop()


async def export(site: Site, headers: dict[str, str], **params: Any) -> bytes:
    resp = await site.client.post("/api/app/admin_export_data/v1", json=params, headers=headers)
    body = await resp.read()
    assert resp.status == 200 and resp.headers["Content-Type"] == "application/gzip", body[:300]
    return body


async def import_file(site: Site, headers: dict[str, str], data: bytes, **fields: str) -> tuple[int, dict[str, Any]]:
    form = aiohttp.FormData()
    for k, v in fields.items():
        form.add_field(k, v)
    form.add_field("file1", data, filename="export.txt.gz", content_type="application/gzip")
    resp = await site.client.post("/api/app/admin_import_data/v1", data=form, headers=headers)
    reply: dict[str, Any] = await resp.json()
    return resp.status, reply


async def populate(site: Site, h: dict[str, str]) -> dict[str, Any]:
    """Objects of every kind the export covers, made through the API."""
    await ok(site, "create_role", {"id": "ops_role", "title": "Ops", "privileges": {"create_events": True}}, h)
    await ok(site, "create_category", {"id": "nightly", "title": "Nightly", "color": "blue"}, h)
    await ok(site, "create_group", {"id": "dbs", "title": "Databases", "hostname_match": "^db"}, h)
    await ok(site, "create_tag", {"id": "db", "title": "DB"}, h)
    await ok(site, "delete_tag", {"id": "flag"}, h)  # a first-start object the fresh system has: the import drops it
    await ok(site, "create_bucket", {"id": "state1", "title": "State", "data": {"last_run": 41, "ok": True}}, h)
    await ok(site, "create_plugin", {"id": "echoplug", "title": "Echo", "type": "event", "command": "/bin/echo"}, h)
    await ok(site, "create_web_hook", {"id": "hook1", "title": "Hook", "url": "https://example.com/hook",
                                      "method": "POST"}, h)
    await ok(site, "create_channel", {"id": "chan1", "title": "Channel", "users": ["admin"]}, h)
    await ok(site, "create_secret", {"id": "sec1", "title": "Secret", "events": ["ev1"],
                                     "fields": [{"name": "TOKEN", "value": "t0p-s3cret"}]}, h)  # fmt: skip
    await ok(site, "create_event", {"id": "ev1", "title": "Backup", "enabled": True, "category": "nightly",
                                    "plugin": "shellplug", "targets": ["main"], "tags": ["db"],
                                    "params": {"script": "#!/bin/sh\necho hi\n"},
                                    "triggers": [{"type": "manual", "enabled": True}]}, h)  # fmt: skip
    await ok(site, "update_event", {"id": "ev1", "notes": "changed once"}, h)
    await ok(site, "create_monitor", {"id": "mon1", "title": "Load", "source": "monitor.load", "data_type": "float"}, h)
    await ok(site, "create_alert", {"id": "al1", "title": "High load", "expression": "monitors.load > 100",
                                    "message": "load {{monitors.load}}"}, h)  # fmt: skip
    await ok(site, "admin_create", {"username": "bob", "password": "bobs-password", "full_name": "Bob",
                                    "email": "bob@example.com", "roles": ["ops_role"]}, h, ns="user")  # fmt: skip
    await ok(site, "create_api_key", {"title": "Older", "privileges": {"view_jobs": True}}, h)
    key = await ok(site, "create_api_key", {"title": "CI", "privileges": {"admin": True}}, h)
    ticket = await ok(site, "create_ticket", {"subject": "Disk full", "body": "on db1", "type": "issue"}, h)
    await ok(site, "create_ticket", {"subject": "Second", "body": "numbered 2", "type": "issue"}, h)
    job = await ok(site, "run_event", {"id": "ev1"}, h)
    deadline = asyncio.get_running_loop().time() + 60
    while True:
        got = await ok(site, "get_job", {"id": job["id"]}, h)
        if got["job"].get("state") == "complete":
            break
        assert asyncio.get_running_loop().time() < deadline, got
        await asyncio.sleep(0.2)
    return {"plain_key": key["plain_key"], "ticket": ticket["ticket"]["id"], "job": job["id"]}


def _norm(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _norm(v) for k, v in value.items() if k not in VOLATILE}
    if isinstance(value, list):
        return [_norm(v) for v in value]
    return value


def _diff(a: Any, b: Any, at: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for k in sorted(set(a) | set(b)) for d in _diff(a.get(k), b.get(k), f"{at}.{k}")]
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for n, (x, y) in enumerate(zip(a, b, strict=True)) for d in _diff(x, y, f"{at}[{n}]")]
    return [] if a == b else [f"{at}: {a!r} != {b!r}"[:300]]


READS = ("get_roles", "get_categories", "get_groups", "get_tags", "get_plugins", "get_web_hooks", "get_channels",
         "get_secrets", "get_events", "get_monitors", "get_alerts", "get_api_keys", "get_buckets")  # fmt: skip


async def answers(site: Site, h: dict[str, str], made: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in READS:
        out[name] = (await ok(site, name, {}, h))["rows"]
    out["bob"] = (await ok(site, "admin_get_user", {"username": "bob"}, h, ns="user"))["user"]
    out["ticket"] = (await ok(site, "get_ticket", {"id": made["ticket"]}, h))["ticket"]
    out["job"] = (await ok(site, "get_job", {"id": made["job"]}, h))["job"]
    out["search_jobs"] = (await ok(site, "search_jobs", {"query": "event:ev1"}, h))["rows"]
    out["search_tickets"] = (await ok(site, "search_tickets", {"query": "*"}, h))["rows"]
    out["secret"] = (await ok(site, "decrypt_secret", {"id": "sec1"}, h))["fields"]
    out["bucket"] = await ok(site, "get_bucket", {"id": "state1"}, h)
    return out


async def test_an_export_imported_into_a_fresh_system_answers_the_same(site: Site, admin: dict[str, str],
                                                                       fresh: Site) -> None:  # fmt: skip
    made = await populate(site, admin)
    before = await answers(site, admin, made)
    data = await export(site, admin, lists="all", indexes=["jobs", "tickets"], secret_key=SECRET_KEY)
    text = gzip.decompress(data).decode()
    assert text.startswith("# xyOps Data Export v1.0\n") and "t0p-s3cret" not in text
    assert '{"cmd":"listDelete","args":["global/events",false]}' in text

    sid, _ = await fresh.login()
    h2 = {"X-Session-ID": sid}
    status, dry = await import_file(fresh, h2, data, dry_run="1", secret_key=SECRET_KEY)
    assert status == 200 and dry["code"] == 0, dry
    assert dry["report"]["created"] > 10 and not dry["report"]["errors"], dry["report"]
    assert (await ok(fresh, "get_events", {}, h2))["list"]["length"] == 0  # a dry run writes nothing
    assert {"kind": "event", "id": "ev1", "action": "created"} in dry["report"]["changes"]

    status, done = await import_file(fresh, h2, data, secret_key=SECRET_KEY)
    assert status == 200 and done["code"] == 0 and not done["report"]["errors"], done
    assert done["report"]["created"] == dry["report"]["created"]
    after = await answers(fresh, h2, made)
    for name, value in before.items():
        assert _norm(after[name]) == _norm(value), (name, _diff(_norm(after[name]), _norm(value)))

    # The imported API key and password still authenticate, and the same file again changes nothing.
    status, reply = await fresh.call("get_events", {}, headers={"X-API-Key": made["plain_key"]})
    assert (status, reply["code"]) == (200, 0), reply
    await fresh.login("bob", "bobs-password")
    status, again = await import_file(fresh, h2, data, secret_key=SECRET_KEY)
    assert (again["report"]["created"], again["report"]["updated"], again["report"]["deleted"]) == (0, 0, 0), again


async def test_an_xyops_export_imports(site: Site, admin: dict[str, str]) -> None:
    data = xyopsexport.build()
    status, dry = await import_file(site, admin, data, dry_run="true", secret_key=xyopsexport.PASSPHRASE)
    assert status == 200, dry
    report = dry["report"]
    assert len(report["errors"]) == 1, report
    assert report["errors"][0].startswith(f"line {xyopsexport.malformed_line()}: not valid JSON"), report
    assert (await site.call("get_event", {"id": "xy_backup"}, headers=admin))[1]["code"] == "notfound"
    wanted = {("category", "xy_ops"), ("category", "xy_reports"), ("event", "xy_backup"), ("secret", "xy_db"),
              ("api_key", "kxyfixture1"), ("user", "Jane.Doe"), ("job", "jxyfixture01"), ("tag", "xy_nightly")}
    assert wanted <= {(c["kind"], c["id"]) for c in report["changes"]}

    status, done = await import_file(site, admin, data, secret_key=xyopsexport.PASSPHRASE)
    assert status == 200 and len(done["report"]["errors"]) == 1, done
    event = (await ok(site, "get_event", {"id": "xy_backup"}, admin))["event"]
    assert (event["title"], event["revision"], event["created"]) == ("Nightly backup", 3, xyopsexport.NOW)
    # The file replaces the lists it holds (its listDelete lines), as in xyOps: the default category is gone.
    assert [c["id"] for c in (await ok(site, "get_categories", {}, admin))["rows"]] == ["xy_ops", "xy_misc",
                                                                                     "xy_reports"]  # fmt: skip
    assert {"kind": "category", "id": "general", "action": "deleted"} in report["changes"]
    fields = (await ok(site, "decrypt_secret", {"id": "xy_db"}, admin))["fields"]
    assert fields == [{"name": "DB_USER", "value": "backup"}, {"name": "DB_PASS", "value": "s3cr3t"}]
    job = (await ok(site, "get_job", {"id": "jxyfixture01"}, admin))["job"]
    assert job["event"] == "xy_backup" and job["code"] == 0
    found = (await ok(site, "search_jobs", {"query": "event:xy_backup"}, admin))["rows"]
    assert [j["id"] for j in found] == ["jxyfixture01"]
    ticket = (await ok(site, "get_ticket", {"id": "txyfixture01"}, admin))["ticket"]
    assert (ticket["subject"], ticket["created"]) == ("Backup failed twice", xyopsexport.NOW + 200)
    assert any("number 7" in w for w in done["report"]["warnings"])  # numbered here in file order
    found = (await ok(site, "search_alerts", {"query": "alert:load_avg_high"}, admin))["rows"]
    assert [(a["id"], a["active"]) for a in found] == [("axyfixture01", False)]  # imported cleared
    found = (await ok(site, "search_activity", {"query": "action:event_create"}, admin))["rows"]
    assert "xyactivity01" in [a["id"] for a in found]
    await site.login("Jane.Doe", xyopsexport.USER_PASSWORD)
    status, reply = await site.call("get_events", {}, headers={"X-API-Key": xyopsexport.API_KEY_PLAIN})
    assert (status, reply["code"]) == (200, 0), reply

    # Without the passphrase the values stay out, with a warning; a wrong one is a warning too.
    status, other = await import_file(site, admin, data, dry_run="1")
    assert any("secret_key" in w for w in other["report"]["warnings"]), other


async def test_bounds_privileges_and_tokens(site: Site, admin: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    # Not an admin: refused.
    await ok(site, "admin_create", {"username": "eve", "password": "eves-password", "full_name": "Eve",
                                    "email": "eve@example.com"}, admin, ns="user")  # fmt: skip
    eve_sid, _ = await site.login("eve", "eves-password")
    eve = {"X-Session-ID": eve_sid}
    status, reply = await import_file(site, eve, xyopsexport.build())
    assert (status, reply["code"]) == (403, "access"), reply
    status, reply = await site.call("admin_export_data", {"lists": "all"}, headers=eve)
    assert reply["code"] == "access", reply
    status, reply = await site.call("get_transfer_token", {"lists": "all"}, headers=eve)
    assert reply["code"] == "access", reply

    # bulk_export exports, but sealing secret values under a passphrase of one's own is reading them: admins only.
    await ok(site, "admin_update", {"username": "eve", "privileges": {"bulk_export": True}}, admin, ns="user")
    resp = await site.client.post("/api/app/admin_export_data/v1", json={"lists": ["secrets"]}, headers=eve)
    assert resp.status == 200 and resp.content_type == "application/gzip"
    status, reply = await site.call("admin_export_data", {"lists": ["secrets"], "secret_key": "x"}, headers=eve)
    assert reply["code"] == "access" and "admin" in reply["description"], reply
    # A token keeps the passphrase sealed in the store, and gives it back to the export.
    token = (await ok(site, "get_transfer_token", {"lists": ["secrets"], "secret_key": "tok-pass"}, admin))["token"]
    db = site.node.stores.db
    stored = await db.client.get(db.keys.transfer_token(hashlib.sha256(token.encode()).hexdigest()))
    assert stored and b"tok-pass" not in stored  # kept under the token's digest, the passphrase sealed
    await ok(site, "create_secret", {"id": "tsec", "title": "T", "fields": [{"name": "X", "value": "y"}]}, admin)
    resp = await site.client.get("/api/app/admin_export_data/v1", params={"token": token}, headers=admin)
    sealed = next(json.loads(t)["value"] for t in gzip.decompress(await resp.read()).decode().splitlines()
                  if t.startswith('{"key":"secrets/tsec"'))  # fmt: skip
    assert xyformat.open_secret(sealed, "tok-pass", "tsec") == [{"name": "X", "value": "y"}]

    # Selections.
    status, reply = await site.call("admin_export_data", {}, headers=admin)
    assert (reply["code"], reply["description"]) == ("admin", "No data selected for export."), reply
    status, reply = await site.call("admin_export_data", {"lists": "events"}, headers=admin)
    assert (reply["code"], reply["description"]) == ("admin", "Invalid request (lists must be an array)."), reply

    status, reply = await import_file(site, admin, xyopsexport.build(), format="cronicle")
    assert reply["code"] == "admin" and "Cronicle" in reply["description"], reply
    # Oversize upload: refused whole, nothing imported.
    monkeypatch.setattr(transfer, "IMPORT_MAX_BYTES", 1024)
    status, reply = await import_file(site, admin, b"x" * 5000)
    assert (status, reply["code"]) == (413, "admin") and "larger than" in reply["description"], reply
    bomb = gzip.compress(b"\n" * 10_000)
    monkeypatch.setattr(transfer, "IMPORT_MAX_TEXT", 1000)
    status, reply = await import_file(site, admin, bomb)
    assert reply["code"] == "admin" and "un-gzips" in reply["description"], reply

    # A token: carries the params, works once, for the user who asked for it only.
    token = (await ok(site, "get_transfer_token", {"lists": ["tags"]}, admin))["token"]
    resp = await site.client.get("/api/app/admin_export_data/v1", params={"token": token}, headers=eve)
    assert (await resp.json())["description"] == "Access denied."  # bound to the admin; and spent, as leaked
    resp = await site.client.get("/api/app/admin_export_data/v1", params={"token": token}, headers=admin)
    assert (await resp.json())["description"] == "Access denied."
    token = (await ok(site, "get_transfer_token", {"lists": ["tags"]}, admin))["token"]
    resp = await site.client.get("/api/app/admin_export_data/v1", params={"token": token}, headers=admin)
    assert resp.status == 200
    lines = [json.loads(t) for t in gzip.decompress(await resp.read()).decode().splitlines() if t.startswith("{")]
    assert {str(x.get("key")) for x in lines} == {"global/tags", "global/tags/0", "None"}
    resp = await site.client.get("/api/app/admin_export_data/v1", params={"token": token}, headers=admin)
    assert (await resp.json())["description"] == "Access denied."
    # Expiry: a token past its time is gone (Redis expires it; here given a one-second lifetime).
    await TransferTokens(db).put("shortlived", {"username": "admin", "params": {"lists": ["tags"]}}, ttl_s=1)
    deadline = asyncio.get_running_loop().time() + 30
    while await db.client.exists(db.keys.transfer_token(hashlib.sha256(b"shortlived").hexdigest())):
        assert asyncio.get_running_loop().time() < deadline, "the token never expired"
        await asyncio.sleep(0.2)
    resp = await site.client.get("/api/app/admin_export_data/v1", params={"token": "shortlived"}, headers=admin)
    assert (await resp.json())["description"] == "Access denied."


async def test_the_import_coroutine_reports_its_progress(site: Site) -> None:
    """Importer is a plain coroutine (to be wrapped in an internal job): its progress goes 0 -> 1 as rows apply."""
    who = effective("user", "admin", {"privileges": {"admin": True}}, {})
    call = Call(make_mocked_request("POST", "/api/app/admin_import_data/v1"), site.node, site.settings, "t1", {}, {},
                user=who)  # fmt: skip
    seen: list[float] = []

    async def progress(fraction: float) -> None:
        seen.append(fraction)

    report = await Importer(call, secret_key=xyopsexport.PASSPHRASE, progress=progress).run(
        gzip.decompress(xyopsexport.build()).decode())
    assert report.created >= 10 and seen == sorted(seen) and seen[-1] == 1.0 and len(seen) == report.created
