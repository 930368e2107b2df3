"""Ticket files (digest 3.6, 3.17): upload_user_ticket_files, delete_ticket_file, and who may read them.

A ticket's files live at `files/tickets/<ticket>/<random>/<name>` (storage/tickets.py: ticket_files_prefix), so
deleting the ticket deletes them all. An upload without `save` (images a comment embeds) is stored there too but
not listed in the ticket's `files`. ⚠ xyOps stores them at `files/<ticket>/<username>/...` with an expiry date and
lets any authenticated caller read them; Podium keeps them for the ticket's life and serves them to whoever may
see the ticket (its category).
"""

from __future__ import annotations

from typing import Any

from cluster.tickets.fields import MAX_FILES, TicketError
from storage.stores import Stores
from storage.tickets import ticket_files_prefix

from ..call import Call
from ..errors import ApiError
from ..files import owner_rule
from ..params import Validator, flag, text
from ..principal import Principal, can_category
from ..registry import HANDLERS, Params, Reply
from ..uploads import discard_files, receive_upload
from .tickets import REFUSALS, TICKET_ID, _check_category, _error, _missing, changed_ticket, update_ticket_record

_TICKET_PARAM = text("ticket", max_len=32, pattern="^(?:[a-z0-9_]+)$", doc="the ticket's id")
_UPLOAD_FORM = Validator((_TICKET_PARAM,))


@owner_rule("tickets")
async def ticket_file_rule(stores: Stores, who: Principal, parts: list[str]) -> bool:
    """Ticket files: whoever may see the ticket (its category), while it exists."""
    ticket = await stores.tickets.get(parts[2]) if len(parts) >= 5 else None
    return ticket is not None and can_category(who, str(ticket.get("category") or ""))


async def _visible(call: Call, ticket_id: str) -> dict[str, Any]:
    ticket = await call.stores.tickets.get(ticket_id)
    if ticket is None:
        raise _missing(ticket_id)
    try:
        _check_category(call.who, ticket.get("category"))
    except TicketError as exc:
        raise _error(exc) from None
    return ticket


@HANDLERS.add("upload_user_ticket_files", write=True, privilege="edit_tickets", own_body=True,
              args=(_TICKET_PARAM, flag("save", False, doc="also list the files on the ticket")), params=Params.RUN,
              form=_UPLOAD_FORM, form_files=("file1",))  # fmt: skip
async def upload_user_ticket_files(call: Call) -> Reply:
    """Store files for a ticket (`ticket` in the query or a form field; `save=1` also adds them to its `files`).
    Answers the new files, or with `save` the ticket's whole file list."""
    chosen: list[str] = []

    async def prefix_of(fields: dict[str, Any]) -> str:
        ticket_id = _UPLOAD_FORM({k: v for k, v in fields.items() if k == "ticket"}).get("ticket")
        if not ticket_id:
            raise ApiError("api", "Missing parameter: ticket")
        await _visible(call, ticket_id)
        chosen.append(ticket_id)
        return ticket_files_prefix(ticket_id).rstrip("/")

    prefix: Any = prefix_of
    if call.params.get("ticket"):  # known before the body: the files stream straight to the store
        prefix = await prefix_of({"ticket": call.params["ticket"]})
    fields, files = await receive_upload(call, prefix=prefix)
    if not files:
        raise ApiError("file", "No file upload data found in request.")
    ticket_id = chosen[0]
    for f in files:
        f["ticket"] = ticket_id
    if not (call.params["save"] or str(fields.get("save", "")).lower() in ("1", "true")):
        return {"files": files}

    def add(current: dict[str, Any]) -> dict[str, Any]:
        _check_category(call.who, current.get("category"))
        listed = list(current.get("files") or [])
        if len(listed) + len(files) > MAX_FILES:
            raise TicketError(f"A ticket lists at most {MAX_FILES} files.")
        return {**current, "files": [*listed, *files]}

    try:
        ticket = await update_ticket_record(call, ticket_id, add)
    except REFUSALS as exc:
        await discard_files(call, files)
        if isinstance(exc, TicketError):
            raise _error(exc) from None
        raise
    if ticket is None:  # deleted meanwhile: its files go with it
        await discard_files(call, files)
        raise _missing(ticket_id)
    return {"files": ticket.get("files") or []}


@HANDLERS.add("delete_ticket_file", write=True, privilege="edit_tickets",
              args=(TICKET_ID, text("path", required=True, max_len=512, pattern=r"^\S+$")))  # fmt: skip
async def delete_ticket_file(call: Call) -> Reply:
    """Take a file off a ticket's list and delete it from the store; answers the remaining files. Only a file
    stored under this ticket is deleted: an entry naming anything else is just dropped from the list."""
    ticket_id, path = call.params["id"], call.params["path"]
    removed: list[dict[str, Any]] = []

    def drop(current: dict[str, Any]) -> dict[str, Any]:
        _check_category(call.who, current.get("category"))
        listed = [f for f in current.get("files") or [] if isinstance(f, dict)]
        keep = [f for f in listed if f.get("path") != path]
        if len(keep) == len(listed):
            raise TicketError(f"Ticket file not found: {path}")
        removed[:] = [f for f in listed if f.get("path") == path]
        return {**current, "files": keep}

    ticket = await changed_ticket(call, ticket_id, drop)
    if path.startswith(ticket_files_prefix(ticket_id)):
        await call.stores.files.delete(path)
    return {"files": ticket.get("files") or []}
