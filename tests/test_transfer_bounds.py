"""admin_import_data / admin_export_data at their edges: odd line breaks, cut or stacked gzip, incomplete lists,
users' locks and sessions, records that cannot be stored, oversized forms, and the audit of exported secrets."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from api import importfile, xyformat
from api.call import Call
from api.errors import ApiError
from api.handlers import transfer
from api.importer import Importer
from api.importfile import Report, list_incomplete, parse_file
from api.principal import effective
from podium.client import AsyncClient
from tests.authkit import Site, ok

pytestmark = pytest.mark.timeout(120)


def lines(*objs: dict[str, Any]) -> str:
    return xyformat.header() + "".join(xyformat.line(o) for o in objs)


async def send(site: Site, h: dict[str, str], text: str | bytes, **fields: str) -> tuple[int, dict[str, Any]]:
    form = aiohttp.FormData()
    for k, v in fields.items():
        form.add_field(k, v)
    data = text.encode() if isinstance(text, str) else text
    form.add_field("file1", data, filename="export.txt", content_type="text/plain")
    resp = await site.client.post("/api/app/admin_import_data/v1", data=form, headers=h)
    reply: dict[str, Any] = await resp.json()
    return resp.status, reply


# -- reading -------------------------------------------------------------------------------------------------


def test_lines_end_at_newline_only() -> None:
    items = [{"id": "a", "title": "x\u2028y"}, {"id": "b", "title": "p\x1cq\x85r"}]
    text = lines({"key": "global/tags/0", "value": {"type": "list_page", "items": items}})
    text = text.replace("\n", "\r\n")
    bad: list[tuple[int, str]] = []
    rows = list(xyformat.rows(text, report_error=lambda n, m: bad.append((n, m))))
    assert not bad and len(rows) == 1
    assert [i["title"] for i in rows[0].obj["value"]["items"]] == ["x\u2028y", "p\x1cq\x85r"]


def test_non_finite_numbers_deep_nesting_and_long_lines_are_line_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    bad: list[tuple[int, str]] = []
    deep = "[" * 100_000 + "]" * 100_000
    text = '{"a": Infinity}\n{"a": NaN}\n{"a": 1e400}\n{"k": ' + deep + '}\n{"ok": 1}\n'
    rows = list(xyformat.rows(text, report_error=lambda n, m: bad.append((n, m))))
    assert [r.obj for r in rows] == [{"ok": 1}]
    assert [n for n, _ in bad] == [1, 2, 3, 4], bad
    assert "nested too deeply" in bad[3][1]
    report = Report()  # a line that reads as JSON but not as a row: a line error too
    parse_file('{"cmd": [1], "args": []}\n{"index": "jobs", "id": ' + "9" * 5000 + ', "record": {}}\n', report)
    assert [e[:6] for e in report.errors] == ["line 1", "line 2"] and report.records == 0, report
    monkeypatch.setattr(importfile, "MAX_ROWS", 3)  # the number of rows read is capped
    report = Report()
    parse_file("".join(f'{{"cmd": "put", "args": [{n}]}}\n' for n in range(10)), report)
    assert report.lines == 3 and len(report.errors) == 1 and report.errors[0].startswith("line 4: more than 3 data")
    monkeypatch.setattr(xyformat, "MAX_LINE", 200)
    bad.clear()
    rows = list(xyformat.rows('{"ok": 2}\n{' + " " * 300 + "}\n", report_error=lambda n, m: bad.append((n, m))))
    assert [r.obj for r in rows] == [{"ok": 2}] and [n for n, _ in bad] == [2] and "longer than" in bad[0][1]


def test_gzip_must_be_whole_and_may_have_several_members() -> None:
    one, two = gzip.compress(b"first\n"), gzip.compress(b"second\n")
    assert transfer._gunzip(one + two) == b"first\nsecond\n"
    assert transfer._gunzip(b"plain text") == b"plain text"
    for cut in (one[:-4], one + two[:-3], one[:12]):
        with pytest.raises(ApiError) as exc:
            transfer._gunzip(cut)
        assert exc.value.code == "api" and "file1" in exc.value.description


def test_a_list_with_missing_pages_is_incomplete() -> None:
    items = [{"id": f"t{n}", "title": "T"} for n in range(120)]
    whole = xyformat.header() + "".join(xyformat.list_lines("global/tags", items))
    assert list_incomplete(parse_file(whole, Report()), "tags") is None
    missing = "\n".join(t for t in whole.split("\n") if '"global/tags/1"' not in t)
    assert "pages" in str(list_incomplete(parse_file(missing, Report()), "tags"))
    broken = whole.replace('{"key":"global/tags/2"', '{"key":"global/tags/2",,')
    assert list_incomplete(parse_file(broken, Report()), "tags") is not None
    no_header = "\n".join(t for t in whole.split("\n") if '"type":"list",' not in t)
    assert "header" in str(list_incomplete(parse_file(no_header, Report()), "tags"))


# -- importing -----------------------------------------------------------------------------------------------


async def test_an_incomplete_list_replaces_nothing(site: Site, admin: dict[str, str]) -> None:
    await ok(site, "create_tag", {"id": "keepme", "title": "Keep"}, admin)
    tags = [{"id": "new1", "title": "x\u2028y"}, {"id": "new2", "title": "B"}]
    text = xyformat.header() + "".join(xyformat.list_lines("global/tags", tags, page_size=1))
    cut = "\n".join(t for t in text.split("\n") if '"global/tags/1"' not in t)
    status, reply = await send(site, admin, cut)
    assert status == 200 and any("not replaced" in e for e in reply["report"]["errors"]), reply
    ids = {r["id"] for r in (await ok(site, "get_tags", {}, admin))["rows"]}
    assert {"keepme", "new1"} <= ids
    status, reply = await send(site, admin, text)  # whole, with a title holding U+2028: replaced as the file says
    assert status == 200 and not reply["report"]["errors"], reply
    rows = (await ok(site, "get_tags", {}, admin))["rows"]
    assert {r["id"] for r in rows} == {"new1", "new2"}
    assert [r["title"] for r in rows if r["id"] == "new1"] == ["x\u2028y"]


async def test_users_carry_their_lock_and_lose_their_sessions(site: Site, admin: dict[str, str]) -> None:
    await ok(site, "admin_create", {"username": "bob", "password": "bobs-password", "full_name": "Bob",
                                    "email": "bob@example.com", "categories": ["general"]},
             admin, ns="user")  # fmt: skip
    bob_sid, _ = await site.login("bob", "bobs-password")
    bob = {"X-Session-ID": bob_sid}
    await ok(site, "get_tags", {}, bob)
    stored = await site.node.stores.users.get("bob")
    assert stored is not None
    value = {**stored, "locked": True, "privileges": {"admin": True}}
    cost15 = {**stored, "username": "carol", "password": "$2b$15$" + "a" * 53}
    status, reply = await send(site, admin, lines({"key": "users/bob", "value": value},
                                                  {"key": "users/carol", "value": cost15}))  # fmt: skip
    assert status == 200, reply
    assert [e for e in reply["report"]["errors"] if "bcrypt cost" in e and "carol" in e], reply
    user = (await ok(site, "admin_get_user", {"username": "bob"}, admin, ns="user"))["user"]
    assert user["locked"] is True and user["categories"] == []  # an admin holds no category limits
    resp = await site.client.post("/api/app/get_tags/v1", json={}, headers=bob)
    assert (await resp.json())["code"] == "session"
    await ok(site, "get_tags", {}, admin)  # the importing admin's own session stays


async def test_a_record_that_cannot_be_stored_is_one_error_line(site: Site, admin: dict[str, str]) -> None:
    text = lines(
        {"index": "jobs", "id": "jbig", "record": {"id": "jbig", "completed": 5, "event": "x", "n": 2**70}},
        {"index": "jobs", "id": "jgood", "record": {"id": "jgood", "completed": 5, "event": "x"}},
    ) + '{"index": "jobs", "id": "jinf", "record": {"id": "jinf", "completed": 5, "created": Infinity}}\n'
    status, reply = await send(site, admin, text)
    assert status == 200, reply
    report = reply["report"]
    assert report["created"] == 1 and len(report["errors"]) == 2, report
    assert any("jbig" in e for e in report["errors"]) and any("Infinity" in e for e in report["errors"])


async def test_the_form_is_bounded(site: Site, admin: dict[str, str]) -> None:
    form = aiohttp.FormData()
    for n in range(40):
        form.add_field(f"f{n}", "x")
    form.add_field("file1", b"{}\n", filename="a.txt")
    resp = await site.client.post("/api/app/admin_import_data/v1", data=form, headers=admin)
    reply = await resp.json()
    assert resp.status == 413 and "parts" in reply["description"], reply


async def test_exporting_secret_values_is_audited_first(site: Site, admin: dict[str, str]) -> None:
    await ok(site, "create_secret", {"id": "sx", "title": "Audited", "fields": [{"name": "A", "value": "b"}]}, admin)
    resp = await site.client.post("/api/app/admin_export_data/v1", headers=admin,
                                  json={"lists": ["secrets"], "secret_key": "pass-1"})  # fmt: skip
    assert resp.status == 200
    text = gzip.decompress(await resp.read()).decode()
    assert '"secrets/sx"' in text
    found = await ok(site, "search_activity", {"query": "action:secret_access"}, admin)
    rows = [json.dumps(r) for r in found["rows"]]
    assert any("Audited" in r for r in rows), found


# -- the client's download -----------------------------------------------------------------------------------


async def test_a_download_cut_short_leaves_no_file(tmp_path: Path, site: Site, admin: dict[str, str]) -> None:
    async def cut(request: web.Request) -> web.StreamResponse:  # a peer whose connection drops mid-stream
        resp = web.StreamResponse(headers={"Content-Type": "application/gzip"})
        await resp.prepare(request)
        await resp.write(gzip.compress(b"x" * 1000)[:20])
        assert request.transport is not None
        request.transport.close()
        return resp

    app = web.Application()
    app.router.add_post("/api/app/admin_export_data/v1", cut)
    runner = web.AppRunner(app)
    await runner.setup()
    tcp = web.TCPSite(runner, "127.0.0.1", 0)
    await tcp.start()
    port = tcp._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    dest = tmp_path / "export.txt.gz"
    try:
        async with AsyncClient(f"http://127.0.0.1:{port}", api_key="k") as client:
            with pytest.raises(aiohttp.ClientError):
                await client.download("admin_export_data", {"lists": "all"}, dest)
    finally:
        await runner.cleanup()
    assert not dest.exists() and not dest.with_name(dest.name + ".part").exists()
    # A whole one (from a real node) lands, readable by its owner only.
    key, _ = await site.admin_key(admin["X-Session-ID"], privileges={"admin": True})
    base = str(site.client.make_url("")).rstrip("/")
    async with AsyncClient(base, api_key=key) as client:
        written = await client.download("admin_export_data", {"lists": ["tags"]}, dest)
    assert written == dest.stat().st_size > 0 and dest.stat().st_mode & 0o777 == 0o600
    assert gzip.decompress(dest.read_bytes()).startswith(b"# xyOps Data Export")
    assert not dest.with_name(dest.name + ".part").exists()


async def test_a_lost_lease_stops_the_run_with_a_partial_report(site: Site) -> None:
    who = effective("user", "admin", {"privileges": {"admin": True}}, {})
    call = Call(make_mocked_request("POST", "/api/app/admin_import_data/v1"), site.node, site.settings, "t1", {}, {},
                user=who)  # fmt: skip
    tags = [{"id": f"lost{n}", "title": "T"} for n in range(5)]
    text = xyformat.header() + "".join(xyformat.list_lines("global/tags", tags))

    async def progress(fraction: float) -> None:
        if site.node.is_primary:  # the node steps down after the first object
            await site.node.stop()

    report = await Importer(call, progress=progress).run(text)
    assert report.created == 1 and report.errors and "no longer the primary" in report.errors[-1], report
