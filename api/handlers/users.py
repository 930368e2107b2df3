"""/api/user/*: login, sessions, own account and user administration (digest 1.4)."""

from __future__ import annotations

import copy
import math
import secrets
import time
from typing import Any

import structlog
from aiohttp import web

from storage.errors import Conflict
from storage.users import LoginPolicy, normalize

from ..activity import log_activity, post_commit
from ..call import Call
from ..errors import ApiError
from ..passwords import check_password, hash_password, new_salt, verify
from ..principal import DEFAULT_USER_PRIVILEGES, PRIVILEGES
from ..registry import ADMIN, HANDLERS, NONE, SESSION, Reply
from ..settings import Settings
from ..transport import json_reply
from ..typedefs import AUTH
from ..validate import boolean, integer, privilege_map, string_list, text

log = structlog.get_logger("podium.users")

USERNAME = r"[\w\-\.]+"
LOGIN_FAILED = "Username or password is incorrect."
BLOCKED_NAMES = frozenset({"admin", "root", "system", "administrator", "podium", "xyops", "api", "user", "users"})
PROFILE_FIELDS = ("full_name", "email", "avatar", "language", "region", "num_format", "hour_cycle", "timezone",
                  "color_acc", "privacy_mode", "effects", "page_info", "contrast", "motion", "volume",
                  "searches", "icon")  # fmt: skip
COOKIE = "session_id"


def public(user: dict[str, Any]) -> dict[str, Any]:
    """A user as the API shows it: never the hash or salt."""
    return {k: v for k, v in user.items() if k not in ("password", "salt")}


async def _new_user(params: dict[str, Any], privileges: dict[str, bool]) -> dict[str, Any]:
    username = text(params, "username", pattern=USERNAME)
    password = text(params, "password")
    now = int(time.time())
    salt = new_salt()
    user: dict[str, Any] = {
        "username": username,
        "full_name": text(params, "full_name"),
        "email": text(params, "email", pattern=r"[^@\s]+@[^@\s]+"),
        "active": 1 if boolean(params, "active", True) else 0,
        "privileges": privileges,
        "roles": string_list(params, "roles") or [],
        "categories": string_list(params, "categories") or [],
        "groups": string_list(params, "groups") or [],
        "salt": salt,
        "password": await hash_password(password, salt),
        "created": now,
        "modified": now,
    }
    if privileges.get("admin"):
        user["categories"], user["groups"] = [], []
    return user


async def _create(call: Call, user: dict[str, Any]) -> None:
    try:
        await call.stores.users.create(call.node.fence(), user)
    except Conflict:
        raise ApiError("user_exists", f"User already exists: {user['username']}") from None


# -- sessions -------------------------------------------------------------------


def _session_reply(call: Call, user: dict[str, Any], session: dict[str, Any]) -> dict[str, Any]:
    reply: dict[str, Any] = {"code": 0, "username": user["username"], "user": public(user)}
    if call.settings.use_csrf:
        reply["csrf_token"] = session.get("csrf_token", "")
    if user.get("force_password_change"):
        reply["force_password_change"] = True  # a client should insist on a new password (user/update)
    return reply


def login_policy(settings: Settings) -> LoginPolicy:
    return LoginPolicy(
        pair_limit=settings.max_failed_logins_per_hour,
        name_limit=settings.login_user_limit,
        ip_limit=settings.login_ip_limit,
        lock_s=settings.login_lock_s,
        lock_max_s=settings.login_lock_max_s,
    )


def _seconds(ms: int) -> int:
    return max(1, math.ceil(ms / 1000))


def _wait(ms: int) -> str:
    seconds = _seconds(ms)
    return "1 second" if seconds == 1 else f"{seconds} seconds"


def _set_cookie(call: Call, resp: web.StreamResponse, value: str, max_age: int) -> None:
    resp.set_cookie(COOKIE, value, max_age=max_age, path="/", httponly=True, samesite="Lax",
                    secure=call.request.secure)  # fmt: skip


