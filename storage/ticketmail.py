"""Ticket mail: the debounced outbox of ticket changes waiting to be mailed, kept in Redis.

Each ticket with unmailed changes has one pending batch (a list of changes) and a due time in one sorted set.
`add()` appends to the batch and moves the due time to now + debounce (the trailing edge, as xyOps); a batch added
with no debounce (a new ticket's `created` change) is due at once and stays due at once, whatever joins it. Times
are Redis' clock (TIME inside the scripts), so nodes whose clocks drift agree on when a batch is due.

⚠ xyOps keeps these batches in the primary's memory, so a failover loses every pending mail. Here they are in
Redis, and the primary's mailer (cluster/tickets/mail.py) claims a due batch with a fenced script before it sends
it: the claim removes the batch and its due entry and records the claim (with the claimer's node and epoch) in
one step. So a batch is mailed once per debounce window, a deposed primary cannot claim anything, and a change
that arrives while a batch is being sent starts a new batch.

If the primary dies between a claim and the end of its send, nobody can tell whether the SMTP server took the
message. The project's rule for emails (storage/actions.py) is that a message is never sent twice, so the next
primary does not resend it: it finds the claim of an older epoch, logs `ticket_mail_interrupted` with the ticket
and the number of changes, and drops it (`interrupted()` / `forget()`).

Bounds: a batch keeps at most MAX_CHANGES changes and MAX_BYTES packed bytes (one change at most MAX_CHANGE_BYTES,
its texts clipped to fit); changes beyond are counted (`dropped`) and the mail says how many it leaves out.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from . import codec
from .connection import Database
from .fence import Fence, FencedBatch
from .ids import generate_id
from .scripts import fenced

Record = dict[str, Any]

MAX_CHANGES = 100  # changes kept in one batch
MAX_BYTES = 512 * 1024  # packed bytes of one batch
MAX_CHANGE_BYTES = 64 * 1024  # packed bytes of one change (its texts are clipped to fit)
MAX_TEXT = 32 * 1024  # characters of one text field of a change kept for the mail
OVERDUE_TTL_S = 3 * 86400  # how long the record of one day's overdue notices is kept
DAY_DONE = ":done"  # the field of a day's record saying all its notices went (no ticket id has a colon)
_TICKET_ID = re.compile(r"^[A-Za-z0-9_]{1,64}$")

# Append changes to a ticket's pending batch and set when it is due.
# KEYS[1] due zset, KEYS[2] the ticket's batch list, KEYS[3] the ticket's batch meta hash
# ARGV[1] ticket id, ARGV[2] debounce s (<= 0: due at once), ARGV[3] max changes, ARGV[4] max bytes,
# ARGV[5..] packed changes
# return {changes in the batch, changes dropped by this call}
TICKETMAIL_ADD = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local n = redis.call('LLEN', KEYS[2])
local bytes = tonumber(redis.call('HGET', KEYS[3], 'bytes') or '0')
local max_n, max_bytes = tonumber(ARGV[3]), tonumber(ARGV[4])
local dropped = 0
for i = 5, #ARGV do
  local size = string.len(ARGV[i])
  if n < max_n and bytes + size <= max_bytes then
    redis.call('RPUSH', KEYS[2], ARGV[i])
    n = n + 1
    bytes = bytes + size
  else
    dropped = dropped + 1
  end
end
redis.call('HSET', KEYS[3], 'bytes', bytes)
if dropped > 0 then redis.call('HINCRBY', KEYS[3], 'dropped', dropped) end
local debounce = tonumber(ARGV[2])
if debounce <= 0 then
  redis.call('HSET', KEYS[3], 'now', '1')
  redis.call('ZADD', KEYS[1], 'LT', now, ARGV[1])
elseif redis.call('HGET', KEYS[3], 'now') == '1' then
  redis.call('ZADD', KEYS[1], 'LT', now + debounce, ARGV[1])  -- an immediate batch stays immediate
else
  redis.call('ZADD', KEYS[1], now + debounce, ARGV[1])  -- the trailing edge: every change moves it on
end
return {n, dropped}
"""

