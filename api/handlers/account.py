"""The caller's own account under /api/app: security log, settings, logging out everywhere."""

from __future__ import annotations

import copy
import time

from storage.users import normalize

from ..activity import log_activity
from ..call import Call
from ..errors import ApiError
from ..passwords import check_password
from ..registry import AUTH, HANDLERS, SESSION, Params, Reply
from ..validate import integer, text
from .users import public

# user_settings may not touch these (digest 3.0).
CRITICAL_FIELDS = frozenset(
    {"username", "password", "salt", "active", "created", "modified", "privileges", "roles", "categories",
     "groups", "locked", "force_password_reset", "force_password_change"}
)  # fmt: skip


@HANDLERS.add("get_user_activity", write=False, privilege=AUTH, params=Params.WRITE)
async def get_user_activity(call: Call) -> Reply:
    """Own security log, newest first (body only, as in xyOps). API keys have none."""
    offset = integer(call.params, "offset", 0, minimum=0)
    limit = integer(call.params, "limit", 50, minimum=0)
    if call.who.kind != "user":
        return {"rows": [], "list": {"length": 0}}
    rows, total = await call.stores.users.security_page(call.who.id, offset, limit)
    return {"rows": rows, "list": {"length": total}}


@HANDLERS.add("user_settings", write=True, privilege=SESSION)
async def user_settings(call: Call) -> Reply:
    user = copy.deepcopy(dict(call.who.record))
    for key, value in call.params.items():
        if key not in CRITICAL_FIELDS:
            user[key] = value
    user["modified"] = int(time.time())
    await call.stores.users.save(call.node.fence(), user)
    return {"user": public(user)}


@HANDLERS.add("logout_all", write=True, privilege=SESSION)
async def logout_all(call: Call) -> Reply:
    """End every other session of the caller (the password confirms it is really them)."""
    password = text(call.params, "password")
    user = call.who.record
    if not await check_password(password, str(user.get("salt", "")), str(user.get("password", ""))):
        raise ApiError("login", "Your password is incorrect.")
    ended = await call.stores.users.drop_sessions(call.node.fence(), normalize(call.who.id),
                                                  keep=call.who.session_id)  # fmt: skip
    await log_activity(call, "user_logout_all", f"Logged out {ended} other sessions", user=public(dict(user)))
    return {}
