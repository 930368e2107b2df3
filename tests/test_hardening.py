"""Regression tests for the hardening findings: bodies before auth, hostile JSON, declared parameters,
own-account fields, logout CSRF, page caps and the OpenAPI document."""

from __future__ import annotations

import asyncio
import gzip
import io
import json
from typing import Any

import pytest

from api.registry import HANDLERS
from storage import codec
from storage.connection import Database
from storage.errors import PageTooLarge
from storage.pages import fetch_page
from tests.authkit import Site, ok


async def post_raw(site: Site, name: str, body: bytes | str, headers: dict[str, str] | None = None,
                   ctype: str = "application/json") -> tuple[int, dict[str, Any]]:  # fmt: skip
    data = io.BytesIO(body.encode() if isinstance(body, str) else body)
    resp = await site.client.post(f"/api/app/{name}/v1", data=data, headers={"Content-Type": ctype, **(headers or {})})
    return resp.status, await resp.json()


# -- bodies are bounded until the caller is known ---------------------------------------------------------


async def test_an_anonymous_body_is_capped_small(site: Site) -> None:
    big = json.dumps({"x": "a" * (200 * 1024)})
    status, data = await post_raw(site, "ping", big)
    assert status == 413 and data["code"] == "api", data
    assert "without credentials in its headers" in data["description"]
    status, data = await post_raw(site, "ping", json.dumps({"x": "small"}))
    assert (status, data["code"]) == (200, 0)


async def test_a_known_caller_may_send_the_full_body(site: Site, admin: dict[str, str]) -> None:
    big = json.dumps({"x": "a" * (200 * 1024)})
    status, data = await post_raw(site, "get_global_state", big, headers=admin)
    assert (status, data["code"]) == (200, 0), data
    plain, _ = await site.admin_key(admin["X-Session-ID"])
    status, data = await post_raw(site, "get_global_state", big, headers={"X-API-Key": plain})
    assert (status, data["code"]) == (200, 0), data


async def test_bad_header_credentials_are_refused_before_the_body(site: Site) -> None:
    big = json.dumps({"x": "a" * (200 * 1024)})
    status, data = await post_raw(site, "get_global_state", big, headers={"X-API-Key": "nope"})
    assert (status, data["code"]) == (401, "session"), data


async def test_credentials_in_a_small_body_still_work(site: Site, admin: dict[str, str]) -> None:
    plain, _ = await site.admin_key(admin["X-Session-ID"])
    status, data = await post_raw(site, "get_global_state", json.dumps({"api_key": plain}))
    assert (status, data["code"]) == (200, 0), data
    status, data = await post_raw(site, "get_global_state", json.dumps({"session_id": admin["X-Session-ID"]}))
    assert (status, data["code"]) == (200, 0), data


async def test_a_declared_huge_body_is_refused_before_it_is_sent(site: Site) -> None:
    """Content-Length of 32 MiB and no body at all: the reply must come without waiting for the body."""
    host, port = site.client.server.host, site.client.server.port
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(b"POST /api/app/ping/v1 HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Content-Length: 33554432\r\n\r\n{")  # fmt: skip
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    assert head.startswith(b"HTTP/1.1 413"), head
    writer.close()


async def test_a_chunked_anonymous_body_is_cut_off(site: Site) -> None:
    async def chunks() -> Any:
        yield b'{"x":"'
        for _ in range(40):
            yield b"a" * 4096
        yield b'"}'

    resp = await site.client.post("/api/app/ping/v1", data=chunks(), headers={"Content-Type": "application/json"})
    assert resp.status == 413, await resp.text()


# -- hostile JSON and single-request crashes --------------------------------------------------------------


@pytest.mark.parametrize(
    "body, fragment",
    [
        ('{"a":' * 100_000 + "1" + "}" * 100_000, "Malformed JSON"),
        ('{"a":' + "9" * 5000 + "}", "Malformed JSON"),
        ('{"a":NaN}', "Malformed JSON"),
        ('{"a":"\\ud800"}', "'a'"),
        ('{"a":"\xff"}', "Malformed JSON"),
        ("[1,2]", "must be a JSON object"),
    ],
    ids=["deep", "long-int", "nan", "surrogate", "bad-utf8", "array"],
)
async def test_hostile_json_bodies_are_api_errors(site: Site, admin: dict[str, str], body: str, fragment: str) -> None:
    data_bytes = body.encode("utf-8", "surrogatepass") if "\xff" not in body else body.encode("latin-1")
    status, data = await post_raw(site, "get_global_state", data_bytes, headers=admin)
    assert (status, data["code"]) == (400, "api"), data
    assert fragment in data["description"]


async def test_a_multipart_part_without_a_name_is_an_api_error(site: Site, admin: dict[str, str]) -> None:
    status, data = await post_raw(site, "get_global_state", b"--b\r\n\r\nx\r\n--b--\r\n", headers=admin,
                                  ctype="multipart/form-data; boundary=b")  # fmt: skip
    assert (status, data["code"]) == (400, "api"), data


