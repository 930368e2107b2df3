"""Tickets API (digest 3.6, xyOps lib/api/tickets.js): get, search, create (from a job or an alert invocation too),
update with its change history, comments, delete (storage/tickets.py, cluster/tickets/).

Writes run on the primary (a satellite answers `master`; ⚠ xyOps lets most ticket calls run on any node); reads
come from Redis, so every node answers them alike. A category-limited caller sees and changes only tickets of its
categories (⚠ as in xyOps, a ticket without a category is not one of them). Only the fields a client may set are
taken (cluster/tickets/fields.py): num, author, dates, history, files and links are the server's. Every body a
reply carries is sanitized Markdown. Mail is not sent here: `notify` marks each place a change is mailed.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from cluster.node import NotPrimary
from cluster.tickets import changes as history
from cluster.tickets.fields import (
    BODY_LEN,
    EDITABLE,
    MAX_CHANGES,
    MAX_FILES,
    SUBJECT_LEN,
    TicketError,
    clean,
    safe_body,
    sanitize_markdown,
)
from cluster.tickets.service import activity_copy, check_references, open_ticket
from storage.errors import FencedError
from storage.families import EVENTS
from storage.ids import generate_id
from storage.search.query import QueryError
from storage.tickets import ticket_files_prefix

from ..activity import in_background, log_activity, post_commit
from ..call import Call
from ..errors import ApiError
from ..params import MAX_PAGE, QUERY_LEN, anything, flag, ident, integer, obj, page, strings, text
from ..principal import Principal, can_category
from ..registry import AUTH, HANDLERS, Reply
from ..uploads import UploadLimits, discard_files, store_spooled
from .events import check_param_values
from .jobs import can_see

_ID_PATTERN = "^(?:[a-z0-9_]+)$"
TICKET_ID = ident(doc="ticket id").with_(max_len=32, pattern=_ID_PATTERN)
SORTERS = ("_id", "num", "modified")
LIST_BYTES = 64 * 1024
# Failures after which a ticket's new files are certainly not listed on it (deleted again); after any other (the
# store's reply lost) the write may have landed, so the files stay.
REFUSALS = (TicketError, ApiError, FencedError, NotPrimary)
UNLINK_MAX = 1000  # jobs and invocations a deleted ticket is taken off (a ticket lists at most MAX_LINKS)
MAX_LINKS = 1000  # jobs, and invocations, one ticket may be linked to

# The fields a client may send to create_ticket and update_ticket, declared loosely: their checks are the ticket
# rules' (code `ticket`, as xyOps answers), not the transport's.
FIELDS = (
    text("subject", max_len=SUBJECT_LEN, doc="one line; HTML is stripped"),
    text("body", max_len=BODY_LEN, doc="Markdown; HTML is removed"),
    text("type", max_len=64, doc="issue, feature, release, change, maintenance, question or other"),
    text("status", max_len=64, doc="open, closed or draft"),
    text("category", max_len=128, doc="category id ('' = none)"),
    text("server", max_len=128, doc="server id ('' = none)"),
    anything("assignees", max_bytes=LIST_BYTES, doc="usernames"),
    anything("cc", max_bytes=LIST_BYTES, doc="usernames"),
    anything("notify", max_bytes=LIST_BYTES, doc="email addresses"),
    text("due", max_len=200, doc="epoch seconds, an offset (seconds or text such as '7 days': local midnight of "
                                 "that day) or 0 / '' for none"),
    anything("tags", max_bytes=LIST_BYTES, doc="tag ids"),
    anything("events", max_bytes=LIST_BYTES, doc="event stubs {id, targets, algo, tags, params}"),
)


async def notify(call: Call, ticket: Mapping[str, Any], changes: Sequence[Mapping[str, Any]], *,
                 immediate: bool) -> None:  # fmt: skip
    """Mail the ticket's assignees, cc and notify addresses about `changes`: at once for a new ticket
    (`immediate`), else debounced (storage/ticketmail.py; the primary's TicketMailer sends)."""
    await call.stores.ticket_outbox.notify(str(ticket["id"]), changes, immediate=immediate)


def _error(exc: TicketError) -> ApiError:
    return ApiError(exc.code, exc.message)


def _category_refusal(category: str) -> TicketError:
    return TicketError(f"You do not have the required account privileges to access category ID {category}.",
                       code="access")  # fmt: skip


def _check_category(who: Principal, category: Any) -> None:
    if not can_category(who, str(category or "")):
        raise _category_refusal(str(category or ""))


def _categories(who: Principal) -> frozenset[str] | None:
    """The categories a limited caller's searches are restricted to (None: every ticket)."""
    return None if who.is_admin or not who.categories else who.categories


def _now() -> int:
    return int(time.time())


def _missing(ticket_id: str) -> ApiError:
    # ⚠ xyOps answers code `ticket` when update / delete / comment calls miss; `notfound` as for every missing record.
    return ApiError("notfound", f"Failed to load ticket: ID: {ticket_id}")


async def update_ticket_record(
    call: Call, ticket_id: str, change: Callable[[dict[str, Any]], dict[str, Any] | None]
) -> dict[str, Any] | None:
    """TicketStore.update behind this node's fence, a record past the store's size limit refused with code
    `ticket` rather than failing the call."""
    try:
        return await call.stores.tickets.update(call.node.fence(), ticket_id, change)
    except ValueError as exc:
        raise TicketError(f"Failed to update ticket: {ticket_id}: {exc}") from None


async def changed_ticket(
    call: Call, ticket_id: str, change: Callable[[dict[str, Any]], dict[str, Any] | None]
) -> dict[str, Any]:
    """update_ticket_record for a call's reply: a refusal answers its own code, a missing ticket `notfound`."""
    try:
        ticket = await update_ticket_record(call, ticket_id, change)
    except TicketError as exc:
        raise _error(exc) from None
    if ticket is None:
        raise _missing(ticket_id)
    return ticket


def _brief(ticket: Mapping[str, Any]) -> dict[str, Any]:
    return {k: ticket.get(k) for k in ("id", "num", "subject")}


async def _checked_fields(call: Call, now: int) -> dict[str, Any]:
    """The client's ticket fields, cleaned; every tag, category and event named must exist and event params must
    pass their event's field rules (code `ticket`)."""
    fields = clean(call.params, now)
    await check_references(call.stores, fields)
    for stub in fields.get("events") or []:
        event = await call.stores.defs.get(EVENTS, str(stub["id"]))
        try:
            await check_param_values(dict(stub.get("params") or {}), list((event or {}).get("fields") or []),
                                     "Ticket Event")  # fmt: skip
        except ApiError as exc:
            raise TicketError(exc.description) from None
    return fields


# -- reads ------------------------------------------------------------------------------------------------------


@HANDLERS.add("get_ticket", write=False, privilege=AUTH,
              args=(TICKET_ID.with_(required=False), integer("num", ge=1, le=2**32, doc="ticket number")))
async def get_ticket(call: Call) -> Reply:
    """One ticket by `id` or by `num`, whole (body and changes)."""
    ticket_id, num = call.params.get("id"), call.params.get("num")
    if not ticket_id and not num:
        raise ApiError("ticket", "No ticket ID or number specified.")
    if ticket_id:
        ticket = await call.stores.tickets.get(ticket_id)
        if ticket is None:
            raise ApiError("notfound", f"Failed to load ticket: ID: {ticket_id}")
    else:
        ticket = await call.stores.tickets.get_by_num(int(num or 0))
        if ticket is None:
            raise ApiError("notfound", f"Ticket not found: {num}")
    try:
        _check_category(call.who, ticket.get("category"))
    except TicketError as exc:
        raise _error(exc) from None
    return {"ticket": safe_body(ticket)}


@HANDLERS.add("get_tickets", write=False, privilege=AUTH,
              args=(strings("ids", required=True, max_items=MAX_PAGE, item_len=64, doc="ids, array or CSV"),
                    flag("verbose", False, doc="with body and changes")))  # fmt: skip
async def get_tickets(call: Call) -> Reply:
    """Tickets by id, in the order asked, with an `{err}` placeholder for each missing or hidden one (the same
    words for both)."""
    ids = call.params["ids"]
    if not ids:
        raise ApiError("ticket", "Missing or malformed ids parameter.")
    out: list[dict[str, Any]] = []
    for ticket_id, found in zip(ids, await call.stores.tickets.get_many(ids), strict=True):
        if found is None or not can_category(call.who, str(found.get("category") or "")):
            out.append({"err": f"Failed to locate ticket: {ticket_id}"})
        elif call.params["verbose"]:
            out.append(safe_body(found))
        else:
            out.append({k: v for k, v in found.items() if k not in ("body", "changes")})
    return {"tickets": out}


@HANDLERS.add("search_tickets", write=False, privilege=AUTH,
              args=(text("query", max_len=QUERY_LEN, doc="search query (type, num, status, category, username, "
                                                          "assignees, cc, jobs, alerts, tags, created, modified, "
                                                          "due, server, subject, body, changes; bare words: author, "
                                                          "subject and body); empty or * = every ticket"),
                    *page(limit=1), text("sort_by", choices=SORTERS, default="_id"),
                    integer("sort_dir", -1, doc="-1 descending, 1 ascending"),
                    flag("compact", False, doc="no body, and `changes` as a count")))  # fmt: skip
async def search_tickets(call: Call) -> Reply:
    """Search tickets, newest first by default; a category-limited caller finds only those of its categories."""
    p = call.params
    try:
        rows, total = await call.stores.tickets.search(
            (p.get("query") or "*").strip() or "*", p["offset"], p["limit"], -1 if p["sort_dir"] < 0 else 1,
            sort_by=p["sort_by"], categories=_categories(call.who),
        )  # fmt: skip
    except QueryError as exc:
        raise ApiError("ticket", f"Failed DB search: {exc}") from None  # xyOps' code for a bad ticket query
    if p["compact"]:
        rows = [{**{k: v for k, v in r.items() if k != "body"}, "changes": len(r.get("changes") or [])} for r in rows]
    else:
        rows = [safe_body(r) for r in rows]
    return {"rows": rows, "list": {"length": total}}


# -- create -------------------------------------------------------------------------------------------------------


@HANDLERS.add("create_ticket", write=True, privilege="create_tickets",
              args=(TICKET_ID.with_(required=False, doc="ticket id (default: generated)"),
                    text("subject", required=True, max_len=SUBJECT_LEN), *FIELDS[1:],
                    text("template", max_len=32, doc="`job` (with `job`) or `alert` (with `alert`): generate the "
                                                     "body (and a missing subject) from it"),
                    ident("job", required=False, doc="job id for the `job` template"),
                    ident("alert", required=False, doc="alert invocation id for the `alert` template")))
async def create_ticket(call: Call) -> Reply:
    """Create a ticket (status `open` unless given); answers it as stored, with its number and history."""
    p = call.params
    if not str(p["subject"]).strip():  # required with a template too (xyOps); only actions leave it to the template
        raise ApiError("api", "Missing parameter: subject")
    files: list[dict[str, Any]] = []
    try:
        fields = await _checked_fields(call, _now())
        _check_category(call.who, fields.get("category", ""))
        job, invocation = await _template_source(call, str(p.get("template") or ""))
        ticket_id = p.get("id") or generate_id("t")
        if call.files and p.get("id") and await call.stores.tickets.get(ticket_id) is not None:
            raise TicketError(f"Failed to create ticket: a ticket with the ID {ticket_id} exists.")  # before any file
        if call.files:  # a multipart create: its files are the ticket's from the start
            files = await store_spooled(call, call.files, prefix=ticket_files_prefix(ticket_id).rstrip("/"),
                                        limits=UploadLimits.of(call).lowered(files=MAX_FILES),
                                        owner={"ticket": ticket_id})  # fmt: skip
        ticket = await open_ticket(call.node, {**{k: p[k] for k in EDITABLE if k in p}, "id": ticket_id},
                                   username=call.who.username, job=job, invocation=invocation,
                                   template=str(p.get("template") or ""), link=False,
                                   base_url=call.settings.public_url, activity=False, files=files)  # fmt: skip
    except REFUSALS as exc:  # refused for certain: no ticket lists the files (any other failure keeps them)
        await discard_files(call, files)
        if isinstance(exc, TicketError):
            raise _error(exc) from None
        raise
    await log_activity(call, "ticket_create", f"Created ticket #{ticket['num']}: {ticket['subject']}",
                       ticket=activity_copy(ticket))  # fmt: skip
    if ticket.get("status") != "draft":
        await notify(call, ticket, ticket["changes"], immediate=True)
    return {"ticket": safe_body(ticket)}


async def _template_source(call: Call, template: str) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """The job or alert invocation a template names (the caller must be able to see it)."""
    if template == "job":
        job_id = call.params.get("job")
        job = await call.stores.jobs.get(job_id) if job_id else None
        if job is None or not can_see(call.who, job):
            raise TicketError(f"Failed to create ticket: Job not found: {job_id or '(none)'}")
        return job, None
    if template == "alert":
        alert_id = call.params.get("alert")
        invocation = await call.stores.alerts.get(alert_id) if alert_id else None
        if invocation is None:
            raise TicketError(f"Failed to create ticket: Alert invocation not found: {alert_id or '(none)'}")
        return None, invocation
    return None, None


# -- update ---------------------------------------------------------------------------------------------------------


@HANDLERS.add("update_ticket", write=True, privilege="edit_tickets", args=(TICKET_ID, *FIELDS))
async def update_ticket(call: Call) -> Reply:
    """Change some fields of a ticket; each changed tracked field adds a change entry (none while it is a draft),
    and entries of one key within a calendar minute collapse into the last. Answers the ticket as stored."""
    ticket_id = call.params["id"]
    recorded: list[dict[str, Any]] = []
    try:
        fields = await _checked_fields(call, _now())
    except TicketError as exc:
        raise _error(exc) from None

    def change(current: dict[str, Any]) -> dict[str, Any]:
        _check_category(call.who, current.get("category"))
        if "category" in fields:
            _check_category(call.who, fields["category"])
        now = _now()
        found = history.detect(current, fields, username=call.who.username, date=now)
        recorded[:] = found
        new = {**current, **fields, "modified": now}
        if found:
            entries = history.collapse([*(current.get("changes") or []), *found])
            new["changes"] = entries if len(entries) <= MAX_CHANGES else [entries[0], *entries[-MAX_CHANGES + 1 :]]
        return new

    ticket = await changed_ticket(call, ticket_id, change)
    await log_activity(call, "ticket_update", f"Updated ticket #{ticket.get('num')}: {ticket.get('subject')}",
                       ticket=activity_copy(ticket))  # fmt: skip
    if recorded:
        await notify(call, ticket, recorded, immediate=False)
    return {"ticket": safe_body(ticket)}


def _comment(raw: Mapping[str, Any]) -> dict[str, Any]:
    """A client's new change entry: its type and body only (⚠ xyOps keeps any key, so a client could forge
    `key`/`value` entries); the server sets id, username and date."""
    kind = raw.get("type")
    if not kind:
        raise TicketError("Change requires a 'type' parameter.")
    if kind not in ("comment", "change"):
        raise TicketError(f"Unknown change type: {str(kind)[:32]}")  # ⚠ xyOps stores any type
    body = raw.get("body", "")
    if not isinstance(body, str) or len(body) > BODY_LEN:
        raise TicketError("Malformed ticket parameter: change.body")
    return {"type": kind, "body": sanitize_markdown(body)}


@HANDLERS.add("add_ticket_change", write=True, privilege="edit_tickets",
              args=(TICKET_ID, obj("change", max_bytes=BODY_LEN * 4 + 4096, doc="{type: comment, body}")))
async def add_ticket_change(call: Call) -> Reply:
    """Add a comment (or a note) to a ticket's history; answers the ticket."""
    ticket_id = call.params["id"]
    raw = call.params.get("change")
    try:
        if not raw:
            raise TicketError("Missing required 'change' parameter.")
        entry = _comment(raw)
        entry = {"id": generate_id("c"), **entry, "username": call.who.username, "date": _now()}

        def add(current: dict[str, Any]) -> dict[str, Any]:
            _check_category(call.who, current.get("category"))
            entries = list(current.get("changes") or [])
            if len(entries) >= MAX_CHANGES:
                raise TicketError(f"The ticket has reached its maximum of {MAX_CHANGES} changes.")
            return {**current, "changes": [*entries, entry], "modified": entry["date"]}

        ticket = await changed_ticket(call, ticket_id, add)
    except TicketError as exc:
        raise _error(exc) from None
    await log_activity(call, "ticket_add_change", f"Added a {entry['type']} to ticket #{ticket.get('num')}",
                       ticket=_brief(ticket), change=entry)  # fmt: skip
    if ticket.get("status") != "draft":
        await notify(call, ticket, [entry], immediate=False)
    return {"ticket": safe_body(ticket)}


@HANDLERS.add("update_ticket_change", write=True, privilege="edit_tickets",
              args=(TICKET_ID, ident("change_id", doc="change id").with_(max_len=64, pattern=r"^(?:\w+)$"),
                    obj("change", max_bytes=BODY_LEN * 4 + 4096, doc="{body}: the new text"),
                    flag("delete", False, doc="delete the comment (an audit entry stays)")))  # fmt: skip
async def update_ticket_change(call: Call) -> Reply:
    """Edit or delete a comment: one's own, or anyone's as an admin. A delete leaves a `delete` audit entry
    (unless the ticket is a draft)."""
    p = call.params
    ticket_id, change_id, delete = p["id"], p["change_id"], bool(p["delete"])
    raw = p.get("change")
    audit: list[dict[str, Any]] = []
    touched: dict[str, Any] = {}

    def edit(current: dict[str, Any]) -> dict[str, Any]:
        _check_category(call.who, current.get("category"))
        entries = [dict(c) for c in current.get("changes") or [] if isinstance(c, Mapping)]
        at = next((i for i, c in enumerate(entries) if c.get("id") == change_id), None)
        if at is None:
            raise TicketError(f"Change not found in ticket: {ticket_id}/{change_id}")
        if entries[at].get("username") != call.who.username and not call.who.is_admin:
            # ⚠ xyOps answers code `ticket`; a refusal of the caller's account is `access` everywhere else.
            raise TicketError("You do not have the required privileges to update comments posted by others.",
                              code="access")  # fmt: skip
        now = _now()
        touched.clear()
        touched.update(entries[at])
        if delete:
            del entries[at]
            audit.clear()
            if current.get("status") != "draft":
                audit.append({"type": "change", "username": call.who.username, "date": now, "key": "delete"})
                entries += audit
        else:
            if not raw:
                raise TicketError("Missing required 'change' parameter.")
            body = raw.get("body", entries[at].get("body", ""))
            if not isinstance(body, str) or len(body) > BODY_LEN:
                raise TicketError("Malformed ticket parameter: change.body")
            # ⚠ xyOps merges every key the client sends into the entry (its id, author and date too): only the body
            # changes here.
            entries[at] = {**entries[at], "body": sanitize_markdown(body), "edited": now}
            touched.update(entries[at])
        return {**current, "changes": entries, "modified": now}

    ticket = await changed_ticket(call, ticket_id, edit)
    extra = {"delete": True} if delete else {}
    await log_activity(call, "ticket_update_change",
                       f"{'Deleted' if delete else 'Edited'} a comment of ticket #{ticket.get('num')}",
                       ticket=_brief(ticket), change=dict(touched), **extra)  # fmt: skip
    if audit:
        await notify(call, ticket, audit, immediate=False)
    return {"ticket": safe_body(ticket)}


# -- delete ---------------------------------------------------------------------------------------------------------


@HANDLERS.add("delete_ticket", write=True, privilege="delete_tickets", args=(TICKET_ID,))
async def delete_ticket(call: Call) -> Reply:
    """Delete a ticket and its search entries; its files, and its id in the jobs and alert invocations linked to
    it, go in the background."""
    ticket_id = call.params["id"]

    def check(current: dict[str, Any]) -> None:
        _check_category(call.who, current.get("category"))

    try:
        gone = await call.stores.tickets.delete(call.node.fence(), ticket_id, check)
    except TicketError as exc:
        raise _error(exc) from None
    if gone is None:
        raise _missing(ticket_id)
    await log_activity(call, "ticket_delete", f"Deleted ticket #{gone.get('num')}: {gone.get('subject')}",
                       ticket=activity_copy(gone))  # fmt: skip
    in_background("ticket_delete", _after_delete(call, gone))
    return {}


async def _after_delete(call: Call, ticket: Mapping[str, Any]) -> None:
    """What a deleted ticket leaves: its files, and its id in the `tickets` of jobs and invocations (at most
    UNLINK_MAX of each; a failure is logged: the ticket is gone either way)."""
    node, ticket_id = call.node, str(ticket["id"])
    async with post_commit("ticket_files"):
        await node.stores.files.delete_prefix(ticket_files_prefix(ticket_id))
    async with post_commit("ticket_jobs"):
        jobs, _ = await node.stores.jobs.search(f"tickets:{ticket_id}", offset=0, limit=UNLINK_MAX)
        for job in jobs:
            await _drop_from_job(call, str(job["id"]), ticket_id)
    async with post_commit("ticket_alerts"):
        found, _ = await node.stores.alerts.search(f"tickets:{ticket_id}", 0, UNLINK_MAX)
        for invocation in found:
            await node.stores.alerts.update(node.fence(), str(invocation["id"]), _without(ticket_id))


def _without(ticket_id: str) -> Any:
    def drop(rec: dict[str, Any]) -> dict[str, Any] | None:
        tickets = [t for t in rec.get("tickets") or [] if t != ticket_id]
        return None if len(tickets) == len(rec.get("tickets") or []) else {**rec, "tickets": tickets}

    return drop


async def _drop_from_job(call: Call, job_id: str, ticket_id: str) -> None:
    jobs = call.stores.jobs
    for _ in range(20):
        got = await jobs.stored(job_id)
        if got is None:
            return
        current, digest = got
        new = _without(ticket_id)(current)
        if new is None or await jobs.swap(call.node.fence(), digest, current, new):
            return


# -- links from jobs and alert invocations (api/handlers/jobcontrol.py, alertinvocations.py) -------------------------


async def check_linkable(call: Call, ticket_ids: Sequence[str]) -> None:
    """Every ticket a job or invocation is linked to must exist and be visible to the caller (code `ticket`)."""
    for ticket_id, found in zip(ticket_ids, await call.stores.tickets.get_many(list(ticket_ids)), strict=True):
        if found is None or not can_category(call.who, str(found.get("category") or "")):
            raise ApiError("ticket", f"Unknown ticket: {ticket_id}")


async def relink(call: Call, column: str, obj_id: str, before: Sequence[str], after: Sequence[str]) -> None:
    """Make the tickets' `column` (`jobs` or `alerts`) agree with a job's or invocation's new `tickets`: `obj_id`
    added to each ticket in `after`, taken out of each only in `before`. Runs after the job or invocation is
    written (a crash in between leaves a ticket listing a link the next manage call repairs)."""
    gone = [t for t in before if t not in after]
    for ticket_id in [*after, *gone]:
        keep = ticket_id in after

        def move(rec: dict[str, Any], keep: bool = keep) -> dict[str, Any] | None:
            listed = [str(v) for v in rec.get(column) or []]
            if (obj_id in listed) == keep:
                return None
            if keep and len(listed) >= MAX_LINKS:
                raise TicketError(f"Ticket {rec.get('id')} is linked to the maximum of {MAX_LINKS} {column}.")
            return {**rec, column: [*listed, obj_id] if keep else [v for v in listed if v != obj_id]}

        try:
            await update_ticket_record(call, ticket_id, move)
        except TicketError as exc:
            raise _error(exc) from None

