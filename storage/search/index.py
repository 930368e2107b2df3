"""Secondary indexes in Redis for the xyOps search syntax: one engine for every indexed record type.

Every record gets a *slot*: a dense integer, allocated once per id (SLOT_ALLOCATE) and never reused.
Slots are grouped in chunks of 65,536 (CHUNK) and every per-slot bitmap is one 8 KiB string per
chunk, so a value seen only in recent records costs only recent chunks. A search is bitmap algebra
(BITOP, BITCOUNT) in one Lua script: its cost follows the number of chunks and the query's shape,
not the number of matches, and no record is read to answer an indexed query.

Redis layout, every key from `Keyspace.index(<index>, ...)`, written `<p>` = `<cluster>:idx:<index>`
below; <c> is a chunk number. There are no sorted sets, so nothing carries a score.

  <p>:seq                        STRING  slots allocated so far (INCR); chunks in use = ceil(seq / CHUNK)
  <p>:slots                      HASH    record id -> slot
  <p>:all:<c>                    STRING  bitmap: slots of chunk c holding a live record
  <p>:rows:<c>                   STRING  8 + id_width bytes per slot: the record's order (floored,
                                         big-endian double), then its id, NUL-padded
  <p>:order:<b>:<c>              STRING  bit plane b (0 = least significant) of floor(order) + 2^47
  <p>:w:<column>:<value>:<c>     STRING  bitmap: slots whose word/text column holds <value>
  <p>:s:<column>:<value>         SET     slots (decimal) whose sparse column holds <value>
  <p>:n:<column>:has:<c>         STRING  bitmap: slots with a value in number/date column <column>
  <p>:n:<column>:<b>:<c>         STRING  bit plane b of floor(value * scale) + 2^(bits-1)
  <p>:tmp:<i>:<c>                STRING  scratch of a running SEARCH; written unreplicated, deleted
                                         before the script returns

Text columns index each word and each adjacent word pair ("big cats"): that is how phrases match.
Numbers and dates are bit-sliced: a range costs 1-3 BITOPs per bit plane. Sorting selects the page
with a bit-sliced top-K over (sorter, order, id), so `total` is exact and paging is exact in either
direction. Writes are one-key commands (SETBIT, SADD, SREM, SETRANGE, HDEL): `index_ops` hands them
out for a FencedBatch or a MULTI with the record itself; `add`, `remove` and `add_many` apply them
atomically through APPLY_OPS, folding each key's SETBITs into BITFIELD calls; `remove_fenced` does the
same behind the fence, together with deleting the records.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import islice
from typing import Any

from .. import codec
from ..connection import Database
from ..fence import Fence
from .plan import Compiler, has, planes
from .query import Query, QueryError, parse
from .scripts import APPLY_OPS, FENCED_APPLY_OPS, SEARCH, SLOT_ALLOCATE, SLOT_ROWS, VACUUM_CHUNK
from .sinks import Op, OpList, Payload, Sink, ones
from .spec import CHUNK, CHUNK_BITS, ORDER, Column, IndexSpec, number_value, text_tokens, word_values

__all__ = ["Column", "IndexSpec", "Indexer", "Op", "SearchResult"]

Record = Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class SearchResult:
    ids: list[str]
    total: int


class Indexer:
    """Indexes records of one IndexSpec and answers queries on them."""

    def __init__(self, db: Database, spec: IndexSpec) -> None:
        self.db = db
        self.spec = spec
        self.row_width = 8 + spec.id_width
        self._keys: dict[tuple[str, ...], str] = {}
        self._planes: dict[tuple[str, str], list[str]] = {}
        self._vectors: dict[tuple[tuple[str, ...], int], list[str]] = {}
        self._chunks = 0  # chunk count the last search used; the script says when it grew

    def chunk_keys(self, parts: tuple[str, ...], chunks: int) -> list[str]:
        """The keys of one vector (a bitmap split by chunk), for chunks 0 .. chunks - 1."""
        found = self._vectors.get((parts, chunks))
        if found is None:
            if len(self._vectors) > 20_000:
                self._vectors.clear()
            found = self._vectors[(parts, chunks)] = [self.key(*parts, str(c)) for c in range(chunks)]
        return found

    def key(self, *parts: str) -> str:
        found = self._keys.get(parts)
        if found is None:
            if len(self._keys) > 200_000:
                self._keys.clear()
            found = self._keys[parts] = self.db.keys.index(self.spec.name, *parts)
        return found

    # -- writes ----------------------------------------------------------------------------------
    async def allocate(self, record_ids: Sequence[str]) -> list[tuple[int, bool]]:
        """(slot, had_one) per id. A slot comes before the write; `index_ops` needs it."""
        if not record_ids:
            return []
        reply = await self.db.script(SLOT_ALLOCATE)(keys=[self.key("slots"), self.key("seq")], args=list(record_ids))
        return [(int(reply[i]), bool(reply[i + 1])) for i in range(0, len(reply), 2)]

    def index_ops(
        self, record_id: str, record: Record, *, slot: int, order: float, old: Record | None = None
    ) -> list[Op]:
        """Commands that index `record` at `slot`; with `old` (as indexed before) only what changed.

        `order` sorts `_id` (e.g. the id's creation time in ms, see `spec.order_from_id`); it is set
        when the record is first added and kept on updates.
        """
        ops = OpList()
        self._emit(ops, record_id, slot, order, record, old)
        return ops.ops

    def remove_ops(self, record_id: str, record: Record, *, slot: int, order: float) -> list[Op]:
        """Commands that take `record` (exactly as indexed) out of the index and free its id."""
        ops = OpList()
        self._emit(ops, record_id, slot, order, None, record)
        return ops.ops

    async def apply(self, ops: Iterable[Op]) -> None:
        """Run commands from index_ops / remove_ops atomically, in one script call."""
        packed = Payload()
        for command, keys, args in ops:
            if len(keys) != 1:
                raise ValueError(f"{command}: index commands touch exactly one key")
            if command == "SETBIT":
                packed.setbits([keys[0]], str(args[0]), str(args[1]))
            else:
                packed.call(command, keys[0], *args)
        await self._run(packed)

    async def _run(self, packed: Payload) -> None:
        if packed.packed:
            payload = codec.pack_for_lua(packed.packed)
            await self.db.script(APPLY_OPS)(keys=list(packed.positions), args=[payload])

    async def add(self, record_id: str, record: Record, old: Record | None = None, *, order: float) -> None:
        """Index a new record, or update one: `old` is the record as it was indexed."""
        ((slot, had),) = await self.allocate([record_id])
        live = had and await self._live(slot)
        if live and old is None:
            raise ValueError(f"{record_id!r} is already in index {self.spec.name!r}: pass old= to update it")
        packed = Payload()
        self._emit(packed, record_id, slot, order, record, old if live else None)
        await self._run(packed)

    async def add_many(self, items: Iterable[tuple[str, Record, float]], *, batch: int = 1000) -> int:
        """Bulk-index new records (id, record, order), `batch` per atomic script call.

        Building a batch overlaps writing the previous one; `items` is consumed lazily.
        """
        pending: asyncio.Task[None] | None = None
        count = 0
        source = iter(items)
        try:
            while part := list(islice(source, batch)):
                packed = await self._bulk(part)
                if pending is not None:
                    await pending
                pending = asyncio.create_task(self._run(packed))
                count += len(part)
        finally:
            if pending is not None:
                await pending
        return count

    async def _bulk(self, part: list[tuple[str, Record, float]]) -> Payload:
        ids = [rid for rid, _, _ in part]
        if len(set(ids)) != len(ids):
            raise ValueError("add_many: an id appears twice in one batch")
        slots = await self.allocate(ids)
        for rid, (slot, had) in zip(ids, slots, strict=True):
            if had and await self._live(slot):
                raise ValueError(f"{rid!r} is already in index {self.spec.name!r}")
        fresh = [slot for slot, had in slots if not had]  # one allocation: consecutive, never used
        packed = Payload((fresh[0], fresh[-1] + 1) if fresh else (0, 0))
        for (rid, record, order), (slot, _) in zip(part, slots, strict=True):
            self._emit(packed, rid, slot, order, record, None)
        packed.flush()
        return packed

    async def remove(self, record_id: str, record: Record) -> bool:
        """Take a record out of the index; False if it was not in it."""
        found = await self.db.client.hget(self.key("slots"), record_id)
        if found is None:
            return False
        slot = int(found)
        chunk, bit = str(slot >> CHUNK_BITS), slot & (CHUNK - 1)
        if not await self._live(slot):
            await self.db.client.hdel(self.key("slots"), record_id)
            return False
        start = bit * self.row_width
        row = await self.db.client.getrange(self.key("rows", chunk), start, start + 7)
        raw = row if isinstance(row, bytes) else row.encode()
        (order,) = struct.unpack(">d", raw.ljust(8, b"\0"))
        packed = Payload()
        self._emit(packed, record_id, slot, order, None, record)
        await self._run(packed)
        return True

    async def remove_fenced(self, fence: Fence, records: Mapping[str, Record], also: Iterable[Op] = ()) -> int:
        """Take records (each exactly as indexed) out of the index and run the one-key commands `also`
        (deleting the records themselves) in one fenced script: a deposed primary changes nothing, and
        no crash parts a record from its entries. Returns how many of the records were indexed."""
        held: list[tuple[str, int]] = []
        if records:
            found = await self.db.client.hmget(self.key("slots"), list(records))
            held = [(rid, int(slot)) for rid, slot in zip(records, found, strict=True) if slot is not None]
        replies: list[Any] = []
        if held:
            chunks: dict[int, int] = {}  # chunk -> position of its `all` key (its `rows` key follows)
            wanted: list[int] = [self.row_width]
            for _, slot in held:
                position = chunks.setdefault(slot >> CHUNK_BITS, 2 * len(chunks) + 1)
                wanted += [position, slot & (CHUNK - 1)]
            names = [self.key(part, str(c)) for c in chunks for part in ("all", "rows")]
            replies = await self.db.script(SLOT_ROWS)(keys=names, args=wanted)
        packed = Payload()
        indexed = 0
        for i, (rid, slot) in enumerate(held):
            live, row = replies[2 * i], replies[2 * i + 1]
            if not live:
                packed.call("HDEL", self.key("slots"), rid)
                continue
            raw = row if isinstance(row, bytes) else str(row).encode()
            (order,) = struct.unpack(">d", raw.ljust(8, b"\0"))
            self._emit(packed, rid, slot, order, None, records[rid])
            indexed += 1
        for command, keys, args in also:
            if len(keys) != 1:
                raise ValueError(f"{command}: commands run with index changes touch exactly one key")
            packed.call(command, keys[0], *args)
        if packed.packed:
            await fence.run(FENCED_APPLY_OPS, list(packed.positions), [codec.pack_for_lua(packed.packed)])
        return indexed

    async def _live(self, slot: int) -> bool:
        chunk = str(slot >> CHUNK_BITS)
        return bool(await self.db.client.getbit(self.key("all", chunk), slot & (CHUNK - 1)))

    def _row(self, record_id: str, order: float) -> bytes:
        raw = record_id.encode()
        if not raw or len(raw) > self.spec.id_width or b"\0" in raw:
            raise ValueError(f"record id {record_id!r} must be 1..{self.spec.id_width} bytes without NUL")
        floored = ORDER.encode(order) - (1 << (ORDER.bits - 1))  # the order exactly as its planes hold it
        return struct.pack(">d", float(floored)) + raw.ljust(self.spec.id_width, b"\0")

    def _emit(
        self, sink: Sink, record_id: str, slot: int, order: float, new: Record | None, old: Record | None
    ) -> None:
        """Write `new` at `slot` where `old` was: old None adds the record, new None removes it."""
        chunk, bit, member = str(slot >> CHUNK_BITS), str(slot & (CHUNK - 1)), str(slot)
        sink.slot = slot
        if old is None or new is None:
            live = self.key("all", chunk), self.key("rows", chunk)
            start = (slot & (CHUNK - 1)) * self.row_width
            if old is None:
                sink.setbits([live[0]], bit, "1")
                sink.call("SETRANGE", live[1], str(start), self._row(record_id, order))
                self._numbers(sink, ORDER, chunk, bit, None, ORDER.encode(order))
            else:
                sink.setbits([live[0]], bit, "0")
                sink.call("SETRANGE", live[1], str(start), bytes(self.row_width))
                sink.call("HDEL", self.key("slots"), record_id)
                self._numbers(sink, ORDER, chunk, bit, ORDER.encode(order), None)
        for col in self.spec.columns:
            if col.numeric:
                self._numbers(sink, col, chunk, bit, _encoded(col, old), _encoded(col, new))
                continue
            now, before = _tokens(col, new), _tokens(col, old)
            changes = [(v, "1") for v in now] if not before else [(v, "0") for v in before - now]
            changes += [(v, "1") for v in now - before] if before else []
            for value, on in changes:
                if col.sparse:
                    sink.call("SADD" if on == "1" else "SREM", self.key("s", col.name, value), member)
                else:
                    sink.setbits([self.key("w", col.name, value, chunk)], bit, on)

    def _numbers(self, sink: Sink, col: Column, chunk: str, bit: str, old: int | None, new: int | None) -> None:
        """Flip only the bit planes that differ between the old and the new encoded value."""
        if old == new:
            return
        if col is not ORDER and (old is None) != (new is None):
            sink.setbits([self.key(*has(col), chunk)], bit, "0" if new is None else "1")
        names = self._planes.get((col.name if col is not ORDER else "", chunk))
        if names is None:  # least significant first
            names = [self.key(*parts, chunk) for parts in reversed(planes(col))]
            self._planes[(col.name if col is not ORDER else "", chunk)] = names
        was, now = old or 0, new or 0
        sink.setbits([names[b] for b in ones(now & ~was)], bit, "1")
        sink.setbits([names[b] for b in ones(was & ~now)], bit, "0")

    # -- search ----------------------------------------------------------------------------------
    async def search(
        self, query: str | Query, *, offset: int = 0, limit: int = 1, sort_by: str = "_id", sort_dir: int = -1
    ) -> SearchResult:
        """Matching ids, the page [offset, offset + limit) in the requested order, and the exact total."""
        parsed = parse(query, self.spec) if isinstance(query, str) else query
        if offset < 0 or limit < 0:
            raise QueryError("offset and limit must not be negative")
        if sort_by != "_id" and sort_by not in self.spec.sorters:
            raise QueryError(f"cannot sort index {self.spec.name!r} by {sort_by!r} (use _id or {self.spec.sorters})")
        sorter = ORDER if sort_by == "_id" else self.spec.by_name[sort_by]
        compiler = Compiler(self.spec)
        program = compiler.compile(parsed.root)
        sort_keys = [
            [compiler.vector(*p) for p in planes(c)] for c in ([ORDER] if sorter is ORDER else [sorter, ORDER])
        ]
        plan: dict[str, Any] = {
            "cw": CHUNK, "w": self.row_width, "ops": program.ops, "r": program.result,
            "sp": program.loads, "sk": sort_keys, "sv": sort_keys[0] if sorter is not ORDER else [],
            "rows": compiler.vector("rows"), "tk": [compiler.temp() for _ in range(6)],
            "off": offset, "lim": limit, "desc": sort_dir < 0,
        }  # fmt: skip
        plan["t"], plan["nv"] = program.temps, len(program.vectors)
        chunks = self._chunks or await self._chunks_used()
        while chunks:
            keys = [self.key("seq")]
            for parts in program.vectors:
                keys += self.chunk_keys(parts, chunks)
            keys += [self.key(*parts) for parts in program.sets]
            plan["c"] = chunks
            reply = await self.db.script(SEARCH)(keys=keys, args=[codec.pack_for_lua(plan)])
            if reply[0] != -1:
                self._chunks = chunks
                return SearchResult([bytes(i).decode() for i in reply[1:]], int(reply[0]))
            chunks = int(reply[1])
        return SearchResult([], 0)

    async def _chunks_used(self) -> int:
        seq = int(await self.db.client.get(self.key("seq")) or 0)
        return -(-seq // CHUNK)

    # -- upkeep ----------------------------------------------------------------------------------
    async def vacuum(self) -> int:
        """Delete the keys of chunks left without live records (e.g. after old jobs expired).

        Maintenance, not a query: it lists the index's word bitmaps with one SCAN of their key
        prefix, then checks and drops each full, empty chunk atomically. Returns chunks dropped.
        """
        full = await self._chunks_used() - 1  # the last chunk is still being filled
        words: dict[str, list[str]] = {}
        pattern = self.key("w", "*")
        async for found in self.db.client.scan_iter(match=pattern, count=1000):
            name = bytes(found).decode() if not isinstance(found, str) else found
            words.setdefault(name.rsplit(":", 1)[1], []).append(name)
        fixed = [("rows",), *planes(ORDER)]
        for col in self.spec.columns:
            fixed += [has(col), *planes(col)] if col.numeric else []
        dropped = 0
        for c in range(max(full, 0)):
            keys = [self.key("all", str(c))] + [self.key(*p, str(c)) for p in fixed] + words.get(str(c), [])
            dropped += int(await self.db.script(VACUUM_CHUNK)(keys=keys, args=[]) > 0)
        return dropped


def _encoded(col: Column, record: Record | None) -> int | None:
    value = None if record is None else number_value(col.value(record))
    return None if value is None else col.encode(value)


def _tokens(col: Column, record: Record | None) -> set[str]:
    if record is None:
        return set()
    value = col.value(record)
    return set(text_tokens(value) if col.kind == "text" else word_values(value))
