"""Validation of `actions` and `limits` lists (digest 3.1), shared by categories, events and config.

Every error is code `api` and names the list, the position and the field. References (web hooks,
channels, events, plugins, buckets, users) must point at objects that exist.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from cluster.actions.plan import JOB_ACTION_TYPES, PUSH_CONDITIONS
from storage.definitions import Family
from storage.stores import Stores

from .errors import ApiError

CONDITIONS = frozenset({*PUSH_CONDITIONS, "alert_new", "alert_cleared"})
LIMIT_TYPES = frozenset({"time", "job", "log", "mem", "cpu", "retry", "queue", "file", "day", "tag"})
BUCKET_SYNC = frozenset({"data", "files", "data_and_files"})
# Action type -> (field, family name) references that must exist when present.
_REFS: dict[str, tuple[tuple[str, str], ...]] = {
    "web_hook": (("web_hook", "web_hooks"),),
    "run_event": (("event_id", "events"),),
    "channel": (("channel_id", "channels"),),
    "store": (("bucket_id", "buckets"),),
    "fetch": (("bucket_id", "buckets"),),
    "plugin": (("plugin_id", "plugins"),),
}
_REQUIRED: dict[str, tuple[str, ...]] = {
    "web_hook": ("web_hook",), "run_event": ("event_id",), "channel": ("channel_id",), "store": ("bucket_id",),
    "fetch": ("bucket_id",), "tag": ("tags",), "label": ("label",), "plugin": ("plugin_id",), "email": (),
    "ticket": (), "snapshot": (), "suspend": (), "disable": (), "delete": (),
}  # fmt: skip


def _fail(where: str, index: int, problem: str) -> ApiError:
    return ApiError("api", f"{where}[{index}]: {problem}")


def _items(value: Any, where: str) -> list[Mapping[str, Any]]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, Mapping) for v in value):
        raise ApiError("api", f"Parameter '{where}' must be an array of objects.")
    return list(value)


async def _exists(stores: Stores, family: str, obj_id: Any) -> bool:
    return isinstance(obj_id, str) and await stores.defs.get(Family(family), obj_id) is not None


async def _check_action(stores: Stores, action: Mapping[str, Any], where: str, i: int) -> None:
    for key in ("enabled", "condition", "type"):
        if key not in action:
            raise _fail(where, i, f"missing '{key}'")
    condition = action["condition"]
    if not isinstance(condition, str) or not (condition in CONDITIONS or re.fullmatch(r"tag:\w+", condition)):
        raise _fail(where, i, f"unknown condition '{condition}'")
    kind = action["type"]
    if kind not in JOB_ACTION_TYPES:
        raise _fail(where, i, f"unknown action type '{kind}'")
    for key in _REQUIRED.get(kind, ()):
        if action.get(key) in (None, "", []):
            raise _fail(where, i, f"type '{kind}' needs '{key}'")
    for key, family in _REFS.get(kind, ()):
        if not await _exists(stores, family, action.get(key)):
            what = family[:-1].replace("_", " ")
            raise _fail(where, i, f"'{key}' refers to an unknown {what}: {action.get(key)}")
    if kind == "email":
        await _check_email(stores, action, where, i)
    if kind in ("store", "fetch") and action.get("bucket_sync") not in (None, *BUCKET_SYNC):
        raise _fail(where, i, f"bad 'bucket_sync': {action.get('bucket_sync')}")
    if kind == "tag" and not isinstance(action.get("tags"), list):
        raise _fail(where, i, "'tags' must be an array")


async def _check_email(stores: Stores, action: Mapping[str, Any], where: str, i: int) -> None:
    users, email = action.get("users") or [], action.get("email") or ""
    if not isinstance(users, list) or not isinstance(email, str) or not (users or email.strip()):
        raise _fail(where, i, "type 'email' needs 'users' or 'email'")
    for username in users:
        if not isinstance(username, str) or await stores.users.get(username) is None:
            raise _fail(where, i, f"'users' refers to an unknown user: {username}")


async def validate_actions(stores: Stores, actions: Any, where: str = "actions") -> list[dict[str, Any]]:
    out = []
    for i, action in enumerate(_items(actions, where)):
        await _check_action(stores, action, where, i)
        out.append(dict(action))
    return out


def _number(limit: Mapping[str, Any], key: str, where: str, i: int, *, required: bool) -> None:
    value = limit.get(key)
    if value is None:
        if required:
            raise _fail(where, i, f"type '{limit.get('type')}' needs '{key}'")
        return
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise _fail(where, i, f"'{key}' must be a number of 0 or more")


def validate_limits(limits: Any, where: str = "limits") -> list[dict[str, Any]]:
    out = []
    rows = _items(limits, where)
    kinds = [row.get("type") for row in rows]
    for i, limit in enumerate(rows):
        if "enabled" not in limit:
            raise _fail(where, i, "missing 'enabled'")
        kind = limit.get("type")
        if kind not in LIMIT_TYPES:
            raise _fail(where, i, f"unknown limit type '{kind}'")
        if kind == "time":
            _number(limit, "duration", where, i, required=True)
        elif kind in ("mem", "cpu", "retry"):
            _number(limit, "amount", where, i, required=True)
            _number(limit, "duration", where, i, required=False)
        elif kind == "file":
            _number(limit, "amount", where, i, required=False)
            _number(limit, "size", where, i, required=False)
        else:
            _number(limit, "amount", where, i, required=True)
        if kind == "job":
            _number(limit, "weight", where, i, required=False)
        if kind == "queue" and limit.get("enabled") and "job" not in kinds:
            raise _fail(where, i, "a 'queue' limit needs an enabled 'job' limit")
        out.append(dict(limit))
    return out

