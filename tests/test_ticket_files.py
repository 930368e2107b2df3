"""Ticket files on a real in-process primary (real valkey): create_ticket with multipart files,
upload_user_ticket_files (with and without `save`, the ticket in the query or a form field), delete_ticket_file
(only the ticket's own stored files are deleted), the limits and hostile names, GET /files for a ticket's files by
category, and deleting a ticket deleting its files."""

from __future__ import annotations

import asyncio
import io
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from storage.connection import Database
from tests.authkit import Site, ok, open_site
from tests.test_uploads import leftovers, multipart

Headers = dict[str, str]
Part = tuple[str, str | None, bytes]


@pytest.fixture
async def tsite(db: Database, tmp_path: Path) -> AsyncIterator[Site]:
    """A primary with small upload limits: 1 MiB per file, 2 MiB per request, 4 files."""
    async for s in open_site(db, tmp_path / "data", login_ip_limit=0, upload_max_file_mb=1, upload_max_request_mb=2,
                             upload_max_files=4):  # fmt: skip
        yield s


@pytest.fixture
async def tadmin(tsite: Site) -> Headers:
    sid, _ = await tsite.login()
    return {"X-Session-ID": sid}


async def send(site: Site, api: str, headers: Headers, parts: list[Part], **query: str) -> tuple[int, Any]:
    body, ctype = multipart(parts)
    resp = await site.client.post(f"/api/app/{api}/v1", data=io.BytesIO(body), params=query,
                                  headers={**headers, "Content-Type": ctype})  # fmt: skip
    return resp.status, await resp.json()


async def user(site: Site, admin: Headers, name: str, **fields: Any) -> Headers:
    body = {"username": name, "email": f"{name}@example.com", "full_name": name, "password": f"pw-{name}", **fields}
    await ok(site, "admin_create", body, admin, ns="user")
    sid, _ = await site.login(name, f"pw-{name}")
    return {"X-Session-ID": sid}


async def fetch(site: Site, path: str, headers: Headers) -> tuple[int, bytes]:
    resp = await site.client.get("/" + path, headers=headers)
    return resp.status, await resp.read()


async def test_create_ticket_with_files(tsite: Site, tadmin: Headers) -> None:
    payload = json.dumps({"subject": "Disk <b>full</b>", "body": "see attached", "tags": ["important"]}).encode()
    status, data = await send(tsite, "create_ticket", tadmin, [("json", None, payload),
                                                               ("file1", "../../etc/Pass WD.txt", b"one"),
                                                               ("file2", "logs/2026/trace.log", b"two")])  # fmt: skip
    assert (status, data["code"]) == (200, 0), data
    ticket = data["ticket"]
    assert ticket["subject"] == "Disk full" and ticket["tags"] == ["important"]
    files = ticket["files"]
    assert [f["filename"] for f in files] == ["Pass WD.txt", "trace.log"]
    assert all(f["path"].startswith(f"files/tickets/{ticket['id']}/") and f["ticket"] == ticket["id"] for f in files)
    assert files[0]["path"].endswith("/pass_wd.txt") and [f["size"] for f in files] == [3, 3]
    assert await fetch(tsite, files[1]["path"], tadmin) == (200, b"two")
    stored = (await ok(tsite, "get_ticket", {"id": ticket["id"]}, tadmin))["ticket"]
    assert stored["files"] == files

    # A refused create keeps none of its files: an unknown tag, then a file over the per-file limit.
    before = await leftovers(tsite)
    bad = json.dumps({"subject": "x", "tags": ["no_such_tag"]}).encode()
    status, data = await send(tsite, "create_ticket", tadmin, [("json", None, bad), ("file1", "a.txt", b"a")])
    assert (status, data["code"]) == (500, "ticket"), data
    big = json.dumps({"subject": "x"}).encode()
    status, data = await send(tsite, "create_ticket", tadmin, [("json", None, big),
                                                               ("file1", "a.txt", b"a"),
                                                               ("file2", "b.bin", b"b" * (1024 * 1024 + 1))])
    assert (status, data["code"]) == (413, "api") and "file2" in data["description"], data
    status, data = await send(tsite, "create_ticket", tadmin, [("json", None, big), ("file1", "empty.txt", b"")])
    assert (status, data["code"]) == (400, "api") and "zero bytes" in data["description"], data
    assert await leftovers(tsite) == before
    found = await ok(tsite, "search_tickets", {"query": "*", "limit": 10}, tadmin)
    assert found["list"]["length"] == 1


