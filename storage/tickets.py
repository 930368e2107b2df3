"""Tickets: one msgpack record per ticket, the `tickets` search index and the cluster-wide ticket number.

- Every write is one fenced script (only the primary writes) that changes the record and its search entries
  together, so the index always matches the stored record and no crash parts them. The entries of an update are
  the difference between the record read and the new one; the script applies them only if the record is still
  byte for byte what was read (a compare-and-swap on its sha1), so two requests changing one ticket at once never
  lose an update: the loser reads again (`update`).
- `num` comes from a counter INCRed inside the script that inserts the ticket: the record is packed with a fixed
  width placeholder for `num` at a known offset, and the script writes the number there, into the `num` column's
  bit planes and into the number -> id hash. No two tickets share a number and a number is never given out twice,
  across failovers too (⚠ xyOps reads `next_ticket_num` before the insert and saves it after, in memory first).
- Columns are those of xyOps' unbase `tickets` index (facts §8), so its queries work unchanged, plus `alerts`
  (the alert invocations a ticket is linked to) and a `jobs` column Podium keeps filled (⚠ xyOps never writes it).
  `created`, `modified` and `due` are dates to the second (⚠ xyOps keeps created/modified to the hour as numbers,
  so date queries on them do not work there). Bare words search `body`: author, subject and body.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Collection, Sequence
from typing import Any

from . import codec
from .connection import Database
from .errors import Conflict
from .fence import Fence
from .pages import fetch_page
from .scripts import fenced
from .search.index import Column, Indexer, IndexSpec, Op
from .search.plan import has, planes
from .search.query import Or, Query, Term, parse, restrict
from .search.sinks import Payload
from .search.spec import CHUNK, CHUNK_BITS, text_words

Record = dict[str, Any]
TICKET_ID = re.compile(r"^[a-z0-9_]{1,32}$")  # xyOps: ^[a-z0-9_]+$; the index row reserves 32 bytes
MAX_RECORD_BYTES = 2 * 1024 * 1024  # packed; the API bounds each field far below this
TEXT_WORDS = 2000  # words indexed per text column (⚠ xyOps: subject 50, body and changes 500)
MGET_BATCH = 200
CAS_RETRIES = 20
NUM_BITS = 32
_PLACEHOLDER = 0xFFFFFFFF  # packs as 0xce + 4 bytes: the script writes the number over it

TICKETS_INDEX = IndexSpec(
    name="tickets",
    columns=(
        Column("type", "word"),
        Column("status", "word"),
        Column("tags", "word"),
        Column("category", "word"),
        Column("server", "word", sparse=True),
        Column("jobs", "word", sparse=True),
        Column("alerts", "word", sparse=True),
        Column("username", "word"),
        Column("assignees", "word"),
        Column("cc", "word"),
        Column("num", "number", bits=NUM_BITS),
        Column("created", "date"),
        Column("modified", "date"),
        Column("due", "date"),
        Column("subject", "text"),
        Column("body", "text"),
        Column("changes", "text"),
    ),
    default_column="body",
    sorters=("num", "modified"),
)
_NUM = TICKETS_INDEX.by_name["num"]

# Shared by the ticket scripts: apply index commands whose key positions start after KEYS[base].
_APPLY = """
local function apply(payload, base)
  if payload == '' then return end
  for _, op in ipairs(cmsgpack.unpack(payload)) do
    op[2] = KEYS[op[2] + base]
    redis.call(unpack(op))
  end
end
"""

# Insert a new ticket with the next number, and its search entries.
# KEYS[1] leader, KEYS[2] epoch, KEYS[3] record, KEYS[4] number counter, KEYS[5] number -> id hash,
# KEYS[6 .. 5 + B] the `num` column's bit planes of the record's chunk (least significant first),
# KEYS[6 + B] the `num` column's has-a-value bitmap of that chunk, KEYS[7 + B ..] the keys the index commands name
# ARGV[1] node id, ARGV[2] epoch, ARGV[3] ticket id, ARGV[4] packed record with a uint32 placeholder for `num`,
# ARGV[5] 1-based position of the placeholder's 0xce marker, ARGV[6] the slot's bit in its chunk, ARGV[7] B,
# ARGV[8] msgpack index commands {command, key position (1 = KEYS[7 + B]), args...} ('' = none)
# return the ticket's number, or 0 when a ticket of that id exists (nothing written)
TICKET_CREATE = fenced(_APPLY + """
if redis.call('EXISTS', KEYS[3]) == 1 then return 0 end
local num = redis.call('INCR', KEYS[4])
local at, bits = tonumber(ARGV[5]), tonumber(ARGV[7])
redis.call('SET', KEYS[3], string.sub(ARGV[4], 1, at) .. struct.pack('>I4', num) .. string.sub(ARGV[4], at + 5))
redis.call('HSET', KEYS[5], num, ARGV[3])
local value = num + 2 ^ (bits - 1)
for b = 0, bits - 1 do
  redis.call('SETBIT', KEYS[6 + b], ARGV[6], math.floor(value / 2 ^ b) % 2)
