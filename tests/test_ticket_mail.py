"""Ticket mail on a real server and a real SMTP sink: the debounced outbox, the mails it makes, recipients, a
failover between two mailers on one store, and the daily overdue notices.

Tickets are a dict kept by each test, read through the loader the mailer is given (the ticket store's `get` in
production). Batches are sent by calling the mailer's steps, so nothing here depends on timing: a batch debounced
for 0.3 s is polled for with `eventually`, one debounced for minutes is certainly not due yet.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import email
import email.policy
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from typing import Any

import pytest
from structlog.testing import capture_logs

from api.settings import ConfigError, Settings
from cluster.actions.email import SmtpConfig
from cluster.tickets.mail import People, TicketMailConfig, TicketMailer, recipients_of
from storage.connection import Database
from storage.errors import FencedError
from storage.families import CATEGORIES, TAGS
from storage.fence import Fence
from storage.lease import LeaseStore
from storage.stores import Stores
from storage.ticketmail import MAX_CHANGES

from .sinks import Mail, MailSink, eventually
from .test_scripts import elect

Record = dict[str, Any]
NOW = 1_900_000_000.0
USERS = [
    {"username": "ann", "full_name": "Ann Lee", "email": "ann@example.com"},
    {"username": "bob", "full_name": "Bob Stone", "email": "bob@example.com"},
    {"username": "carl", "full_name": "Carl NoMail", "email": ""},
    {"username": "eve", "full_name": 'Eve "<x@evil.example>", Bcc: all', "email": "eve@example.com"},
]


class Desk:
    """One store, one SMTP sink, the test's tickets, and mailers that send through them."""

    def __init__(self, db: Database, sink: MailSink, fence: Fence) -> None:
        self.db = db
        self.sink = sink
        self.fence = fence
        self.stores = Stores.open(db)
        self.tickets: dict[str, Record] = {}
        self.smtp = SmtpConfig(host="127.0.0.1", port=sink.port, tls="none", timeout_s=10,
                               from_address="podium@example.com", base_url="http://podium.example:5522/")  # fmt: skip

    async def load(self, ticket_id: str) -> Record | None:
        found = self.tickets.get(ticket_id)
        return None if found is None else dict(found)

    async def overdue(self, today: dt.date) -> list[Record]:
        return [dict(t) for t in self.tickets.values()]  # the mailer checks status and due itself too

    def mailer(self, fence: Fence | None = None) -> TicketMailer:
        use = fence or self.fence
        return TicketMailer(self.stores, lambda: use, self.smtp, self.load, find_overdue=self.overdue,
                            config=TicketMailConfig(poll_s=0.05))  # fmt: skip

    def ticket(self, ticket_id: str, num: int, **fields: Any) -> Record:
        ticket = {"id": ticket_id, "num": num, "subject": f"Ticket {num}", "body": "The printer is on fire.",
                  "type": "issue", "status": "open", "category": "", "assignees": ["ann"], "cc": [], "notify": [],
                  "due": 0, "tags": [], "username": "bob", "created": NOW, "modified": NOW, **fields}  # fmt: skip
        self.tickets[ticket_id] = ticket
        return ticket

    @property
    def mails(self) -> list[Mail]:
        """What the sink received, the text with plain line ends."""
        return [replace(m, text=m.text.replace("\r\n", "\n")) for m in self.sink.messages]


@pytest.fixture
def sink() -> Iterator[MailSink]:
    with MailSink() as s:
        yield s


@pytest.fixture
async def desk(db: Database, sink: MailSink) -> AsyncIterator[Desk]:
    fence = await elect(LeaseStore(db), "a", lease_ms=60_000)
    out = Desk(db, sink, fence)
    for user in USERS:
        await out.stores.users.create(fence, dict(user))
    await out.stores.defs.create(fence, TAGS, {"id": "urgent", "title": "Urgent"})
    await out.stores.defs.create(fence, CATEGORIES, {"id": "ops", "title": "Operations"})
    yield out


def change(key: str, value: Any = None, user: str = "ann", **extra: Any) -> Record:
    out: Record = {"type": "change", "username": user, "date": NOW, "key": key, **extra}
    if value is not None:
        out["value"] = value
    return out


def comment(body: str, user: str = "bob") -> Record:
    return {"id": "c1", "type": "comment", "username": user, "date": NOW, "body": body}


def to_header(mail: Mail) -> str:
    return str(email.message_from_bytes(mail.raw, policy=email.policy.default)["To"])


async def drained(desk: Desk, ticket_id: str) -> bool:
    outbox = desk.stores.ticket_outbox
    return await outbox.due_at(ticket_id) is None and not await outbox.claims()


