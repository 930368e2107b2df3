"""The two Redis streams between conductors and agents.

- Commands for one agent (`launch_job`, `abort_job`, `update`, ...) go onto that agent's stream, whoever writes
  them (the primary's dispatcher, a handler on any node). The node holding the agent's socket reads the stream and
  sends each entry as a frame, recording the last id sent, so the node an agent reconnects to carries on from there.
- Reports from agents for the primary (`jobs` updates, finishes, meta rows) go onto one inbox stream, from every
  node. The primary applies them in order and records (fenced) the last id it applied, so a new primary resumes
  where the old one stopped; an entry applied twice changes nothing twice (updates are merges, a finish of a
  finished job is ignored).

Entries are one field `f`: msgpack of {"cmd", "data"} (commands) or {"server", "cmd", "data", "node", "at"} (inbox).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from . import codec
from .connection import Database
from .fence import Fence, FencedBatch

Record = dict[str, Any]
COMMANDS_MAXLEN = 10_000  # per agent, approximate; far more than any agent has outstanding
INBOX_BATCH = 500


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _entries(reply: Any) -> list[tuple[str, Record]]:
    out: list[tuple[str, Record]] = []
    for entry_id, fields in reply or []:
        raw = fields.get(b"f") if b"f" in fields else fields.get("f")
        if raw is not None:
            out.append((_text(entry_id), dict(codec.unpack(raw))))
    return out


class AgentStreams:
    def __init__(self, db: Database) -> None:
        self.db = db

    # -- commands for agents ---------------------------------------------------------
    async def send(self, server_id: str, cmd: str, data: Record) -> str:
        """Queue one frame for an agent; returns the entry id."""
        entry = await self.db.client.xadd(
            self.db.keys.agent_commands(server_id), {"f": codec.pack({"cmd": cmd, "data": data})},
            maxlen=COMMANDS_MAXLEN, approximate=True,
        )  # fmt: skip
        return _text(entry)

    def send_op(self, batch: FencedBatch, server_id: str, cmd: str, data: Record) -> None:
        """The same XADD as part of a fenced batch (atomic with a job transition)."""
        batch.add("XADD", [self.db.keys.agent_commands(server_id)], "MAXLEN", "~", COMMANDS_MAXLEN, "*", "f",
                  codec.pack({"cmd": cmd, "data": data}))  # fmt: skip

    async def read_commands(
        self, cursors: Mapping[str, str], *, block_ms: int, count: int = 200, client: Any = None
    ) -> dict[str, list[tuple[str, Record]]]:
        """New entries on the streams of the given agents after their cursors (blocking up to `block_ms`).
        `client` lets the caller use a connection of its own for the blocking read."""
        if not cursors:
            return {}
        keys = self.db.keys
        streams: dict[Any, Any] = {keys.agent_commands(sid): cur for sid, cur in cursors.items()}
        by_key = {keys.agent_commands(sid): sid for sid in cursors}
        reply: Any = await (client or self.db.client).xread(streams, count=count, block=block_ms)
        out: dict[str, list[tuple[str, Record]]] = {}
        for stream, entries in reply or []:
            out[by_key[_text(stream)]] = _entries(entries)
        return out

    async def cursors(self, server_ids: Sequence[str]) -> dict[str, str]:
        """Where each agent's stream was last read up to ('0-0' when never)."""
        if not server_ids:
            return {}
        found = await self.db.client.hmget(self.db.keys.agent_cursors, list(server_ids))
        return {sid: _text(c) if c is not None else "0-0" for sid, c in zip(server_ids, found, strict=True)}

    async def save_cursors(self, cursors: Mapping[str, str]) -> None:
        if cursors:
            await self.db.client.hset(self.db.keys.agent_cursors, mapping=dict[Any, Any](cursors))

    async def claim_delivery(self, job_id: str) -> bool:
        """True the first time a job's launch is handed to a socket (see Keyspace.job_delivered)."""
        return bool(await self.db.client.set(self.db.keys.job_delivered(job_id), "1", nx=True, ex=86400))

    async def drop(self, server_id: str) -> None:
        """Forget an agent's stream (delete_server)."""
        async with self.db.client.pipeline(transaction=True) as pipe:
            pipe.delete(self.db.keys.agent_commands(server_id))  # type: ignore[unused-awaitable]  # queued
            pipe.hdel(self.db.keys.agent_cursors, server_id)  # type: ignore[unused-awaitable]
            await pipe.execute()

    # -- reports for the primary ---------------------------------------------------------
    async def post(self, entries: Sequence[Record]) -> None:
        """Add reports to the primary's inbox (one round trip for several)."""
        if not entries:
            return
        async with self.db.client.pipeline(transaction=False) as pipe:
            for entry in entries:
                fields: dict[Any, Any] = {"f": codec.pack(entry)}
                # Never trimmed by length: it holds finishes agents were told are accepted. The primary trims what
                # it has applied (inbox_done_ops); without a primary it grows by the agents' reports.
                pipe.xadd(self.db.keys.dispatch_inbox, fields)  # type: ignore[unused-awaitable]
            await pipe.execute()

    async def inbox_cursor(self) -> str:
        raw = await self.db.client.get(self.db.keys.dispatch_cursor)
        return _text(raw) if raw is not None else "0-0"

    async def read_inbox(
        self, after: str, *, block_ms: int, count: int = INBOX_BATCH, client: Any = None
    ) -> list[tuple[str, Record]]:
        streams: dict[Any, Any] = {self.db.keys.dispatch_inbox: after}
        reply: Any = await (client or self.db.client).xread(streams, count=count, block=block_ms)
        return _entries(reply[0][1]) if reply else []

    def inbox_done_ops(self, batch: FencedBatch, last_id: str) -> None:
        """Record (in a fenced batch) that the inbox is applied up to `last_id`, and trim what came before."""
        batch.add("SET", [self.db.keys.dispatch_cursor], last_id)
        batch.add("XTRIM", [self.db.keys.dispatch_inbox], "MINID", last_id)

    async def inbox_done(self, fence: Fence, last_id: str) -> None:
        batch = FencedBatch()
        self.inbox_done_ops(batch, last_id)
        await fence.execute(batch)