end
redis.call('SETBIT', KEYS[6 + bits], ARGV[6], 1)
apply(ARGV[8], 6 + bits)
return num
""")

# Rewrite a ticket if it is still byte for byte what the caller read, with the change of its search entries.
# KEYS[1] leader, KEYS[2] epoch, KEYS[3] record, KEYS[4 ..] the keys the index commands name
# ARGV[1] node id, ARGV[2] epoch, ARGV[3] sha1 hex of the record read, ARGV[4] packed new record,
# ARGV[5] msgpack index commands (key position 1 = KEYS[4]; '' = none)
# return 1 written, 0 the record changed (or is gone) since it was read (nothing written)
TICKET_CAS = fenced(_APPLY + """
local raw = redis.call('GET', KEYS[3])
if not raw or redis.sha1hex(raw) ~= ARGV[3] then return 0 end
redis.call('SET', KEYS[3], ARGV[4])
apply(ARGV[5], 3)
return 1
""")

# Delete a ticket if it is still what the caller read, with its number and its search entries.
# KEYS[1] leader, KEYS[2] epoch, KEYS[3] record, KEYS[4] number -> id hash, KEYS[5 ..] the index commands' keys
# ARGV[1] node id, ARGV[2] epoch, ARGV[3] sha1 hex of the record read, ARGV[4] its number, ARGV[5] its id,
# ARGV[6] msgpack index commands (key position 1 = KEYS[5])
# return 1 deleted, 0 the record changed (or is gone) since it was read (nothing deleted)
TICKET_DELETE = fenced(_APPLY + """
local raw = redis.call('GET', KEYS[3])
if not raw or redis.sha1hex(raw) ~= ARGV[3] then return 0 end
redis.call('DEL', KEYS[3])
if redis.call('HGET', KEYS[4], ARGV[4]) == ARGV[5] then redis.call('HDEL', KEYS[4], ARGV[4]) end
apply(ARGV[6], 4)
return 1
""")


def ticket_files_prefix(ticket_id: str) -> str:
    """Where a ticket's uploaded files live in the file store (`files/tickets/<ticket>/<random>/<name>`)."""
    return f"files/tickets/{ticket_id}/"


def valid_ticket_id(ticket_id: Any) -> bool:
    return isinstance(ticket_id, str) and bool(TICKET_ID.fullmatch(ticket_id))




def _words(value: Any) -> list[str]:
    return [str(v) for v in value if v is not None] if isinstance(value, list) else []


def _text(*parts: Any) -> str:
    """The first TEXT_WORDS words of the parts, as one text (tokenised again exactly the same way)."""
    words: list[str] = []
    for part in parts:
        if part:
            words += text_words(part)[: TEXT_WORDS - len(words)]
    return " ".join(words)


def index_fields(record: Record) -> Record:
    """The searchable view of a ticket."""
    changes = record.get("changes")
    due = record.get("due")
    return {
        "type": str(record.get("type") or ""),
        "status": str(record.get("status") or ""),
        "tags": _words(record.get("tags")),
        "category": str(record.get("category") or ""),
        "server": str(record.get("server") or ""),
        "jobs": _words(record.get("jobs")),
        "alerts": _words(record.get("alerts")),
        "username": str(record.get("username") or ""),
        "assignees": _words(record.get("assignees")),
        "cc": _words(record.get("cc")),
        "num": record.get("num"),
        "created": record.get("created"),
        "modified": record.get("modified"),
        "due": due if isinstance(due, int | float) and not isinstance(due, bool) and due > 0 else None,
        "subject": _text(record.get("subject")),
        "body": _text(record.get("username"), record.get("subject"), record.get("body")),
        # xyOps indexes the changes as JSON: comment text, usernames, keys and values all match `changes:`.
        "changes": _text(json.dumps(changes, ensure_ascii=False, default=str)) if changes else "",
    }


