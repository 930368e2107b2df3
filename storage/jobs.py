"""Jobs: live and final records, the active set, the `jobs` search index and scheduler claims.

A launch is one fenced script: it claims the (event, scheduled second) slot, stores the job, files it
as active (or as awaiting indexing when it completed at once) and advances the event's cursor, so a
second primary can never launch the same slot again and a crash never leaves half a launch.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

from redis.exceptions import ResponseError

from . import codec
from .agents import COMMANDS_MAXLEN
from .connection import Database
from .errors import Conflict
from .fence import Fence, FencedBatch
from .keyspace import Keyspace
from .pages import fetch_page
from .scripts import fenced
from .search.index import Column, Indexer, IndexSpec, Op
from .search.query import Everything, Query, Range, parse, restrict

Record = dict[str, Any]
CLAIM_TTL_S = 8 * 86400  # claims outlive any catch-up window the scheduler replays

JOBS_INDEX = IndexSpec(
    name="jobs",
    columns=(
        Column("code", "word"),
        Column("date", "date", source="completed"),
        Column("source", "word"),
        Column("tags", "word"),
        Column("event", "word"),
        Column("category", "word"),
        Column("plugin", "word"),
        Column("server", "word"),
        Column("groups", "word"),
        Column("workflow", "word", source="workflow_job", sparse=True),
        Column("tickets", "word", sparse=True),
        Column("completed", "number", scale=1000),
        Column("elapsed", "number", scale=1000),
    ),
    sorters=("completed", "elapsed"),
)

# Launch one job: claim its scheduled slot (if any), store it, file it, advance the cursor, and queue the
# `launch_job` frame for its agent when the dispatcher placed it on a server at once.
# KEYS[1] leader, KEYS[2] epoch, KEYS[3] claim key (ignored when ARGV[4] == ''), KEYS[4] job record,
# KEYS[5] active zset, KEYS[6] unindexed set, KEYS[7] cursor hash, KEYS[8] agent command stream
# ARGV[1] node id, ARGV[2] epoch, ARGV[3] job id, ARGV[4] "1" to claim, ARGV[5] claim ttl s,
# ARGV[6] msgpack job, ARGV[7] "active" | "final", ARGV[8] started (score),
# ARGV[9] cursor event id ('' = none), ARGV[10] cursor second, ARGV[11] msgpack frame ('' = none),
# ARGV[12] stream maxlen
# return 1 launched, 0 the slot was already claimed (nothing written)
JOB_LAUNCH = fenced("""
if ARGV[4] == '1' then
  if not redis.call('SET', KEYS[3], ARGV[3], 'NX', 'EX', ARGV[5]) then return 0 end
end
redis.call('SET', KEYS[4], ARGV[6])
if ARGV[7] == 'active' then
  redis.call('ZADD', KEYS[5], ARGV[8], ARGV[3])
else
  redis.call('SADD', KEYS[6], ARGV[3])
end
if ARGV[9] ~= '' then
  local cur = tonumber(redis.call('HGET', KEYS[7], ARGV[9]) or '0')
  if tonumber(ARGV[10]) > cur then redis.call('HSET', KEYS[7], ARGV[9], ARGV[10]) end
end
if ARGV[11] ~= '' then
  redis.call('XADD', KEYS[8], 'MAXLEN', '~', ARGV[12], '*', 'f', ARGV[11])