@HANDLERS.add("login", ns="user", write=True, privilege=NONE)
async def login(call: Call) -> web.StreamResponse:
    """Failed logins lock the name temporarily (per address, then everywhere), never the account:
    existing sessions carry on, and an API key or `podium user unlock` always gets an admin in.
    Every attempt that is not refused up front costs one bcrypt check, whatever the account."""
    users = call.stores.users
    username = text(call.params, "username")
    password = text(call.params, "password")
    norm = normalize(username)
    policy = login_policy(call.settings)
    state = await users.login_state(norm, call.ip)
    if policy.ip_limit and state.ip_failures >= policy.ip_limit:
        raise ApiError("rate", f"Too many failed logins from this address; try again in {_wait(state.ip_reset_ms)}.")
    if state.lock_ms:
        raise ApiError("login", f"Too many failed logins; try again in {_wait(state.lock_ms)}.")
    if not state.users:  # a new cluster a moment before its first start: not a failure to count
        raise ApiError("login", "The first start is not finished yet; try again in a moment.")
    user = await users.get(username)
    found = user or {}
    if not await verify(password, str(found.get("salt", "")), found.get("password") if user else None):
        name_ms, pair_ms = await users.login_failed(norm, call.ip, policy)
        if name_ms or pair_ms:
            seconds = _seconds(max(name_ms, pair_ms))
            log.warning("login_locked", username=norm, ip=call.ip, seconds=seconds, everywhere=bool(name_ms))
            if user is not None:
                where = "from every address" if name_ms else f"from {call.ip}"
                await log_activity(call, "user_lock", f"Logins as {user['username']} {where} paused for {seconds} s "
                                   "after failed logins", user=public(user))  # fmt: skip
        raise ApiError("login", LOGIN_FAILED)
    assert user is not None
    # The right password: only now may the reply say why the account cannot log in.
    if not user.get("active", 1):
        raise ApiError("login", "User account is disabled.")
    if user.get("locked"):
        raise ApiError("login", "User account is locked.")
    await users.login_succeeded(norm, call.ip)
    session_id = secrets.token_hex(32)
    now = time.time()
    session = {
        "username": user["username"],
        "ip": call.ip,
        "useragent": call.request.headers.get("User-Agent", ""),
        "created": int(now),
        "modified": int(now),
        "expires": int(now + call.settings.session_days * 86400),
        "csrf_token": secrets.token_hex(32) if call.settings.use_csrf else "",
    }
    await users.create_session(call.node.fence(), session_id, session, call.settings.max_sessions_per_user)
    # The session exists: what follows is bookkeeping and must not turn the login into an error.
    async with post_commit("security_log"):
        await users.log_security(str(user["username"]), {"action": "user_login", "epoch": int(now), "ip": call.ip,
                                                         "useragent": session["useragent"]})  # fmt: skip
    await log_activity(call, "user_login", f"User logged in: {user['username']}", username=str(user["username"]),
                       user=public(user))  # fmt: skip
    resp = json_reply(_session_reply(call, user, session), rid=call.request_id)
    _set_cookie(call, resp, session_id, call.settings.session_days * 86400)
    return resp


@HANDLERS.add("logout", ns="user", write=True, privilege=NONE)
async def logout(call: Call) -> web.StreamResponse:
    """Ends the caller's session if there is one; answers {} either way."""
    sid, _ = call.request.app[AUTH].session_id(call)
    if sid:
        session = await call.stores.users.session(sid)
        if session is not None:
            await call.stores.users.delete_session(call.node.fence(), sid, str(session["username"]))
    resp = json_reply({"code": 0}, rid=call.request_id)
    resp.del_cookie(COOKIE, path="/")
    return resp


@HANDLERS.add("resume_session", ns="user", write=False, privilege=NONE)
async def resume_session(call: Call) -> web.StreamResponse:
    auth = call.request.app[AUTH]
    sid, _ = auth.session_id(call)
    if not sid:
        return json_reply({"code": 0}, rid=call.request_id)
    try:
        # CSRF is skipped here (xyOps does too): the call only reads, and it is how a page gets its token.
        who = await auth.authenticate(call, SESSION, csrf=False)
    except ApiError as exc:
        resp = json_reply(exc.body(), exc.status, rid=call.request_id)
        resp.del_cookie(COOKIE, path="/")
        return resp
    session = await call.stores.users.session(sid) or {}
    return json_reply(_session_reply(call, dict(who.record), session), rid=call.request_id)


# -- accounts -------------------------------------------------------------------


@HANDLERS.add("create", ns="user", write=True, privilege=NONE)
async def create(call: Call) -> Reply:
    """Self sign-up, only when free accounts are enabled."""
    if not call.settings.free_accounts:
        raise ApiError("access", "Only administrators can create new users.")
    username = text(call.params, "username", pattern=USERNAME)
    if username.lower() in BLOCKED_NAMES:
        raise ApiError("api", f"Username is reserved: {username}")
    user = await _new_user(call.params, dict.fromkeys(DEFAULT_USER_PRIVILEGES, True))
    user["roles"], user["categories"], user["groups"] = [], [], []
    await _create(call, user)
    await log_activity(call, "user_create", f"User signed up: {username}", username=username, user=public(user))
    return {}


