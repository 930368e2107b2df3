"""What an export leaves out and refuses: admin-only data for a bulk_export user, a widened index query, lines a
caller's names could inject; and the transfer token kept under its digest."""

from __future__ import annotations

import gzip
import hashlib
import json
from typing import Any

from storage.transfer import import_lock
from tests import xyopsexport
from tests.authkit import Site, ok
from tests.test_transfer import import_file


async def export_lines(site: Site, headers: dict[str, str], **params: Any) -> list[str]:
    resp = await site.client.post("/api/app/admin_export_data/v1", json=params, headers=headers)
    body = await resp.read()
    assert resp.status == 200, body[:300]
    return gzip.decompress(body).decode().split("\n")


def keys(lines: list[str]) -> set[str]:
    return {str(json.loads(t).get("key")) for t in lines if t.startswith("{")}


async def test_a_bulk_export_user_gets_no_admin_only_data(site: Site, admin: dict[str, str]) -> None:
    await ok(site, "admin_create", {"username": "eve", "password": "eves-password", "full_name": "Eve",
                                    "email": "eve@example.com", "privileges": {"bulk_export": True}},
             admin, ns="user")  # fmt: skip
    await ok(site, "create_api_key", {"title": "k"}, admin)
    sid, _ = await site.login("eve", "eves-password")
    eve = {"X-Session-ID": sid}
    theirs, ours = await export_lines(site, eve, lists="all"), await export_lines(site, admin, lists="all")
    assert "users/admin" in keys(ours) and "global/api_keys" in keys(ours)
    assert "users/admin" not in keys(theirs) and "global/users" not in keys(theirs)
    assert not {k for k in keys(theirs) if k.startswith("global/api_keys")}
    assert "global/events" in keys(theirs)  # the rest is there
    hidden = [t for t in theirs if t.startswith("# Not exported by Podium:")]
    assert any("api_keys (admin only)" in t for t in hidden) and any("users (admin only)" in t for t in hidden)
    assert not any('"password"' in t for t in theirs)


async def test_refusals_and_printable_comments(site: Site, admin: dict[str, str]) -> None:
    status, reply = await site.call("admin_export_data", {"items": [{"type": "index", "index": "jobs",
                                                                     "query": "event:x"}]}, headers=admin)  # fmt: skip
    assert (status, reply["code"]) == (500, "admin") and "items[].query" in reply["description"], reply
    injected = 'x\n{"key":"global/events","value":{}}'
    lines = await export_lines(site, admin, lists=["tags", injected])
    # the caller's text stayed inside one comment line ("None": the list's listDelete command has no key)
    assert keys(lines) == {"global/tags", "global/tags/0", "None"}
    assert [t for t in lines if t.startswith("# Not exported by Podium: lists:x?")]


async def test_a_transfer_token_is_kept_under_its_digest(site: Site, admin: dict[str, str]) -> None:
    token = (await ok(site, "get_transfer_token", {"lists": ["tags"]}, admin))["token"]
    db = site.node.stores.db
    assert await db.client.exists(db.keys.transfer_token(hashlib.sha256(token.encode()).hexdigest())) == 1
    assert not [k async for k in db.client.scan_iter(match=f"*{token}*")]


async def test_one_import_at_a_time(site: Site, admin: dict[str, str]) -> None:
    data = xyopsexport.build()
    async with import_lock(site.node.stores.db) as held:  # another import is writing
        assert held
        status, reply = await import_file(site, admin, data)
        assert reply["code"] == "admin" and "Another import" in reply["description"], reply
        status, reply = await import_file(site, admin, data, dry_run="1")  # a dry run writes nothing: allowed
        assert reply["code"] == 0 and reply["report"]["dry_run"], reply
        async with import_lock(site.node.stores.db) as second:
            assert not second
    status, reply = await import_file(site, admin, data)
    assert (status, reply["code"]) == (200, 0) and reply["report"]["created"] > 0, reply