# -- the debounce ------------------------------------------------------------------------------------------
async def test_changes_in_one_window_make_one_mail_and_a_later_change_a_second(desk: Desk) -> None:
    desk.ticket("t1", 7, subject="Printer on fire", notify=["ops@example.com"], tags=["urgent"], category="ops")
    outbox, mailer = desk.stores.ticket_outbox, desk.mailer()
    desk.tickets["t1"].update(subject="Printer still on fire", status="closed", body="Put out with water.")
    await outbox.add("t1", [change("subject", "Printer still on fire")], debounce_s=0.3)
    first_due = await outbox.due_at("t1")
    await outbox.add("t1", [change("status", "closed"), change("body")], debounce_s=0.3)
    await outbox.add("t1", [comment("It was the **toner**. {{ secret }}")], debounce_s=0.3)
    second_due = await outbox.due_at("t1")
    assert first_due is not None and second_due is not None and second_due > first_due  # the trailing edge
    assert [c.get("key") for c in await outbox.pending("t1")] == ["subject", "status", "body", None]

    assert await eventually(mailer.send_due, what="the batch mailed") == 1
    assert await drained(desk, "t1")
    [mail] = desk.mails
    assert mail.subject == "Podium Ticket #7 Updated: Printer still on fire"
    assert sorted(mail.to) == ["ann@example.com", "ops@example.com"]
    text = mail.text
    assert "Ann Lee renamed the ticket to **Printer still on fire**." in text
    assert "Ann Lee set the status to **Closed**." in text
    assert "Ann Lee edited the description." in text
    assert "### Updated Ticket Content\n\nPut out with water." in text
    assert "#### New comment by Bob Stone on " in text and "It was the **toner**. {{ secret }}" in text
    assert "- **Category:** Operations" in text and "- **Tags:** Urgent" in text
    assert "http://podium.example:5522/#Tickets?num=7" in text

    await outbox.add("t1", [change("assignees", ["ann", "bob"], user="bob")], debounce_s=0.3)
    assert await eventually(mailer.send_due, what="the second batch mailed") == 1
    assert len(desk.mails) == 2
    second = desk.mails[1].text
    assert "Bob Stone assigned it to **Ann Lee**, **Bob Stone**." in second
    assert "renamed" not in second and "New comment" not in second


async def test_a_batch_waits_for_its_debounce(desk: Desk) -> None:
    desk.ticket("t1", 1)
    await desk.stores.ticket_outbox.add("t1", [change("status", "closed")], debounce_s=600)
    assert await desk.mailer().send_due() == 0
    assert desk.mails == [] and len(await desk.stores.ticket_outbox.pending("t1")) == 1


async def test_a_new_ticket_mails_at_once_and_stays_immediate(desk: Desk) -> None:
    desk.ticket("t1", 3, subject="New laptop", type="feature", due=NOW + 86400)
    outbox = desk.stores.ticket_outbox
    await outbox.add("t1", [change("created", user="bob")], debounce_s=0)
    await outbox.add("t1", [change("status", "open")], debounce_s=600)  # does not hold the new ticket's mail back
    assert await desk.mailer().send_due() == 1
    [mail] = desk.mails
    assert mail.subject == "Podium Ticket #3 Created: New laptop"
    assert "Bob Stone opened ticket **#3: New laptop**." in mail.text
    assert "- **Type:** Feature" in mail.text and "- **Assigned to:** Ann Lee" in mail.text
    assert "The printer is on fire." in mail.text
    assert await drained(desk, "t1")


async def test_drafts_gone_tickets_and_nobody_to_mail_send_nothing(desk: Desk) -> None:
    desk.ticket("draft", 1, status="draft", notify=["ops@example.com"])
    desk.ticket("nobody", 2, assignees=["carl", "ghost"], cc=[], notify=[])
    outbox, mailer = desk.stores.ticket_outbox, desk.mailer()
    for ticket_id in ("draft", "gone", "nobody"):
        await outbox.add(ticket_id, [change("created")], debounce_s=0)
    assert await mailer.send_due() == 0
    assert desk.mails == []
    for ticket_id in ("draft", "gone", "nobody"):
        assert await drained(desk, ticket_id)


async def test_recipients_are_named_and_each_address_once(desk: Desk) -> None:
    desk.ticket("t1", 5, notify=["OPS@example.com", "ann@EXAMPLE.com", "not-an-address"],
                assignees=["ann", "bob", "carl", "ghost"], cc=["bob", "eve", "ann"])  # fmt: skip
    await desk.stores.ticket_outbox.add("t1", [change("created")], debounce_s=0)
    assert await desk.mailer().send_due() == 1
    [mail] = desk.mails
    assert mail.to == ["OPS@example.com", "ann@EXAMPLE.com", "bob@example.com", "eve@example.com"]
    header = to_header(mail)
    assert header == ("OPS@example.com, Ann Lee <ann@EXAMPLE.com>, Bob Stone <bob@example.com>, "
                      '"Eve x evil.example Bcc all" <eve@example.com>')  # fmt: skip: quoted for its dot
    assert "x@evil.example" not in mail.to


