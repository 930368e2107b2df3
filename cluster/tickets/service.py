"""Opening a ticket: the one path create_ticket and the `ticket` job and alert actions share.

`open_ticket` takes a partial ticket (the client's or the action's fields), the creating username and optionally
the job or alert invocation it is about; it cleans the fields (cluster/tickets/fields.py), fills the body and
subject from the job or invocation when asked (`template`), records the `created` change and stores the ticket
with its number (storage/tickets.py, fenced: the primary only). A ticket about a job or invocation lists it in
its `jobs` / `alerts` (so `search_tickets jobs:<id>` finds it); the other direction (the job's or invocation's
`tickets`) is the caller's to write, with `link_invocation` / `link_job` here, or with its own change of a live
job.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Mapping, Sequence
from typing import Any

import structlog

from cluster.actions.email import job_email_data
from cluster.actions.hookdata import alert_context
from cluster.node import NodeRuntime
from storage.errors import Conflict
from storage.families import ALERTS, CATEGORIES, EVENTS, GROUPS, PLUGINS, TAGS
from storage.ids import CLIENT_ID, generate_id
from storage.logs import log_path
from storage.stores import Stores
from storage.tickets import valid_ticket_id

from .bodies import alert_body, alert_subject, job_body, job_subject, log_excerpt
from .fields import TicketError, clean, defaults

log = structlog.get_logger("podium.tickets")

Record = dict[str, Any]
TEMPLATES = ("job", "alert")
OUTPUT_TAIL = 16 * 1024  # bytes of a job's log a ticket body quotes from (its last lines)
STORED_LOG_MAX = 4 * 1024 * 1024  # a finished log is read back for the excerpt only up to this size (gzipped)


async def check_references(stores: Stores, fields: Mapping[str, Any]) -> None:
    """Every tag, the category and every event a ticket names must exist (xyOps wording, code `ticket`)."""
    for tag in fields.get("tags") or []:
        if await stores.defs.get(TAGS, str(tag)) is None:
            raise TicketError(f"Unknown tag: {tag}")
    category = fields.get("category")
    if category and await stores.defs.get(CATEGORIES, str(category)) is None:
        raise TicketError(f"Unknown category: {category}")
    for stub in fields.get("events") or []:
        if await stores.defs.get(EVENTS, str(stub.get("id"))) is None:
            raise TicketError(f"Unknown event: {stub.get('id')}")


async def _job_output(stores: Stores, job_id: str) -> str:
    """The end of a job's log: live while it runs, else from the stored (gzipped) log if it is not too large."""
    live = await stores.logs.tail(job_id, OUTPUT_TAIL)
    if live:
        return live.decode(errors="replace")
    if not job_id:
        return ""
    info = await stores.files.stat(log_path(job_id))
    if info is None or info["size"] > STORED_LOG_MAX:
        return ""
    gz = await stores.logs.stored(job_id)
    if not gz:
        return ""
    try:
        text = zlib.decompressobj(31).decompress(gz, 64 * STORED_LOG_MAX)
    except zlib.error:
        return ""
    return text[-OUTPUT_TAIL:].decode(errors="replace")


async def _from_job(stores: Stores, job: Mapping[str, Any], base_url: str) -> tuple[str, str]:
    defs = stores.defs
    event = await defs.get(EVENTS, str(job.get("event") or ""))
    category = await defs.get(CATEGORIES, str(job.get("category") or ""))
    server = await stores.servers.get(str(job["server"])) if job.get("server") else None
    output = await _job_output(stores, str(job.get("id") or ""))
    data = job_email_data(job, event, base_url=base_url, condition="error" if job.get("code") else "success",
                          secret_key=stores.secret_key, category=category,
                          plugin=await defs.get(PLUGINS, str(job.get("plugin") or "")), server=server)  # fmt: skip
    data["log_excerpt"] = log_excerpt(output)
    return job_subject(job, event), job_body(job, data)


async def _from_invocation(stores: Stores, invocation: Mapping[str, Any], base_url: str) -> tuple[str, str]:
    server_id = str(invocation.get("server") or "")
    titles = {str(g["id"]): str(g.get("title") or g["id"]) for g in await stores.defs.all(GROUPS)}
    data = alert_context(invocation, await stores.defs.get(ALERTS, str(invocation.get("alert") or "")),
                         await stores.hosts.get(server_id), await stores.servers.get(server_id),
                         condition="alert_new", base_url=base_url, group_titles=titles)  # fmt: skip
    return alert_subject(data), alert_body(data)


