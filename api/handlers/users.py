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
from storage.families import ROLES
from storage.logins import LoginPolicy
from storage.users import normalize

from .. import params as P
from ..activity import log_activity, post_commit
from ..call import Call
from ..errors import ApiError
from ..passwords import check_password, hash_password, new_salt, verify
from ..principal import DEFAULT_USER_PRIVILEGES, PRIVILEGES, holds_admin
from ..registry import ADMIN, HANDLERS, NONE, SESSION, Reply
from ..settings import Settings
from ..transport import json_reply
from ..validate import privilege_map

log = structlog.get_logger("podium.users")

USERNAME = r"[\w\-\.]+"
PASSWORD_LEN = 1024
LOGIN_FAILED = "Username or password is incorrect."
BLOCKED_NAMES = frozenset({"admin", "root", "system", "administrator", "podium", "xyops", "api", "user", "users"})
# What a user may set on their own account (user/update, user_settings): the xyOps UI's profile and
# preference fields, each with its type and size.
PROFILE = (
    P.text("full_name", max_len=P.TITLE_LEN), P.text("email", max_len=P.TITLE_LEN), P.text("avatar", max_len=1024),
    P.text("icon", max_len=64), P.text("language", max_len=32), P.text("region", max_len=32),
    P.text("num_format", max_len=32), P.text("hour_cycle", max_len=16), P.text("timezone", max_len=64),
    P.text("contrast", max_len=32), P.text("motion", max_len=32), P.text("sidebar", max_len=32),
    P.integer("volume", ge=0, le=10), P.flag("color_acc"), P.flag("privacy_mode"), P.flag("effects"),
    P.flag("page_info"), P.flag("notifications"), P.flag("milliseconds"), P.flag("wide_tables"), P.flag("sync"),
    P.flag("admin_hide_notify_sys"), P.flag("admin_hide_notify_user"), P.flag("admin_show_invisibles"),
    P.obj("filters", max_bytes=1024), P.array("searches", max_bytes=64 * 1024), P.obj("favorites", max_bytes=64 * 1024),
    P.obj("hot_keys", max_bytes=16 * 1024),
)  # fmt: skip
PROFILE_FIELDS = tuple(p.name for p in PROFILE)
USERNAME_ARG = P.text("username", required=True, max_len=P.ID_LEN, pattern=USERNAME)
PASSWORD_ARG = P.text("password", required=True, max_len=PASSWORD_LEN)
ACCESS_ARGS = (P.flag("active"), P.strings("roles"), P.strings("categories"), P.strings("groups"))
EMAIL = r"[^@\s]+@[^@\s]+"
NEW_ACCOUNT_ARGS = (USERNAME_ARG, PASSWORD_ARG, P.text("full_name", required=True, max_len=P.TITLE_LEN),
                    P.text("email", required=True, max_len=P.TITLE_LEN, pattern=EMAIL), *ACCESS_ARGS)  # fmt: skip
COOKIE = "session_id"


def public(user: dict[str, Any]) -> dict[str, Any]:
    """A user as the API shows it: never the hash or salt."""
    return {k: v for k, v in user.items() if k not in ("password", "salt")}