def test_recipients_pure() -> None:
    people = People({"ann": {"full_name": "Ann Lee", "email": "ann@example.com"}, "nomail": {"full_name": "N"}})
    ticket = {"notify": ["Ops Team <ops@example.com>", "ann@example.com"], "assignees": ["ann", "nomail"],
              "cc": ["ann"]}  # fmt: skip
    assert recipients_of(ticket, people) == ["Ops Team <ops@example.com>", "Ann Lee <ann@example.com>"]
    assert recipients_of(ticket, people, assignees_only=True) == ["Ann Lee <ann@example.com>"]
    assert recipients_of({}, people) == []


async def test_a_batch_is_bounded(desk: Desk) -> None:
    desk.ticket("t1", 9)
    many = [change("status", "open" if n % 2 else "closed") for n in range(MAX_CHANGES + 20)]
    many.append(comment("x" * 200_000))
    await desk.stores.ticket_outbox.add("t1", many, debounce_s=0.3)
    assert len(await desk.stores.ticket_outbox.pending("t1")) == MAX_CHANGES
    assert await eventually(desk.mailer().send_due) == 1
    assert "… and 21 more changes not listed here." in desk.mails[0].text
    with pytest.raises(ValueError, match="bad ticket id"):
        await desk.stores.ticket_outbox.add("a:b", [change("status", "open")], debounce_s=0)
    assert not await desk.stores.ticket_outbox.add("t1", [], debounce_s=0)


# -- failover ----------------------------------------------------------------------------------------------
async def test_failover_sends_each_batch_once_and_the_old_primary_is_refused(db: Database, desk: Desk) -> None:
    for n in range(1, 4):
        desk.ticket(f"t{n}", n)
    outbox, old = desk.stores.ticket_outbox, desk.mailer()
    await outbox.add("t1", [change("created")], debounce_s=0)
    assert await old.step() == 1  # before the failover: mailed by the first primary
    await outbox.add("t2", [change("status", "closed")], debounce_s=0)
    taken = await outbox.claim(desk.fence, "t2")  # ... which dies between this claim and its send
    assert taken is not None and taken.ticket == "t2"
    await outbox.add("t3", [change("status", "closed")], debounce_s=0)

    leases = LeaseStore(db)
    assert await leases.release("a", desk.fence.epoch)
    new_fence = await elect(leases, "b", lease_ms=60_000)
    assert new_fence.epoch > desk.fence.epoch
    with pytest.raises(FencedError):
        await old.send_due()  # the deposed primary claims nothing
    assert await outbox.due_at("t3") is not None

    new = desk.mailer(new_fence)
    with capture_logs() as logs:
        assert await new.step() == 1  # t3; t2's claim is reported, not resent
    lost = [e for e in logs if e["event"] == "ticket_mail_interrupted"]
    assert [(e["ticket"], e["epoch"]) for e in lost] == [("t2", desk.fence.epoch)]
    assert await outbox.claims() == []
    assert [m.subject for m in desk.mails] == ["Podium Ticket #1 Created: Ticket 1",
                                               "Podium Ticket #3 Updated: Ticket 3"]  # fmt: skip

    # Both mailers' loops on one store: the deposed one stops at its first refused claim, the other mails each
    # batch once.
    for n in range(10, 30):
        desk.ticket(f"t{n}", n)
    stop = asyncio.Event()
    tasks = [asyncio.create_task(old.run(stop)), asyncio.create_task(new.run(stop))]
    try:
        for n in range(10, 30):
            await outbox.add(f"t{n}", [change("status", "closed"), comment(f"note {n}")], debounce_s=0.3)

        async def all_mailed() -> bool:
            return len(desk.mails) == 22 and all([await drained(desk, f"t{n}") for n in range(10, 30)])

        await eventually(all_mailed, what="every batch mailed")
        await eventually(tasks[0].done, what="the deposed mailer stopped")
    finally:
        stop.set()
        await asyncio.gather(*tasks)
    subjects = [m.subject for m in desk.mails[2:]]
    assert sorted(subjects) == sorted(f"Podium Ticket #{n} Updated: Ticket {n}" for n in range(10, 30))
    assert old.sent == 1