async def open_ticket(
    node: NodeRuntime, fields: Mapping[str, Any], *, username: str, job: Mapping[str, Any] | None = None,
    invocation: Mapping[str, Any] | None = None, template: str = "", link: bool = True, base_url: str = "",
    activity: bool = True, files: Sequence[Mapping[str, Any]] = (),
) -> Record:  # fmt: skip
    """Store a new ticket and answer it as stored (with its `num`).

    `fields`: the partial ticket (subject, body, type, status, category, server, assignees, cc, notify, due, tags,
    events; `id` to choose one); other keys are ignored. `username`: its author (`system` for actions). `job` /
    `invocation`: the job or alert invocation record it is about: listed in the ticket's `jobs` / `alerts` unless
    `link` is False (create_ticket's templates: xyOps links those only through manage_job_tickets).
    `files`: File objects already stored under the ticket's prefix (create_ticket's multipart files).
    `template` "job" or "alert": the body (and the subject, when none is given) is generated from `job` /
    `invocation` (⚠ as xyOps, a generated body replaces any body given). `activity`: write the `ticket_create`
    activity record here (the API writes its own, with the caller's address).

    TicketError (code `ticket`, or `api` for a missing subject or a bad id) for fields that cannot be stored;
    FencedError / NotPrimary when this node is not the primary."""
    stores = node.stores
    now = int(time.time())
    cleaned = defaults(clean(fields, now))
    ticket_id = fields.get("id") or generate_id("t")
    if not isinstance(ticket_id, str) or not CLIENT_ID.fullmatch(ticket_id) or not valid_ticket_id(ticket_id):
        raise TicketError("Parameter 'id' must be 1 to 32 characters of a-z, 0-9 and _.", code="api")
    if template:
        if template not in TEMPLATES:
            raise TicketError("Failed to create ticket: Unsupported ticket template.")
        if template == "job":
            if job is None:
                raise TicketError("Failed to create ticket: a job template needs a job.")
            subject, body = await _from_job(stores, job, base_url)
        else:
            if invocation is None:
                raise TicketError("Failed to create ticket: an alert template needs an alert invocation.")
            subject, body = await _from_invocation(stores, invocation, base_url)
        cleaned["body"] = body
        cleaned["subject"] = cleaned["subject"] or subject
    if not cleaned["subject"].strip():
        raise TicketError("Missing parameter: subject", code="api")
    record: Record = {
        "id": ticket_id, **cleaned, "files": [dict(f) for f in files], "username": username, "created": now,
        "modified": now,
        "changes": [{"type": "change", "username": username, "date": now, "key": "created"}],
        "jobs": [str(job["id"])] if link and job is not None and job.get("id") else [],
        "alerts": [str(invocation["id"])] if link and invocation is not None and invocation.get("id") else [],
    }  # fmt: skip
    try:
        stored = await stores.tickets.create(node.fence(), record)
    except Conflict:
        raise TicketError(f"Failed to create ticket: a ticket with the ID {ticket_id} exists.") from None
    except ValueError as exc:
        raise TicketError(f"Failed to create ticket: {exc}") from None
    if activity:
        await record_activity(stores, "ticket_create", f"Created ticket #{stored['num']}: {stored['subject']}",
                              username, stored)  # fmt: skip
    return stored


def activity_copy(ticket: Mapping[str, Any]) -> Record:
    """What an activity record keeps of a ticket: everything but its history (xyOps)."""
    return {k: v for k, v in ticket.items() if k != "changes"}


async def record_activity(stores: Stores, action: str, description: str, username: str,
                          ticket: Mapping[str, Any]) -> None:  # fmt: skip
    """A system activity record about a ticket (written after the change; a failure is logged, never raised)."""
    record = {"id": generate_id("a"), "action": action, "epoch": int(time.time()), "description": description,
              "username": username, "ticket": activity_copy(ticket),
              "keywords": sorted({str(ticket.get("id")), username} - {""})}  # fmt: skip
    try:
        await stores.activity.add(record)
    except Exception as exc:
        log.warning("ticket_activity_failed", action=action, error=repr(exc))


async def link_invocation(node: NodeRuntime, invocation_id: str, ticket_id: str) -> bool:
    """Add a ticket to an alert invocation's `tickets` (fenced compare-and-swap); False if it is gone."""
    def add(rec: Record) -> Record | None:
        tickets = [str(t) for t in rec.get("tickets") or []]
        return None if ticket_id in tickets else {**rec, "tickets": [*tickets, ticket_id]}

    return await node.stores.alerts.update(node.fence(), invocation_id, add) is not None


async def link_job(node: NodeRuntime, job_id: str, ticket_id: str) -> bool:
    """Add a ticket to a completed job's `tickets` (fenced compare-and-swap); False if it is gone or still live
    (a live job changes through its dispatcher: the job action's own change)."""
    jobs = node.stores.jobs
    for _ in range(20):
        got = await jobs.stored(job_id)
        if got is None or got[0].get("state") != "complete":
            return False
        current, digest = got
        tickets = [str(t) for t in current.get("tickets") or []]
        if ticket_id in tickets:
            return True
        if await jobs.swap(node.fence(), digest, current, {**current, "tickets": [*tickets, ticket_id]}):
            return True
    raise Conflict("revision", f"job {job_id} kept changing while a ticket was linked")
