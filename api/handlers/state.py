"""Global state and the cluster view (digest 3.16, get_servers' `masters`)."""

from __future__ import annotations

from typing import Any

from storage.families import EVENTS

from ..activity import log_activity
from ..call import Call
from ..errors import ApiError, bad_param
from ..params import OBJECT_BYTES, encoded_size
from ..registry import ADMIN, AUTH, HANDLERS, Reply
from ..validate import RESERVED_WORDS
from .servers import visible_online

_PATH_PART = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")


@HANDLERS.add("get_global_state", write=False, privilege=AUTH, args=())
async def get_global_state(call: Call) -> Reply:
    """The state document, with `events{id: {...}}` from the per-event state the primary keeps (the scheduler
    cursor, nth count, round-robin counter and job totals live in their own keys)."""
    state = dict(await call.stores.state.get())
    stores = call.stores
    events: dict[str, dict[str, Any]] = {}
    for name, values in (("cursor", await stores.jobs.cursors()), ("robin", await stores.jobs.robin_counters()),
                         ("nth", await stores.jobs.nth_counters())):  # fmt: skip
        for event_id, value in values.items():
            events.setdefault(event_id, {})[name] = value
    ids = [str(e["id"]) for e in await stores.defs.all(EVENTS)]
    for event_id, totals in (await stores.actions.event_states(ids)).items():
        events.setdefault(event_id, {}).update(totals)
    state["events"] = events
    return {"state": state}


def _check_path(path: str) -> None:
    parts = path.split(".")
    for part in parts:
        if not part or not set(part) <= _PATH_PART:
            raise ApiError("api", f"Invalid state path: {path}")
        if part in RESERVED_WORDS:
            raise ApiError("api", f"State path uses a reserved word: {path}")


@HANDLERS.add("update_global_state", write=True, privilege=ADMIN, args=())
async def update_global_state(call: Call) -> Reply:
    """Body of "dot.path": value pairs, applied together; one `state_update` activity per key."""
    changes: dict[str, Any] = dict(call.params)
    if not changes:
        raise ApiError("api", "No state changes were given.")
    for path, value in changes.items():
        _check_path(path)
        try:
            too_big = encoded_size(value) > OBJECT_BYTES
        except ValueError as exc:
            raise bad_param(path, str(exc)) from None
        if too_big:
            raise bad_param(path, f"is larger than {OBJECT_BYTES} bytes")
    await call.stores.state.update(call.node.fence(), changes)
    for path, value in changes.items():
        await log_activity(call, "state_update", f"Global state updated: {path}", state={"path": path, "value": value})
    return {}


@HANDLERS.add("get_servers", write=False, privilege=AUTH, args=())
async def get_servers(call: Call) -> Reply:
    """`servers`: the online agents the caller may see, by id; `masters`: every live conductor node."""
    node = call.node
    primary_id = node.election.primary_id
    masters: dict[str, Any] = {}
    for live in node.registry.view:
        rec = live.record
        masters[rec.id] = {
            "id": rec.id,
            "hostname": rec.hostname,
            "url": rec.url,
            "online": True,
            "master": rec.id == primary_id,
            "date": int(rec.started),
            "version": rec.version,
            "ping": live.heartbeat_age_ms,
            "stats": {
                "load": rec.load, "pid": rec.pid, "epoch": rec.epoch, "role": rec.role, "loop_lag_ms": rec.loop_lag_ms,
            },
        }
    return {"servers": await visible_online(call), "masters": masters}
