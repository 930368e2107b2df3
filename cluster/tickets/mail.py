"""Ticket mail: a primary-only service that mails the debounced batches of ticket changes and the overdue notices.

Changes are queued in the outbox of storage/ticketmail.py (`stores.ticket_outbox.add`) by whoever changes a
ticket. Every second this service claims each due batch through the fence, loads the ticket as it is now, and sends
one mail through the SMTP sender of cluster/actions/email.py: `ticket_new` when the batch holds the `created`
change, else `ticket_updated` with what changed (each field change, the body when it changed, each new comment).
Nothing goes for a ticket that is gone or a draft, nor when nobody is to receive it.

Recipients (xyOps order): the `notify` addresses, then each assignee, then each cc user with an email address, as
`Full Name <address>`. ⚠ xyOps sends to duplicates; here an address appears once (the first spelling, with a name
if any entry gave one).

Overdue notices: once a day at the configured local time (xyOps `overdue_schedule` "04:30"), every open ticket due
before today gets one `ticket_overdue` mail to its assignees only. ⚠ xyOps registers that timer again each time a
node becomes primary (so a node may send twice) and keeps no record; here each ticket's notice of a day is claimed
by a fenced write before it is sent, so a failover during the run lets the next primary finish it and never repeat
one. A primary that starts after the time catches up that same day.

A batch claimed by a primary that died before it finished is not resent (storage/ticketmail.py explains why); this
service reports such claims as `ticket_mail_interrupted` when it starts. A batch whose ticket could not be read
(the store was away) is queued again, which is safe since nothing was sent. A failed SMTP exchange is logged
(`ticket_mail_failed`) and not repeated, as for email actions.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import re
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from email.utils import parseaddr
from typing import TYPE_CHECKING, Any

import structlog

from storage.connection import UNAVAILABLE_ERRORS
from storage.errors import FencedError
from storage.families import CATEGORIES, TAGS
from storage.fence import Fence
from storage.ticketmail import Claim

from ..actions.email import SmtpConfig, display_name, send_email
from ..actions.result import one_line
from ..node import NodeRuntime, NotPrimary

if TYPE_CHECKING:
    from storage.stores import Stores

log = structlog.get_logger("podium.ticketmail")
Record = dict[str, Any]
# The ticket as it is now (the lead passes the ticket store's get); None when it is gone.
Loader = Callable[[str], Awaitable[Record | None]]
# The open tickets due before `today` (local date): the ticket store's search `status:open due:<today`.
FindOverdue = Callable[[dt.date], Awaitable[list[Record]]]
# The same-key collapse of a batch (cluster/tickets/changes.py collapse).
Collapse = Callable[[list[Record]], list[Record]]

TYPE_TITLES = {"issue": "Issue", "feature": "Feature", "release": "Release", "change": "Change",
               "maintenance": "Maintenance", "question": "Question", "other": "Other"}  # fmt: skip
STATUS_TITLES = {"draft": "Draft", "open": "Open", "closed": "Closed"}
NONE = "(None)"
MAX_BODY = 64 * 1024  # characters of a ticket body or a comment quoted in a mail
MAX_OVERDUE = 1000  # tickets one day's overdue run reads (xyOps: the same search limit)
MAX_NAMES = 200  # users looked up for one mail
RETRY_S = 30.0  # a batch whose ticket could not be read is due again after this
# How each field change reads after the name of who made it ({} = the new value, in bold).
PHRASES = {"subject": "renamed the ticket to {}.", "type": "made it a {}.", "status": "set the status to {}.",
           "category": "moved it to the category {}.", "server": "set the server to {}.",
           "assignees": "assigned it to {}.", "cc": "set the Cc list to {}.",
           "notify": "set the addresses notified to {}.", "tags": "set the tags to {}.",
           "due": "set the due date to {}."}  # fmt: skip
FIXED_PHRASES = {"body": "edited the description.", "delete": "deleted a comment."}
_TIME = re.compile(r"([01]?[0-9]|2[0-3]):([0-5][0-9])")
_MD_ESCAPE = re.compile(r"([\\`*_\[\]<>#|~])")


@dataclass(frozen=True, slots=True)
class TicketMailConfig:
    overdue_time: str = "04:30"  # local HH:MM of the daily overdue notices
    poll_s: float = 1.0  # how often due batches are looked for
    batches_per_step: int = 100  # batches claimed (one at a time, each sent before the next) per step

    @property
    def overdue_at(self) -> tuple[int, int]:
        found = _TIME.fullmatch(self.overdue_time)
        if not found:
            raise ValueError(f"overdue time {self.overdue_time!r}: use HH:MM")
        return int(found[1]), int(found[2])


def inline(value: Any, limit: int = 200) -> str:
    """A value as it stands inside a markdown line: one line, bounded, markdown punctuation escaped."""
    return _MD_ESCAPE.sub(r"\\\1", one_line(str(value), limit))


def nice_date(epoch: float) -> str:
    """`Monday, January 5, 2026` (local time), how due dates read in the mails."""
    t = dt.datetime.fromtimestamp(epoch)
    return f"{t:%A, %B} {t.day}, {t.year}"


def nice_date_time(epoch: float) -> str:
    t = dt.datetime.fromtimestamp(epoch)
    return f"{nice_date(epoch)} {t.hour % 12 or 12}:{t:%M} {'PM' if t.hour >= 12 else 'AM'}"


def _clip(text: Any) -> str:
    body = str(text or "")
    return body if len(body) <= MAX_BODY else body[:MAX_BODY] + "\n\n…"


def _strings(value: Any) -> list[str]:
    return [str(v) for v in value if isinstance(v, str | int)] if isinstance(value, list | tuple) else []


def _number(value: Any) -> float:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0.0


class People:
    """The users one mail needs, by username: full name and email address."""

    def __init__(self, found: Mapping[str, Record]) -> None:
        self.found = found

    def name(self, username: str) -> str:
        user = self.found.get(username)
        return str(user.get("full_name") or username) if user else f"({username})"

    def address(self, username: str) -> str:
        user = self.found.get(username)
        return str(user.get("email") or "").strip() if user else ""


def recipients_of(ticket: Mapping[str, Any], people: People, *, assignees_only: bool = False) -> list[str]:
    """`notify` addresses, then assignees, then cc users, as `Full Name <address>`; each address once (the first
    spelling kept, given a name by a later entry if it had none). Users with no address are left out."""
    entries: dict[str, tuple[str, str]] = {}  # address, lower-cased -> (first spelling, name)

    def add(entry: str, name: str) -> None:
        given, address = parseaddr(entry.strip())  # a notify entry may be `Name <address>` itself
        if "@" not in address:
            return
        first, had = entries.get(address.lower(), (address, ""))
        entries[address.lower()] = (first, had or display_name(name or given))

    if not assignees_only:
        for address in _strings(ticket.get("notify")):
            add(address, "")
    users = _strings(ticket.get("assignees")) + ([] if assignees_only else _strings(ticket.get("cc")))
    for username in users:
        add(people.address(username), people.name(username))
    return [f"{name} <{address}>" if name else address for address, name in entries.values()]


class TicketMailer:
    """The primary's ticket mail service (see the module docstring). `fence` gives this node's fence (NodeRuntime.
    fence: NotPrimary or FencedError once it is not primary); `loader` reads a ticket by id; `find_overdue` finds
    the open tickets due before a day (no overdue notices without it); `collapse` merges a batch's changes to one
    key within a minute (identity without it)."""

    def __init__(self, stores: Stores, fence: Callable[[], Fence], smtp: SmtpConfig, loader: Loader, *,
                 find_overdue: FindOverdue | None = None, collapse: Collapse | None = None,
                 config: TicketMailConfig | None = None) -> None:  # fmt: skip
        self.stores = stores
        self.fence = fence
        self.smtp = smtp
        self.loader = loader
        self.find_overdue = find_overdue
        self.collapse = collapse
        self.config = config or TicketMailConfig()
        self.config.overdue_at  # noqa: B018  # a bad time fails here, not on the first day
        self.sent = 0  # mails this mailer sent (tests read it)
        self._recovered = False
        self._overdue_checked = ""  # the local day whose overdue run is known to be finished

    # -- the service ----------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        """The primary service: until `stop`, or until this node is deposed."""
        self._recovered = False  # each term starts by recovering what the previous one (maybe ours) left claimed
        while not stop.is_set():
            try:
                await self.step()
            except (FencedError, NotPrimary):
                return  # deposed: the node's runtime stops this service
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the store is away, or a bug: ticket mail must not end for the term
                if isinstance(exc, UNAVAILABLE_ERRORS):
                    log.warning("ticket_mail_store_unavailable", error=str(exc))
                else:
                    log.exception("ticket_mail_loop_failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.config.poll_s)

    async def step(self, now: float | None = None) -> int:
        """One pass: report what a predecessor left claimed (the first time), mail the due batches, and the
        overdue notices when their time has come (`now`: the clock). Returns the mails sent."""
        if not self._recovered:
            await self.recover()
            self._recovered = True
        sent = await self.send_due()
        sent += await self.check_overdue(time.time() if now is None else now)
        return sent

    async def recover(self) -> int:
        """Drop, with a log line each, the claims a predecessor made and never finished (never resent)."""
        fence = self.fence()
        outbox = self.stores.ticket_outbox
        lost = await outbox.interrupted(fence.epoch)
        for claim in lost:
            log.warning("ticket_mail_interrupted", ticket=claim.ticket, changes=claim.changes + claim.dropped,
                        claimed_by=claim.node, epoch=claim.epoch,
                        note="the primary stopped between claiming and finishing this mail; it may or may not "
                             "have gone out and is not sent again")  # fmt: skip
            await outbox.forget(fence, claim.id)
        return len(lost)

    async def send_due(self) -> int:
        """Claim and mail every due batch, one at a time (each claim just before its send). Returns mails sent."""
        outbox = self.stores.ticket_outbox
        sent = 0
        for ticket_id in await outbox.due(self.config.batches_per_step):
            claim = await outbox.claim(self.fence(), ticket_id)
            if claim is None:
                continue
            try:
                sent += await self._deliver(claim)
            finally:
                await outbox.done(self.fence(), claim.id)
        return sent

    # -- one batch ------------------------------------------------------------------------------
    async def _deliver(self, claim: Claim) -> int:
        try:
            prepared = await self._prepare(claim)
        except UNAVAILABLE_ERRORS as exc:  # nothing was sent: safe to queue again
            log.warning("ticket_mail_retry", ticket=claim.ticket, error=str(exc))
            await self.stores.ticket_outbox.add(claim.ticket, claim.changes, debounce_s=RETRY_S)
            return 0
        if prepared is None:
            return 0
        template, to, data = prepared
        return await self._send(claim.ticket, template, to, data)

    async def _prepare(self, claim: Claim) -> tuple[str, list[str], Record] | None:
        ticket = await self.loader(claim.ticket)
        if ticket is None:
            log.info("ticket_mail_skipped", ticket=claim.ticket, reason="the ticket is gone")
            return None
        if ticket.get("status") == "draft":
            log.info("ticket_mail_skipped", ticket=claim.ticket, reason="the ticket is a draft")
            return None
        changes = list(claim.changes)
        if self.collapse is not None:
            changes = self.collapse(changes)
        people = await self._people(ticket, changes)
        to = recipients_of(ticket, people)
        if not to:
            log.info("ticket_mail_skipped", ticket=claim.ticket, reason="nobody to mail")
            return None
        data = await self._data(ticket, people)
        if any(c.get("key") == "created" for c in changes):
            return "ticket_new", to, data
        data["display"]["changes"] = await self._changes(ticket, changes, people, claim.dropped)
        return "ticket_updated", to, data

    async def _send(self, ticket_id: str, template: str, to: list[str], data: Record) -> int:
        outcome = await send_email(self.smtp, to=to, template=template, data=data)
        if outcome.code != 0:
            log.warning("ticket_mail_failed", ticket=ticket_id, template=template, error=outcome.description)
            return 0
        log.info("ticket_mail_sent", ticket=ticket_id, template=template, description=outcome.description)
        self.sent += 1
        return 1

    async def _people(self, ticket: Mapping[str, Any], changes: Sequence[Mapping[str, Any]] = ()) -> People:
        names: list[str] = []
        for name in [str(ticket.get("username") or ""), *_strings(ticket.get("assignees")),
                     *_strings(ticket.get("cc"))]:  # fmt: skip
            names.append(name)
        for change in changes:
            names.append(str(change.get("username") or ""))
            if change.get("key") in ("assignees", "cc"):
                names += _strings(change.get("value"))
        found: dict[str, Record] = {}
        for name in dict.fromkeys(n for n in names if n):
            if len(found) >= MAX_NAMES:
                break
            user = await self.stores.users.get(name)
            if user is not None:
                found[name] = {"full_name": user.get("full_name"), "email": user.get("email")}
        return People(found)

    async def _title(self, family: Any, obj_id: str) -> str:
        found = await self.stores.defs.get(family, obj_id)
        return str(found.get("title") or obj_id) if found else f"({obj_id})"

    async def _data(self, ticket: Mapping[str, Any], people: People) -> Record:
        """What the ticket templates read: `ticket` (subject one line, body clipped), `links.ticket_url` and the
        `display` texts. Values are inserted as they are: the template renderer never expands a placeholder that
        a value brings (⚠ xyOps defuses `{{` in subjects and bodies instead)."""
        num = ticket.get("num")
        base = self.smtp.base_url.rstrip("/")
        category = str(ticket.get("category") or "")
        tags = [await self._title(TAGS, t) for t in _strings(ticket.get("tags"))]
        assignees = [people.name(u) for u in _strings(ticket.get("assignees"))]
        due = _number(ticket.get("due"))
        ticket_type, status = str(ticket.get("type") or ""), str(ticket.get("status") or "")
        view = {**ticket, "subject": one_line(str(ticket.get("subject") or ""), 500), "body": _clip(ticket.get("body"))}
        view.pop("changes", None)
        return {
            "ticket": view,
            # ⚠ xyOps links to `/#<num>`, which is no page; the ticket page is `#Tickets?num=`.
            "links": {"ticket_url": f"{base}/#Tickets?num={num}"},
            "display": {
                "type": TYPE_TITLES.get(ticket_type, f"({ticket_type})"),
                "status": STATUS_TITLES.get(status, f"({status})"),
                "category": await self._title(CATEGORIES, category) if category else NONE,
                "username": people.name(str(ticket.get("username") or "")) if ticket.get("username") else NONE,
                "assignees": ", ".join(assignees) or NONE,
                "due": nice_date(due) if due else NONE,
                "tags": ", ".join(tags) or NONE,
                "body": view["body"].strip() or "(No description)",
                "date_time": nice_date_time(time.time()),
            },
        }

    async def _changes(self, ticket: Mapping[str, Any], changes: Sequence[Mapping[str, Any]], people: People,
                       dropped: int) -> str:  # fmt: skip
        """The markdown of what changed: a line per field change, the new body if it changed, each new comment."""
        lines: list[str] = []
        for change in changes:
            if change.get("type") != "change":
                continue
            text = await self._change_text(change, people)
            if text:
                lines.append(f"- {inline(people.name(str(change.get('username') or '')))} {text}")
        if dropped:
            lines.append(f"- … and {dropped} more change{'s' if dropped != 1 else ''} not listed here.")
        md = "\n".join(lines) + ("\n" if lines else "")
        if any(c.get("type") == "change" and c.get("key") == "body" for c in changes):
            md += f"\n### Updated Ticket Content\n\n{_clip(ticket.get('body')).strip() or '(No description)'}\n"
        for change in changes:
            if change.get("type") == "comment":
                who = inline(people.name(str(change.get("username") or "")))
                when = nice_date_time(_number(change.get("edited") or change.get("date")) or time.time())
                md += f"\n#### New comment by {who} on {when}\n\n{_clip(change.get('body')).strip()}\n"
        return md.strip() or "(No details)"

    async def _change_text(self, change: Mapping[str, Any], people: People) -> str:
        key = str(change.get("key") or "")
        if key in FIXED_PHRASES:
            return FIXED_PHRASES[key]
        if key not in PHRASES:
            return ""  # `created` (a ticket_new mail) or a key this version does not know
        shown = ", ".join(f"**{inline(v)}**" for v in await self._values(key, change.get("value"), people))
        return PHRASES[key].format(shown or NONE)

    async def _values(self, key: str, value: Any, people: People) -> list[str]:
        """The new value of a changed field as its mail shows it (titles, full names, dates)."""
        if key in ("assignees", "cc"):
            return [people.name(u) for u in _strings(value)]
        if key == "notify":
            return _strings(value)
        if key == "tags":
            return [await self._title(TAGS, t) for t in _strings(value)]
        if not value:
            return []
        if key == "due":
            return [nice_date(_number(value))] if _number(value) else []
        if key == "category":
            return [await self._title(CATEGORIES, str(value))]
        titles = {"type": TYPE_TITLES, "status": STATUS_TITLES}.get(key, {})
        return [titles.get(str(value), str(value))]

    # -- overdue notices ------------------------------------------------------------------------
    async def check_overdue(self, now: float) -> int:
        """Send the overdue notices of `now`'s local day once its time has come (each ticket's claimed first)."""
        if self.find_overdue is None:
            return 0
        local = dt.datetime.fromtimestamp(now)
        day = local.date()
        label = day.isoformat()
        if label == self._overdue_checked or (local.hour, local.minute) < self.config.overdue_at:
            return 0
        outbox = self.stores.ticket_outbox
        if await outbox.overdue_done(label):
            self._overdue_checked = label
            return 0
        midnight = dt.datetime.combine(day, dt.time()).timestamp()
        sent = 0
        for ticket in (await self.find_overdue(day))[:MAX_OVERDUE]:
            due = _number(ticket.get("due"))
            if ticket.get("status") != "open" or not 0 < due < midnight or not _strings(ticket.get("assignees")):
                continue
            people = await self._people(ticket)
            to = recipients_of(ticket, people, assignees_only=True)
            if not to or not await outbox.overdue_claim(self.fence(), label, str(ticket.get("id"))):
                continue
            sent += await self._send(str(ticket.get("id")), "ticket_overdue", to, await self._data(ticket, people))
        await outbox.overdue_finish(self.fence(), label)
        self._overdue_checked = label
        log.info("ticket_overdue_done", day=label, sent=sent)
        return sent


def ticket_mail_service(mailer: TicketMailer) -> Any:
    """The primary service that runs `mailer` (cluster/node.py PrimaryService)."""

    async def run(node: NodeRuntime, stop: asyncio.Event) -> None:
        await mailer.run(stop)

    return run
