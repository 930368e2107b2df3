"""Jobs: live and final records, the active set, the `jobs` search index and scheduler claims.

A launch is one fenced script: it claims the (event, scheduled second) slot, stores the job, files it
as active (or as awaiting indexing when it completed at once) and advances the event's cursor, so a
second primary can never launch the same slot again and a crash never leaves half a launch.
"""

from __future__ import annotations

import contextlib
import hashlib
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
TIMELINES = "timelines"  # a running job's process timelines: stored apart from its record (job_timelines)

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

# The operations a job write may carry besides its own record, shared by JOB_LAUNCH, JOB_FINISH, JOB_WRITE and
# JOB_CAS so that whatever a change calls for (an agent frame, an action run, event state, a retry's new job) is
# written with it or not at all. Each script sets ACTIVE (the active zset key) first. An op names its keys by
# their index in KEYS. Ops (a msgpack list of lists):
#   {"job", k, id, record, started}   a live record, written only while the job is still active
#   {"new", k, id, record, started}   a new active job (a retry)
#   {"cmd", k, frame, maxlen}         a frame for an agent's command stream
#   {"cursor", k, k_inbox, entry}     the inbox cursor; the inbox trimmed to it
#   {"hset", k, field, value}
#   {"hincr", k, field, amount, ttl}  HINCRBYFLOAT, then EXPIRE when ttl is not 0
#   {"run", k, k_due, id, record, at} an action run to do from `at` on
#   {"done", k, k_claimed, k_due, id} an action run recorded: gone from every set
#   {"set", k, value, id} / {"del", k} a plain key (a running job's timelines: set only while job `id` is
#                                     active, so a late write never outlives its finish; id '' = always)
# apply_ops returns the number of "job" records written.
_OPS = """
local function apply_ops(ops)
  local written = 0
  for _, op in ipairs(ops) do
    local kind = op[1]
    if kind == 'job' then
      if redis.call('ZSCORE', ACTIVE, op[3]) then
        redis.call('SET', KEYS[op[2]], op[4])
        redis.call('ZADD', ACTIVE, op[5], op[3])
        written = written + 1
      end
    elseif kind == 'new' then
      redis.call('SET', KEYS[op[2]], op[4])
      redis.call('ZADD', ACTIVE, op[5], op[3])
    elseif kind == 'cmd' then
      redis.call('XADD', KEYS[op[2]], 'MAXLEN', '~', op[4], '*', 'f', op[3])
    elseif kind == 'cursor' then
      redis.call('SET', KEYS[op[2]], op[4])
      redis.call('XTRIM', KEYS[op[3]], 'MINID', op[4])
    elseif kind == 'hset' then
      redis.call('HSET', KEYS[op[2]], op[3], op[4])
    elseif kind == 'hincr' then
      redis.call('HINCRBYFLOAT', KEYS[op[2]], op[3], op[4])
      if tonumber(op[5]) > 0 then redis.call('EXPIRE', KEYS[op[2]], op[5]) end
    elseif kind == 'run' then
      redis.call('SET', KEYS[op[2]], op[5])
      redis.call('ZADD', KEYS[op[3]], op[6], op[4])
    elseif kind == 'done' then
      redis.call('DEL', KEYS[op[2]])
      redis.call('ZREM', KEYS[op[3]], op[5])
      redis.call('ZREM', KEYS[op[4]], op[5])
    elseif kind == 'set' then
      if op[4] == '' or redis.call('ZSCORE', ACTIVE, op[4]) then redis.call('SET', KEYS[op[2]], op[3]) end
    elseif kind == 'del' then
      redis.call('DEL', KEYS[op[2]])
    end
  end
  return written
end
"""

