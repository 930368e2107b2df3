"""Web hook definitions on a real node: CRUD, every validation error, privileges (sending: test_webhook_send)."""

from __future__ import annotations

from typing import Any

from tests.authkit import Site

Json = dict[str, Any]


# -- definitions --------------------------------------------------------------------------------------


async def test_crud_round_trip(site: Site, admin: dict[str, str]) -> None:
    body = {"title": "Chat", "url": "https://chat.example.com/hook", "method": "post", "body": '{"text": "{{text}}"}',
            "headers": [{"name": "Content-Type", "value": "application/json"}]}  # fmt: skip
    status, data = await site.call("create_web_hook", body, headers=admin)
    assert status == 200 and data["code"] == 0, data
    hook = data["web_hook"]
    assert hook["id"].startswith("w") and len(hook["id"]) == 16
    assert hook["method"] == "POST" and hook["enabled"] is True and hook["revision"] == 1
    assert (hook["timeout"], hook["retries"], hook["follow"], hook["ssl_cert_bypass"], hook["max_per_day"]) == (
        30, 0, False, False, 0)  # fmt: skip
    assert hook["username"] == "admin" and hook["created"] == hook["modified"]
    _, got = await site.call("get_web_hook", {"id": hook["id"]}, headers=admin)
    assert got["web_hook"] == hook
    _, listed = await site.call("get_web_hooks", headers=admin)
    assert hook["id"] in {h["id"] for h in listed["rows"]} and listed["list"]["length"] == len(listed["rows"])

    changes = {"id": hook["id"], "title": "Chat 2", "headers": [{"name": "X-Token", "value": "{{ secrets.T }}"}],
               "timeout": "5", "retries": 2, "follow": True}  # fmt: skip
    assert (await site.call("update_web_hook", changes, headers=admin))[1] == {"code": 0}
    _, got = await site.call("get_web_hook", {"id": hook["id"]}, headers=admin)
    updated = got["web_hook"]
    assert updated["revision"] == 2 and updated["title"] == "Chat 2" and updated["timeout"] == 5
    assert updated["headers"] == [{"name": "X-Token", "value": "{{ secrets.T }}"}] and updated["follow"] is True
    assert updated["body"] == hook["body"] and updated["created"] == hook["created"]

    assert (await site.call("delete_web_hook", {"id": hook["id"]}, headers=admin))[1] == {"code": 0}
    status, missing = await site.call("get_web_hook", {"id": hook["id"]}, headers=admin)
    assert (status, missing["code"]) == (404, "notfound")
    status, again = await site.call("delete_web_hook", {"id": hook["id"]}, headers=admin)
    assert status == 500 and again["code"] == "web_hook"


async def test_client_ids_and_literal_braces(site: Site, admin: dict[str, str]) -> None:
    body = {"id": "my_hook", "title": "JSON", "url": "{{ secrets.URL }}/x", "method": "GET",
            "body": '{"a": {"b": {"c": 1}}}'}  # fmt: skip
    status, data = await site.call("create_web_hook", body, headers=admin)
    assert status == 200 and data["web_hook"]["id"] == "my_hook", data
    status, dup = await site.call("create_web_hook", body, headers=admin)
    assert status == 500 and dup["code"] == "web_hook" and "my_hook" in dup["description"]


