"""Alert invocations API (digest 3.5, 3.15): multi-get, search, tickets and delete of the records the alert
evaluator writes each time an alert fires on a server (storage/alerts.py).

Reads come from Redis, so every node answers them alike. A group-limited caller sees an invocation when it shares
a group with it (xyOps' getUserLimitedAlerts) and may not change any.
"""

from __future__ import annotations

import re
from typing import Any

from storage.search.query import QueryError

from ..activity import log_activity
from ..call import Call
from ..errors import ApiError, bad_param
from ..params import MAX_PAGE, QUERY_LEN, ident, integer, page, strings, text
from ..principal import Principal
from ..registry import AUTH, HANDLERS, Reply
from .servers import group_restriction
from .tickets import check_linkable, relink

INVOCATION_ID = ident(doc="alert invocation id").with_(max_len=32, pattern="^(?:[a-z0-9_]+)$")
TICKET_ID = re.compile(r"^[a-z0-9_]{1,64}$")
MAX_TICKETS = 100
SORTERS = ("_id", "start", "end")


def invocation_visible(who: Principal, invocation: dict[str, Any]) -> bool:
    """Admins and callers without group limits see every invocation; others those sharing a group with them."""
    if who.is_admin or not who.groups:
        return True
    return any(g in who.groups for g in invocation.get("groups") or [])


def _require_unlimited(who: Principal) -> None:
    # ⚠ xyOps answers code `alert` (HTTP 500) here; a refusal of the caller's account is `access` everywhere else.
    if not who.is_admin and who.groups:
        raise ApiError("access", "Group-limited users may not manage alerts.")


def _missing(invocation_id: str) -> ApiError:
    # ⚠ xyOps answers code `alert` with its storage error; `notfound` as for every other missing record.
    return ApiError("notfound", f"Failed to locate alert invocation: {invocation_id}")


@HANDLERS.add("get_alert_invocations", write=False, privilege=AUTH,
              args=(strings("ids", required=True, max_items=MAX_PAGE, doc="ids, array or CSV"),))  # fmt: skip
async def get_alert_invocations(call: Call) -> Reply:
    """Invocations by id, in the order asked, with an `{err}` placeholder for each missing or hidden one (the same
    words for both, so nothing tells them apart)."""
    ids = call.params["ids"]
    if not ids:
        raise ApiError("api", "Missing parameter: ids")
    out: list[dict[str, Any]] = []
    for invocation_id, found in zip(ids, await call.stores.alerts.get_many(ids), strict=True):
        if found is None or not invocation_visible(call.who, found):
            out.append({"err": f"Failed to locate alert invocation: {invocation_id}"})
        else:
            out.append(found)
    return {"alerts": out}


@HANDLERS.add("search_alerts", write=False, privilege=AUTH,
              args=(text("query", max_len=QUERY_LEN, doc="search query (active, alert, groups, server, start, end, "
                                                          "jobs, tickets); empty or * = every invocation"),
                    *page(limit=1), text("sort_by", choices=SORTERS, default="_id"),
                    integer("sort_dir", -1, doc="-1 descending, 1 ascending")))  # fmt: skip
async def search_alerts(call: Call) -> Reply:
    """Search alert invocations, current (`active:true`) and past; a group-limited caller only finds those of its
    groups."""
    p = call.params
    try:
        rows, total = await call.stores.alerts.search(
            (p.get("query") or "*").strip() or "*", p["offset"], p["limit"], -1 if p["sort_dir"] < 0 else 1,
            sort_by=p["sort_by"], also=group_restriction(call.who),
        )  # fmt: skip
    except QueryError as exc:
        raise ApiError("api", f"Invalid search query: {exc}") from None
    return {"rows": rows, "list": {"length": total}}


@HANDLERS.add("manage_alert_invocation_tickets", write=True, privilege="edit_tickets", closed=True,
              args=(INVOCATION_ID, strings("tickets", required=True, max_items=MAX_TICKETS, item_len=64,
                                           doc="ticket ids: the invocation's whole list")))  # fmt: skip
async def manage_alert_invocation_tickets(call: Call) -> Reply:
    """Replace the tickets of an invocation (xyOps merges `{id, tickets}` into the record: the list is replaced);
    each ticket lists the invocation in its `alerts` too. An unknown (or hidden) ticket is refused (code `ticket`).
    (⚠ xyOps refuses any extra body key, credentials included; here credentials never count as parameters.)"""
    _require_unlimited(call.who)
    invocation_id = call.params["id"]
    tickets = list(dict.fromkeys(call.params["tickets"]))
    for ticket in tickets:
        if not TICKET_ID.fullmatch(ticket):
            raise bad_param("tickets", f"holds an invalid ticket id {ticket[:64]!r} (a-z 0-9 _ only)")
    await check_linkable(call, tickets)
    before: list[str] = []

    def replace(rec: dict[str, Any]) -> dict[str, Any]:
        before[:] = [str(t) for t in rec.get("tickets") or []]
        return {**rec, "tickets": tickets}

    changed = await call.stores.alerts.update(call.node.fence(), invocation_id, replace)
    if changed is None:
        raise _missing(invocation_id)
    await relink(call, "alerts", invocation_id, before, tickets)
    await log_activity(call, "alert_update_tickets", f"Updated the tickets of alert invocation {invocation_id}",
                       alert=_summary(changed))  # fmt: skip
    return {}


@HANDLERS.add("delete_alert_invocation", write=True, privilege="delete_alerts", args=(INVOCATION_ID,))
async def delete_alert_invocation(call: Call) -> Reply:
    """Delete one invocation and its search entries."""
    _require_unlimited(call.who)
    invocation_id = call.params["id"]
    found = await call.stores.alerts.get(invocation_id)
    if found is None:
        raise _missing(invocation_id)
    if found.get("active"):
        # ⚠ xyOps deletes it and its alert goes on (a later clear then runs for a record that is gone); here an
        # active one is refused: it can be deleted once it clears.
        raise ApiError("alert", f"Alert invocation {invocation_id} is active; it can be deleted once it clears.")
    if not await call.stores.alerts.delete(call.node.fence(), invocation_id):
        raise _missing(invocation_id)
    await log_activity(call, "alert_delete_invocation", f"Deleted alert invocation {invocation_id}",
                       alert=_summary(found))  # fmt: skip
    return {}


def _summary(invocation: dict[str, Any]) -> dict[str, Any]:
    """What an activity record keeps of an invocation: who, what and when, not its action results."""
    keep = ("id", "alert", "server", "groups", "active", "date", "modified", "message", "jobs", "tickets")
    return {k: invocation[k] for k in keep if k in invocation}
