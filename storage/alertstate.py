"""Alert state between samples: the inbox of per-sample results and each server's warm entries.

The node holding an agent's socket evaluates the alert expressions of each minute sample (the sample is there,
and that spreads the work over the nodes) and posts only the results onto one inbox stream. The primary applies
them in order: it reads the server's warm entries, works out what fires and what clears, and writes the new
entries, any invocation created or cleared, the action runs and its inbox cursor in ONE fenced batch. So a
failover between two samples loses no warm-up (the counters live here, not in a conductor's memory, as they do in
xyOps), and an entry is applied exactly once: a new primary resumes after the last cursor written.

Inbox entries are one field `f`: msgpack {server, date, hostname, ip, groups, results: {alert id: message or nil}}.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from . import codec
from .connection import Database
from .fence import FencedBatch

Record = dict[str, Any]
INBOX_BATCH = 200


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class AlertStateStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    # -- the inbox ------------------------------------------------------------------------------
    async def post(self, entries: Sequence[Record]) -> None:
        """Add sample results for the primary (one round trip for several). Not trimmed by length: the primary
        trims what it has applied; with no primary for a long time it grows by one small entry per sample."""
        if not entries:
            return
        async with self.db.client.pipeline(transaction=False) as pipe:
            for entry in entries:
                pipe.xadd(self.db.keys.alert_inbox, {"f": codec.pack(entry)})  # type: ignore[unused-awaitable]
            await pipe.execute()

    async def cursor(self) -> str:
        raw = await self.db.client.get(self.db.keys.alert_cursor)
        return _text(raw) if raw is not None else "0-0"

    async def read(self, after: str, *, block_ms: int, count: int = INBOX_BATCH, client: Any = None
                   ) -> list[tuple[str, Record]]:  # fmt: skip
        reply: Any = await (client or self.db.client).xread({self.db.keys.alert_inbox: after}, count=count,
                                                            block=block_ms)  # fmt: skip
        out: list[tuple[str, Record]] = []
        for entry_id, fields in (reply[0][1] if reply else []):
            raw = fields.get(b"f") if b"f" in fields else fields.get("f")
            if raw is not None:
                out.append((_text(entry_id), dict(codec.unpack(raw))))
        return out

    def done_ops(self, batch: FencedBatch, last_id: str) -> None:
        """Record (in the batch that applies them) that entries up to `last_id` are applied; trim them."""
        batch.add("SET", [self.db.keys.alert_cursor], last_id)
        batch.add("XTRIM", [self.db.keys.alert_inbox], "MINID", last_id)

    # -- warm entries ------------------------------------------------------------------------------
    async def warm(self, servers: Iterable[str]) -> dict[str, dict[str, Record]]:
        """server -> alert id -> warm entry, for each server asked (empty when it has none)."""
        ids = list(dict.fromkeys(servers))
        async with self.db.client.pipeline(transaction=False) as pipe:
            for server in ids:
                pipe.hgetall(self.db.keys.alert_warm(server))  # type: ignore[unused-awaitable]
            replies = await pipe.execute()
        return {server: {_text(k): dict(codec.unpack(v)) for k, v in (reply or {}).items()}
                for server, reply in zip(ids, replies, strict=True)}  # fmt: skip

    def warm_ops(self, batch: FencedBatch, server: str, entries: Mapping[str, Record], now: float) -> None:
        """Replace a server's warm entries (none left: the hash goes, and the server leaves the stale sweep)."""
        k = self.db.keys
        batch.add("DEL", [k.alert_warm(server)])
        if entries:
            args: list[Any] = []
            for alert_id, entry in entries.items():
                args += [alert_id, codec.pack(entry)]
            batch.add("HSET", [k.alert_warm(server)], *args)
            batch.add("ZADD", [k.alert_servers], repr(float(now)), server)
        else:
            batch.add("ZREM", [k.alert_servers], server)

    def active_ops(self, batch: FencedBatch, server: str, alert_id: str, invocation_id: str | None) -> None:
        key = f"{server}-{alert_id}"
        if invocation_id:
            batch.add("HSET", [self.db.keys.alerts_active], key, invocation_id)
        else:
            batch.add("HDEL", [self.db.keys.alerts_active], key)

    async def active(self) -> dict[str, str]:
        """'<server>-<alert id>' -> invocation id of every active alert."""
        found = await self.db.client.hgetall(self.db.keys.alerts_active)
        return {_text(k): _text(v) for k, v in found.items()}

    async def stale(self, before: float, limit: int = 500) -> list[str]:
        """Servers whose warm entries were last refreshed before `before` (epoch s)."""
        found = await self.db.client.zrangebyscore(self.db.keys.alert_servers, "-inf", repr(float(before)),
                                                   start=0, num=limit)  # fmt: skip
        return [_text(s) for s in found]

    # -- action results of invocations ---------------------------------------------------------------
    def result_ops(self, batch: FencedBatch, invocation_id: str, run_id: str, result: Record) -> None:
        """Append an action's result to its invocation and retire the run (storage/actions.py), in one batch."""
        k = self.db.keys
        batch.add("RPUSH", [k.alert_results(invocation_id)], codec.pack({**result, "run": run_id}))
        batch.add("DEL", [k.action_run(run_id)])
        batch.add("ZREM", [k.actions_claimed], run_id)
        batch.add("ZREM", [k.actions_due], run_id)

    async def results(self, invocation_id: str) -> list[Record]:
        raw: Any = await self.db.client.lrange(self.db.keys.alert_results(invocation_id), 0, -1)
        return [dict(codec.unpack(r)) for r in raw]

    async def results_many(self, ids: Sequence[str]) -> list[list[Record]]:
        async with self.db.client.pipeline(transaction=False) as pipe:
            for inv_id in ids:
                pipe.lrange(self.db.keys.alert_results(inv_id), 0, -1)  # type: ignore[unused-awaitable]
            replies = await pipe.execute()
        return [[dict(codec.unpack(r)) for r in reply or []] for reply in replies]