# The tickets whose batches are due now (Redis clock), oldest first.
# KEYS[1] due zset
# ARGV[1] limit
# return ticket ids
TICKETMAIL_DUE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
return redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
"""

# Claim a ticket's due batch for this primary: take it out of the pending set and record the claim.
# KEYS[1] leader, KEYS[2] epoch, KEYS[3] due zset, KEYS[4] claimed zset, KEYS[5] the ticket's batch list,
# KEYS[6] the ticket's batch meta hash, KEYS[7] the claim hash
# ARGV[1] node id, ARGV[2] epoch, ARGV[3] ticket id, ARGV[4] claim id
# return {dropped, {packed changes...}}, or false when the batch is not due (a change moved it on, or it is gone)
TICKETMAIL_CLAIM = fenced("""
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local due = redis.call('ZSCORE', KEYS[3], ARGV[3])
if not due or tonumber(due) > now then return false end
redis.call('ZREM', KEYS[3], ARGV[3])
local changes = redis.call('LRANGE', KEYS[5], 0, -1)
local dropped = redis.call('HGET', KEYS[6], 'dropped') or '0'
redis.call('DEL', KEYS[5], KEYS[6])
if #changes == 0 then return false end
redis.call('HSET', KEYS[7], 'ticket', ARGV[3], 'node', ARGV[1], 'epoch', ARGV[2], 'claimed', tostring(now),
           'changes', #changes, 'dropped', dropped)
redis.call('ZADD', KEYS[4], now, ARGV[4])
return {dropped, changes}
""")


@dataclass(frozen=True, slots=True)
class Claim:
    """A batch this primary took to mail: the ticket, its changes in arrival order, how many did not fit."""

    id: str
    ticket: str
    changes: list[Record]
    dropped: int = 0


@dataclass(frozen=True, slots=True)
class ClaimRecord:
    """A claim still on record: what the next primary finds when the claimer died before finishing it."""

    id: str
    ticket: str
    node: str
    epoch: int
    claimed: float
    changes: int
    dropped: int


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)



def _clipped(change: Mapping[str, Any]) -> Record:
    """A change as the outbox keeps it: long texts clipped (the mail quotes them, the ticket keeps them whole)."""
    out: Record = {}
    for key, value in change.items():
        if isinstance(value, str) and len(value) > MAX_TEXT:
            value = value[:MAX_TEXT] + "\n\n…"
        out[str(key)] = value
    return out


def _packed(change: Mapping[str, Any]) -> bytes:
    raw = codec.pack(_clipped(change))
    if len(raw) > MAX_CHANGE_BYTES:  # still too big (many fields, a huge list): keep what says what happened
        keep = {k: change[k] for k in ("type", "key", "username", "date", "id") if k in change}
        raw = codec.pack({**keep, "clipped": True})
    return raw


def check_ticket_id(ticket_id: str) -> str:
    if not _TICKET_ID.fullmatch(ticket_id):
        raise ValueError(f"bad ticket id for the mail outbox: {ticket_id[:80]!r}")
    return ticket_id


class TicketOutbox:
    """Pending ticket mail (see the module docstring): `add()` on any node, the claims on the primary."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.enabled = True  # --ticket-email
        self.debounce_s = 30.0  # --ticket-debounce-s

    async def notify(self, ticket_id: str, changes: Sequence[Mapping[str, Any]], *, immediate: bool = False) -> bool:
        """Queue ticket mail as configured: at once for a new ticket (`immediate`), else after the debounce; nothing
        when ticket mail is off."""
        if not self.enabled:
            return False
        return await self.add(ticket_id, changes, debounce_s=0 if immediate else self.debounce_s)

    async def add(self, ticket_id: str, changes: Sequence[Mapping[str, Any]], *, debounce_s: float) -> bool:
        """Queue `changes` of a ticket for mail: appended to its pending batch, which is then due `debounce_s`
        after this call (after the last change: the trailing edge); `debounce_s=0` makes it due at once (a new
        ticket). False when there was nothing to queue. Changes past the batch's bounds are counted, not kept."""
        check_ticket_id(ticket_id)
        items = [_packed(c) for c in changes]
        if not items:
            return False
        k = self.db.keys
        await self.db.script(TICKETMAIL_ADD)(
            keys=[k.ticketmail_due, k.ticketmail_batch(ticket_id), k.ticketmail_meta(ticket_id)],
            args=[ticket_id, repr(max(float(debounce_s), 0.0)), MAX_CHANGES, MAX_BYTES, *items],
        )
        return True

    async def pending(self, ticket_id: str) -> list[Record]:
        """The changes waiting in a ticket's batch (tests and diagnostics)."""
        raw = await self.db.client.lrange(self.db.keys.ticketmail_batch(check_ticket_id(ticket_id)), 0, -1)
        return [dict(codec.unpack(codec.as_bytes(r))) for r in raw]

    async def due_at(self, ticket_id: str) -> float | None:
        """When a ticket's pending batch is due (Redis clock, epoch s); None when nothing is pending."""
        score = await self.db.client.zscore(self.db.keys.ticketmail_due, check_ticket_id(ticket_id))
        return None if score is None else float(score)

    async def due(self, limit: int = 100) -> list[str]:
        """Ids of the tickets whose batches are due now (Redis clock), oldest first."""
        found = await self.db.script(TICKETMAIL_DUE)(keys=[self.db.keys.ticketmail_due], args=[limit])
        return [_text(i) for i in found]

    async def claim(self, fence: Fence, ticket_id: str) -> Claim | None:
        """Take a ticket's due batch for this primary (fenced: FencedError when deposed). None when it is not
        due any more (a change just moved it on) or another claim took it."""
        k = self.db.keys
        claim_id = generate_id("m")
        reply = await fence.run(
            TICKETMAIL_CLAIM,
            [k.ticketmail_due, k.ticketmail_claimed, k.ticketmail_batch(check_ticket_id(ticket_id)),
             k.ticketmail_meta(ticket_id), k.ticketmail_claim(claim_id)],
            [ticket_id, claim_id],
            durable=True,  # the mail is sent next
        )  # fmt: skip
        if not reply:
            return None
        dropped, raw = reply
        return Claim(claim_id, ticket_id, [dict(codec.unpack(codec.as_bytes(r))) for r in raw], int(_text(dropped)))

    async def done(self, fence: Fence, claim_id: str) -> None:
        """Forget a claim whose mail went out (or failed for good): fenced, so a deposed primary's claim stays
        on record for its successor to report."""
        k = self.db.keys
        batch = FencedBatch().add("ZREM", [k.ticketmail_claimed], claim_id).add("DEL", [k.ticketmail_claim(claim_id)])
        await fence.execute(batch)

    async def claims(self, limit: int = 1000) -> list[ClaimRecord]:
        """Claims on record, oldest first."""
        k = self.db.keys
        ids = [_text(i) for i in await self.db.client.zrange(k.ticketmail_claimed, 0, limit - 1)]
        if not ids:
            return []
        async with self.db.client.pipeline(transaction=False) as pipe:
            for claim_id in ids:
                pipe.hgetall(k.ticketmail_claim(claim_id))  # type: ignore[unused-awaitable]  # queued
            found = await pipe.execute()
        out: list[ClaimRecord] = []
        for claim_id, raw in zip(ids, found, strict=True):
            rec = {_text(a): _text(b) for a, b in dict(raw).items()}
            out.append(ClaimRecord(claim_id, rec.get("ticket", ""), rec.get("node", ""), int(rec.get("epoch") or 0),
                                   float(rec.get("claimed") or 0), int(rec.get("changes") or 0),
                                   int(rec.get("dropped") or 0)))  # fmt: skip
        return out

    async def interrupted(self, epoch: int) -> list[ClaimRecord]:
        """Claims made under an epoch older than `epoch`: their primary stopped between claim and record."""
        return [c for c in await self.claims() if c.epoch < epoch]

    async def forget(self, fence: Fence, claim_id: str) -> None:
        """Drop an interrupted claim (never resent: see the module docstring)."""
        await self.done(fence, claim_id)

    # -- overdue notices ----------------------------------------------------------------------------
    async def overdue_claim(self, fence: Fence, day: str, ticket_id: str) -> bool:
        """Claim one ticket's overdue notice of `day` (local YYYY-MM-DD) for this primary: True for the one
        caller that may send it, False once anyone has (fenced: FencedError when deposed)."""
        key = self.db.keys.ticket_overdue(day)
        batch = (FencedBatch().add("HSETNX", [key], check_ticket_id(ticket_id), fence.epoch)
                 .add("EXPIRE", [key], OVERDUE_TTL_S))  # fmt: skip
        replies = await fence.execute(batch)
        return int(replies[0]) == 1

    async def overdue_finish(self, fence: Fence, day: str) -> None:
        """Record that `day`'s overdue notices are all sent (a later primary of that day skips the search)."""
        key = self.db.keys.ticket_overdue(day)
        await fence.execute(FencedBatch().add("HSET", [key], DAY_DONE, fence.epoch).add("EXPIRE", [key], OVERDUE_TTL_S))

    async def overdue_done(self, day: str) -> bool:
        return bool(await self.db.client.hexists(self.db.keys.ticket_overdue(day), DAY_DONE))
