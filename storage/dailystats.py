"""The daily stats: xyOps' `stats.currentDay` object, counted in one Redis hash per UTC day.

Fields are dotted paths into the object (`transactions.job_success`, `events.<id>.job_error`, `servers.<id>.
job_complete`, ...) plus `timeStart` (when the day's counting began: midnight UTC, or the last reset). What counts:
every activity record under `transactions.<action>` (as xyOps' logActivity does), and each finished job once per
completion condition under `transactions.job_<condition>` and per event, server, category and plugin (written in the
job's fenced finish, so a failover never counts a job twice). This module names every field; nothing else does.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Mapping
from typing import Any

from . import codec
from .connection import Database
from .fence import Fence, FencedBatch

Record = dict[str, Any]

DAY_TTL_S = 3 * 86400
HISTORY_KEPT = 366  # days set aside by resets (xyOps keeps them in `global/stats`)
_WORD = re.compile(r"^\w{1,64}$")
_PART = re.compile(r"^[\w\-]{1,128}$")


def stats_day(epoch: float) -> str:
    """The UTC day a count goes to."""
    return dt.datetime.fromtimestamp(epoch, dt.UTC).strftime("%Y-%m-%d")


def _midnight(epoch: float) -> int:
    day = dt.datetime.fromtimestamp(epoch, dt.UTC).date()
    return int(dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC).timestamp())


def activity_field(action: str) -> str | None:
    """The counter one activity record bumps (None for an action name that is no plain word)."""
    return f"transactions.{action}" if _WORD.match(action) else None


def job_fields(job: Mapping[str, Any], conditions: Iterable[str]) -> list[str]:
    """The counters one finished job bumps, once per plain-word completion condition (xyOps skips `tag:` ones)."""
    out: list[str] = []
    for condition in conditions:
        if not _WORD.match(condition):
            continue
        name = f"job_{condition}"
        out.append(f"transactions.{name}")
        for family, field in (("events", "event"), ("servers", "server"), ("categories", "category"),
                              ("plugins", "plugin")):  # fmt: skip
            value = str(job.get(field) or "")
            if value and _PART.match(value):
                out.append(f"{family}.{value}.{name}")
    return out


def nested(flat: Mapping[str, int], time_start: int) -> Record:
    """The xyOps shape: {timeStart, transactions: {...}, servers: {...}, groups: {...}, events: {...}, ...}."""
    out: Record = {"timeStart": time_start, "transactions": {}, "servers": {}, "groups": {}}
    for path, value in sorted(flat.items()):
        node = out
        *parents, leaf = path.split(".")
        for part in parents:
            child = node.get(part)
            if not isinstance(child, dict):
                child = node[part] = {}
            node = child
        node[leaf] = value
    return out


class DailyStats:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def bump(self, fields: Iterable[str], now: float, by: int = 1) -> None:
        """Add `by` to each counter of today (a plain count, not a claim: any node may count)."""
        names = list(fields)
        if not names:
            return
        key = self.db.keys.stats_day(stats_day(now))
        async with self.db.client.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.hincrby(key, name, by)  # type: ignore[unused-awaitable]  # queued
            pipe.expire(key, DAY_TTL_S)  # type: ignore[unused-awaitable]
            await pipe.execute()

    async def today(self, now: float) -> Record:
        """Today's stats object (xyOps `stats.currentDay`)."""
        raw = await self.db.client.hgetall(self.db.keys.stats_day(stats_day(now)))
        flat: dict[str, int] = {}
        time_start = _midnight(now)
        for key, value in raw.items():
            name, number = codec.as_bytes(key).decode(), int(float(codec.as_bytes(value).decode()))
            if name == "timeStart":
                time_start = number
            else:
                flat[name] = number
        return nested(flat, time_start)

    async def reset(self, fence: Fence, now: float) -> Record:
        """Set today's counts aside (newest first in the history list) and start counting from zero now (fenced).
        Counts that land between the read and the reset are lost, as in xyOps. Returns what was set aside."""
        k = self.db.keys
        current = await self.today(now)
        key = k.stats_day(stats_day(now))
        batch = FencedBatch().add("LPUSH", [k.stats_history], codec.pack(current))
        batch.add("LTRIM", [k.stats_history], 0, HISTORY_KEPT - 1).add("DEL", [key])
        batch.add("HSET", [key], "timeStart", int(now)).add("EXPIRE", [key], DAY_TTL_S)
        await fence.execute(batch)
        return current