def _order(record: Record) -> float:
    """`_id` order (ms): when the ticket was created (never changes, so updates and deletes find it)."""
    created = record.get("created")
    return float(created) * 1000 if isinstance(created, int | float) and not isinstance(created, bool) else 0.0


def _payload(ops: Sequence[Op]) -> tuple[list[str], bytes | str]:
    """Index commands as a packed list for the ticket scripts, and the keys they name (in position order)."""
    packed = Payload()
    for command, keys, args in ops:
        if command == "SETBIT":
            packed.setbits([keys[0]], str(args[0]), str(args[1]))
        else:
            packed.call(command, keys[0], *args)
    if not packed.packed:
        return [], ""
    return list(packed.positions), codec.pack_for_lua(packed.packed)


def _with_placeholder(record: Record) -> tuple[bytes, int]:
    """The record packed with `num` first as a uint32 placeholder, and the 1-based position of its marker."""
    packed = codec.pack({"num": _PLACEHOLDER, **{k: v for k, v in record.items() if k != "num"}})
    head = packed[0]
    header = 1 if 0x80 <= head <= 0x8F else 3 if head == 0xDE else 5
    if packed[header : header + 5] != b"\xa3num\xce":
        raise ValueError("ticket record did not pack with its number first")
    return packed, header + 5


