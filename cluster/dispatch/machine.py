"""The primary's dispatcher: the job state machine (digest 3.2), event-driven.

Redis holds every job; this is the primary's write-through view of the active ones, loaded from Redis when the
node becomes primary and written back (fenced) with every change, so a new primary carries on from exactly what
the old one wrote and a deposed one can change nothing. (xyOps keeps this state in the conductor's memory only,
which is how its jobs end up "running" or "finishing" forever after a crash: xyOps #21, #165, #213, #240.)

Work happens when something happens, not on a tick: a launch places its job at once (in the launch's own fenced
write), and a finish, an agent joining or a freed slot drains every queue as far as the free slots allow (xyOps
promotes one queued job per queue per second). A 1 s tick remains for time: delays that run out, the dead-job
timeout, and the deadlines of `finishing` and of an abort the agent never answers.

Writes of existing jobs are coalesced: changes mark jobs dirty, and one writer sends them (with the agent frames
and the inbox cursor) in one fenced JOB_WRITE, in order. A job is only written while Redis still has it active,
so no late write can bring a finished job back.

States: start_delay | retry_delay -> ready -> queued | active -> finishing -> complete. `starting` (when the
start actions run) is passed through within the placing step until actions exist.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson
import structlog

from storage.connection import UNAVAILABLE_ERRORS, Database
from storage.errors import Conflict, FencedError
from storage.families import GROUPS
from storage.fence import Fence
from storage.ids import generate_id
from storage.jobs import JobWrite

from . import limits
from .selection import UnknownAlgorithm, available, candidates, choose
from .tally import DELAYED, Tally
from .updates import add_meta, apply_update, final_record

if TYPE_CHECKING:
    from ..node import NodeRuntime

log = structlog.get_logger("podium.dispatch")
Record = dict[str, Any]

NO_SERVERS = "No available servers matching targets."
LIMIT_FULL = "Maximum number of concurrent jobs reached."
_STOPS: tuple[type[BaseException], ...] = (FencedError, *UNAVAILABLE_ERRORS)  # not a bad entry: stop, retry
MAX_USER_DATA = 64 * 1024  # a server's userData, as jobs' serverData adds to it


@dataclass(frozen=True, slots=True)
class DispatchConfig:
    dead_job_timeout_s: float = 120.0  # an active job nobody reports on for this long is aborted
    finishing_timeout_s: float = 120.0  # a job may stay `finishing` (uploading) this long
    abort_timeout_s: float = 30.0  # an abort the agent never answers completes the job after this
    tick_s: float = 1.0
    inbox_block_ms: int = 1000


class Dispatcher:
    def __init__(self, node: NodeRuntime, config: DispatchConfig | None = None) -> None:
        self.node = node
        self.config = config or DispatchConfig()
        self.jobs: dict[str, Record] = {}
        self.servers: dict[str, Record] = {}
        self.groups: dict[str, Record] = {}
        self.tally = Tally()
        self.loaded = False
        self.robin: dict[str, int] = {}
        self._kick = asyncio.Event()
        self._dirty: dict[str, None] = {}
        self._frames: list[tuple[str, str, Record]] = []
        self._inbox_done: str | None = None
        self._waiters: list[asyncio.Future[None]] = []
        self._wake_writer = asyncio.Event()
        self._restart = asyncio.Event()  # set on any failure: the term ends and a new one starts from Redis
        self._pending: dict[str, Record] = {}  # placed by a launch whose write has not landed yet
        self._landed: dict[str, Record] | None = None  # launches settled while a load runs (None: no load)
        self._robin_dirty: dict[str, int] = {}
        self._deadlines_at = 0.0  # when the deadlines were last checked (they need the tick, not every kick)
        self._generation = 0  # one per term as primary: a finished term's clean-up never touches the next
        self._applied = ""  # the last inbox entry applied in this term
        self._failed: dict[str, int] = {}  # an inbox entry whose application failed, and how many times
        self._to_index: list[Record] = []  # finished jobs whose search entries the indexer writes in batches
        self._index_wake = asyncio.Event()

    # -- the view ---------------------------------------------------------------------------
    async def load(self) -> None:
        """(Re)build the view from Redis: every active job, the online servers, the groups. Launches that land
        while it reads are kept (in flight: `_pending`; landed meanwhile: `_landed`)."""
        stores = self.node.stores
        self._landed = {}
        try:
            jobs = await stores.jobs.active()
            robin = await stores.jobs.robin_counters()
            await self.refresh_servers()
        except BaseException:
            self._landed = None
            raise
        now = time.time()
        self.jobs = {str(j["id"]): j for j in jobs}
        self.jobs.update(self._landed)
        self.jobs.update(self._pending)
        self._landed = None
        self.tally.clear()
        for job in self.jobs.values():
            # Adopted jobs get a full dead-job timeout from now: their agents may still be reconnecting.
            if job.get("state") in ("active", "finishing"):
                job["updated"] = max(float(job.get("updated") or 0), now)
            if job.get("state") == "finishing":
                job["finishing_since"] = max(float(job.get("finishing_since") or 0), now)
            self.tally.count(job)
        self.robin = robin
        self.loaded = True

    async def refresh_servers(self) -> None:
        self.servers = await self.node.stores.servers.online()
        self.groups = {str(g["id"]): g for g in await self.node.stores.defs.all(GROUPS)}

    def reserve(self, job: Record) -> None:
        """A job the launch path placed and is about to store: it counts against limits and budgets at once,
        but nothing else touches it until `settled` (its record may not be in Redis yet)."""
        if job.get("state") == "complete":
            return
        self._pending[str(job["id"])] = job
        self.jobs[str(job["id"])] = job
        self.tally.count(job)

    def settled(self, job: Record, stored: bool | None) -> None:
        """The launch's write landed (True), did not (False: the slot was taken), or may have (None: the write
        failed and Redis may or may not have it, so the view is rebuilt)."""
        if self._pending.pop(str(job["id"]), None) is None:
            return
        if stored is None:
            self.restart("a launch's write may or may not have landed")
        elif not stored:
            self.untrack(job)
            return
        if self._landed is not None:
            self._landed[str(job["id"])] = job
        if job.get("state") != "active":
            self.kick()

    def restart(self, why: str) -> None:
        """The view may no longer match Redis: end this term; the next one loads everything again and reads
        the inbox from the cursor Redis has (what was written with the changes it made)."""
        if not self._restart.is_set():
            log.warning("dispatch_restart", reason=why)
        self._restart.set()

    def untrack(self, job: Record) -> None:
        self.tally.forget(str(job["id"]))
        self.jobs.pop(str(job["id"]), None)

    def kick(self) -> None:
        self._kick.set()

    # -- placing ---------------------------------------------------------------------------
    def place(self, job: Record, now: float) -> tuple[str, Record] | None:
        """Decide a `ready` or `queued` job now (synchronously, so concurrent placements see each other).
        Changes `job` in place to `active` (returns its agent frame), `queued`, or `complete` (aborted)."""
        key = limits.similar_key(job)
        amount = limits.concurrency(job)
        if amount and self.tally.running.get(key, 0) >= amount:
            self._wait_or_abort(job, LIMIT_FULL)
            return None
        found = candidates(job.get("targets"), self.servers)
        ok = available(found, groups=self.groups, load=self.tally.load, weight=limits.weight(job))
        if job.get("state") == "ready" and self.tally.queued.get(key):
            # A new job waits behind the queued ones, never jumps them.
            self._wait_or_abort(job, LIMIT_FULL if ok else NO_SERVERS)
            return None
        algo = str(job.get("algo") or "random")
        try:
            robin = self.robin.get(str(job.get("event")), 0)
            server = choose(ok, algo, robin=robin, active_counts=self.tally.on_server)
        except UnknownAlgorithm as exc:
            self._abort_now(job, str(exc), now)
            return None
        if server is None:
            self._wait_or_abort(job, NO_SERVERS)
            return None
        if algo == "round_robin":
            event_id = str(job.get("event"))
            self.robin[event_id] = self._robin_dirty[event_id] = (robin + 1) % max(1, len(ok))
        server_id = str(server["id"])
        job.pop("position", None)
        job.update(state="active", server=server_id, groups=list(server.get("groups") or []), remote=True,
                   started=now, updated=now, progress=0)  # fmt: skip
        add_meta(job, f"Chosen server: {server.get('hostname') or server_id} ({algo})", now,
                 f"m:{self.node.node_id}", generate_id("m"))  # fmt: skip
        return server_id, {"cmd": "launch_job", "data": {"id": job["id"]}}

    def _wait_or_abort(self, job: Record, reason: str) -> None:
        key = limits.similar_key(job)
        room = limits.queue_room(job)
        queued = self.tally.queued.get(key, set())
        if job.get("state") == "queued" or (room and len(queued) < room):
            if job.get("state") != "queued":
                job["state"] = "queued"
                job["position"] = 0 if job.get("priority") else len(queued) + 1
            return
        full = ", and the queue is full" if room else ""
        job["retry_ok"] = True
        self._abort_now(job, reason.rstrip(".") + full + ".", time.time())

    @staticmethod
    def _abort_now(job: Record, reason: str, now: float) -> None:
        job.update(code="abort", description=reason)
        job.update(final_record(job, None, now))

    # -- the writer ------------------------------------------------------------------------
    def _mark(self, job: Record) -> None:
        if self.jobs.get(str(job["id"])) is not job:
            return  # gone from the view meanwhile (finished, flushed): never counted again
        self.tally.count(job)
        self._dirty[str(job["id"])] = None
        self._wake_writer.set()

    def _send(self, server_id: str, cmd: str, data: Record) -> None:
        self._frames.append((server_id, cmd, data))
        self._wake_writer.set()

    async def flush(self) -> None:
        """Wait until everything changed so far is written."""
        if not self._dirty and not self._frames and self._inbox_done is None and not self._robin_dirty:
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        self._wake_writer.set()
        await waiter

    async def _writer(self, stop: asyncio.Event) -> None:
        try:
            while not stop.is_set():
                await self._wake_writer.wait()
                self._wake_writer.clear()
                if not await self._write_once():
                    return
        finally:  # nobody waits forever on a writer that is gone
            waiters, self._waiters = self._waiters, []
            self._settle(waiters, FencedError("the dispatcher stopped"))

    @staticmethod
    def _settle(waiters: list[asyncio.Future[None]], exc: BaseException | None = None) -> None:
        for waiter in waiters:
            if not waiter.done():
                if exc is None:
                    waiter.set_result(None)
                else:
                    waiter.set_exception(exc)

    async def _write_once(self) -> bool:
        """Write everything pending in one fenced step. False once this node is no longer primary."""
        dirty, self._dirty = self._dirty, {}
        frames, self._frames = self._frames, []
        cursor, self._inbox_done = self._inbox_done, None
        robin, self._robin_dirty = self._robin_dirty, {}
        waiters, self._waiters = self._waiters, []
        batch = JobWrite(self.node.db.keys)
        for event_id, counter in robin.items():
            batch.robin(event_id, counter)
        for job_id in dirty:
            job = self.jobs.get(job_id)
            if job is not None:
                batch.job(job)
        for server_id, cmd, data in frames:
            batch.frame(server_id, cmd, data)
        if cursor is not None:
            batch.inbox_done(cursor)
        try:
            await self.node.stores.jobs.write(self.node.fence(), batch)
        except BaseException as exc:
            # Nothing of this batch is known to be written: start over from Redis (a write is all or nothing).
            self._settle(waiters, exc if isinstance(exc, Exception) else FencedError("the dispatcher stopped"))
            if isinstance(exc, Exception) and not isinstance(exc, FencedError):
                self.restart(f"write failed: {exc!r}")
            if not isinstance(exc, Exception):
                raise
            return False
        self._settle(waiters)
        return True

    # -- finishing ---------------------------------------------------------------------------
    async def finish(self, job_id: str, update: Mapping[str, Any] | None, *, reason: str = "") -> bool:
        """Complete a job with the agent's final report (or, with `reason`, as aborted). False if it is not
        active (a second finish changes nothing)."""
        job = self.jobs.get(job_id)
        if job is None or job_id in self._pending:
            return False
        self.untrack(job)  # at once: a concurrent finish of the same job sees it gone
        now = time.time()
        if reason:
            job = {**job, "code": "abort", "description": reason}
        fence = self.node.fence()
        try:
            log_size = await self._store_log(job_id, fence)
            final = final_record(job, update, now, log_size=log_size)
            if reason:
                final.update(code="abort", description=reason)
            await self.node.stores.jobs.finish(fence, final, index=False)
        except Conflict:
            return False  # finished by someone else (a previous primary) already
        except Exception as exc:
            self.restart(f"finish of {job_id} failed: {exc!r}")  # Redis has it active still: the next term too
            raise
        self.kick()  # a slot is free
        self._to_index.append(final)
        self._index_wake.set()
        await self._merge_server_data(final)
        return True

    async def _store_log(self, job_id: str, fence: Fence) -> int:
        """Move the live log to the file store (sealed through the fence). A file store that refuses it (full,
        too large) never keeps the job from finishing: the log then stays live, where it can still be read."""
        logs = self.node.stores.logs
        try:
            stored = await logs.finalize(job_id, fence)
        except _STOPS:
            raise
        except Exception as exc:
            log.warning("job_log_not_stored", job=job_id, error=str(exc))
            return int(await logs.size(job_id))
        return stored[1] if stored else 0

    async def _merge_server_data(self, final: Record) -> None:
        """A job's `serverData` joins its server's `userData` once it is complete (digest 3.2 finishJob). After
        the finish, so a failure here is logged, never a reason to finish again."""
        data, server_id = final.get("serverData"), str(final.get("server") or "")
        if not isinstance(data, Mapping) or not data or not server_id:
            return

        async def merge(record: Record) -> Record | None:
            user: dict[str, Any] = record["userData"] if isinstance(record.get("userData"), dict) else {}
            merged = {**user, **data}
            if len(orjson.dumps(merged, default=str)) > MAX_USER_DATA:
                log.warning("server_data_too_large", server=server_id, job=final.get("id"))
                return None
            return {**record, "userData": merged}

        try:
            await self.node.stores.servers.modify(server_id, merge)
        except Exception as exc:
            log.warning("server_data_merge_failed", server=server_id, job=final.get("id"), error=str(exc))

    # -- calls from handlers (primary only) ----------------------------------------------------
    async def abort(self, job_id: str, reason: str) -> bool:
        """Abort a job. An abort always wins: a job that is not running yet completes at once; a running one is
        told to stop and completes when its agent reports, or after abort_timeout_s if it never does."""
        job = self.jobs.get(job_id)
        if job is None:
            return False
        if job.get("state") != "active" or not job.get("server"):
            return await self.finish(job_id, None, reason=reason)
        if not job.get("aborting"):
            now = time.time()
            job["aborting"] = {"reason": reason, "deadline": now + self.config.abort_timeout_s}
            job["updated"] = now
            add_meta(job, reason, now, f"m:{self.node.node_id}", generate_id("m"))
            self._mark(job)
            self._send(str(job["server"]), "abort_job", {"id": job_id, "reason": reason})
            await self.flush()
        return True

    async def patch(self, job_id: str, fields: Mapping[str, Any]) -> Record | None:
        job = self.jobs.get(job_id)
        if job is None:
            return None
        job.update(fields)
        self._mark(job)
        await self.flush()
        return job

    async def skip_delay(self, job_id: str) -> bool:
        job = self.jobs.get(job_id)
        if job is None or job.get("state") not in DELAYED:
            return False
        job["until"] = time.time()
        self._mark(job)
        self.kick()
        await self.flush()
        return True

    async def flush_queue(self, event_id: str) -> list[Record]:
        """Drop the queued jobs of an event (silently, as xyOps); returns them."""
        gone = [j for j in self.jobs.values() if j.get("event") == event_id and j.get("state") == "queued"
                and str(j["id"]) not in self._pending]  # fmt: skip
        for job in gone:
            self.untrack(job)
        fence = self.node.fence()
        try:
            for job in gone:
                await self.node.stores.jobs.delete(fence, job)
        except Exception as exc:
            self.restart(f"flush of queue failed: {exc!r}")
            raise
        self.kick()
        return gone

    # -- the inbox ---------------------------------------------------------------------------
    async def apply(self, entries: list[tuple[str, Record]]) -> None:
        """Apply agent reports (from any node) in order. The inbox cursor follows each entry once its changes
        are made, so it is written with them and never ahead of them. A store error stops the batch (the caller
        reads again from the last entry applied); an entry that fails for any other reason is skipped."""
        now = time.time()
        refresh = False
        for entry_id, entry in entries:
            try:
                refresh = await self._apply_one(entry, now) or refresh
            except Exception as exc:
                tries = self._failed.get(entry_id, 0) + 1
                self._failed = {entry_id: tries}
                if tries < 3:
                    raise  # the term restarts and applies it again, from a view rebuilt from Redis
                log.exception("dispatch_entry_skipped", entry=entry_id, cmd=str(entry.get("cmd")), error=repr(exc))
            self._inbox_done = entry_id
            self._applied = entry_id
        if entries:
            self._wake_writer.set()
        if refresh:
            await self.refresh_servers()
            self.kick()

    async def _apply_one(self, entry: Record, now: float) -> bool:
        """One inbox entry; True when the set of online servers changed."""
        cmd, server, data = entry.get("cmd"), str(entry.get("server") or ""), entry.get("data")
        if not isinstance(data, Mapping):
            return False
        if cmd == "jobs":
            for job_id, update in data.items():
                if isinstance(update, Mapping):
                    await self._report(str(job_id), server, update, now)
        elif cmd == "finish":
            await self._finish_report(server, data)
        elif cmd == "meta":
            job = self.jobs.get(str(data.get("id")))
            if job is not None and job.get("server") == server:
                add_meta(job, str(data.get("text", "")), now, server, generate_id("m"))
                self._mark(job)
        elif cmd in ("joined", "left"):
            self._connected(server, cmd == "joined")
            return True
        return False

    async def _finish_report(self, server: str, data: Mapping[str, Any]) -> None:
        job = self.jobs.get(str(data.get("id")))
        if job is not None and (not server or job.get("server") == server):
            final = data.get("job")
            await self.finish(str(job["id"]), final if isinstance(final, Mapping) else {})

    def _connected(self, server: str, joined: bool) -> None:
        """An agent's socket came or went: its jobs are remote (reachable) or not. Nothing is aborted on a
        disconnect; the agent keeps running them and re-attaches them when it reconnects to any node."""
        for job in self.jobs.values():
            if job.get("server") == server and job.get("state") in ("active", "finishing"):
                job["remote"] = joined
                self._mark(job)

    async def _report(self, job_id: str, server: str, update: Mapping[str, Any], now: float) -> None:
        job = self.jobs.get(job_id)
        if job is None or job.get("server") != server:
            # Not a job of this agent (finished here meanwhile, e.g. by the dead-job timeout): stop it there
            # rather than let it run on unseen. ⚠ xyOps patches the stored record of such a job instead.
            if update.get("state") not in ("complete", "finishing") and server:
                self._send(server, "abort_job", {"id": job_id, "reason": "Job is no longer active on the conductor."})
            return
        if update.get("state") == "complete":  # a legacy final update over the socket
            await self.finish(job_id, update)
            return
        apply_update(job, update, now)
        self._mark(job)

    # -- time --------------------------------------------------------------------------------
    async def step(self) -> None:
        """Everything that is due: delays run out, waiting jobs placed, deadlines enforced."""
        now = time.time()
        due = now - self._deadlines_at >= self.config.tick_s * 0.9
        if due:
            # Online servers change without a word to the primary too (a node killed with its sockets, an
            # admin disabling a server): read them again every tick.
            self._deadlines_at = now
            await self.refresh_servers()
        placed = await self._place_waiting(now)
        self._renumber()
        if due:
            await self._deadlines(now)
        if placed:
            await self.flush()

    async def _place_waiting(self, now: float) -> bool:
        placed = False
        blocked: set[str] = set()  # queues whose first job had to stay: the ones behind it wait too
        waiting = [self.jobs[i] for i in self.tally.waiting if i in self.jobs and i not in self._pending]
        for job in sorted(waiting, key=limits.queue_order):
            if job.get("state") in DELAYED:
                if float(job.get("until") or 0) > now:
                    continue
                job["state"] = "ready"
                job.pop("until", None)
            if self.jobs.get(str(job["id"])) is not job:
                continue  # gone while an earlier one was being written (aborted, flushed)
            key, was = limits.similar_key(job), job.get("state")
            if was == "queued" and key in blocked:
                continue
            frame = self.place(job, now)
            if job.get("state") == "complete":
                self.untrack(job)
                await self.node.stores.jobs.finish(self.node.fence(), job)
                continue
            if job.get("state") == "queued":
                blocked.add(key)
                if was == "queued":
                    continue  # still waiting, unchanged
            self._mark(job)
            if frame is not None:
                self._send(frame[0], frame[1]["cmd"], frame[1]["data"])
                placed = True
        return placed

    async def _deadlines(self, now: float) -> None:
        cfg = self.config
        for job in list(self.jobs.values()):
            if str(job["id"]) in self._pending:
                continue
            state = job.get("state")
            aborting = job.get("aborting")
            if isinstance(aborting, Mapping) and float(aborting.get("deadline") or 0) <= now:
                await self.finish(str(job["id"]), None, reason=str(aborting.get("reason") or "Aborted"))
            elif state == "active" and now - float(job.get("updated") or now) >= cfg.dead_job_timeout_s:
                reason = f"No updates received in last {int(cfg.dead_job_timeout_s)} seconds, assuming job is dead."
                if job.get("server"):
                    self._send(str(job["server"]), "abort_job", {"id": job["id"], "reason": reason})
                job["retry_ok"] = True
                await self.finish(str(job["id"]), None, reason=reason)
            elif state == "finishing" and now - float(job.get("finishing_since") or now) >= cfg.finishing_timeout_s:
                # xyOps #213: a job could stay "finishing" forever. Complete it with what the agent last said.
                code = job.get("code", 0)
                note = f"Job did not finish within {int(cfg.finishing_timeout_s)} seconds of its process ending."
                update = {"code": code if code else "warning", "description": str(job.get("description") or note)}
                await self.finish(str(job["id"]), update)

    def _renumber(self) -> None:
        """Queue positions 1..n, oldest (priority first) at the front; only changed jobs are written."""
        for ids in self.tally.queued.values():
            ordered = sorted((self.jobs[i] for i in ids if i in self.jobs), key=limits.queue_order)
            for position, job in enumerate(ordered, 1):
                if job.get("position") != position:
                    job["position"] = position
                    self._mark(job)

    # -- the service ---------------------------------------------------------------------------
    def _reset(self) -> None:
        """A new term starts from Redis alone: nothing a previous term left in memory is written."""
        self._dirty, self._frames, self._inbox_done, self._robin_dirty = {}, [], None, {}
        waiters, self._waiters = self._waiters, []
        self._settle(waiters, FencedError("a new term started"))
        self._wake_writer.clear()
        self._kick.clear()
        self._restart.clear()

    async def run(self, stop: asyncio.Event) -> None:
        """The primary-only service: load the view, then apply the inbox and step on every kick and tick. If one
        of its tasks ends early (a bug, a lost connection), the view is rebuilt and every task started again."""
        self._generation += 1
        generation = self._generation
        self._reset()
        own: Database = self.node.db.with_own_pool(2, client_name="podium-dispatch")
        try:
            while not stop.is_set() and self._generation == generation:
                await self._term(stop, own, generation)
                if not stop.is_set():
                    await asyncio.sleep(0.5)
        finally:
            if self._generation == generation:
                self.loaded = False
            await own.aclose()

    async def _term(self, stop: asyncio.Event, own: Database, generation: int) -> None:
        while not stop.is_set():
            try:
                await self.load()
                break
            except FencedError:
                return
            except Exception as exc:
                log.warning("dispatch_load_failed", error=repr(exc))
                await asyncio.sleep(0.5)
        if stop.is_set():
            return
        tasks = [asyncio.create_task(self._writer(stop)), asyncio.create_task(self._inbox(stop, own)),
                 asyncio.create_task(self._ticker(stop)), asyncio.create_task(self._steps(stop)),
                 asyncio.create_task(self._indexer(stop))]  # fmt: skip
        watchers = [asyncio.create_task(stop.wait()), asyncio.create_task(self._restart.wait())]
        try:
            done, _ = await asyncio.wait([*tasks, *watchers], return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if task in tasks and not task.cancelled() and task.exception() is not None:
                    log.error("dispatch_task_failed", error=repr(task.exception()))
        finally:
            for task in [*tasks, *watchers]:
                task.cancel()
            for task in [*tasks, *watchers]:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            if self._generation == generation:
                self.loaded = False
                self._reset()

    async def _steps(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._kick.wait(), self.config.tick_s)
            self._kick.clear()
            try:
                await self.step()
            except FencedError:
                return
            except Exception as exc:
                self.restart(f"step failed: {exc!r}")
                return

    async def _indexer(self, stop: asyncio.Event) -> None:
        """Search entries of finished jobs, a batch at a time. A job is in the unindexed set until its entries
        are written, and every term starts by draining that set, so a crash or a lost batch loses none."""
        jobs = self.node.stores.jobs
        with contextlib.suppress(*UNAVAILABLE_ERRORS):
            while await jobs.index_pending():
                pass
        while not stop.is_set():
            await self._index_wake.wait()
            self._index_wake.clear()
            await asyncio.sleep(0.01)  # let a burst of finishes gather
            while self._to_index:
                batch, self._to_index = self._to_index[:500], self._to_index[500:]
                done = False
                try:
                    await jobs.index_many(batch)
                    done = True
                except Exception as exc:
                    log.warning("dispatch_index_failed", jobs=len(batch), error=str(exc))
                    await asyncio.sleep(0.5)
                finally:
                    if not done:  # failed or cancelled: kept for the next try (the unindexed set has them too)
                        self._to_index[:0] = batch

    async def _ticker(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await asyncio.sleep(self.config.tick_s)
            self.kick()

    async def _inbox(self, stop: asyncio.Event, own: Database) -> None:
        agents = self.node.stores.agents
        after = ""
        while not stop.is_set():
            try:
                if not after:
                    after = self._applied = await agents.inbox_cursor()
                entries = await agents.read_inbox(after, block_ms=self.config.inbox_block_ms, client=own.client)
            except UNAVAILABLE_ERRORS as exc:  # nothing applied: read again
                log.warning("dispatch_inbox_read_failed", error=str(exc))
                await asyncio.sleep(0.5)
                continue
            if not entries:
                continue
            try:
                await self.apply(entries)
            except FencedError:
                return
            except Exception as exc:
                self.restart(f"inbox entry failed: {exc!r}")
                return
            after = entries[-1][0]


def dispatch_service(dispatcher: Dispatcher) -> Any:
    """The primary service that runs `dispatcher` (cluster/node.py PrimaryService)."""

    async def service(node: NodeRuntime, stop: asyncio.Event) -> None:
        await dispatcher.run(stop)

    return service
