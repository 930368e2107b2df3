"""admin_import_data, the database records: completed jobs, tickets, alert invocations and activity.

Each record is checked for the shape its store needs (a valid id that matches the line's, an object, a completed
job) and stored under its own id with the store's fenced write and search entries (storage/transfer.py). Job logs
and files are not part of an import (an xyOps export carries them as `logs/...` and `files/...` keys, which are
reported as skipped). Servers and snapshots are skipped: servers register themselves when their agent connects.
An active alert invocation is imported cleared (`active` false): the source's live alert state does not carry over.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from storage import codec
from storage.alerts import valid_invocation_id
from storage.errors import Conflict
from storage.ids import CLIENT_ID
from storage.tickets import MAX_RECORD_BYTES, valid_ticket_id
from storage.transfer import put_activity, put_alert_invocation, put_final_job

from .call import Call
from .importfile import Report

Record = dict[str, Any]
RECORD_ORDER = ("tickets", "jobs", "alerts", "activity")
MAX_JOB_BYTES = 4 * 1024 * 1024


def _job(rec_id: str, record: Record) -> str | None:
    if not CLIENT_ID.fullmatch(rec_id) or len(rec_id) > 64:
        return "a job id is lower-case letters, digits and underscores"
    if record.get("state", "complete") != "complete" or not record.get("completed"):
        return "only completed jobs are imported (this one has no `completed` time)"
    if not isinstance(record.get("event", ""), str):
        return "a job's `event` must be a string"
    if len(codec.pack(record)) > MAX_JOB_BYTES:
        return f"a job record packs to at most {MAX_JOB_BYTES} bytes"
    return None


def _ticket(rec_id: str, record: Record) -> str | None:
    if not valid_ticket_id(rec_id):
        return "a ticket id is 1-32 lower-case letters, digits and underscores"
    if not isinstance(record.get("subject", ""), str):
        return "a ticket's `subject` must be a string"
    if len(codec.pack(record)) > MAX_RECORD_BYTES:
        return f"a ticket packs to at most {MAX_RECORD_BYTES} bytes"
    return None


def _invocation(rec_id: str, record: Record) -> str | None:
    if not valid_invocation_id(rec_id):
        return "an alert invocation id is 1-32 lower-case letters, digits and underscores"
    return None


def _activity(rec_id: str, record: Record) -> str | None:
    if not CLIENT_ID.fullmatch(rec_id) or len(rec_id) > 64:
        return "an activity id is lower-case letters, digits and underscores"
    if not isinstance(record.get("action", ""), str):
        return "an activity record's `action` must be a string"
    return None


_CHECKS: dict[str, Callable[[str, Record], str | None]] = {
    "jobs": _job, "tickets": _ticket, "alerts": _invocation, "activity": _activity,
}


def _check(index: str, rec_id: str, record: Any) -> str | None:
    """Why a record cannot be imported, or None."""
    if not isinstance(record, dict):
        return "the record must be an object"
    if str(record.get("id", rec_id)) != rec_id:
        return f"the record's id {str(record.get('id'))[:40]!r} is not the line's id"
    return _CHECKS[index](rec_id, record)


class _Refused(Exception):
    """A record this cluster cannot take (the message says why)."""


async def _current(call: Call, report: Report, index: str, record: Record) -> Record | None:
    """The stored record of that id (as an export would show it), None if there is none; `record` is made what
    this cluster stores (a job is final, an invocation cleared)."""
    stores, rec_id = call.stores, str(record["id"])
    if index == "jobs":
        record.setdefault("state", "complete")
        record["final"] = True
        found = await stores.jobs.stored(rec_id)
        if found is not None and not found[0].get("final"):
            raise _Refused("is running here")
        return found[0] if found else None
    if index == "tickets":
        return await stores.tickets.get(rec_id)
    if index == "alerts":
        if record.get("active"):  # the evaluator here knows nothing of it, so nothing would ever clear it
            record["active"] = False
            report.warn("Active alert invocations are imported as cleared (this cluster's evaluator raises its own).")
        return await stores.alerts.get(rec_id)  # with its action results, as the export shows it
    rows = await stores.activity.get_many([rec_id])
    return rows[0] if rows else None


async def _write(call: Call, report: Report, index: str, record: Record) -> None:
    stores, fence = call.stores, call.node.fence()
    if index == "jobs":
        await put_final_job(stores.jobs, fence, record)
    elif index == "tickets":
        await _put_ticket(call, report, record)
    elif index == "alerts":
        await put_alert_invocation(stores.alerts, fence, record)
    elif not await put_activity(stores.activity, record):
        raise _Refused("was stored meanwhile")


async def import_record(call: Call, report: Report, index: str, number: int, rec_id: str, record: Any) -> None:
    """Check and store one record of `index` (one of RECORD_ORDER), counting what happened in `report`."""
    problem = _check(index, rec_id, record)
    if problem is not None:
        report.error(number, f"{index} {rec_id[:40]}: {problem}")
        return
    record = {**record, "id": rec_id}
    kind = {"jobs": "job", "tickets": "ticket", "alerts": "alert_invocation", "activity": "activity"}[index]
    try:
        current = await _current(call, report, index, record)
        # Activity is never rewritten: one of that id is kept as it is.
        if current is not None and (current == record or index == "activity"):
            report.change(kind, rec_id, "unchanged")
            return
        if not report.dry_run:
            await _write(call, report, index, record)
    except (_Refused, Conflict, ValueError) as exc:
        report.error(number, f"{index} {rec_id}: {exc}; not imported")
        return
    report.change(kind, rec_id, "created" if current is None else "updated")


async def _put_ticket(call: Call, report: Report, record: Record) -> None:
    tickets, fence = call.stores.tickets, call.node.fence()
    found = await tickets.stored(str(record["id"]))
    if found is None:
        stored = await tickets.create(fence, record)
        if record.get("num") not in (None, stored["num"]):
            report.warn(f"Ticket {record['id']} was number {record.get('num')} and is number {stored['num']} here.")
        return
    if not await tickets.swap(fence, found[1], found[0], record):
        raise Conflict("revision", "changed meanwhile")