@HANDLERS.add("update", ns="user", write=True, privilege=SESSION)
async def update(call: Call) -> Reply:
    """Own profile and password; needs the current password. Privileges and roles are ignored."""
    username = text(call.params, "username")
    if normalize(username) != normalize(call.who.id):
        raise ApiError("access", "You can only update your own account.")
    old = text(call.params, "old_password")
    user = copy.deepcopy(dict(call.who.record))
    if not await check_password(old, str(user.get("salt", "")), str(user.get("password", ""))):
        raise ApiError("login", "Your current password is incorrect.")
    for field in PROFILE_FIELDS:
        if field in call.params:
            user[field] = call.params[field]
    new_password = text(call.params, "new_password", required=False)
    if new_password:
        user["salt"] = new_salt()
        user["password"] = await hash_password(new_password, user["salt"])
        user.pop("force_password_change", None)
    user["modified"] = int(time.time())
    await call.stores.users.save(call.node.fence(), user)
    if new_password:
        await log_activity(call, "user_password", f"Password changed: {username}", user=public(user))
        # A password change ends this user's other sessions. Unlike the activity record this may fail the
        # call: the sessions of someone who just changed a password must not carry on unnoticed.
        await call.stores.users.drop_sessions(call.node.fence(), normalize(username), keep=call.who.session_id)
    else:
        await log_activity(call, "user_update", f"User updated own profile: {username}", user=public(user))
    return {"user": public(user)}


@HANDLERS.add("admin_create", ns="user", write=True, privilege=ADMIN)
async def admin_create(call: Call) -> Reply:
    privileges = privilege_map(call.params, "privileges", PRIVILEGES) or {}
    user = await _new_user(call.params, privileges)
    await _create(call, user)
    await log_activity(call, "user_create", f"User created: {user['username']}", user=public(user))
    return {}


async def _existing(call: Call) -> dict[str, Any]:
    """The user named by the `username` param, or a `notfound` error."""
    username = text(call.params, "username")
    user = await call.stores.users.get(username)
    if user is None:
        raise ApiError("notfound", f"User not found: {username}")
    return user


@HANDLERS.add("admin_update", ns="user", write=True, privilege=ADMIN)
async def admin_update(call: Call) -> Reply:
    user = copy.deepcopy(await _existing(call))
    username = str(user["username"])
    for field in PROFILE_FIELDS:
        if field in call.params:
            user[field] = call.params[field]
    if "active" in call.params:
        user["active"] = 1 if boolean(call.params, "active", True) else 0
    privileges = privilege_map(call.params, "privileges", PRIVILEGES)
    if privileges is not None:
        user["privileges"] = privileges
    for field in ("roles", "categories", "groups"):
        values = string_list(call.params, field)
        if values is not None:
            user[field] = values
    if user.get("privileges", {}).get("admin"):
        user["categories"], user["groups"] = [], []
    new_password = text(call.params, "new_password", required=False)
    if new_password:
        user["salt"] = new_salt()
        user["password"] = await hash_password(new_password, user["salt"])
    if "locked" in call.params:  # the administrator's own lock, kept until lifted (temporary ones expire)
        if boolean(call.params, "locked", False):
            user["locked"] = True
        else:
            user.pop("locked", None)
    if new_password or boolean(call.params, "unlock", False):
        user.pop("locked", None)
        await call.stores.users.clear_login_guard(normalize(username))
    user["modified"] = int(time.time())
    await call.stores.users.save(call.node.fence(), user)
    if not user["active"] or new_password:
        await call.stores.users.drop_sessions(call.node.fence(), normalize(username))
    await log_activity(call, "user_update", f"User updated: {username}", user=public(user))
    return {"user": public(user)}


@HANDLERS.add("admin_delete", ns="user", write=True, privilege=ADMIN)
async def admin_delete(call: Call) -> Reply:
    user = await _existing(call)
    username = str(user["username"])
    if normalize(username) == normalize(call.who.id):
        raise ApiError("user", "You cannot delete your own account.")
    await call.stores.users.delete(call.node.fence(), user)
    await log_activity(call, "user_delete", f"User deleted: {username}", user=public(user))
    return {}


@HANDLERS.add("admin_get_user", ns="user", write=False, privilege=ADMIN)
async def admin_get_user(call: Call) -> Reply:
    return {"user": public(await _existing(call))}


@HANDLERS.add("admin_get_users", ns="user", write=False, privilege=ADMIN)
async def admin_get_users(call: Call) -> Reply:
    offset = integer(call.params, "offset", 0, minimum=0)
    limit = integer(call.params, "limit", 50, minimum=0)
    rows, total = await call.stores.users.page(offset, limit)
    return {"rows": [public(u) for u in rows], "list": {"length": total}}
