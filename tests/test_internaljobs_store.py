"""The internal job store and the daily stats on a real server: fenced writes, the trim, the stats object's shape."""

from __future__ import annotations

import time

import pytest

from storage import dailystats
from storage.connection import Database
from storage.dailystats import DailyStats
from storage.errors import FencedError
from storage.fence import Fence
from storage.internaljobs import KEEP_S, InternalJobStore
from storage.lease import LeaseStore

from .test_scripts import elect


def job(job_id: str, started: float) -> dict[str, object]:
    return {"id": job_id, "title": "t", "type": "maint", "username": "admin", "started": started, "progress": 0.0}


async def test_writes_are_fenced_and_finished_jobs_trimmed(db: Database) -> None:
    store = InternalJobStore(db)
    fence = await elect(LeaseStore(db))
    now = time.time()
    await store.start(fence, job("iold", now - KEEP_S - 10))
    await store.start(fence, job("irun", now - KEEP_S - 20))  # old but still running: kept
    await store.start(fence, job("inew", now))
    for stale in (Fence(db, fence.node_id, fence.epoch - 1), Fence(db, "other", fence.epoch)):
        with pytest.raises(FencedError):
            await store.finish(stale, {**job("iold", now), "complete": True})
        with pytest.raises(FencedError):
            await store.start(stale, job("ix", now))
    assert await store.get("ix") is None
    await store.finish(fence, {**job("iold", now - KEEP_S - 10), "complete": True})
    await store.finish(fence, {**job("inew", now), "complete": True})
    assert [j["id"] for j in await store.running()] == ["irun"]
    assert await store.trim(fence, now) == 1
    assert sorted(j["id"] for j in await store.recent(10)) == ["inew", "irun"]


async def test_daily_stats_shape_and_reset(db: Database) -> None:
    stats = DailyStats(db)
    fence = await elect(LeaseStore(db))
    now = time.time()
    fields = dailystats.job_fields({"event": "e1", "server": "s1", "category": "general", "plugin": "p"},
                                   ["complete", "error", "tag:x"])  # fmt: skip
    assert "transactions.job_error" in fields and "events.e1.job_complete" in fields
    assert not [f for f in fields if "tag" in f]
    await stats.bump([*fields, "transactions.user_login"], now)
    await stats.bump(["transactions.user_login"], now)
    day = await stats.today(now)
    assert day["transactions"] == {"job_complete": 1, "job_error": 1, "user_login": 2}
    assert day["servers"] == {"s1": {"job_complete": 1, "job_error": 1}} and day["groups"] == {}
    assert day["timeStart"] <= now and day["timeStart"] % 86400 == 0
    kept = await stats.reset(fence, now)
    assert kept["transactions"]["user_login"] == 2
    day = await stats.today(now)
    assert day["transactions"] == {} and day["timeStart"] == int(now)
    assert await db.client.llen(db.keys.stats_history) == 1