# Launch one job: claim its scheduled slot (if any), store it, file it, advance the cursor, and apply the ops the
# placement produced (the agent's `launch_job` frame, the runs of its start actions).
# KEYS[1] leader, KEYS[2] epoch, KEYS[3] claim key (ignored when ARGV[4] == ''), KEYS[4] job record,
# KEYS[5] active zset, KEYS[6] unindexed set, KEYS[7] cursor hash, KEYS[8..] the keys the ops name
# ARGV[1] node id, ARGV[2] epoch, ARGV[3] job id, ARGV[4] "1" to claim, ARGV[5] claim ttl s,
# ARGV[6] msgpack job, ARGV[7] "active" | "final", ARGV[8] started (score),
# ARGV[9] cursor event id ('' = none), ARGV[10] cursor second, ARGV[11] msgpack ops ('' = none)
# return 1 launched, 0 the slot was already claimed (nothing written)
JOB_LAUNCH = fenced("local ACTIVE = KEYS[5]\n" + _OPS + """
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
if ARGV[11] ~= '' then apply_ops(cmsgpack.unpack(ARGV[11])) end
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

# Finish an active job: store the final record, queue it for indexing, and apply what the finish calls for
# (completion action runs, event state, a retry's new job, agent frames), all or nothing.
# KEYS[1] leader, KEYS[2] epoch, KEYS[3] job record, KEYS[4] active zset, KEYS[5] unindexed set,
# KEYS[6..] the keys the ops name
# ARGV[1] node id, ARGV[2] epoch, ARGV[3] job id, ARGV[4] msgpack final record, ARGV[5] msgpack ops ('' = none)
# return 1, or error NOTFOUND when the job is not active (nothing written)
JOB_FINISH = fenced("local ACTIVE = KEYS[4]\n" + _OPS + """
if redis.call('ZREM', KEYS[4], ARGV[3]) == 0 then return redis.error_reply('NOTFOUND') end
redis.call('SET', KEYS[3], ARGV[4])
redis.call('SADD', KEYS[5], ARGV[3])
if ARGV[5] ~= '' then apply_ops(cmsgpack.unpack(ARGV[5])) end
return 1
""")

# Write live jobs, agent frames, action runs and the inbox cursor in one step: the dispatcher's every transition
# short of finishing. A job is written only while it is still active, so a write computed before a finish can
# never bring the finished job back.
# KEYS[1] leader, KEYS[2] epoch, KEYS[3] active zset, KEYS[4..] the keys the ops name
# ARGV[1] node id, ARGV[2] epoch, ARGV[3] msgpack ops
# return the number of jobs written
JOB_WRITE = fenced("local ACTIVE = KEYS[3]\n" + _OPS + """
return apply_ops(cmsgpack.unpack(ARGV[3]))
""")

# Rewrite a stored job if it is still byte for byte what the caller read (a completed job: tags, tickets, action
# results), with ops applied in the same step (the action runs the rewrite records).
# KEYS[1] leader, KEYS[2] epoch, KEYS[3] job record, KEYS[4] active zset, KEYS[5..] the keys the ops name
# ARGV[1] node id, ARGV[2] epoch, ARGV[3] sha1 hex of the record read, ARGV[4] msgpack new record,
# ARGV[5] msgpack ops ('' = none)
# return 1 written, 0 the record changed (or is gone) since it was read (nothing written)
JOB_CAS = fenced("local ACTIVE = KEYS[4]\n" + _OPS + """
local raw = redis.call('GET', KEYS[3])
if not raw or redis.sha1hex(raw) ~= ARGV[3] then return 0 end
redis.call('SET', KEYS[3], ARGV[4])
if ARGV[5] ~= '' then apply_ops(cmsgpack.unpack(ARGV[5])) end
return 1
""")



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


class _Key(str):
    """A key an op names; turned into its KEYS index when the ops are encoded for a script."""


class JobWrite:
    """Ops for one of the job scripts (see _OPS): live records, agent frames, action runs, event state."""

    def __init__(self, keys: Keyspace) -> None:
        self.k = keys
        self.ops: list[list[Any]] = []
        self.runs: list[str] = []  # ids of the action runs this write queues
        self.new: list[Record] = []  # jobs this write creates (retries)

    def __bool__(self) -> bool:
        return bool(self.ops)

    def extend(self, other: JobWrite) -> JobWrite:
        self.ops += other.ops
        self.runs += other.runs
        self.new += other.new
        return self

    def encode(self, first: int) -> tuple[list[str], bytes]:
        """The keys the ops name (to pass as KEYS[first..]) and the ops with those keys as indices."""
        keys: dict[str, int] = {}
        ops = [[keys.setdefault(a, first + len(keys)) if isinstance(a, _Key) else a for a in op] for op in self.ops]
        return list(keys), codec.pack_for_lua(ops)

    def job(self, job: Record) -> JobWrite:
        """A live record; its timelines are not in it (they go with `timelines`, less often)."""
        job_id = str(job["id"])
        record = {k: v for k, v in job.items() if k != TIMELINES} if TIMELINES in job else job
        self.ops.append(["job", _Key(self.k.job(job_id)), job_id, codec.pack(record),
                         repr(float(job.get("started", 0)))])  # fmt: skip
        return self

    def timelines(self, job_id: str, lines: Any) -> JobWrite:
        self.ops.append(["set", _Key(self.k.job_timelines(job_id)), codec.pack(lines), job_id])
        return self

    def drop_timelines(self, job_id: str) -> JobWrite:
        self.ops.append(["del", _Key(self.k.job_timelines(job_id))])
        return self

    def new_job(self, job: Record) -> JobWrite:
        job_id = str(job["id"])
        self.ops.append(["new", _Key(self.k.job(job_id)), job_id, codec.pack(job), repr(float(job.get("started", 0)))])
        self.new.append(job)
        return self

    def frame(self, server_id: str, cmd: str, data: Record) -> JobWrite:
        self.ops.append(["cmd", _Key(self.k.agent_commands(server_id)), codec.pack({"cmd": cmd, "data": data}),
                         COMMANDS_MAXLEN])  # fmt: skip
        return self

    def robin(self, event_id: str, counter: int) -> JobWrite:
        self.ops.append(["hset", _Key(self.k.dispatch_robin), event_id, str(counter)])
        return self

    def inbox_done(self, entry_id: str) -> JobWrite:
        self.ops.append(["cursor", _Key(self.k.dispatch_cursor), _Key(self.k.dispatch_inbox), entry_id])
        return self

    def hset(self, key: str, field: str, value: Any) -> JobWrite:
        self.ops.append(["hset", _Key(key), field, value if isinstance(value, str | bytes) else repr(value)])
        return self

    def hincr(self, key: str, field: str, amount: float, ttl_s: int = 0) -> JobWrite:
        self.ops.append(["hincr", _Key(key), field, repr(float(amount)), ttl_s])
        return self

    def run(self, run: Record, at: float) -> JobWrite:
        """Queue an action run ({id, job, ...}) to be claimed from `at` (epoch s) on."""
        run_id = str(run["id"])
        self.ops.append(["run", _Key(self.k.action_run(run_id)), _Key(self.k.actions_due), run_id, codec.pack(run),
                         repr(float(at))])  # fmt: skip
        self.runs.append(run_id)
        return self

    def done(self, run_id: str) -> JobWrite:
        """An action run whose result this write records."""
        self.ops.append(["done", _Key(self.k.action_run(run_id)), _Key(self.k.actions_claimed),
                         _Key(self.k.actions_due), run_id])  # fmt: skip
        return self


class JobStore:
    def __init__(self, db: Database) -> None:
        self.db = db
        self.index = Indexer(db, JOBS_INDEX)

    async def get(self, job_id: str) -> Record | None:
        """A job's record; a running one with its latest stored timelines."""
        k = self.db.keys
        raw, lines = await self.db.client.mget([k.job(job_id), k.job_timelines(job_id)])
        if raw is None:
            return None
        job = dict(codec.unpack(codec.as_bytes(raw)))
        if lines is not None and not job.get("final"):
            job[TIMELINES] = codec.unpack(codec.as_bytes(lines))
        return job

    async def get_many(self, ids: Sequence[str]) -> list[Record | None]:
        if not ids:
            return []
        raws = await self.db.client.mget([self.db.keys.job(i) for i in ids])
        return [None if r is None else dict(codec.unpack(codec.as_bytes(r))) for r in raws]

    async def active(self, *, timelines: bool = False) -> list[Record]:
        """Every active job; with `timelines`, each with its stored timelines (what the dispatcher loads)."""
        ids = [codec.as_bytes(i).decode() for i in await self.db.client.zrange(self.db.keys.jobs_active, 0, -1)]
        found = await self.get_many(ids)
        if timelines and ids:
            raws = await self.db.client.mget([self.db.keys.job_timelines(i) for i in ids])
            for job, lines in zip(found, raws, strict=True):
                if job is not None and lines is not None:
                    job[TIMELINES] = codec.unpack(codec.as_bytes(lines))
        return [j for j in found if j is not None]

    async def launch(
        self, fence: Fence, job: Record, *, claim: tuple[str, int] | None = None,
        cursor: tuple[str, int] | None = None, extra: JobWrite | None = None,
    ) -> bool:  # fmt: skip
        """Store a new job (fenced, atomic with its slot claim and cursor, and with `extra`: the ops its placement
        produced, such as the agent's frame). False if the slot was taken."""
        k = self.db.keys
        job_id = str(job["id"])
        claim_key = k.sched_claim(*claim) if claim else k.sched_claim("-", 0)
        final = job.get("state") == "complete"
        keys, ops = extra.encode(8) if extra else ([], b"")
        done = await fence.run(
            JOB_LAUNCH,
            [claim_key, k.job(job_id), k.jobs_active, k.jobs_unindexed, k.sched_cursor, *keys],
            [job_id, "1" if claim else "", CLAIM_TTL_S, codec.pack(job), "final" if final else "active",
             repr(float(job.get("started", 0))), cursor[0] if cursor else "", cursor[1] if cursor else 0, ops],
            durable=True,  # the job is sent to an agent next
        )  # fmt: skip
        if int(done) == 1 and final:
            await self.index_one(job)
        return int(done) == 1

    async def write(self, fence: Fence, batch: JobWrite) -> int:
        """Apply a JobWrite (fenced); returns how many jobs were still active and written."""
        if not batch:
            return 0
        keys, ops = batch.encode(4)
        return int(await fence.run(JOB_WRITE, [self.db.keys.jobs_active, *keys], [ops]))

    async def robin_counters(self) -> dict[str, int]:
        """The round-robin counter of every event (server selection)."""
        raw = await self.db.client.hgetall(self.db.keys.dispatch_robin)
        return {codec.as_bytes(k).decode(): int(v) for k, v in raw.items()}

    async def finish(self, fence: Fence, job: Record, *, index: bool = True, extra: JobWrite | None = None) -> None:
        """Store the final record (fenced, with `extra`'s ops) and queue it for indexing; index it now unless the
        caller batches that (index_many): until then it is in the unindexed set, which the primary drains."""
        k = self.db.keys
        keys, ops = extra.encode(6) if extra else ([], b"")
        try:
            await fence.run(JOB_FINISH, [k.job(str(job["id"])), k.jobs_active, k.jobs_unindexed, *keys],
                            [str(job["id"]), codec.pack(job), ops])  # fmt: skip
        except ResponseError as exc:
            if str(exc).startswith("NOTFOUND"):
                raise Conflict("notfound", f"job {job['id']} is not active") from None
            raise
        if index:
            await self.index_one(job)

    async def stored(self, job_id: str) -> tuple[Record, str] | None:
        """A job's record and the digest of its bytes, for `swap`."""
        raw = await self.db.client.get(self.db.keys.job(job_id))
        if raw is None:
            return None
        data = codec.as_bytes(raw)
        return dict(codec.unpack(data)), hashlib.sha1(data).hexdigest()

    async def swap(self, fence: Fence, digest: str, old: Record, new: Record, extra: JobWrite | None = None) -> bool:
        """Rewrite a stored job if it is unchanged since `stored` gave `digest` (fenced, with `extra`'s ops), and
        move its search entries when it is final. False when it changed meanwhile: read again and retry."""
        k = self.db.keys
        job_id = str(old["id"])
        keys, ops = extra.encode(5) if extra else ([], b"")
        done = await fence.run(JOB_CAS, [k.job(job_id), k.jobs_active, *keys], [digest, codec.pack(new), ops])
        if int(done) != 1:
            return False
        if new.get("final") and index_fields(old) != index_fields(new):
            await self.index.remove(job_id, index_fields(old))
            await self.index_one(new)
        return True

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
        for job in await self.get_many([codec.as_bytes(i).decode() for i in ids or []]):
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

    async def nth_counters(self) -> dict[str, int]:
        raw = await self.db.client.hgetall(self.db.keys.sched_nth)
        return {codec.as_bytes(k).decode(): int(v) for k, v in raw.items()}

    async def cursors(self) -> dict[str, int]:
        raw = await self.db.client.hgetall(self.db.keys.sched_cursor)
        return {codec.as_bytes(k).decode(): int(v) for k, v in raw.items()}

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
        batch.add("DEL", [k.job_timelines(job_id)])
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
            also += [("DEL", [k.job(job_id)], []), ("DEL", [k.job_timelines(job_id)], []),
                     ("SREM", [k.jobs_unindexed], [job_id])]
        await self.index.remove_fenced(fence, records, also)
        return len(records), [job_id for job_id, job in zip(ids, jobs, strict=True) if job is None]
