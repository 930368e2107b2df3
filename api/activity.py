"""Activity records (digest 3.15): one per mutation, with a scrubbed copy of the object."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from storage.ids import generate_id

from .call import Call

# Never copied into an activity record, at any depth.
SECRET_FIELDS = frozenset({"password", "salt", "key", "plain_key", "new_password", "old_password", "csrf_token",
                           "session_id", "fields", "value", "values", "encrypted"})  # fmt: skip
_HEADERS_KEPT = ("user-agent", "referer", "origin", "x-forwarded-for", "host")


def scrub(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: scrub(v) for k, v in value.items() if k not in SECRET_FIELDS}
    if isinstance(value, list):
        return [scrub(v) for v in value]
    return value


def build_record(call: Call | None, action: str, description: str, username: str = "",
                 **objects: Any) -> dict[str, Any]:  # fmt: skip
    who = username or (call.user.username if call is not None and call.user is not None else "")
    rec: dict[str, Any] = {
        "id": generate_id("a"),
        "action": action,
        "epoch": int(time.time()),
        "description": description,
        "username": who,
    }
    keywords = {who} if who else set()
    if call is not None:
        headers = call.request.headers
        rec["ip"] = call.ip
        rec["ips"] = [ip for ip in (call.ip, headers.get("X-Forwarded-For")) if ip]
        rec["headers"] = {h: headers[h] for h in _HEADERS_KEPT if h in headers}
        if call.user is not None and call.user.kind == "key":
            rec["api_key"] = call.user.id
        keywords.update(rec["ips"])
    for name, obj in objects.items():
        clean = scrub(obj)
        rec[name] = clean
        # A list of objects (multi_update) files the record under each of them.
        for item in clean if isinstance(clean, list) else [clean]:
            if isinstance(item, Mapping):
                for field in ("id", "username"):
                    if item.get(field):
                        keywords.add(str(item[field]))
    rec["keywords"] = sorted(keywords)
    return rec


async def log_activity(call: Call, action: str, description: str, **objects: Any) -> None:
    """Write one activity record for a request (system actions call build_record(None, ...) directly)."""
    await call.stores.activity.add(build_record(call, action, description, **objects))