async def test_a_change_while_a_batch_is_sent_starts_a_new_batch(desk: Desk) -> None:
    desk.ticket("t1", 1)
    outbox = desk.stores.ticket_outbox
    await outbox.add("t1", [change("status", "closed")], debounce_s=0)
    claim = await outbox.claim(desk.fence, "t1")
    assert claim is not None
    await outbox.add("t1", [change("status", "open")], debounce_s=0)  # arrives during the send
    assert await outbox.claim(desk.fence, "t1") is not None  # a batch of its own
    assert [c["value"] for c in claim.changes] == ["closed"]
    assert await outbox.claim(desk.fence, "t1") is None


# -- overdue notices ---------------------------------------------------------------------------------------
def local(day: int, hour: int, minute: int = 0) -> float:
    return dt.datetime(2030, 3, day, hour, minute).timestamp()


async def test_overdue_notices_go_once_a_day_to_assignees(db: Database, desk: Desk) -> None:
    desk.ticket("late", 1, due=local(9, 0), assignees=["ann", "bob"], cc=["eve"], notify=["ops@example.com"])
    desk.ticket("later", 2, due=local(11, 0))
    desk.ticket("closed", 3, due=local(9, 0), status="closed")
    desk.ticket("unassigned", 4, due=local(9, 0), assignees=[])
    desk.ticket("nodue", 5, due=0)
    mailer = desk.mailer()
    assert await mailer.check_overdue(local(10, 4, 29)) == 0  # before 04:30
    assert await mailer.check_overdue(local(10, 4, 30)) == 1
    [mail] = desk.mails
    assert mail.subject == "Podium Ticket #1 Is Overdue: Ticket 1"
    assert sorted(mail.to) == ["ann@example.com", "bob@example.com"]  # assignees only
    assert "was due on Saturday, March 9, 2030 and is still open" in mail.text
    assert await mailer.check_overdue(local(10, 9)) == 0

    # A failover on day 11, after the first primary claimed one ticket's notice and died.
    desk.ticket("later", 2, due=local(11, 0) - 60)  # due the evening of the 10th
    assert await desk.stores.ticket_outbox.overdue_claim(desk.fence, "2030-03-11", "late")
    leases = LeaseStore(db)
    await leases.release("a", desk.fence.epoch)
    successor = desk.mailer(await elect(leases, "b", lease_ms=60_000))
    with pytest.raises(FencedError):
        await mailer.check_overdue(local(11, 5))
    assert await successor.check_overdue(local(11, 5)) == 1  # `later` only: `late` was claimed already
    assert desk.mails[-1].subject == "Podium Ticket #2 Is Overdue: Ticket 2"
    assert await desk.mailer(successor.fence()).check_overdue(local(11, 6)) == 0  # the day is done
    assert await successor.check_overdue(local(12, 4, 30)) == 2  # a new day
    assert len(desk.mails) == 4


# -- settings ----------------------------------------------------------------------------------------------
def test_ticket_mail_settings() -> None:
    settings = Settings().validate()
    assert (settings.ticket_email, settings.ticket_debounce_s, settings.ticket_overdue_at) == (True, 30, (4, 30))
    assert Settings(ticket_overdue_time="23:59", ticket_debounce_s=0).validate().ticket_overdue_at == (23, 59)
    for bad in ("24:00", "4.30", "04:60", "", "04:30:00"):
        with pytest.raises(ConfigError, match="--ticket-overdue-time"):
            Settings(ticket_overdue_time=bad).validate()
    with pytest.raises(ConfigError, match="--ticket-debounce-s"):
        Settings(ticket_debounce_s=-1).validate()
    with pytest.raises(ValueError, match="HH:MM"):
        TicketMailConfig(overdue_time="late").overdue_at  # noqa: B018


async def test_each_term_recovers_what_the_last_left_claimed(db: Database, desk: Desk) -> None:
    """One node's mailer, primary again after a term it lost midway through a send: its next term reports that
    claim (not resent) rather than leaving it claimed for ever."""
    desk.ticket("t1", 1)
    fences = [desk.fence]
    mailer = TicketMailer(desk.stores, lambda: fences[0], desk.smtp, desk.load, find_overdue=desk.overdue,
                          config=TicketMailConfig(poll_s=0.05))  # fmt: skip
    assert await mailer.step() == 0  # the first term's recovery ran
    outbox = desk.stores.ticket_outbox
    await outbox.add("t1", [change("status", "closed")], debounce_s=0)
    assert await outbox.claim(desk.fence, "t1") is not None  # ... and the term ends before the send
    leases = LeaseStore(db)
    assert await leases.release("a", desk.fence.epoch)
    fences[0] = await elect(leases, "a", lease_ms=60_000)
    stop = asyncio.Event()
    task = asyncio.create_task(mailer.run(stop))
    try:
        async def cleared() -> bool:
            return await outbox.claims() == []

        await eventually(cleared, what="the interrupted claim reported")
    finally:
        stop.set()
        await task
    assert desk.mails == []
