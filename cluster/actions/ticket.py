"""The `ticket` action of jobs and alerts (xyOps runJobAction_ticket / runAlertAction_ticket): a new ticket of the
action's type, assignees, tags and due date, its body made from the job or the alert invocation, linked to it.

The ticket's id comes from the claimed run's id, so a new primary that performs the run again (a predecessor
claimed it and died before recording) finds the ticket it made and makes no second one.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

import structlog

from ..node import NodeRuntime
from ..tickets.fields import TicketError
from ..tickets.service import link_invocation, open_ticket
from .result import Outcome

log = structlog.get_logger("podium.actions")
Record = dict[str, Any]


def run_ticket_id(run_id: str) -> str:
    """The ticket a run makes: `t` and 20 hex digits of the run id's digest (a valid, stable ticket id)."""
    return "t" + hashlib.sha256(run_id.encode()).hexdigest()[:20]


def _fields(action: Mapping[str, Any], run_id: str, *, category: str, server: str) -> Record:
    """The ticket as the action configures it (xyOps: status open, the action's type, assignees, tags and due)."""
    return {"id": run_ticket_id(run_id), "subject": "", "type": str(action.get("ticket_type") or "issue"),
            "status": "open", "category": category, "server": server,
            "assignees": list(action.get("ticket_assignees") or []), "tags": list(action.get("ticket_tags") or []),
            "due": action.get("ticket_due") or ""}  # fmt: skip


async def make_ticket(node: NodeRuntime, run: Mapping[str, Any], *, base_url: str,
                      job: Mapping[str, Any] | None = None,
                      invocation: Mapping[str, Any] | None = None) -> tuple[Outcome, str]:  # fmt: skip
    """Create the run's ticket from `job` or `invocation`; answers the outcome and the ticket id ('' if none)."""
    action: Mapping[str, Any] = run["action"] if isinstance(run.get("action"), Mapping) else {}
    ticket_id = run_ticket_id(str(run["id"]))
    existing = await node.stores.tickets.get(ticket_id)
    if existing is None:
        source = job if job is not None else invocation or {}
        # ⚠ xyOps puts a job's category on its ticket and none on an alert's; Podium does the same.
        fields = _fields(action, str(run["id"]), category=str((job or {}).get("category") or ""),
                         server=str(source.get("server") or ""))  # fmt: skip
        try:
            existing = await open_ticket(node, fields, username="system", job=job, invocation=invocation,
                                         template="job" if job is not None else "alert", base_url=base_url)
        except TicketError as exc:
            return Outcome(code="ticket", description=f"Could not insert ticket: {exc.message}"), ""
        await node.stores.ticket_outbox.notify(ticket_id, existing.get("changes") or [], immediate=True)  # a new ticket
    if invocation is not None and invocation.get("id"):
        await link_invocation(node, str(invocation["id"]), ticket_id)
    num = existing.get("num")
    return Outcome(description=f"Successfully created ticket: #{num} ({ticket_id})"), ticket_id
