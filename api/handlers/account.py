"""The caller's own account under /api/app: security log, settings, logging out everywhere."""

from __future__ import annotations

import copy
import time

from storage.users import normalize

from ..activity import log_activity
from ..call import Call
from ..errors import ApiError
from ..params import ID_LEN, page, text
from ..passwords import check_password
from ..registry import AUTH, HANDLERS, SESSION, Params, Reply
from .users import PASSWORD_ARG, PROFILE, public


@HANDLERS.add("get_user_activity", write=False, privilege=AUTH, params=Params.WRITE, args=page())
async def get_user_activity(call: Call) -> Reply:
    """Own security log, newest first (body only, as in xyOps). API keys have none."""
    if call.who.kind != "user":
        return {"rows": [], "list": {"length": 0}}
    rows, total = await call.stores.users.security_page(call.who.id, call.params["offset"], call.params["limit"])
    return {"rows": rows, "list": {"length": total}}


# xyOps' UI sends only the profile and preference fields; anything else (privileges, roles, lockout fields,
# the stored hash) is refused by name rather than silently stored.
@HANDLERS.add("user_settings", write=True, privilege=SESSION, closed=True,
              args=(text("username", max_len=ID_LEN, doc="ignored: always the caller's own account"), *PROFILE))
async def user_settings(call: Call) -> Reply:
    """Save the caller's own preferences (the profile fields only; see PROFILE)."""
    user = copy.deepcopy(dict(call.who.record))
    user.update({k: v for k, v in call.params.items() if k != "username"})
    user["modified"] = int(time.time())
    await call.stores.users.save(call.node.fence(), user)
    return {"user": public(user)}


@HANDLERS.add("logout_all", write=True, privilege=SESSION, args=(PASSWORD_ARG,))
async def logout_all(call: Call) -> Reply:
    """End every other session of the caller (the password confirms it is really them)."""
    password = call.params["password"]
    user = call.who.record
    if not await check_password(password, str(user.get("salt", "")), str(user.get("password", ""))):
        raise ApiError("login", "Your password is incorrect.")
    ended = await call.stores.users.drop_sessions(call.node.fence(), normalize(call.who.id),
                                                  keep=call.who.session_id)  # fmt: skip
    await log_activity(call, "user_logout_all", f"Logged out {ended} other sessions", user=public(dict(user)))
    return {}