end
return 1
""")

# Move the cursor of an event forward (never back).
# KEYS[1] leader, KEYS[2] epoch, KEYS[3] cursor hash
# ARGV[1] node id, ARGV[2] epoch, ARGV[3] event id, ARGV[4] second
# return 1 moved, 0 already there or beyond
CURSOR_ADVANCE = fenced("""
local cur = tonumber(redis.call('HGET', KEYS[3], ARGV[3]) or '0')
if tonumber(ARGV[4]) > cur then redis.call('HSET', KEYS[3], ARGV[3], ARGV[4]) return 1 end
return 0
""")

# Finish an active job: store the final record and queue it for indexing.
# KEYS[1] leader, KEYS[2] epoch, KEYS[3] job record, KEYS[4] active zset, KEYS[5] unindexed set
# ARGV[1] node id, ARGV[2] epoch, ARGV[3] job id, ARGV[4] msgpack final record
# return 1, or error NOTFOUND when the job is not active
JOB_FINISH = fenced("""
if redis.call('ZREM', KEYS[4], ARGV[3]) == 0 then return redis.error_reply('NOTFOUND') end
redis.call('SET', KEYS[3], ARGV[4])
redis.call('SADD', KEYS[5], ARGV[3])
return 1
""")

# Write live jobs and queue agent frames, in one step: the dispatcher's every transition short of finishing.
# A job is written only while it is still active, so a write computed before a finish can never bring the
# finished job back. ARGV[3] is a msgpack list of ops:
#   {"job", <index of its record key in KEYS>, id, msgpack record, started score as text}
#   {"cmd", <index of the agent stream key in KEYS>, msgpack frame}
#   {"cursor", <index of the inbox cursor key>, <index of the inbox stream key>, last applied entry id}
#   {"hset", <index of a hash key>, field, value}  (the round-robin counters)
# KEYS[1] leader, KEYS[2] epoch, KEYS[3] active zset, KEYS[4..] the keys the ops name
# ARGV[1] node id, ARGV[2] epoch, ARGV[3] ops, ARGV[4] stream maxlen
# return the number of jobs written
JOB_WRITE = fenced("""
local ops = cmsgpack.unpack(ARGV[3])
local written = 0
for _, op in ipairs(ops) do
  if op[1] == 'job' then
    if redis.call('ZSCORE', KEYS[3], op[3]) then
      redis.call('SET', KEYS[op[2]], op[4])
      redis.call('ZADD', KEYS[3], op[5], op[3])
      written = written + 1
    end
  elseif op[1] == 'cmd' then
    redis.call('XADD', KEYS[op[2]], 'MAXLEN', '~', ARGV[4], '*', 'f', op[3])
  elseif op[1] == 'cursor' then
    redis.call('SET', KEYS[op[2]], op[4])
    redis.call('XTRIM', KEYS[op[3]], 'MINID', op[4])
  elseif op[1] == 'hset' then
    redis.call('HSET', KEYS[op[2]], op[3], op[4])
  end
