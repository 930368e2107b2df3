"""Action runs: the outbox that makes each action of a job happen once, across any failover.

A run (one action of one job for one condition) is written in the same fenced step as the change that calls
for it: a finish writes its completion runs, a placement its start runs, a limit that fires its sub-actions
(storage/jobs.py JobWrite.run). The primary then claims a run (fenced: it moves from `due` to `claimed`) before
it does anything, and deletes it in the same step that records the result on the job (JobWrite.done). So:

- a run nobody claimed yet is done by whichever primary comes next;
- a run claimed by a primary that died before recording it is found in `claimed` by the next one, which
  never repeats it blind: what cannot be undone (an email, a web hook) is recorded as interrupted, what can be
  repeated safely (a tag, a launch guarded by its own claim) runs again.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from typing import Any

from . import codec
from .connection import Database
from .fence import Fence
from .scripts import fenced

Record = dict[str, Any]

# Claim a due run for this primary.
# KEYS[1] leader, KEYS[2] epoch, KEYS[3] due zset, KEYS[4] claimed zset, KEYS[5] run record
# ARGV[1] node id, ARGV[2] epoch, ARGV[3] run id, ARGV[4] now (epoch s)
# return the run record, or false when it is not due (claimed by someone else, done, gone)
ACTION_CLAIM = fenced("""
if redis.call('ZREM', KEYS[3], ARGV[3]) == 0 then return false end
local run = redis.call('GET', KEYS[5])
if not run then return false end
redis.call('ZADD', KEYS[4], ARGV[4], ARGV[3])
return run
""")

# Put a claimed run back to due (a new primary repeats a run that is safe to repeat).
# KEYS[1] leader, KEYS[2] epoch, KEYS[3] due zset, KEYS[4] claimed zset
# ARGV[1] node id, ARGV[2] epoch, ARGV[3] run id, ARGV[4] due at (epoch s)
# return 1 requeued, 0 it was not claimed
ACTION_REQUEUE = fenced("""
if redis.call('ZREM', KEYS[4], ARGV[3]) == 0 then return 0 end
redis.call('ZADD', KEYS[3], ARGV[4], ARGV[3])
return 1
""")

DAY_TTL_S = 2 * 86400


def day_of(epoch: float) -> str:
    """The UTC day a completion counts on, for the `day` limit."""
    return dt.datetime.fromtimestamp(epoch, dt.UTC).strftime("%Y-%m-%d")


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _number(value: Any) -> int | float | str:
    """A stored counter or code as it was: a number when it reads as one (a job code may be a word)."""
    try:
        number = float(_text(value))
    except ValueError:
        return _text(value)
    if not math.isfinite(number):  # a job code such as "inf" is a word, not a number
        return _text(value)
    return int(number) if number.is_integer() else number


class ActionStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def due(self, now: float, limit: int = 200, *, client: Any = None) -> list[str]:
        """Ids of runs that may be claimed now, oldest first (`client`: the caller's own connection pool)."""
        ids = await (client or self.db.client).zrangebyscore(self.db.keys.actions_due, "-inf", now, start=0,
                                                             num=limit)  # fmt: skip
        return [_text(i) for i in ids]

    async def next_due(self) -> float | None:
        """When the earliest unclaimed run may run (None: there is none)."""
        first = await self.db.client.zrange(self.db.keys.actions_due, 0, 0, withscores=True)
        return float(first[0][1]) if first else None

    async def claimed(self, limit: int = 1000, *, client: Any = None) -> list[str]:
        ids = await (client or self.db.client).zrange(self.db.keys.actions_claimed, 0, limit - 1)
        return [_text(i) for i in ids]

    async def get(self, run_id: str) -> Record | None:
        raw = await self.db.client.get(self.db.keys.action_run(run_id))
        return None if raw is None else dict(codec.unpack(raw if isinstance(raw, bytes) else raw.encode()))

    async def claim(self, fence: Fence, run_id: str, now: float) -> Record | None:
        """Take a due run for this primary (fenced). None when it is not due any more."""
        k = self.db.keys
        raw = await fence.run(ACTION_CLAIM, [k.actions_due, k.actions_claimed, k.action_run(run_id)], [run_id, now],
                              durable=True)  # fmt: skip
        return None if not raw else dict(codec.unpack(raw if isinstance(raw, bytes) else str(raw).encode()))

    async def requeue(self, fence: Fence, run_id: str, at: float) -> bool:
        k = self.db.keys
        return int(await fence.run(ACTION_REQUEUE, [k.actions_due, k.actions_claimed], [run_id, at])) == 1

    async def pending_for(self, run_ids: Sequence[str]) -> list[str]:
        """Which of `run_ids` still exist (due or claimed, not yet recorded)."""
        if not run_ids:
            return []
        async with self.db.client.pipeline(transaction=False) as pipe:
            for run_id in run_ids:
                pipe.exists(self.db.keys.action_run(run_id))  # type: ignore[unused-awaitable]  # queued
            found = await pipe.execute()
        return [r for r, e in zip(run_ids, found, strict=True) if e]

    async def event_state(self, event_id: str) -> Record:
        raw = await self.db.client.hgetall(self.db.keys.event_state(event_id))
        out: Record = {}
        for key, value in raw.items():
            name = _text(key)
            out[name] = _text(value) if name == "last_job" else _number(value)
        return out

    async def event_states(self, event_ids: Sequence[str]) -> dict[str, Record]:
        async with self.db.client.pipeline(transaction=False) as pipe:
            for event_id in event_ids:
                pipe.hgetall(self.db.keys.event_state(event_id))  # type: ignore[unused-awaitable]  # queued
            replies = await pipe.execute()
        out: dict[str, Record] = {}
        for event_id, raw in zip(event_ids, replies, strict=True):
            if raw:
                out[event_id] = {_text(k): _text(v) if _text(k) == "last_job" else _number(v) for k, v in raw.items()}
        return out

    async def day_counts(self, event_id: str, epoch: float) -> dict[str, int]:
        """Today's completions of an event per condition (what the `day` limit counts)."""
        raw = await self.db.client.hgetall(self.db.keys.event_day(event_id, day_of(epoch)))
        return {_text(k): int(float(_text(v))) for k, v in raw.items()}

    async def count_today(self, kind: str, obj_id: str, epoch: float) -> int:
        """Count one more use of a web hook or channel today; returns the count (a cap, not a claim)."""
        key = self.db.keys.daily(kind, obj_id, day_of(epoch))
        async with self.db.client.pipeline(transaction=True) as pipe:
            pipe.incr(key)  # type: ignore[unused-awaitable]  # queued
            pipe.expire(key, DAY_TTL_S)  # type: ignore[unused-awaitable]
            count, _ = await pipe.execute()
        return int(count)