class TicketStore:
    """Ticket records, their numbers and the `tickets` search index."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.index = Indexer(db, TICKETS_INDEX)

    # -- reads ---------------------------------------------------------------------------------
    async def get(self, ticket_id: str) -> Record | None:
        if not valid_ticket_id(ticket_id):
            return None
        return codec.unpack_record(await self.db.client.get(self.db.keys.ticket(ticket_id)))

    async def get_by_num(self, num: int) -> Record | None:
        found = await self.db.client.hget(self.db.keys.ticket_nums, str(num))
        return None if found is None else await self.get(codec.as_bytes(found).decode())

    async def get_many(self, ids: Sequence[str]) -> list[Record | None]:
        """The records of `ids`, in order, None where one is missing (or the id is malformed)."""
        out: list[Record | None] = [None] * len(ids)
        wanted = [(i, tid) for i, tid in enumerate(ids) if valid_ticket_id(tid)]
        for start in range(0, len(wanted), MGET_BATCH):
            part = wanted[start : start + MGET_BATCH]
            raws = await self.db.client.mget([self.db.keys.ticket(tid) for _, tid in part])
            for (i, _), raw in zip(part, raws, strict=True):
                out[i] = codec.unpack_record(raw)
        return out

    async def search(
        self, query: str, offset: int, limit: int, sort_dir: int = -1, *, sort_by: str = "_id",
        categories: Collection[str] | None = None,
    ) -> tuple[list[Record], int]:  # fmt: skip
        """Tickets matching `query`; with `categories` only those in one of them (a category-limited caller: the
        restriction is ANDed onto the parsed query, never pasted into its text). QueryError for a bad query,
        PageTooLarge for a page past the byte budget."""
        parsed = parse(query, TICKETS_INDEX)
        if categories is not None:
            allowed = Or(tuple(Term("category", (c.strip().lower(),)) for c in sorted(categories) if c.strip()))
            parsed = restrict(parsed, Query(allowed))
        found = await self.index.search(parsed, offset=offset, limit=limit, sort_by=sort_by, sort_dir=sort_dir)
        rows = await fetch_page(self.db, [self.db.keys.ticket(i) for i in found.ids])
        return [r for r in rows if r is not None], found.total

    async def stored(self, ticket_id: str) -> tuple[Record, str] | None:
        """A ticket's record and the digest of its bytes, for `swap` and `delete`."""
        if not valid_ticket_id(ticket_id):
            return None
        raw = await self.db.client.get(self.db.keys.ticket(ticket_id))
        if raw is None:
            return None
        data = codec.as_bytes(raw)
        found = codec.unpack(data)
        return (dict(found), hashlib.sha1(data).hexdigest()) if isinstance(found, dict) else None

    # -- writes ----------------------------------------------------------------------------------
    async def create(self, fence: Fence, record: Record) -> Record:
        """Store a new ticket with the next number (fenced) and answer it as stored. Conflict("exists") when a
        ticket of that id exists, ValueError for a malformed id or a record past MAX_RECORD_BYTES (nothing
        written either way); FencedError if this node is no longer the primary."""
        ticket_id = str(record.get("id", ""))
        if not valid_ticket_id(ticket_id):
            raise ValueError(f"invalid ticket id {ticket_id[:40]!r}")
        packed, at = _with_placeholder(record)
        if len(packed) > MAX_RECORD_BYTES:
            raise ValueError(f"a ticket packs to at most {MAX_RECORD_BYTES} bytes (this one {len(packed)})")
        ((slot, _),) = await self.index.allocate([ticket_id])
        fields = {**index_fields(record), "num": None}  # the script writes the number's entries
        ops = self.index.index_ops(ticket_id, fields, slot=slot, order=_order(record))
        chunk = str(slot >> CHUNK_BITS)
        num_keys = [self.index.key(*parts, chunk) for parts in reversed(planes(_NUM))]
        num_keys.append(self.index.key(*has(_NUM), chunk))
        op_keys, payload = _payload(ops)
        k = self.db.keys
        num = int(await fence.run(
            TICKET_CREATE, [k.ticket(ticket_id), k.ticket_counter, k.ticket_nums, *num_keys, *op_keys],
            [ticket_id, packed, at, slot & (CHUNK - 1), NUM_BITS, payload],
        ))  # fmt: skip
        if num == 0:
            raise Conflict("exists", f"ticket {ticket_id} exists")
        return {**record, "num": num}

    async def swap(self, fence: Fence, digest: str, old: Record, new: Record) -> bool:
        """Rewrite a ticket if it is unchanged since `stored` gave (`old`, `digest`), moving its search entries in
        the same step. False when it changed or went meanwhile (nothing written). `id`, `num` and `created` are
        kept from `old`."""
        ticket_id = str(old["id"])
        new = {**new, "id": ticket_id, "num": old.get("num"), "created": old.get("created")}
        packed = codec.pack(new)
        if len(packed) > MAX_RECORD_BYTES:
            raise ValueError(f"a ticket packs to at most {MAX_RECORD_BYTES} bytes (this one {len(packed)})")
        ((slot, _),) = await self.index.allocate([ticket_id])
        ops = self.index.index_ops(ticket_id, index_fields(new), slot=slot, order=_order(old), old=index_fields(old))
        op_keys, payload = _payload(ops)
        done = await fence.run(TICKET_CAS, [self.db.keys.ticket(ticket_id), *op_keys], [digest, packed, payload])
        return int(done) == 1

    async def update(self, fence: Fence, ticket_id: str, change: Callable[[Record], Record | None]) -> Record | None:
        """Read-modify-write one ticket with compare-and-swap behind the fence. `change` gets a copy of the record
        and returns the new one, or None to write nothing (the record is answered as it is); it may raise to
        abort. None when there is no such ticket. A write meanwhile makes it read and change again, up to
        CAS_RETRIES times (then Conflict); FencedError if this node is no longer the primary."""
        for _ in range(CAS_RETRIES):
            found = await self.stored(ticket_id)
            if found is None:
                return None
            current, digest = found
            updated = change(dict(current))
            if updated is None:
                return current
            if await self.swap(fence, digest, current, updated):
                return {**updated, "id": current["id"], "num": current.get("num"), "created": current.get("created")}
        raise Conflict("revision", f"ticket {ticket_id} kept changing during an update")

    async def delete(
        self, fence: Fence, ticket_id: str, check: Callable[[Record], None] | None = None
    ) -> Record | None:
        """Delete a ticket, its number and its search entries in one fenced step; answers the deleted record, None
        when there was none. `check` sees the record first and may raise to refuse (nothing deleted)."""
        for _ in range(CAS_RETRIES):
            found = await self.stored(ticket_id)
            if found is None:
                return None
            current, digest = found
            if check is not None:
                check(current)
            slot = await self.db.client.hget(self.index.key("slots"), ticket_id)
            ops: list[Op] = []
            if slot is not None:
                ops = self.index.remove_ops(ticket_id, index_fields(current), slot=int(slot), order=_order(current))
            op_keys, payload = _payload(ops)
            k = self.db.keys
            done = await fence.run(TICKET_DELETE, [k.ticket(ticket_id), k.ticket_nums, *op_keys],
                                   [digest, str(current.get("num", "")), ticket_id, payload])  # fmt: skip
            if int(done) == 1:
                return current
        raise Conflict("revision", f"ticket {ticket_id} kept changing during a delete")
