"""get_multiple (several lists in one call) and search_revision_history (definition changes over time)."""

from __future__ import annotations

import time
from typing import Any

from storage.definitions import Family

from ..call import Call
from ..definitions import FAMILY_SPECS, shown
from ..errors import ApiError
from ..params import QUERY_LEN, flag, strings, text
from ..principal import require_unrestricted
from ..registry import AUTH, HANDLERS, Reply
from .activity import PAGING, activity_page, without_request_info

LISTS = ("api_keys", "groups", "plugins", "categories", "events", "channels", "web_hooks", "buckets", "secrets",
         "monitors", "alerts", "tags", "roles")  # fmt: skip
REVISION_TYPES = {"alerts": "alert", "categories": "category", "channels": "channel", "events": "event",
                  "groups": "group", "monitors": "monitor", "plugins": "plugin", "tags": "tag",
                  "web_hooks": "web_hook", "buckets": "bucket", "secrets": "secret", "tickets": "ticket",
                  "roles": "role"}  # fmt: skip
_ADMIN_LISTS = frozenset({"api_keys"})


def _wanted(names: list[str]) -> tuple[list[str], bool]:
    """The list names asked for, and whether they were asked for as "all"."""
    if not names:
        raise ApiError("api", "Missing parameter: lists")
    if names == ["all"]:
        return list(LISTS), True
    for name in names:
        if name not in LISTS:
            raise ApiError("admin", f"Unknown list: {name}")
    return names, False


_FLAGS = ("jobs", "alerts", "state", "stats", "servers", "serverCache")


@HANDLERS.add("get_multiple", write=False, privilege=AUTH,
              args=(strings("lists", required=True, max_items=len(LISTS), doc="list names, or all"),
                    *(flag(name, False) for name in _FLAGS)))  # fmt: skip
async def get_multiple(call: Call) -> Reply:
    """Raw (unfiltered) lists, so category- or group-limited callers are refused outright."""
    require_unrestricted(call.who)
    reply: dict[str, Any] = {"epoch": int(time.time())}
    names, every = _wanted(call.params["lists"])
    for name in names:
        if name in _ADMIN_LISTS and not call.who.is_admin:
            if every:  # "all" = every list this caller may read
                continue
            raise ApiError("access", f"Only administrators may list {name}.")
        spec = FAMILY_SPECS.get(name)
        rows = await call.stores.defs.all(spec.family if spec else Family(name))
        reply[name] = [shown(spec, r) for r in rows] if spec else list(rows)
    p = call.params
    if p["jobs"]:
        reply["activeJobs"] = {}
        reply["internalJobs"] = {str(j["id"]): j for j in await call.stores.internal.running()}
    if p["alerts"]:  # '<server>-<alert id>' -> the active invocation (xyOps activeAlerts)
        active = await call.stores.alertstate.active()
        found = await call.stores.alerts.get_many(list(active.values()))
        reply["activeAlerts"] = {key: rec for key, rec in zip(active, found, strict=True) if rec is not None}
    if p["state"]:
        reply["state"] = await call.stores.state.get()
    if p["stats"]:  # the daily counters (xyOps sends its whole stats object; `currentDay` is what they count)
        reply["stats"] = {"currentDay": await call.stores.stats.today(time.time())}
    for name in ("servers", "serverCache"):
        if p[name]:
            reply[name] = {}
    return reply


def _revision_filter(kind: str) -> str:
    return "action:" + "|".join(f"{kind}_{verb}" for verb in ("create", "update", "delete", "multi_update"))


@HANDLERS.add("search_revision_history", write=False, privilege=AUTH,
              args=(text("type", required=True, choices=REVISION_TYPES), text("query", max_len=QUERY_LEN), *PAGING))
async def search_revision_history(call: Call) -> Reply:
    """Every create/update/delete of one definition type, newest first (activity records)."""
    kind_plural = call.params["type"]
    kind = REVISION_TYPES[kind_plural]
    query = (call.params.get("query") or "*").strip() or "*"
    rows, total = await activity_page(call, query, also=[_revision_filter(kind)])
    spec = FAMILY_SPECS.get(kind_plural)
    if spec is not None and spec.access is not None and not call.who.is_admin:
        # A limited user sees the history of objects it may see now (a copy rides in each record).
        rows = [r for r in rows if isinstance(r.get(kind), dict) and spec.access(call.who, r[kind])]
    return {"rows": without_request_info(rows), "list": {"length": total}}