async def _new_user(params: dict[str, Any], privileges: dict[str, bool]) -> dict[str, Any]:
    """A new user record from validated NEW_ACCOUNT_ARGS."""
    for name in ("username", "password", "full_name"):  # declared required; blank is missing too (xyOps /\S/)
        if not params[name].strip():
            raise ApiError("api", f"Missing parameter: {name}")
    now = int(time.time())
    salt = new_salt()
    user: dict[str, Any] = {
        "username": params["username"],
        "full_name": params["full_name"],
        "email": params["email"],
        "active": 1 if params.get("active", True) else 0,
        "privileges": privileges,
        "roles": params.get("roles") or [],
        "categories": params.get("categories") or [],
        "groups": params.get("groups") or [],
        "salt": salt,
        "password": await hash_password(params["password"], salt),
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


@HANDLERS.add("login", ns="user", write=True, privilege=NONE, csrf=False,
              args=(P.text("username", required=True, max_len=P.ID_LEN), PASSWORD_ARG))
async def login(call: Call) -> web.StreamResponse:
    """Failed logins lock the name temporarily (per address, then everywhere), never the account:
    existing sessions carry on, and an API key or `podium user unlock` always gets an admin in.
    Every attempt that is not refused up front costs one bcrypt check, whatever the account."""
    users, logins = call.stores.users, call.stores.logins
    username, password = call.params["username"], call.params["password"]
    norm = normalize(username)
    policy = login_policy(call.settings)
    state = await logins.state(norm, call.ip)
    if policy.ip_limit and state.ip_failures >= policy.ip_limit:
        raise ApiError("rate", f"Too many failed logins from this address; try again in {_wait(state.ip_reset_ms)}.")
    if state.lock_ms:
        raise ApiError("login", f"Too many failed logins; try again in {_wait(state.lock_ms)}.")
    if not state.users:  # a new cluster a moment before its first start: not a failure to count
        raise ApiError("login", "The first start is not finished yet; try again in a moment.")
    # Charged before the check, so a burst in parallel cannot run more checks than the limits allow.
    charged = await logins.charge(norm, call.ip, policy)
    if charged == -2:
        raise ApiError("rate", "Too many failed logins from this address; try again later.")
    if charged < 0:
        raise ApiError("login", "Too many failed logins; try again in a moment.")
    user = await users.get(username)
    found = user or {}
    if not await verify(password, str(found.get("salt", "")), found.get("password") if user else None):
        name_ms, pair_ms = await logins.failed(norm, call.ip, policy)
        if name_ms or pair_ms:
            seconds = _seconds(max(name_ms, pair_ms))
            log.warning("login_locked", username=norm, ip=call.ip, seconds=seconds, everywhere=bool(name_ms))
            if user is not None:
                where = "from every address" if name_ms else f"from {call.ip}"
                await log_activity(call, "user_lock", f"Logins as {user['username']} {where} paused for {seconds} s "
                                   "after failed logins", user=public(user))  # fmt: skip
        raise ApiError("login", LOGIN_FAILED)
    assert user is not None
    # The right password: only now may the reply say why the account cannot log in (and it is not a
    # failure to count, nor an address to remember).
    if not user.get("active", 1) or user.get("locked"):
        await logins.succeeded(norm, call.ip, remember=False)
        raise ApiError("login", "User account is disabled." if not user.get("active", 1) else "User account is locked.")
    await logins.succeeded(norm, call.ip)
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


@HANDLERS.add("logout", ns="user", write=True, privilege=NONE, args=())
async def logout(call: Call) -> web.StreamResponse:
    """Ends the caller's session if there is one; answers {} either way."""
    sid, _ = call.authenticator.session_id(call)
    if sid:
        session = await call.stores.users.session(sid)
        if session is not None:
            await call.stores.users.delete_session(call.node.fence(), sid, str(session["username"]))
    resp = json_reply({"code": 0}, rid=call.request_id)
    resp.del_cookie(COOKIE, path="/")
    return resp


@HANDLERS.add("resume_session", ns="user", write=False, privilege=NONE, args=())
async def resume_session(call: Call) -> web.StreamResponse:
    auth = call.authenticator
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


@HANDLERS.add("create", ns="user", write=True, privilege=NONE, args=NEW_ACCOUNT_ARGS)
async def create(call: Call) -> Reply:
    """Self sign-up, only when free accounts are enabled."""
    if not call.settings.free_accounts:
        raise ApiError("access", "Only administrators can create new users.")
    username = call.params["username"]
    if username.lower() in BLOCKED_NAMES:
        raise ApiError("api", f"Username is reserved: {username}")
    user = await _new_user(call.params, dict.fromkeys(DEFAULT_USER_PRIVILEGES, True))
    user["roles"], user["categories"], user["groups"] = [], [], []
    await _create(call, user)
    await log_activity(call, "user_create", f"User signed up: {username}", username=username, user=public(user))
    return {}


@HANDLERS.add("update", ns="user", write=True, privilege=SESSION, closed=True,
              args=(P.text("username", required=True, max_len=P.ID_LEN), PASSWORD_ARG.with_(name="old_password"),
                    PASSWORD_ARG.with_(name="new_password", required=False), *PROFILE))
async def update(call: Call) -> Reply:
    """Own profile and password; needs the current password. Privileges and roles are refused (closed)."""
    username = call.params["username"]
    if normalize(username) != normalize(call.who.id):
        raise ApiError("access", "You can only update your own account.")
    old = call.params["old_password"]
    user = copy.deepcopy(dict(call.who.record))
    if not await check_password(old, str(user.get("salt", "")), str(user.get("password", ""))):
        raise ApiError("login", "Your current password is incorrect.")
    for field in PROFILE_FIELDS:
        if field in call.params:
            user[field] = call.params[field]
    new_password = call.params.get("new_password")
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
        await call.stores.logins.forget_known_addresses(normalize(username))
    else:
        await log_activity(call, "user_update", f"User updated own profile: {username}", user=public(user))
    return {"user": public(user)}


@HANDLERS.add("admin_create", ns="user", write=True, privilege=ADMIN,
              args=(*NEW_ACCOUNT_ARGS, P.obj("privileges", max_bytes=8192),
                    P.flag("send_email")))
async def admin_create(call: Call) -> Reply:
    privileges = privilege_map(call.params, "privileges", PRIVILEGES) or {}
    user = await _new_user(call.params, privileges)
    if holds_admin(user, await call.stores.defs.all(ROLES)):  # admins, also by role, have no resource limits
        user["categories"], user["groups"] = [], []
    await _create(call, user)
    await log_activity(call, "user_create", f"User created: {user['username']}", user=public(user))
    return {}


async def _existing(call: Call) -> dict[str, Any]:
    """The user named by the `username` param, or a `notfound` error."""
    username = call.params["username"]
    user = await call.stores.users.get(username)
    if user is None:
        raise ApiError("notfound", f"User not found: {username}")
    return user


async def _credentials(call: Call, user: dict[str, Any]) -> str:
    """admin_update's password and locks: a new password (returned) re-hashes and unlocks; `locked` sets
    or lifts the administrator's own lock (temporary ones expire); `unlock` lifts every lock."""
    p = call.params
    new_password: str = p.get("new_password") or ""
    if new_password:
        user["salt"] = new_salt()
        user["password"] = await hash_password(new_password, user["salt"])
    if "locked" in p:
        if p["locked"]:
            user["locked"] = True
        else:
            user.pop("locked", None)
    if new_password or p["unlock"]:
        user.pop("locked", None)
        await call.stores.logins.clear(normalize(str(user["username"])))
    return new_password


@HANDLERS.add("admin_update", ns="user", write=True, privilege=ADMIN,
              args=(P.text("username", required=True, max_len=P.ID_LEN), *PROFILE, *ACCESS_ARGS,
                    P.obj("privileges", max_bytes=8192), PASSWORD_ARG.with_(name="new_password", required=False),
                    P.flag("unlock", False), P.flag("locked", doc="set or lift the manual lock")))
async def admin_update(call: Call) -> Reply:
    user = copy.deepcopy(await _existing(call))
    username = str(user["username"])
    for field in PROFILE_FIELDS:
        if field in call.params:
            user[field] = call.params[field]
    p = call.params
    if "active" in p:
        user["active"] = 1 if p["active"] else 0
    privileges = privilege_map(p, "privileges", PRIVILEGES)
    if privileges is not None:
        user["privileges"] = privileges
    for field in ("roles", "categories", "groups"):
        if field in p:
            user[field] = p[field]
    if holds_admin(user, await call.stores.defs.all(ROLES)):  # admins, also by role, have no resource limits
        user["categories"], user["groups"] = [], []
    new_password = await _credentials(call, user)
    user["modified"] = int(time.time())
    await call.stores.users.save(call.node.fence(), user)
    if not user["active"] or new_password:
        await call.stores.users.drop_sessions(call.node.fence(), normalize(username))
    if new_password or user.get("locked"):
        await call.stores.logins.forget_known_addresses(normalize(username))
    await log_activity(call, "user_update", f"User updated: {username}", user=public(user))
    return {"user": public(user)}


@HANDLERS.add("admin_delete", ns="user", write=True, privilege=ADMIN, args=(P.ident("username"),))
async def admin_delete(call: Call) -> Reply:
    user = await _existing(call)
    username = str(user["username"])
    if normalize(username) == normalize(call.who.id):
        raise ApiError("user", "You cannot delete your own account.")
    await call.stores.users.delete(call.node.fence(), user)
    await log_activity(call, "user_delete", f"User deleted: {username}", user=public(user))
    return {}


@HANDLERS.add("admin_get_user", ns="user", write=False, privilege=ADMIN, args=(P.ident("username"),))
async def admin_get_user(call: Call) -> Reply:
    return {"user": public(await _existing(call))}


@HANDLERS.add("admin_get_users", ns="user", write=False, privilege=ADMIN, args=P.page())
async def admin_get_users(call: Call) -> Reply:
    rows, total = await call.stores.users.page(call.params["offset"], call.params["limit"])
    return {"rows": [public(u) for u in rows], "list": {"length": total}}