async def test_upload_save_delete_and_access(tsite: Site, tadmin: Headers) -> None:
    ticket = (await ok(tsite, "create_ticket", {"subject": "Ops ticket", "category": "general"}, tadmin))["ticket"]
    tid = ticket["id"]

    # Without `save`: stored under the ticket, not listed on it.
    status, data = await send(tsite, "upload_user_ticket_files", tadmin, [("file1", "shot.png", b"png")], ticket=tid)
    assert (status, data["code"]) == (200, 0), data
    (embedded,) = data["files"]
    assert embedded["path"].startswith(f"files/tickets/{tid}/") and embedded["ticket"] == tid
    assert (await ok(tsite, "get_ticket", {"id": tid}, tadmin))["ticket"]["files"] == []

    # With `save`, the ticket named by a form field: answers the ticket's whole list.
    status, data = await send(tsite, "upload_user_ticket_files", tadmin,
                              [("ticket", None, tid.encode()), ("save", None, b"1"), ("file1", "a.txt", b"A"),
                               ("file2", "a.txt", b"B")])  # fmt: skip
    assert (status, data["code"]) == (200, 0), data
    listed = data["files"]
    assert [f["filename"] for f in listed] == ["a.txt", "a.txt"]
    assert listed[0]["path"] != listed[1]["path"]  # one cleaned name twice: two keys
    assert (await ok(tsite, "get_ticket", {"id": tid}, tadmin))["ticket"]["files"] == listed

    # Refusals: no ticket, an unknown ticket, no files, a limit; none leaves a file behind.
    before = await leftovers(tsite)
    status, data = await send(tsite, "upload_user_ticket_files", tadmin, [("file1", "x.txt", b"x")])
    assert (status, data["code"], data["description"]) == (400, "api", "Missing parameter: ticket"), data
    status, data = await send(tsite, "upload_user_ticket_files", tadmin, [("file1", "x.txt", b"x")], ticket="nope")
    assert (status, data["code"]) == (404, "notfound"), data
    status, data = await send(tsite, "upload_user_ticket_files", tadmin, [("save", None, b"1")], ticket=tid)
    assert (status, data["code"]) == (500, "file"), data
    many: list[Part] = [(f"file{i}", f"f{i}.txt", b"x") for i in range(5)]
    status, data = await send(tsite, "upload_user_ticket_files", tadmin, many, ticket=tid, save="1")
    assert (status, data["code"]) == (413, "api"), data
    assert await leftovers(tsite) == before

    # Category access: a user of another category can neither upload nor read; one of the ticket's can.
    other = await user(tsite, tadmin, "otheruser", privileges={"edit_tickets": True}, categories=["ops"])
    mine = await user(tsite, tadmin, "generaluser", privileges={"edit_tickets": True}, categories=["general"])
    status, data = await send(tsite, "upload_user_ticket_files", other, [("file1", "x.txt", b"x")], ticket=tid)
    assert (status, data["code"]) == (403, "access"), data
    assert (await fetch(tsite, listed[0]["path"], other))[0] == 403
    assert await fetch(tsite, listed[0]["path"], mine) == (200, b"A")
    assert await fetch(tsite, embedded["path"], mine) == (200, b"png")
    status, data = await tsite.call("delete_ticket_file", {"id": tid, "path": listed[0]["path"]}, headers=other)
    assert (status, data["code"]) == (403, "access"), data

    # delete_ticket_file: the entry and the stored file go; an unknown path is refused.
    files = tsite.node.stores.files
    data = await ok(tsite, "delete_ticket_file", {"id": tid, "path": listed[0]["path"]}, mine)
    assert data["files"] == listed[1:]
    assert await files.stat(listed[0]["path"]) is None and await files.stat(listed[1]["path"]) is not None
    status, data = await tsite.call("delete_ticket_file", {"id": tid, "path": listed[0]["path"]}, headers=mine)
    assert (status, data["code"]) == (500, "ticket") and "not found" in data["description"], data

    # An entry naming a file stored elsewhere (put there by a store or a migration) is dropped, the file kept.
    shared = "files/bucket/b1/r/shared.txt"
    await files.put(shared, b"shared")

    def add(rec: dict[str, Any]) -> dict[str, Any]:
        return {**rec, "files": [*rec["files"], {"id": "fx", "path": shared, "filename": "shared.txt"}]}

    await tsite.node.stores.tickets.update(tsite.node.fence(), tid, add)
    data = await ok(tsite, "delete_ticket_file", {"id": tid, "path": shared}, tadmin)
    assert [f["path"] for f in data["files"]] == [listed[1]["path"]]
    assert await files.stat(shared) is not None

    # Deleting the ticket deletes every file under it (listed or embedded); others stay.
    await ok(tsite, "delete_ticket", {"id": tid}, tadmin)

    deadline = time.monotonic() + 20
    while any([await files.stat(p) is not None for p in (listed[1]["path"], embedded["path"])]):
        assert time.monotonic() < deadline, "the ticket's files were not deleted"
        await asyncio.sleep(0.05)
    assert await files.stat(shared) is not None
    assert (await fetch(tsite, embedded["path"], mine))[0] == 403  # no ticket: nobody but admins