CRASHERS: list[tuple[str, dict[str, Any], str]] = [
    ("create_category", {"title": "\ud800"}, "title"),
    ("update_global_state", {"x": {"y": ["ok", "\ud800"]}}, "x.y[1]"),
    ("get_job", {"id": "\ud800"}, "id"),
    ("search_activity", {"query": "\ud800"}, "query"),
    ("create_category", {"title": "x", "sort_order": 1e308}, "sort_order"),
    ("create_api_key", {"title": "x", "expires": 1e308}, "expires"),
    ("create_api_key", {"title": "x", "max_per_sec": 1e300}, "max_per_sec"),
    ("search_activity", {"query": "*", "limit": 18446744073709551615}, "limit"),
    ("search_activity", {"query": "*", "limit": 1_000_000_000_000}, "limit"),
    ("search_jobs", {"query": "*", "limit": 1_000_000}, "limit"),
    ("get_jobs", {"ids": ["j"] * 5000}, "ids"),
]


@pytest.mark.parametrize("api, body, field", CRASHERS, ids=[f"{a}-{f}" for a, _, f in CRASHERS])
async def test_former_crashes_are_api_errors(site: Site, admin: dict[str, str], api: str, body: dict[str, Any],
                                            field: str) -> None:  # fmt: skip
    # json.dumps writes a lone surrogate as the escape "\ud800", as a hostile client would.
    status, data = await post_raw(site, api, json.dumps(body), headers=admin)
    assert (status, data["code"]) == (400, "api"), data
    assert field in data["description"], data
    if api == "create_category":
        _, listed = await site.call("get_categories", headers=admin)
        assert all(c["title"] == "General" or c["title"] != "x" for c in listed["rows"])  # nothing half-written


async def test_a_huge_offset_is_refused(site: Site, admin: dict[str, str]) -> None:
    status, data = await site.call("admin_get_users", {"offset": 9223372036854775807, "limit": 10}, ns="user",
                                   headers=admin)  # fmt: skip
    assert (status, data["code"]) == (400, "api") and "offset" in data["description"], data


async def test_query_strings_with_undecodable_bytes_are_api_errors(site: Site, admin: dict[str, str]) -> None:
    resp = await site.client.get("/api/app/get_job/v1?id=%ED%A0%80", headers=admin)
    data = await resp.json()
    assert resp.status in (400, 404) and data["code"] in ("api", "notfound"), data


async def test_page_sizes_are_capped_but_a_full_page_works(site: Site, admin: dict[str, str]) -> None:
    data = await ok(site, "search_activity", {"query": "*", "limit": 1000}, admin)
    assert data["list"]["length"] >= len(data["rows"]) > 0
    status, data = await site.call("search_jobs", {"query": "*", "limit": 500, "verbose": True}, headers=admin)
    assert (status, data["code"]) == (400, "api") and "verbose" in data["description"]


async def test_field_sizes_are_bounded(site: Site, admin: dict[str, str]) -> None:
    status, data = await site.call("create_category", {"title": "Big", "notes": "x" * 100_000}, headers=admin)
    assert (status, data["code"]) == (400, "api") and "notes" in data["description"], data
    status, data = await site.call("create_category", {"title": "t" * 300}, headers=admin)
    assert (status, data["code"]) == (400, "api") and "title" in data["description"], data
    _, listed = await site.call("get_categories", headers=admin)
    assert not any(c["title"] == "Big" or len(c["title"]) == 300 for c in listed["rows"])
    data = await ok(site, "create_category", {"title": "Fine", "notes": "x" * 8000}, admin)
    assert len(data["category"]["notes"]) == 8000


# -- own account: typed whitelist, CSRF on logout ---------------------------------------------------------