GOOD: Json = {"title": "Hook", "url": "http://127.0.0.1:9/x", "method": "POST"}
INVALID: list[tuple[Json, str]] = [
    ({"url": "ftp://127.0.0.1/x"}, "'url'"), ({"url": "127.0.0.1/x"}, "'url'"),
    ({"url": "http://127.0.0.1/{{ host"}, "'url'"), ({"method": "PO ST"}, "'method'"), ({"method": "GET;"}, "'method'"),
    ({"method": ""}, "Missing parameter: method"), ({"url": None}, "Missing parameter: url"),
    ({"title": ""}, "Missing parameter: title"), ({"title": "<b>Hook</b>"}, "'title'"),
    ({"id": "MyHook"}, "'id'"), ({"id": "my-hook"}, "'id'"),
    ({"headers": "Content-Type: text/plain"}, "'headers'"), ({"headers": {"name": "X", "value": "y"}}, "'headers'"),
    ({"headers": ["X: y"]}, "'headers'"), ({"headers": [{"value": "y"}]}, "'headers'"),
    ({"headers": [{"name": "Bad Name", "value": "y"}]}, "'headers'"),
    ({"headers": [{"name": "X", "value": {"a": 1}}]}, "'headers'"),
    ({"headers": [{"name": "X", "value": "{{ a"}]}, "'headers[0].value'"),
    ({"body": '{"text": "{{text"}'}, "'body'"), ({"body": "{{ }}"}, "'body'"),
    ({"body": "{{ job.code > }}"}, "'body'"),
    ({"timeout": 0}, "'timeout'"), ({"timeout": "soon"}, "'timeout'"), ({"timeout": 100_000}, "'timeout'"),
    ({"retries": -1}, "'retries'"), ({"retries": 1000}, "'retries'"), ({"follow": "maybe"}, "'follow'"),
    ({"max_per_day": "x"}, "'max_per_day'"), ({"icon": "bad icon!"}, "'icon'"),
]  # fmt: skip


async def test_validation_errors(site: Site, admin: dict[str, str]) -> None:
    problems = []
    for change, named in INVALID:
        status, data = await site.call("create_web_hook", {**GOOD, **change}, headers=admin)
        if (status, data["code"]) != (400, "api") or named not in data["description"]:
            problems.append(f"{change}: {status} {data}")
    assert not problems, "\n".join(problems)
    _, listed = await site.call("get_web_hooks", headers=admin)
    assert all(h["title"] != "Hook" for h in listed["rows"])  # nothing was half-written


async def test_update_is_validated_and_leaves_the_hook_alone(site: Site, admin: dict[str, str]) -> None:
    _, data = await site.call("create_web_hook", {**GOOD, "id": "keep"}, headers=admin)
    assert data["code"] == 0, data
    bad_changes: list[tuple[Json, str]] = [
        ({"url": "file:///etc/passwd"}, "'url'"), ({"body": "{{"}, "'body'"),
        ({"headers": [{"name": ""}]}, "'headers'"), ({"method": "a b"}, "'method'"),
    ]  # fmt: skip
    for change, named in bad_changes:
        status, bad = await site.call("update_web_hook", {"id": "keep", **change}, headers=admin)
        assert (status, bad["code"]) == (400, "api") and named in bad["description"], bad
    _, got = await site.call("get_web_hook", {"id": "keep"}, headers=admin)
    assert got["web_hook"]["revision"] == 1 and got["web_hook"]["url"] == GOOD["url"]


async def test_privileges(site: Site, admin: dict[str, str]) -> None:
    user = {"username": "wendy", "email": "w@example.com", "full_name": "Wendy", "password": "pw-wendy",
            "privileges": {}}  # fmt: skip
    assert (await site.call("admin_create", user, ns="user", headers=admin))[1]["code"] == 0
    sid, _ = await site.login("wendy", "pw-wendy")
    wendy = {"X-Session-ID": sid}
    status, data = await site.call("create_web_hook", GOOD, headers=wendy)
    assert (status, data["code"]) == (403, "access") and '"Create Web Hooks"' in data["description"]
    _, made = await site.call("create_web_hook", {**GOOD, "id": "adminhook"}, headers=admin)
    assert made["code"] == 0
    assert (await site.call("get_web_hooks", headers=wendy))[0] == 200  # reading needs no privilege
    assert (await site.call("get_web_hook", {"id": "adminhook"}, headers=wendy))[0] == 200
    for name, priv in [("update_web_hook", "Edit Web Hooks"), ("test_web_hook", "Edit Web Hooks"),
                       ("delete_web_hook", "Delete Web Hooks")]:  # fmt: skip
        status, data = await site.call(name, {"id": "adminhook"}, headers=wendy)
        assert (status, data["code"]) == (403, "access") and f'"{priv}"' in data["description"], (name, data)
    await site.call("admin_update", {"username": "wendy", "privileges": {"create_web_hooks": True}}, ns="user",
                    headers=admin)  # fmt: skip
    status, data = await site.call("create_web_hook", GOOD, headers=wendy)
    assert status == 200 and data["web_hook"]["username"] == "wendy"