end
return written
""")


def _raw(value: Any) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode()


def index_fields(job: Record) -> Record:
    """The searchable view of a final job record."""
    return {
        "code": job.get("code", 0),
        "completed": job.get("completed", 0),
        "source": job.get("source", ""),
        "tags": job.get("tags") or [],
        "event": job.get("event", ""),
        "category": job.get("category", ""),
        "plugin": job.get("plugin", ""),
        "server": job.get("server", ""),
        "groups": job.get("groups") or [],
        "workflow_job": (job.get("workflow") or {}).get("job", "") if isinstance(job.get("workflow"), dict) else "",
        "tickets": job.get("tickets") or [],
        "elapsed": job.get("elapsed", 0),
    }


class JobWrite:
    """Live job records and agent frames for one JOB_WRITE."""

    def __init__(self, keys: Keyspace) -> None:
        self._k = keys
        self.keys: list[str] = []
        self.ops: list[list[Any]] = []

    def _key(self, key: str) -> int:
        try:
            return self.keys.index(key) + 4  # KEYS[1..3] are the leader, the epoch and the active set
        except ValueError:
            self.keys.append(key)
            return len(self.keys) + 3

    def job(self, job: Record) -> JobWrite:
        job_id = str(job["id"])
        self.ops.append(["job", self._key(self._k.job(job_id)), job_id, codec.pack(job),
                         repr(float(job.get("started", 0)))])  # fmt: skip
        return self

    def frame(self, server_id: str, cmd: str, data: Record) -> JobWrite:
        self.ops.append(["cmd", self._key(self._k.agent_commands(server_id)), codec.pack({"cmd": cmd, "data": data})])
        return self

    def robin(self, event_id: str, counter: int) -> JobWrite:
        self.ops.append(["hset", self._key(self._k.dispatch_robin), event_id, str(counter)])
        return self

    def inbox_done(self, entry_id: str) -> JobWrite:
        self.ops.append(["cursor", self._key(self._k.dispatch_cursor), self._key(self._k.dispatch_inbox), entry_id])
        return self


class JobStore:
    def __init__(self, db: Database) -> None:
        self.db = db
        self.index = Indexer(db, JOBS_INDEX)

    async def get(self, job_id: str) -> Record | None:
        raw = await self.db.client.get(self.db.keys.job(job_id))
        return None if raw is None else dict(codec.unpack(_raw(raw)))

    async def get_many(self, ids: Sequence[str]) -> list[Record | None]:
        if not ids:
            return []
        raws = await self.db.client.mget([self.db.keys.job(i) for i in ids])
        return [None if r is None else dict(codec.unpack(_raw(r))) for r in raws]

    async def active(self) -> list[Record]:
        ids = await self.db.client.zrange(self.db.keys.jobs_active, 0, -1)
        found = await self.get_many([_raw(i).decode() for i in ids])
        return [j for j in found if j is not None]

    async def launch(
        self, fence: Fence, job: Record, *, claim: tuple[str, int] | None = None,
        cursor: tuple[str, int] | None = None, frame: tuple[str, Record] | None = None,
    ) -> bool:  # fmt: skip
        """Store a new job (fenced, atomic with its slot claim and cursor, and with the frame (server id,
        {cmd, data}) its agent is to receive). False if the slot was taken."""
        k = self.db.keys
        job_id = str(job["id"])
        claim_key = k.sched_claim(*claim) if claim else k.sched_claim("-", 0)
        final = job.get("state") == "complete"
        stream = k.agent_commands(frame[0]) if frame else k.agent_commands("-")
        done = await fence.run(
            JOB_LAUNCH,
            [claim_key, k.job(job_id), k.jobs_active, k.jobs_unindexed, k.sched_cursor, stream],
            [job_id, "1" if claim else "", CLAIM_TTL_S, codec.pack(job), "final" if final else "active",
             repr(float(job.get("started", 0))), cursor[0] if cursor else "", cursor[1] if cursor else 0,
             codec.pack(frame[1]) if frame else "", COMMANDS_MAXLEN],
        )  # fmt: skip
        if int(done) == 1 and final:
            await self.index_one(job)
        return int(done) == 1

    async def write(self, fence: Fence, batch: JobWrite) -> int:
        """Apply a JobWrite (fenced); returns how many jobs were still active and written."""
        if not batch.ops:
            return 0
        return int(await fence.run(JOB_WRITE, [self.db.keys.jobs_active, *batch.keys],
                                   [codec.pack_for_lua(batch.ops), COMMANDS_MAXLEN]))  # fmt: skip

    async def robin_counters(self) -> dict[str, int]:
        """The round-robin counter of every event (server selection)."""
        raw = await self.db.client.hgetall(self.db.keys.dispatch_robin)
        return {_raw(k).decode(): int(v) for k, v in raw.items()}

    async def finish(self, fence: Fence, job: Record, *, index: bool = True) -> None:
        """Store the final record (fenced) and queue it for indexing; index it now unless the caller batches
        that (index_many): until then it is in the unindexed set, which the primary drains."""
        k = self.db.keys
        try:
            await fence.run(JOB_FINISH, [k.job(str(job["id"])), k.jobs_active, k.jobs_unindexed],
                            [str(job["id"]), codec.pack(job)])  # fmt: skip
        except ResponseError as exc:
            if str(exc).startswith("NOTFOUND"):
                raise Conflict("notfound", f"job {job['id']} is not active") from None
            raise
        if index:
            await self.index_one(job)

    async def replace(self, fence: Fence, old: Record, new: Record) -> None:
        """Rewrite a completed job (tags, tickets, update_job) and move its search entries."""
        job_id = str(old["id"])
        await fence.execute(FencedBatch().add("SET", [self.db.keys.job(job_id)], codec.pack(new)))
        await self.index.remove(job_id, index_fields(old))
        await self.index_one(new)

    async def index_one(self, job: Record) -> None:
        with contextlib.suppress(ValueError):  # in already (the dispatcher's batch and a drain can meet)
            await self.index.add(str(job["id"]), index_fields(job), order=float(job.get("started", 0)) * 1000)
        await self.db.client.srem(self.db.keys.jobs_unindexed, str(job["id"]))

    async def index_many(self, jobs: Sequence[Record]) -> None:
        """Index final jobs in one go (the dispatcher batches its finishes). One already indexed (a drain of the
        unindexed set got there first) makes the batch go one by one, skipping it."""
        if not jobs:
            return
        items = [(str(j["id"]), index_fields(j), float(j.get("started", 0)) * 1000) for j in jobs]
        try:
            await self.index.add_many(items)
        except ValueError:
            for job_id, fields, order in items:
                with contextlib.suppress(ValueError):
                    await self.index.add(job_id, fields, order=order)
        await self.db.client.srem(self.db.keys.jobs_unindexed, *(i for i, _, _ in items))

    async def index_pending(self, limit: int = 1000) -> int:
        """Index final jobs whose indexing a crash interrupted. Returns how many were done."""
        ids = await self.db.client.srandmember(self.db.keys.jobs_unindexed, limit)
        done = 0
        for job in await self.get_many([_raw(i).decode() for i in ids or []]):
            if job is not None:
                await self.index_one(job)
                done += 1
        return done

    async def advance_cursor(self, fence: Fence, event_id: str, second: int) -> None:
        await fence.run(CURSOR_ADVANCE, [self.db.keys.sched_cursor], [event_id, second])

    async def init_cursors(self, fence: Fence, event_ids: Sequence[str], second: int) -> None:
        """Give events the scheduler has not seen a starting cursor (HSETNX: an existing one wins)."""
        batch = FencedBatch()
        for event_id in event_ids:
            batch.add("HSETNX", [self.db.keys.sched_cursor], event_id, second)
        await fence.execute(batch)

    async def count_nth(self, fence: Fence, event_id: str) -> int:
        """Count one more scheduled minute for an event's `nth` trigger; returns the new count."""
        reply = await fence.execute(FencedBatch().add("HINCRBY", [self.db.keys.sched_nth], event_id, 1))
        return int(reply[0])

    async def cursors(self) -> dict[str, int]:
        raw = await self.db.client.hgetall(self.db.keys.sched_cursor)
        return {_raw(k).decode(): int(v) for k, v in raw.items()}

    async def search(
        self,
        query: str,
        *,
        offset: int,
        limit: int,
        sort_by: str = "_id",
        sort_dir: int = -1,
        also: Sequence[str] = (),
    ) -> tuple[list[Record], int]:
        """Jobs matching `query` and every query in `also` (each parsed on its own, then ANDed)."""
        parsed = restrict(parse(query, JOBS_INDEX), *(parse(q, JOBS_INDEX) for q in also))
        found = await self.index.search(parsed, offset=offset, limit=limit, sort_by=sort_by, sort_dir=sort_dir)
        jobs = await fetch_page(self.db, [self.db.keys.job(i) for i in found.ids])
        return [j for j in jobs if j is not None], found.total

    async def delete(self, fence: Fence, job: Record) -> None:
        """Remove a job: the fenced delete first (a deposed primary changes nothing), then its index
        entries (a crash in between leaves an entry whose record is gone, which searches skip)."""
        k = self.db.keys
        job_id = str(job["id"])
        batch = FencedBatch().add("DEL", [k.job(job_id)]).add("ZREM", [k.jobs_active], job_id)
        batch.add("SREM", [k.jobs_unindexed], job_id)
        await fence.execute(batch)
        await self.index.remove(job_id, index_fields(job))

    async def oldest(self, limit: int, *, before: float | None = None, offset: int = 0) -> tuple[list[str], int]:
        """Ids of final jobs, earliest started first (the `_id` order, several times cheaper to select
        than a sort by `completed`), and how many there are; with `before` (epoch s) only those
        completed before it. Answered by the index, so no record is read."""
        root = Everything() if before is None else Range("completed", high=before, high_open=True)
        found = await self.index.search(Query(root), offset=offset, limit=limit, sort_dir=1)
        return found.ids, found.total

    async def delete_many(self, fence: Fence, ids: Sequence[str]) -> tuple[int, list[str]]:
        """Delete final jobs and their index entries in one fenced step (retention). Returns how many
        went, and the ids whose record was already gone (their entries cannot be told apart here)."""
        k = self.db.keys
        jobs = await self.get_many(ids)
        records = {job_id: index_fields(job) for job_id, job in zip(ids, jobs, strict=True) if job is not None}
        also: list[Op] = []
        for job_id in records:
            also += [("DEL", [k.job(job_id)], []), ("SREM", [k.jobs_unindexed], [job_id])]
        await self.index.remove_fenced(fence, records, also)
        return len(records), [job_id for job_id, job in zip(ids, jobs, strict=True) if job is None]