async def test_user_settings_takes_only_the_profile_fields(site: Site, admin: dict[str, str]) -> None:
    async def settings(body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        return await post_raw(site, "user_settings", json.dumps(body), headers=admin)

    cases: list[tuple[dict[str, Any], str]] = [({"revision": "abc"}, "revision"), ({"blob": "x" * 500_000}, "blob"),
                        ({"email": {"$ne": 1}}, "email"), ({"full_name": ["x", "x"]}, "full_name"),
                        ({"privileges": {"admin": True}}, "privileges"), ({"volume": 99}, "volume"),
                        ({"searches": [{"name": "x" * 70_000}]}, "searches")]  # fmt: skip
    for body, field in cases:
        status, data = await settings(body)
        assert (status, data["code"]) == (400, "api"), (body.keys(), data)
        assert field in data["description"], data
    data = await ok(site, "user_settings", {"language": "de", "volume": 3, "privacy_mode": True,
                                            "favorites": {"events": ["e1"]}, "username": "someone"}, admin)  # fmt: skip
    user = data["user"]
    assert (user["language"], user["volume"], user["privacy_mode"], user["favorites"]) == ("de", 3, True,
                                                                                          {"events": ["e1"]})
    assert user["username"] == "admin" and "blob" not in user
    _, again = await site.call("resume_session", ns="user", headers=admin)
    assert again["user"]["language"] == "de"


async def test_user_update_refuses_unknown_fields(site: Site, admin: dict[str, str]) -> None:
    body = {"username": "admin", "old_password": "admin", "privileges": {"x": True}}
    status, data = await site.call("update", body, ns="user", headers=admin)
    assert (status, data["code"]) == (400, "api") and "privileges" in data["description"], data
    data = await ok(site, "update", {"username": "admin", "old_password": "admin", "full_name": "Ada"}, admin,
                    ns="user")  # fmt: skip
    assert data["user"]["full_name"] == "Ada"


async def test_logout_by_a_cross_site_get_needs_the_csrf_token(site: Site) -> None:
    sid, token = await site.login()
    cookie = {"Cookie": f"session_id={sid}"}
    resp = await site.client.get("/api/user/logout/v1", headers=cookie)
    assert resp.status == 401, await resp.text()
    status, data = await site.call("get_global_state", headers={"X-Session-ID": sid})
    assert (status, data["code"]) == (200, 0), "the session survived the forged logout"
    resp = await site.client.post("/api/user/logout/v1", json={}, headers={**cookie, "X-CSRF-Token": token})
    assert resp.status == 200
    status, data = await site.call("get_global_state", headers={"X-Session-ID": sid})
    assert (status, data["code"]) == (401, "session")


async def test_login_with_a_stale_cookie_still_works(site: Site) -> None:
    sid, _ = await site.login()
    resp = await site.client.post("/api/user/login/v1", json={"username": "admin", "password": "admin"},
                                  headers={"Cookie": f"session_id={sid}"})  # fmt: skip
    assert resp.status == 200, await resp.text()


# -- the declarations themselves --------------------------------------------------------------------------


def test_every_handler_declares_its_parameters() -> None:
    missing = [f"{h.ns}/{h.name}" for h in HANDLERS if h.args is None]
    assert not missing, missing
    for handler in HANDLERS:
        assert handler.args is not None
        for param in handler.args.params:
            if param.kind == "text":
                assert param.max_len is not None or param.choices, (handler.name, param.name)
            if param.kind == "int":
                assert param.ge is not None and param.le is not None, (handler.name, param.name)
            if param.name == "limit":
                assert param.le is not None and param.le <= 1000, (handler.name, param.name)


async def test_declared_types_are_converted_before_the_handler(site: Site, admin: dict[str, str]) -> None:
    resp = await site.client.get("/api/app/search_activity/v1", params={"query": "*", "limit": "2", "offset": "0"},
                                 headers=admin)  # fmt: skip
    data = await resp.json()
    assert resp.status == 200 and len(data["rows"]) <= 2, data
    resp = await site.client.get("/api/app/search_activity/v1", params={"limit": "two"}, headers=admin)
    data = await resp.json()
    assert (resp.status, data["code"]) == (400, "api") and "'limit'" in data["description"], data


async def test_openapi_document_covers_the_registry(site: Site) -> None:
    resp = await site.client.get("/api/openapi.json")
    assert resp.status == 200
    doc = await resp.json()
    assert doc["openapi"].startswith("3.1")
    paths = doc["paths"]
    for handler in HANDLERS:
        path = paths[f"/api/{handler.ns}/{handler.name}/v1"]
        assert path["post"]["x-privilege"] == handler.privilege
        assert path["post"]["x-write"] is handler.write
    search = paths["/api/app/search_jobs/v1"]
    limit = next(p for p in search["get"]["parameters"] if p["name"] == "limit")
    assert limit["schema"]["maximum"] == 1000
    body = search["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body["properties"]["query"]["maxLength"] == 4096
    assert "get" not in paths["/api/app/create_event/v1"]  # a body-only write is POST only
    assert paths["/api/app/create_event/v1"]["post"]["security"]
    for handler in HANDLERS:  # a write any node answers is not called primary-only
        post = paths[f"/api/{handler.ns}/{handler.name}/v1"]["post"]
        assert post["x-anywhere"] is handler.anywhere
        assert ("primary only" in post["description"]) is (handler.write and not handler.anywhere), handler.name
    upload = paths["/api/app/upload_job_file/v1"]["post"]["requestBody"]
    assert list(upload["content"]) == ["multipart/form-data"]
    form = upload["content"]["multipart/form-data"]["schema"]
    assert set(form["properties"]) == {"file1", "id", "auth", "server"} and set(form["required"]) == {
        "file1", "id", "auth"}  # fmt: skip
    assert form["properties"]["file1"]["format"] == "binary" and form["properties"]["auth"]["maxLength"] == 128


async def test_json_bodies_are_bounded_for_known_callers_too(site: Site, admin: dict[str, str]) -> None:
    """A known caller may send up to --max-json-bytes of JSON, and no more objects and values than any real
    request holds: building millions of tiny lists would block the loop for seconds."""
    many = b'{"x":[' + b"[]," * 150_000 + b"[]]}"
    status, data = await post_raw(site, "get_global_state", many, headers=admin)
    assert (status, data["code"]) == (400, "api") and "too many JSON values" in data["description"], data
    huge = json.dumps({"x": "a" * (site.settings.max_json_bytes + 10)})
    status, data = await post_raw(site, "get_global_state", huge, headers=admin)
    assert (status, data["code"]) == (413, "api"), data
    fine = json.dumps({"x": [[1, 2]] * 20_000})
    status, data = await post_raw(site, "update_global_state", fine, headers=admin)
    assert (status, data["code"]) == (200, 0), data


# -- found by review: compressed bodies, undeclared keys, page bytes, schema sizes, login bursts ---------


async def test_a_compressed_body_is_refused_unread(site: Site, admin: dict[str, str]) -> None:
    bomb = gzip.compress(b"{" + b" " * (64 * 1024 * 1024) + b"}", compresslevel=9)
    for headers in ({}, admin):
        status, data = await post_raw(site, "get_global_state", bomb, headers={**headers, "Content-Encoding": "gzip"})
        assert (status, data["code"]) == (415, "api"), data
    assert site.node.is_primary


async def test_undeclared_keys_are_bounded_whatever_is_declared(site: Site, admin: dict[str, str]) -> None:
    status, data = await site.call("get_event", {"id": "x", "k" * 200: 1}, headers=admin)
    assert (status, data["code"]) == (400, "api") and "too long" in data["description"], data
    status, data = await site.call("run_event", {"id": "x", "icon": _deep(300)}, headers=admin)
    assert (status, data["code"]) == (400, "api") and "'icon'" in data["description"], data
    many = {f"k{i}": "x" * 60_000 for i in range(5)}
    status, data = await site.call("run_event", {"id": "x", **many}, headers=admin)
    assert (status, data["code"]) == (400, "api") and "in all" in data["description"], data


def _deep(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


async def test_booleans_are_not_numbers(site: Site, admin: dict[str, str]) -> None:
    status, data = await site.call("search_activity", {"limit": True}, headers=admin)
    assert (status, data["code"]) == (400, "api") and "'limit'" in data["description"], data


async def test_parameter_schemas_are_bounded_in_entries_and_patterns(site: Site, admin: dict[str, str]) -> None:
    base = {"title": "P", "type": "event", "command": "true"}
    fields = [{"id": f"p{i}", "type": "text", "title": "T"} for i in range(101)]
    status, data = await site.call("create_plugin", {**base, "params": fields}, headers=admin)
    assert (status, data["code"]) == (400, "api") and "at most 100" in data["description"], data
    patterned = [{"id": f"p{i}", "type": "text", "title": "T", "regex": f"^a{{{i}}}$"} for i in range(51)]
    status, data = await site.call("create_plugin", {**base, "params": patterned}, headers=admin)
    assert (status, data["code"]) == (400, "api") and "with a regex" in data["description"], data
    await ok(site, "create_plugin", {**base, "params": patterned[:50]}, admin)


async def test_a_page_of_records_stops_at_its_byte_budget(db: Database) -> None:
    keys = [db.keys.job(f"pg{i}") for i in range(10)]
    for i, key in enumerate(keys):
        await db.client.set(key, codec.pack({"i": i, "pad": "x" * 1000}))
    rows = await fetch_page(db, [*keys[:3], db.keys.job("missing"), *keys[3:5]], budget=5500)
    assert [r["i"] if r else None for r in rows] == [0, 1, 2, None, 3, 4]
    with pytest.raises(PageTooLarge) as refused:  # refused whole: xyOps clients page by offset += limit
        await fetch_page(db, keys, budget=3500)
    assert refused.value.fits == 3
    one = await fetch_page(db, keys[:1], budget=10)
    assert [r["i"] if r else None for r in one] == [0]  # one record alone is always served


async def test_a_burst_of_parallel_logins_runs_no_more_checks_than_the_limit(site: Site) -> None:
    async def attempt() -> str:
        resp = await site.client.post("/api/user/login/v1", json={"username": "admin", "password": "wrong"})
        return str((await resp.json())["description"])

    replies = await asyncio.gather(*(attempt() for _ in range(30)))
    checked = [r for r in replies if r == "Username or password is incorrect."]
    assert 1 <= len(checked) <= 5, replies  # the default: 5 failures of one name from one address
