"""Users, sessions, API keys, roles, CSRF and the activity log on one in-process node (lockout:
test_login_lockout.py)."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import pytest

from storage.connection import Database
from tests.authkit import Site, open_site


async def test_first_start_objects(site: Site, admin: dict[str, str]) -> None:
    status, data = await site.call("admin_get_user", {"username": "admin"}, ns="user", headers=admin)
    assert status == 200
    user = data["user"]
    assert user["privileges"] == {"admin": True} and user["force_password_change"] is True
    assert "password" not in user and "salt" not in user
    _, roles = await site.call("get_roles", headers=admin)
    (role,) = [r for r in roles["rows"] if r["id"] == "all"]
    assert role["enabled"] is True and role["privileges"] == {
        "create_events": True, "edit_events": True, "run_jobs": True, "tag_jobs": True}  # fmt: skip
    _, state = await site.call("get_global_state", headers=admin)
    assert state["state"]["scheduler"]["enabled"] is True


async def test_login_sets_cookie_and_hides_secrets(site: Site) -> None:
    resp = await site.client.post("/api/user/login/v1", json={"username": "admin", "password": "admin"})
    data = await resp.json()
    assert resp.status == 200 and data["username"] == "admin"
    assert "session_id" not in data and "password" not in data["user"] and "salt" not in data["user"]
    cookie = resp.headers["Set-Cookie"]
    assert "session_id=" in cookie and "HttpOnly" in cookie and "SameSite=Lax" in cookie
    assert len(data["csrf_token"]) == 64


async def test_login_failure_is_vague(site: Site) -> None:
    wrong_pw = await site.call("login", {"username": "admin", "password": "nope"}, ns="user")
    no_user = await site.call("login", {"username": "ghost", "password": "admin"}, ns="user")
    assert wrong_pw[1]["code"] == no_user[1]["code"] == "login"
    assert wrong_pw[1]["description"] == no_user[1]["description"]
    missing = await site.call("login", {"username": "admin"}, ns="user")
    assert missing[0] == 400 and "password" in missing[1]["description"]


async def test_credentials_in_every_place(site: Site, admin: dict[str, str]) -> None:
    plain, _ = await site.admin_key(admin["X-Session-ID"], privileges={"admin": True})
    sid = admin["X-Session-ID"]
    assert (await site.call("get_global_state", headers={"X-API-Key": plain}))[0] == 200
    assert (await site.call("get_global_state", {"api_key": plain}))[0] == 200
    assert (await site.call("get_global_state", method="GET", query={"api_key": plain}))[0] == 200
    assert (await site.call("get_global_state", {"session_id": sid}))[0] == 200
    # A session id is authoritative: a bad one is refused even with a good key alongside.
    status, data = await site.call("get_global_state", headers={"X-Session-ID": "f" * 64, "X-API-Key": plain})
    assert status == 401 and data["code"] == "session"
    status, data = await site.call("get_global_state")
    assert (status, data["description"]) == (401, "No Session ID or API Key could be found")


async def test_api_key_lifecycle(site: Site, admin: dict[str, str]) -> None:
    plain, key = await site.admin_key(admin["X-Session-ID"], privileges={"create_roles": True})
    assert len(plain) == 43 and key["mask"] == plain[:4] + "********" + plain[-4:]
    assert key["key"] == hashlib.sha256((plain + key["id"]).encode()).hexdigest()  # the stored hash, as in xyOps
    _, listed = await site.call("get_api_keys", headers=admin)
    assert listed["rows"][0]["id"] == key["id"]  # newest first
    assert listed["rows"][0]["key"] == key["key"]
    assert (await site.call("get_api_key", {"id": key["id"]}, headers=admin))[1]["api_key"]["key"] == key["key"]
    assert plain not in str(listed)  # the plain key is never shown again
    role = await site.call("create_role", {"title": "Ops"}, headers={"X-API-Key": plain})
    assert role[0] == 200, role
    denied = await site.call("delete_role", {"id": role[1]["role"]["id"]}, headers={"X-API-Key": plain})
    description = 'API Key "test key" does not have the "Delete Roles" privilege required to perform this action.'
    assert denied[0] == 403 and denied[1]["description"] == description
    assert (await site.call("update_api_key", {"id": key["id"], "active": 0}, headers=admin))[0] == 200
    status, data = await site.call("get_global_state", headers={"X-API-Key": plain})
    assert (status, data["description"]) == (401, "Invalid API Key")
    await site.call("update_api_key", {"id": key["id"], "active": 1, "expires": int(time.time()) - 5},
                    headers=admin)  # fmt: skip
    assert (await site.call("get_global_state", headers={"X-API-Key": plain}))[0] == 401
    assert (await site.call("delete_api_key", {"id": key["id"]}, headers=admin))[0] == 200
    assert (await site.call("get_api_key", {"id": key["id"]}, headers=admin))[0] == 404


async def test_rate_limit_per_key(site: Site, admin: dict[str, str]) -> None:
    plain, _ = await site.admin_key(admin["X-Session-ID"], max_per_sec=5)
    codes = [(await site.call("get_global_state", headers={"X-API-Key": plain}))[1]["code"] for _ in range(30)]
    assert codes.count(0) >= 5 and "rate" in codes
    status, data = await site.call("get_global_state", headers={"X-API-Key": plain})
    if data["code"] == "rate":
        assert status == 429 and data["description"] == "API Key has exceeded rate limit (5/sec)"


async def test_roles_merge_and_apply_on_next_request(site: Site, admin: dict[str, str]) -> None:
    _, data = await site.call("create_role", {"id": "editors", "title": "Editors",
                                              "privileges": {"create_roles": True}}, headers=admin)  # fmt: skip
    assert data["code"] == 0
    plain, _ = await site.admin_key(admin["X-Session-ID"], roles=["editors"])
    key = {"X-API-Key": plain}
    assert (await site.call("create_role", {"title": "By role"}, headers=key))[0] == 200
    await site.call("update_role", {"id": "editors", "enabled": False}, headers=admin)
    assert (await site.call("create_role", {"title": "Refused"}, headers=key))[0] == 403
    await site.call("update_role", {"id": "editors", "enabled": True, "privileges": {}}, headers=admin)
    assert (await site.call("create_role", {"title": "Refused"}, headers=key))[0] == 403


async def test_ip_limit_on_failed_logins(db: Database, tmp_path: Path) -> None:
    async for site in open_site(db, tmp_path / "data", login_ip_limit=3):
        for _ in range(3):
            await site.call("login", {"username": "ghost", "password": "x"}, ns="user")
        status, data = await site.call("login", {"username": "admin", "password": "admin"}, ns="user")
        assert (status, data["code"]) == (429, "rate")


@pytest.mark.parametrize("use_csrf", [True, False])
async def test_csrf_for_cookie_sessions(db: Database, tmp_path: Path, use_csrf: bool) -> None:
    async for site in open_site(db, tmp_path / "data", use_csrf=use_csrf, login_ip_limit=0):
        sid, token = await site.login()
        site.client.session.cookie_jar.clear()
        cookie = {"Cookie": f"session_id={sid}"}
        status, data = await site.call("update_global_state", {"x.y": 1}, headers=cookie)
        if use_csrf:
            assert (status, data["code"]) == (401, "session")
            ok = await site.call("update_global_state", {"x.y": 1}, headers={**cookie, "X-CSRF-Token": token})
            assert ok[0] == 200
        else:
            assert status == 200 and token == ""
        # GET needs no token, and an X-Session-ID client is never asked for one.
        assert (await site.call("get_global_state", method="GET", headers=cookie))[0] == 200
        assert (await site.call("update_global_state", {"x.z": 2}, headers={"X-Session-ID": sid}))[0] == 200


async def test_logout_and_resume(site: Site) -> None:
    sid, _ = await site.login()
    hdr = {"X-Session-ID": sid}
    _, resumed = await site.call("resume_session", headers=hdr, ns="user")
    assert resumed["username"] == "admin" and "password" not in resumed["user"]
    assert (await site.call("logout", headers=hdr, ns="user"))[1] == {"code": 0}
    status, data = await site.call("get_global_state", headers=hdr)
    assert (status, data["code"]) == (401, "session")
    assert (await site.call("resume_session", ns="user"))[1] == {"code": 0}


async def test_user_update_password_and_settings(site: Site, admin: dict[str, str]) -> None:
    body = {"username": "carol", "email": "c@example.com", "full_name": "Carol", "password": "pw-one-1"}
    await site.call("admin_create", body, ns="user", headers=admin)
    sid, _ = await site.login("carol", "pw-one-1")
    other, _ = await site.login("carol", "pw-one-1")
    hdr = {"X-Session-ID": sid}
    bad = await site.call("update", {"username": "carol", "old_password": "x", "new_password": "y"}, ns="user",
                          headers=hdr)  # fmt: skip
    assert bad[1]["code"] == "login"
    escalate = await site.call("update", {"username": "carol", "old_password": "pw-one-1",
                                          "privileges": {"admin": True}}, ns="user", headers=hdr)  # fmt: skip
    assert escalate[0] == 400 and "privileges" in escalate[1]["description"]
    ok = await site.call("update", {"username": "carol", "old_password": "pw-one-1", "new_password": "pw-two-2",
                                    "full_name": "Carol C"}, ns="user", headers=hdr)  # fmt: skip
    assert ok[1]["user"]["full_name"] == "Carol C" and "admin" not in ok[1]["user"]["privileges"]
    assert (await site.call("get_global_state", headers={"X-Session-ID": other}))[0] == 401
    assert (await site.call("get_global_state", headers=hdr))[0] == 200
    await site.login("carol", "pw-two-2")
    status, refused = await site.call("user_settings", {"language": "fr", "privileges": {"admin": 1}}, headers=hdr)
    assert (status, refused["code"]) == (400, "api") and "privileges" in refused["description"]
    _, settings = await site.call("user_settings", {"language": "fr"}, headers=hdr)
    assert settings["user"]["language"] == "fr" and "admin" not in settings["user"]["privileges"]
    # API keys cannot use session-only calls.
    plain, _ = await site.admin_key(admin["X-Session-ID"])
    assert (await site.call("user_settings", {"language": "de"}, headers={"X-API-Key": plain}))[0] == 401


async def test_admin_user_management(site: Site, admin: dict[str, str]) -> None:
    body = {"username": "dave", "email": "d@example.com", "full_name": "Dave", "password": "pw"}
    assert (await site.call("admin_create", body, ns="user", headers=admin))[1]["code"] == 0
    dup = await site.call("admin_create", body, ns="user", headers=admin)
    assert dup[1]["code"] == "user_exists"
    bad = await site.call("admin_create", {**body, "username": "bad name!"}, ns="user", headers=admin)
    assert bad[0] == 400 and "username" in bad[1]["description"]
    _, users = await site.call("admin_get_users", ns="user", headers=admin)
    assert {u["username"] for u in users["rows"]} >= {"admin", "dave"} and users["list"]["length"] >= 2
    sid, _ = await site.login("dave", "pw")
    await site.call("admin_update", {"username": "dave", "active": False}, ns="user", headers=admin)
    assert (await site.call("get_global_state", headers={"X-Session-ID": sid}))[0] == 401
    assert (await site.call("admin_delete", {"username": "dave"}, ns="user", headers=admin))[1]["code"] == 0
    assert (await site.call("admin_get_user", {"username": "dave"}, ns="user", headers=admin))[0] == 404
    nonadmin = await site.call("admin_get_users", ns="user", headers={"X-Session-ID": sid})
    assert nonadmin[0] == 401


async def test_self_signup_off_by_default(site: Site) -> None:
    body = {"username": "eve", "email": "e@example.com", "full_name": "Eve", "password": "pw"}
    status, data = await site.call("create", body, ns="user")
    assert (status, data["code"]) == (403, "access")


async def test_activity_log_records_mutations_without_secrets(site: Site, admin: dict[str, str]) -> None:
    plain, key = await site.admin_key(admin["X-Session-ID"])
    body = {"username": "frank", "email": "f@example.com", "full_name": "Frank", "password": "s3cret-pw"}
    await site.call("admin_create", body, ns="user", headers=admin)
    await site.call("update_global_state", {"scheduler.enabled": False}, headers=admin)
    _, found = await site.call("search_activity", {"query": "action:apikey_create", "limit": 10}, headers=admin)
    assert found["list"]["length"] == 1 and found["rows"][0]["api_key"]["id"] == key["id"]
    _, found = await site.call("search_activity", {"query": "keywords:frank", "limit": 10}, headers=admin)
    assert [r["action"] for r in found["rows"]] == ["user_create"]
    _, every = await site.call("search_activity", {"query": "*", "limit": 100}, headers=admin)
    actions = [r["action"] for r in every["rows"]]
    assert {"user_login", "apikey_create", "user_create", "state_update"} <= set(actions)
    text = str(every)
    assert plain not in text and "s3cret-pw" not in text and "$2b$" not in text
    assert every["rows"][0]["epoch"] >= every["rows"][-1]["epoch"]  # newest first
    bad = await site.call("search_activity", {"query": "(action = "}, headers=admin)
    assert bad[0] == 400


async def test_get_user_activity_and_logout_all(site: Site) -> None:
    sid, _ = await site.login()
    other, _ = await site.login()
    hdr = {"X-Session-ID": sid}
    _, log = await site.call("get_user_activity", {"limit": 5}, headers=hdr)
    assert log["rows"][0]["action"] == "user_login" and log["list"]["length"] >= 2
    assert (await site.call("logout_all", {"password": "wrong"}, headers=hdr))[1]["code"] == "login"
    assert (await site.call("logout_all", {"password": "admin"}, headers=hdr))[1]["code"] == 0
    assert (await site.call("get_global_state", headers={"X-Session-ID": other}))[0] == 401
    assert (await site.call("get_global_state", headers=hdr))[0] == 200


async def test_global_state_paths_and_servers(site: Site, admin: dict[str, str]) -> None:
    assert (await site.call("update_global_state", {"a.b.c": 5, "scheduler.enabled": False}, headers=admin))[0] == 200
    _, data = await site.call("get_global_state", headers=admin)
    assert data["state"]["a"] == {"b": {"c": 5}} and data["state"]["scheduler"]["enabled"] is False
    bad = await site.call("update_global_state", {"a.__proto__": 1}, headers=admin)
    assert bad[0] == 400
    _, servers = await site.call("get_servers", headers=admin)
    (master,) = servers["masters"].values()
    assert master["id"] == "n1" and master["master"] is True and master["online"] is True
