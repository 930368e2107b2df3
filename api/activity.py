"""Activity records (digest 3.15): one per mutation, with a scrubbed copy of the object."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Coroutine, Mapping
from typing import Any

import structlog

from storage.connection import STORE_DOWN_ERRORS, UNAVAILABLE_ERRORS
from storage.ids import generate_id

from .call import Call

log = structlog.get_logger("podium.activity")

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


@contextlib.asynccontextmanager
async def post_commit(step: str) -> AsyncIterator[None]:
    """Run a step that follows a committed write (activity record, security log, ...): a failure is
    logged and swallowed, never answered. The write happened; an error reply would make the client
    retry it and get "already exists", or think a change it made was not made."""
    try:
        yield
    except (*STORE_DOWN_ERRORS, *UNAVAILABLE_ERRORS) as exc:
        log.warning("post_commit_step_failed", step=step, error=repr(exc))
    except Exception:
        log.exception("post_commit_step_failed", step=step)


_BACKGROUND: set[asyncio.Task[None]] = set()  # strong references while background steps run


def in_background(step: str, work: Coroutine[Any, Any, None]) -> None:
    """Run a long step that follows a committed write (a history sweep, a deleted ticket's links) after the reply,
    its failure logged as post_commit logs it."""

    async def run() -> None:
        async with post_commit(step):
            await work

    task = asyncio.get_running_loop().create_task(run())
    _BACKGROUND.add(task)
    task.add_done_callback(_BACKGROUND.discard)


async def log_activity(call: Call, action: str, description: str, **objects: Any) -> None:
    """Write one activity record for a request (system actions call build_record(None, ...) directly).
    Called after the write it records, so it never raises (see post_commit)."""
    async with post_commit(f"activity:{action}"):
        await call.stores.activity.add(build_record(call, action, description, **objects))


async def audit_activity(call: Call, action: str, description: str, **objects: Any) -> None:
    """Write an activity record that must exist before the call may answer (e.g. a secret revealed):
    unlike log_activity, a failure fails the call."""
    await call.stores.activity.add(build_record(call, action, description, **objects))
