"""Bulk transfer support: single-use transfer tokens, and writing imported records into the indexed stores.

An import keeps every record as it came (its id, dates and revision): these helpers store a record under its own
id with the same fenced writes and search entries the stores use for their own records.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import AsyncIterator
from typing import Any

from redis.exceptions import LockError

from . import codec
from .activity import ActivityStore
from .activity import index_fields as activity_fields
from .alerts import AlertStore, valid_invocation_id
from .connection import Database
from .fence import Fence, FencedBatch
from .jobs import JobStore
from .jobs import index_fields as job_fields

Record = dict[str, Any]
TOKEN_TTL_S = 60
IMPORT_LOCK_S = 600  # an import's longest hold: a node that died mid-import lets go by then


@contextlib.asynccontextmanager
async def import_lock(db: Database, timeout_s: int = IMPORT_LOCK_S) -> AsyncIterator[bool]:
    """Hold the cluster's import lock while the body runs; yields False (and holds nothing) when another import
    has it. Two imports at once could each replace a list with its own and delete the other's objects."""
    lock = db.client.lock(db.keys.import_lock, timeout=timeout_s)
    if not await lock.acquire(blocking=False):
        yield False
        return
    try:
        yield True
    finally:
        with contextlib.suppress(LockError):  # expired meanwhile: nothing of ours to release
            await lock.release()


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class TransferTokens:
    """get_transfer_token's tokens: {username, params} kept 60 s, taken at most once; stored under the token's
    sha256, never the token (as sessions are)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def put(self, token: str, record: Record, ttl_s: int = TOKEN_TTL_S) -> None:
        await self.db.client.set(self.db.keys.transfer_token(_digest(token)), codec.pack(record), ex=ttl_s)

    async def take(self, token: str) -> Record | None:
        """The token's record, deleting it in the same step (a second take answers None)."""
        raw = await self.db.client.getdel(self.db.keys.transfer_token(_digest(token)))
        if raw is None:
            return None
        found = codec.unpack(codec.as_bytes(raw))
        return dict(found) if isinstance(found, dict) else None


async def put_final_job(jobs: JobStore, fence: Fence, job: Record) -> None:
    """Store a completed job under its id (fenced) and move its search entries to what it says now."""
    job_id = str(job["id"])
    old = await jobs.stored(job_id)
    batch = FencedBatch().add("SET", [jobs.db.keys.job(job_id)], codec.pack(job))
    batch.add("SADD", [jobs.db.keys.jobs_unindexed], job_id)  # the primary's drain indexes it if we stop short
    await fence.execute(batch)
    if old is not None:
        await jobs.index.remove(job_id, job_fields(old[0]))
    await jobs.index_one(job)


async def put_alert_invocation(alerts: AlertStore, fence: Fence, record: Record) -> None:
    """Store an alert invocation under its id (fenced, queued for indexing in the same step), then index it. The
    record holds every action result (as an export shows it), so the results list kept beside it goes."""
    inv_id = str(record["id"])
    if not valid_invocation_id(inv_id):
        raise ValueError(f"invalid alert invocation id {inv_id[:40]!r}")
    k = alerts.db.keys
    batch = FencedBatch().add("SET", [k.alert_invocation(inv_id)], codec.pack(record))
    batch.add("DEL", [k.alert_results(inv_id)])
    batch.add("SADD", [k.alerts_unindexed], inv_id)
    await fence.execute(batch)
    await alerts.reindex(inv_id)


async def put_activity(activity: ActivityStore, record: Record) -> bool:
    """Store an activity record under its id, ordered by its own `epoch`; False if that id is stored already
    (activity is never rewritten)."""
    rid = str(record["id"])
    key = activity.db.keys.activity(rid)
    if not await activity.db.client.set(key, codec.pack(record), nx=True):
        return False
    with contextlib.suppress(ValueError):
        await activity.index.add(rid, activity_fields(record), order=float(record.get("epoch") or 0) * 1000)
    return True
