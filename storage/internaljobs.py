"""Internal jobs: the primary's own background work (maintenance, bulk deletes, admin tasks), visible from every node.

One record per job (xyOps' row fields: id, title, type, username, started, progress, plus status, node, epoch;
once finished complete, completed, elapsed, code, description, details, result) and two sorted sets: every kept
job and the running ones. Every write is fenced (only the primary runs internal jobs, and a deposed primary can
neither start, advance nor finish one); finished jobs are kept `KEEP_S` and at most `MAX_KEPT` of them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from . import codec
from .connection import Database
from .fence import Fence, FencedBatch

Record = dict[str, Any]

KEEP_S = 86400  # finished internal jobs kept this long ...
MAX_KEPT = 500  # ... and at most this many
MAX_RUNNING = 1000  # running ones listed at most (a bound on one read; far more than ever run at once)


def _unpack(raw: Any) -> Record | None:
    return None if raw is None else dict(codec.unpack(codec.as_bytes(raw)))


class InternalJobStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def get(self, job_id: str) -> Record | None:
        return _unpack(await self.db.client.get(self.db.keys.internal_job(job_id)))

    async def _many(self, ids: Sequence[str]) -> list[Record]:
        if not ids:
            return []
        raws = await self.db.client.mget([self.db.keys.internal_job(i) for i in ids])
        return [r for r in (_unpack(raw) for raw in raws) if r is not None]

    async def running(self) -> list[Record]:
        """The internal jobs not finished yet, oldest first."""
        ids = await self.db.client.zrange(self.db.keys.internal_jobs_running, 0, MAX_RUNNING - 1)
        return await self._many([codec.as_bytes(i).decode() for i in ids])

    async def recent(self, limit: int) -> list[Record]:
        """The newest `limit` internal jobs kept, running or finished, newest first."""
        ids = await self.db.client.zrevrange(self.db.keys.internal_jobs, 0, max(limit, 1) - 1)
        return await self._many([codec.as_bytes(i).decode() for i in ids])

    async def start(self, fence: Fence, job: Record) -> None:
        """Record a new running job (fenced)."""
        k, job_id, started = self.db.keys, str(job["id"]), float(job["started"])
        batch = FencedBatch().add("SET", [k.internal_job(job_id)], codec.pack(job))
        batch.add("ZADD", [k.internal_jobs], started, job_id).add("ZADD", [k.internal_jobs_running], started, job_id)
        await fence.execute(batch)

    async def update(self, fence: Fence, job: Record) -> None:
        """Rewrite a running job's record (its progress and status), fenced."""
        await fence.execute(FencedBatch().add("SET", [self.db.keys.internal_job(str(job["id"]))], codec.pack(job)))

    async def finish(self, fence: Fence, job: Record) -> None:
        """Write a job's final record and take it off the running set, in one fenced step."""
        k, job_id = self.db.keys, str(job["id"])
        batch = FencedBatch().add("SET", [k.internal_job(job_id)], codec.pack(job))
        batch.add("ZREM", [k.internal_jobs_running], job_id)
        await fence.execute(batch)

    async def trim(self, fence: Fence, now: float) -> int:
        """Forget finished jobs started more than KEEP_S ago, and the oldest finished ones beyond MAX_KEPT."""
        k = self.db.keys
        running = {codec.as_bytes(i).decode() for i in await self.db.client.zrange(k.internal_jobs_running, 0, -1)}
        old = [codec.as_bytes(i).decode() for i in await self.db.client.zrangebyscore(k.internal_jobs, "-inf",
                                                                                      now - KEEP_S)]  # fmt: skip
        total = int(await self.db.client.zcard(k.internal_jobs))
        extra = max(total - len(running) - MAX_KEPT, 0)
        if extra:
            oldest = await self.db.client.zrange(k.internal_jobs, 0, extra + len(running) - 1)
            old += [i for i in (codec.as_bytes(x).decode() for x in oldest) if i not in running][:extra]
        gone = sorted({i for i in old if i not in running})
        if not gone:
            return 0
        batch = FencedBatch()
        for job_id in gone:
            batch.add("DEL", [k.internal_job(job_id)]).add("ZREM", [k.internal_jobs], job_id)
        await fence.execute(batch)
        return len(gone)
