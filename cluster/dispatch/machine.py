"""The primary's dispatcher: the job state machine (digest 3.2), event-driven.

Redis holds every job; this is the primary's write-through view of the active ones, loaded from Redis when the
node becomes primary and written back (fenced, cluster/dispatch/writer.py) with every change, so a new primary
carries on from exactly what the old one wrote and a deposed one can change nothing. (xyOps keeps this state in
the conductor's memory only, which is how its jobs end up "running" or "finishing" forever after a crash: xyOps
#21, #165, #213, #240.)

Work happens when something happens, not on a tick: a launch places its job at once (in the launch's own fenced
write), and a finish, an agent joining or a freed slot drains every queue as far as the free slots allow (xyOps
promotes one queued job per queue per second). A 1 s tick remains for time: delays that run out, the dead-job
timeout, the resource limits, and the deadlines of `starting`, `finishing` and of an abort nobody answers.

States: start_delay | retry_delay -> ready -> queued | starting -> active -> finishing -> complete. A job with
`start` actions waits in `starting` until their runs are recorded (or it is suspended by one, until
`resume_job`); a job without goes straight to `active`. What a transition calls for (an agent frame, action runs,
a retry, event state) is written in the same fenced step as the transition itself.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import structlog

from storage.actions import DAY_TTL_S, day_of
from storage.connection import UNAVAILABLE_ERRORS
from storage.errors import Conflict, FencedError
from storage.families import ALERTS, GROUPS, MONITORS, TAGS
from storage.fence import Fence
from storage.ids import generate_id
from storage.jobs import JobWrite

from ..actions import plan
from ..actions.record import Change, with_result
from ..expressions import ExpressionError, server_filter
from . import finish as finishing
from . import limits, metrics
from .selection import UnknownAlgorithm, available, candidates, choose
from .service import dispatch_service
from .service import run as run_service
from .tally import DELAYED, Tally
from .updates import DONE_RUNS, add_meta, apply_update, final_record
from .writer import Writer

if TYPE_CHECKING:
    from ..node import NodeRuntime

log = structlog.get_logger("podium.dispatch")
Record = dict[str, Any]

NO_SERVERS = "No available servers matching targets."
LIMIT_FULL = "Maximum number of concurrent jobs reached."
SERVER_GONE = "Chosen server is no longer connected."
# A report that changes nothing but a running job's process figures (most of an agent's once-a-second ticks) is
# kept in the view and written this often: the store shows figures this much behind, never anything else.
FIGURES_WRITE_S = 3.0
GONE_HERE = "Job is no longer active on the conductor."
_STOPS: tuple[type[BaseException], ...] = (FencedError, *UNAVAILABLE_ERRORS)  # not a bad entry: stop, retry
__all__ = ["NO_SERVERS", "DispatchConfig", "Dispatcher", "dispatch_service"]


@dataclass(frozen=True, slots=True)
class DispatchConfig:
    dead_job_timeout_s: float = 120.0  # an active job nobody reports on for this long is aborted
    finishing_timeout_s: float = 120.0  # a job may stay `finishing` (uploading) this long
    abort_timeout_s: float = 30.0  # an abort the agent never answers completes the job after this
    starting_timeout_s: float = 300.0  # start actions that never report back hold the launch no longer than this
    tick_s: float = 1.0
    inbox_block_ms: int = 1000


def checked(update: Mapping[str, Any]) -> Mapping[str, Any]:
    """An agent's report with what a job may push made sound: actions validated (plan.validate_pushed), and
    only resource limits (a job may tighten its own time, log, mem and cpu; never give itself retries, slots
    or a queue)."""
    push = update.get("push")
    if not isinstance(push, Mapping) or not ({"actions", "limits"} & set(push)):
        return update
    fixed = dict(push)
    if "actions" in fixed:
        fixed["actions"] = plan.validate_pushed(fixed["actions"])
    if "limits" in fixed:
        raw = fixed["limits"] if isinstance(fixed["limits"], list) else []
        fixed["limits"] = [{k: v for k, v in lim.items() if k in limits.PUSHED_LIMIT_FIELDS}
                           for lim in raw[:20] if isinstance(lim, Mapping) and lim.get("type") in limits.RESOURCE_KINDS]
    return {**update, "push": fixed}


def _closing_line(final: Mapping[str, Any]) -> str:
    code = final.get("code")
    if code == 0:
        return "Job completed successfully."
    if code == "abort":
        return f"Job aborted: {final.get('description', '')}"
    return f"Job failed: {final.get('description', '')} ({code})"


class Dispatcher:
    def __init__(self, node: NodeRuntime, config: DispatchConfig | None = None) -> None:
        self.node = node
        self.config = config or DispatchConfig()
        self.jobs: dict[str, Record] = {}  # the view; changed in place (the writer holds it)
        self.servers: dict[str, Record] = {}
        self.groups: dict[str, Record] = {}
        self.alert_blocked: set[str] = set()  # servers an active limit_jobs alert keeps new jobs off
        self.monitors: dict[str, Record] = {}
        self.known_tags: Collection[str] | None = None  # tag ids and titles (None: not read yet, keep all)
        self.tally = Tally()
        self.loaded = False
        self.robin: dict[str, int] = {}
        self.writer = Writer(node, self.jobs, self.restart)
        self.writer.on_landed = self._arrived
        self.runs_ready: asyncio.Event = asyncio.Event()  # the action runner waits on it: new runs were written
        self.kicked = asyncio.Event()
        self.restarting = asyncio.Event()  # set on any failure: the term ends and a new one starts from Redis
        self._pending: dict[str, Record] = {}  # placed by a launch whose write has not landed yet
        self._landed: dict[str, Record] | None = None  # launches settled while a load runs (None: no load)
        self._deadlines_at = 0.0  # when the deadlines were last checked (they need the tick, not every kick)
        self.generation = 0  # one per term as primary: a finished term's clean-up never touches the next
        self.applied = ""  # the last inbox entry applied in this term
        self._failed: dict[str, int] = {}  # an inbox entry whose application failed, and how many times
        self.to_index: list[Record] = []  # finished jobs whose search entries the indexer writes in batches
        self._figures_at: dict[str, float] = {}  # when a job was last written for a report (figures are lazy)
        self._quiet: set[str] = set()  # jobs whose last reports changed only figures, not yet written
        self.index_wake = asyncio.Event()

    @property
    def _me(self) -> str:
        return f"m:{self.node.node_id}"

    # -- the view ---------------------------------------------------------------------------
    async def load(self) -> None:
        """(Re)build the view from Redis: every active job, the online servers, the groups. Launches that land
        while it reads are kept (in flight: `_pending`; landed meanwhile: `_landed`)."""
        stores = self.node.stores
        self._landed = {}
        try:
            jobs = await stores.jobs.active(timelines=True)
            robin = await stores.jobs.robin_counters()
            await self.refresh_servers()
        except BaseException:
            self._landed = None
            raise
        now = time.time()
        self.jobs.clear()
        self.jobs.update({str(j["id"]): j for j in jobs})
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
        await self.refresh_tags()
        await self.refresh_alerts()

    async def refresh_alerts(self) -> None:
        """Servers with an active alert that has `limit_jobs`: no new job is placed there while it lasts. And the
        monitors, for the `monitor:<id>` algorithm."""
        self.monitors = {str(m["id"]): m for m in await self.node.stores.defs.all(MONITORS)}
        limiting = {str(a["id"]) for a in await self.node.stores.defs.all(ALERTS) if a.get("limit_jobs")}
        blocked: set[str] = set()
        if limiting:
            for key in await self.node.stores.alertstate.active():
                server, _, alert_id = key.partition("-")
                if alert_id in limiting:
                    blocked.add(server)
        self.alert_blocked = blocked

    async def refresh_tags(self) -> None:
        """The tags a finished job may keep (ids and titles), as the definitions cache has them now."""
        self.known_tags = {str(t.get(k)) for t in await self.node.stores.defs.all(TAGS) for k in ("id", "title")
                           if t.get(k)}  # fmt: skip

    def reserve(self, job: Record) -> None:
        """A job the launch path placed and is about to store: it counts against limits and budgets at once,
        but nothing else touches it until `settled` (its record may not be in Redis yet)."""
        if job.get("state") == "complete":
            return
        self._pending[str(job["id"])] = job
        self.jobs[str(job["id"])] = job
        self.tally.count(job)

    def settled(self, job: Record, stored: bool | None, extra: JobWrite | None = None) -> None:
        """The launch's write landed (True), did not (False: the slot was taken), or may have (None: the write
        failed and Redis may or may not have it, so the view is rebuilt)."""
        if stored and extra is not None:
            self._arrived(extra)
        if stored is None and extra is not None and extra.new:
            self.restart("a launch that made a retry may or may not have landed")
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

    def _arrived(self, batch: JobWrite) -> None:
        """A write landed: the jobs it created (retries) join the view, and the action runner hears of its runs."""
        for job in batch.new:
            if job.get("state") == "complete":
                continue
            if self._landed is not None:  # a load is reading Redis: it may have read before this landed
                self._landed[str(job["id"])] = job
            elif self.loaded:
                self.jobs[str(job["id"])] = job
                self.tally.count(job)
                self.kick()
        if batch.runs:
            self.runs_ready.set()

    def restart(self, why: str) -> None:
        """The view may no longer match Redis: end this term; the next one loads everything again and reads
        the inbox from the cursor Redis has (what was written with the changes it made)."""
        if not self.restarting.is_set():
            log.warning("dispatch_restart", reason=why)
        self.restarting.set()

    def reset(self) -> None:
        """A new term starts from Redis alone: nothing a previous term left in memory is written."""
        self.writer.reset()
        self.kicked.clear()
        self.restarting.clear()
        self._figures_at, self._quiet = {}, set()

    def untrack(self, job: Record) -> None:
        self.tally.forget(str(job["id"]))
        self.jobs.pop(str(job["id"]), None)
        self._figures_at.pop(str(job["id"]), None)
        self._quiet.discard(str(job["id"]))
        self.writer.forget(str(job["id"]))

    def kick(self) -> None:
        self.kicked.set()

    def _mark(self, job: Record) -> None:
        if self.jobs.get(str(job["id"])) is not job:
            return  # gone from the view meanwhile (finished, flushed): never counted again
        self.tally.count(job)
        self.writer.mark(str(job["id"]))

    async def flush(self) -> None:
        await self.writer.flush()

    # -- placing ---------------------------------------------------------------------------
    def place(self, job: Record, now: float, batch: JobWrite, *, ready_at: float | None = None) -> bool:
        """Decide a `ready` or `queued` job now (synchronously, so concurrent placements see each other). Changes
        `job` in place to `starting` or `active` (True; what that calls for goes into `batch`), `queued`, or
        `complete` (aborted; its completion goes into `batch`). `ready_at`: when its delay ran out (default: its
        launch), for the dispatch latency metric."""
        key = limits.similar_key(job)
        amount = limits.concurrency(job)
        if amount and self.tally.running.get(key, 0) >= amount:
            self._wait_or_abort(job, LIMIT_FULL, now, batch)
            return False
        found = candidates(job.get("targets"), self.servers)
        ok = available(found, groups=self.groups, load=self.tally.load, weight=limits.weight(job),
                       alert_blocked=() if job.get("type") == "workflow" else self.alert_blocked,
                       expression=self._target_filter(job))  # fmt: skip
        if job.get("state") == "ready" and self.tally.queued.get(key):
            # A new job waits behind the queued ones, never jumps them.
            self._wait_or_abort(job, LIMIT_FULL if ok else NO_SERVERS, now, batch)
            return False
        algo = str(job.get("algo") or "random")
        try:
            robin = self.robin.get(str(job.get("event")), 0)
            server = choose(ok, algo, robin=robin, active_counts=self.tally.on_server, monitors=self.monitors)
        except UnknownAlgorithm as exc:
            self._abort_now(job, str(exc), now, batch)
            return False
        if server is None:
            self._wait_or_abort(job, NO_SERVERS, now, batch)
            return False
        if algo == "round_robin":
            event_id = str(job.get("event"))
            self.robin[event_id] = (robin + 1) % max(1, len(ok))
            batch.robin(event_id, self.robin[event_id])
        server_id = str(server["id"])
        job.pop("position", None)
        waited = now - (ready_at if ready_at is not None else float(job.get("started") or now))
        self.node.metrics.dispatch_latency.observe(max(0.0, waited))
        for note in limits.file_limit(job):
            add_meta(job, note, now, self._me, generate_id("m"))
        job.update(server=server_id, groups=list(server.get("groups") or []), started=now, updated=now, progress=0)
        add_meta(job, f"Chosen server: {server.get('hostname') or server_id} ({algo})", now, self._me,
                 generate_id("m"))  # fmt: skip
        event_id = str(job.get("event") or "")
        if event_id and "start_runs" not in job:  # what the `day` limit counts as `start`
            batch.hincr(self.node.db.keys.event_day(event_id, day_of(now)), "start", 1, DAY_TTL_S)
        if "start_runs" not in job:
            runs = finishing.runs_for(job, ["start"], lambda: generate_id("r"))
            if runs:
                job.update(state="starting", remote=False, starting_since=now, start_runs=[r["id"] for r in runs])
                for run in runs:
                    batch.run(run, now)
                # A suspension holds the job from this very write on: the run only tells people about it.
                if any(finishing.holds(job, r["action"]) for r in runs):
                    job["suspended"] = True
                    add_meta(job, "Suspending job until manual user intervention.", now, self._me, generate_id("m"))
                return True
        self._launch(job, now, batch)
        return True

    def _target_filter(self, job: Record) -> Callable[[Mapping[str, Any]], bool] | None:
        """The event's `expression` over candidate servers (compiled once, cached); `server(id)` reads an online
        server. One that no longer compiles is skipped, as xyOps skips a failing filter."""
        source = job.get("expression")
        if not isinstance(source, str) or not source.strip():
            return None
        try:
            return server_filter(source, {"server": lambda sid: self.servers.get(str(sid))})
        except ExpressionError as exc:
            log.warning("target_expression_invalid", job=job.get("id"), error=str(exc))
            return None

    def _launch(self, job: Record, now: float, batch: JobWrite) -> None:
        job.update(state="active", remote=True, started=now, updated=now, progress=0)
        job.pop("starting_since", None)
        batch.frame(str(job["server"]), "launch_job", {"id": job["id"]})

    def _wait_or_abort(self, job: Record, reason: str, now: float, batch: JobWrite) -> None:
        key = limits.similar_key(job)
        room = limits.queue_room(job)
        queued = self.tally.queued.get(key, set())
        if job.get("state") == "queued" or (room and len(queued) < room):
            if job.get("state") != "queued":
                job["state"] = "queued"
                job["position"] = 0 if job.get("priority") else len(queued) + 1
            return
        full = ", and the queue is full" if room else ""
        if reason == NO_SERVERS:  # servers may be back for a retry; a full concurrency limit would be full again
            job["retry_ok"] = True
        self._abort_now(job, reason.rstrip(".") + full + ".", now, batch)

    def _abort_now(self, job: Record, reason: str, now: float, batch: JobWrite) -> None:
        """Complete a job that never ran (in place), its completion's ops into `batch`."""
        job.update(code="abort", description=reason)
        job.update(final_record(job, None, now))
        self._completion(job, now, batch)

    def _completion(self, final: Record, now: float, batch: JobWrite) -> finishing.Completion:
        """What the finish of `final` calls for (a retry, action runs, event state), into `batch`."""
        done = finishing.completion(final, now, generate_id, known_tags=self.known_tags)
        for note in [*done.notes, _closing_line(final)]:
            add_meta(final, note, now, self._me, generate_id("m"))
        finishing.ops(batch, self.node.db.keys, done, now)
        return done

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
            await self._store_final(final, now, fence, job.get(DONE_RUNS) or [])
        except Conflict:
            return False  # finished by someone else (a previous primary) already
        except Exception as exc:
            self.restart(f"finish of {job_id} failed: {exc!r}")  # Redis has it active still: the next term too
            raise
        return True

    async def _store_final(self, final: Record, now: float, fence: Fence, done_runs: list[str]) -> None:
        await self.refresh_tags()
        batch = JobWrite(self.node.db.keys)
        for run_id in done_runs:  # results recorded on the live job, written now with the final record
            batch.done(run_id)
        batch.drop_timelines(str(final["id"]))  # they are in the final record
        self._completion(final, now, batch)
        await self.node.stores.jobs.finish(fence, final, index=False, extra=batch)
        self._arrived(batch)
        self.kick()  # a slot is free
        self.to_index.append(final)
        self.index_wake.set()

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

    # -- action runs (cluster/actions/runner.py) ------------------------------------------------
    def live(self, job_id: str) -> Record | None:
        """The job as the view has it, if it is active here and settled."""
        return None if job_id in self._pending or not self.loaded else self.jobs.get(job_id)

    async def record(self, run: Mapping[str, Any], outcome: Mapping[str, Any], change: Change | None = None) -> bool:
        """Write a run's result onto its live job, with the run's removal, in the next write. False when the job is
        not live here (completed, or the view is loading): the runner then records it on the stored job."""
        job = self.live(str(run.get("job")))
        if job is None:
            return False
        now = time.time()
        with_result(job, run, outcome, now, change, server=self._me)
        # The run goes with the write that carries its result: the job's next write, or its finish.
        job.setdefault(DONE_RUNS, []).append(str(run["id"]))
        pending = job.get("start_runs")
        if isinstance(pending, list) and run["id"] in pending:
            job["start_runs"] = [r for r in pending if r != run["id"]]
            if not job["start_runs"] and job.get("state") == "starting":
                await self._started(job, now)
        self._mark(job)
        return True

    async def _started(self, job: Record, now: float) -> None:
        """The start actions are done: launch, unless one suspended the job or its server went away."""
        if job.get("suspended") or job.get("state") != "starting":
            return
        if str(job.get("server")) not in self.servers:
            job["retry_ok"] = True
            await self.finish(str(job["id"]), None, reason=SERVER_GONE)
            return
        self._launch(job, now, self.writer.extra)
        self._mark(job)

    async def resume(self, job_id: str, params: Mapping[str, Any], who: str) -> str:
        """Resume a suspended job: its params merged, its server chosen again. '' on success, else why not."""
        job = self.live(job_id)
        if job is None:
            return f"Job not found or is no longer active: {job_id}"
        if not job.get("suspended"):
            return f"Job is not currently suspended: {job_id}"
        now = time.time()
        if params:
            job["params"] = {**(job.get("params") or {}), **params}
        job.pop("suspended", None)
        job.pop("server", None)
        job.pop("starting_since", None)
        job["state"] = "ready"
        add_meta(job, f"Resuming job after user intervention ({who}).", now, self._me, generate_id("m"))
        self._mark(job)
        self.kick()
        await self.flush()
        return ""

    def _queue_runs(self, job: Record, runs: list[Record], now: float) -> None:
        for run in runs:
            self.writer.extra.run(run, now)
        self.writer.wake()

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
            add_meta(job, f"Aborting job: {reason}", now, self._me, generate_id("m"))
            self._mark(job)
            self.writer.send(str(job["server"]), "abort_job", {"id": job_id, "reason": reason})
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

    async def toggle_notify(self, job_id: str, email: str, username: str) -> bool | None:
        """`job_toggle_notify_me`: add (True) or remove (False) a hidden `complete` email to `email` on a live job.
        None when the job is not live."""
        job = self.live(job_id)
        if job is None:
            return None
        # Entries are switched off and on, never removed: a run records its result by the action's position.
        actions = job["actions"] = [a for a in job.get("actions") or [] if isinstance(a, dict)]
        mine = next((a for a in actions if a.get("condition") == "complete" and a.get("type") == "email"
                     and a.get("email") == email and a.get("hidden")), None)  # fmt: skip
        enabled = not (mine is not None and mine.get("enabled"))
        if mine is None:
            actions.append({"enabled": True, "condition": "complete", "type": "email", "email": email, "users": [],
                            "hidden": True, "source": "user"})  # fmt: skip
        else:
            mine["enabled"] = enabled
        what = "added to" if enabled else "removed from"
        add_meta(job, f"User {what} job notify list: {username}", time.time(), self._me, generate_id("m"))
        self._mark(job)
        await self.flush()
        return enabled

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
            self.writer.inbox_done(entry_id)
            self.applied = entry_id
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
            await self.finish(str(job["id"]), checked(final) if isinstance(final, Mapping) else {})

    def _connected(self, server: str, joined: bool) -> None:
        """An agent's socket came or went: its jobs are remote (reachable) or not. Nothing is aborted on a
        disconnect; the agent keeps running them and re-attaches them when it reconnects to any node."""
        for job in self.jobs.values():
            if job.get("server") == server and job.get("state") in ("active", "finishing"):
                job["remote"] = joined
                self._mark(job)

    async def _report(self, job_id: str, server: str, update: Mapping[str, Any], now: float) -> None:
        job = self.jobs.get(job_id)
        if job is None or job.get("server") != server or job.get("state") == "starting":
            # Not a job of this agent (finished here meanwhile, e.g. by the dead-job timeout): stop it there
            # rather than let it run on unseen. ⚠ xyOps patches the stored record of such a job instead.
            if update.get("state") not in ("complete", "finishing") and server:
                self.writer.send(server, "abort_job", {"id": job_id, "reason": GONE_HERE})
            return
        update = checked(update)
        if update.get("state") == "complete":  # a legacy final update over the socket
            await self.finish(job_id, update)
            return
        before = len(job.get("actions") or [])
        quiet = metrics.figures_only(job, update)
        apply_update(job, update, now)
        pushed = (job.get("actions") or [])[before:]
        instant = [finishing.new_run(job, before + i, "instant", a, generate_id("r"))
                   for i, a in enumerate(pushed) if isinstance(a, Mapping) and a.get("condition") == "instant"
                   and a.get("enabled", True)]  # fmt: skip
        if instant:
            self._queue_runs(job, instant, now)
        if quiet and not instant and now - self._figures_at.get(job_id, 0.0) < FIGURES_WRITE_S:
            self._quiet.add(job_id)  # only figures changed: written with the next change or the tick after
            return
        self._figures_at[job_id] = now
        self._quiet.discard(job_id)
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
            self._write_quiet(now)
            await self._deadlines(now)
        if placed:
            await self.flush()

    async def _place_waiting(self, now: float) -> bool:
        placed = False
        blocked: set[str] = set()  # queues whose first job had to stay: the ones behind it wait too
        waiting = [self.jobs[i] for i in self.tally.waiting if i in self.jobs and i not in self._pending]
        for job in sorted(waiting, key=limits.queue_order):
            # The clock read now, not at the start of the step: a slot freed during an earlier await of this step
            # is freed at a time after `now`, and a job placed into it must not appear to start before that.
            now = max(now, time.time())
            ready_at = None
            if job.get("state") in DELAYED:
                if float(job.get("until") or 0) > now:
                    continue
                job["state"] = "ready"
                ready_at = float(job.pop("until", None) or now)
            if self.jobs.get(str(job["id"])) is not job:
                continue  # gone while an earlier one was being written (aborted, flushed)
            key, was = limits.similar_key(job), job.get("state")
            if was == "queued" and key in blocked:
                continue
            batch = JobWrite(self.node.db.keys)
            on_server = self.place(job, now, batch, ready_at=ready_at)
            if job.get("state") == "complete":
                self.untrack(job)
                await self.node.stores.jobs.finish(self.node.fence(), job, extra=batch)
                self._arrived(batch)
                continue
            if job.get("state") == "queued":
                blocked.add(key)
                if was == "queued":
                    continue  # still waiting, unchanged
            self.writer.extra.extend(batch)
            self._mark(job)
            placed = placed or on_server
        return placed

    async def _deadlines(self, now: float) -> None:
        cfg = self.config
        for job in list(self.jobs.values()):
            job_id = str(job["id"])
            if job_id in self._pending or self.jobs.get(job_id) is not job:
                continue
            state = job.get("state")
            aborting = job.get("aborting")
            if isinstance(aborting, Mapping) and float(aborting.get("deadline") or 0) <= now:
                await self.finish(job_id, None, reason=str(aborting.get("reason") or "Aborted"))
            elif state == "active" and now - float(job.get("updated") or now) >= cfg.dead_job_timeout_s:
                reason = f"No updates received in last {int(cfg.dead_job_timeout_s)} seconds, assuming job is dead."
                if job.get("server"):
                    self.writer.send(str(job["server"]), "abort_job", {"id": job["id"], "reason": reason})
                job["retry_ok"] = True
                await self.finish(job_id, None, reason=reason)
            elif state == "active" and not aborting:
                await self._check_limits(job, now)
            elif state == "starting" and not job.get("suspended") and \
                    now - float(job.get("starting_since") or now) >= cfg.starting_timeout_s:  # fmt: skip
                add_meta(job, f"Start actions did not finish within {int(cfg.starting_timeout_s)} seconds; "
                              "launching without them.", now, self._me, generate_id("m"))  # fmt: skip
                job["start_runs"] = []
                await self._started(job, now)
                self._mark(job)
            elif state == "finishing" and now - float(job.get("finishing_since") or now) >= cfg.finishing_timeout_s:
                # xyOps #213: a job could stay "finishing" forever. Complete it with what the agent last said.
                code = job.get("code", 0)
                note = f"Job did not finish within {int(cfg.finishing_timeout_s)} seconds of its process ending."
                update = {"code": code if code else "warning", "description": str(job.get("description") or note)}
                await self.finish(job_id, update)

    async def _check_limits(self, job: Record, now: float) -> None:
        """The resource limits of a running job (time, log, mem, cpu): each fires once, runs its sub-actions
        (written with the firing) and aborts the job if it says so (an abort that may be retried)."""
        if not limits.watched(job):
            return
        if limits.watches_log(job):
            job["log_file_size"] = int(await self.node.stores.logs.size(str(job["id"])))
        fired = limits.resource_breaches(job, now)
        if not fired.changed and not fired.breaches:
            return
        for breach in fired.breaches:
            add_meta(job, breach.message, now, self._me, generate_id("m"))  # its tags are on the job already
            runs = []
            for action in breach.actions:
                entry = {"enabled": True, "condition": "limit", "source": "limit", **action}
                job["actions"] = [*(job.get("actions") or []), entry]
                runs.append(finishing.new_run(job, len(job["actions"]) - 1, "limit", entry, generate_id("r")))
            self._queue_runs(job, runs, now)
        self._mark(job)
        for breach in fired.breaches:
            if breach.abort:
                job["retry_ok"] = True
                await self.abort(str(job["id"]), breach.message)
                break

    def _write_quiet(self, now: float) -> None:
        """Jobs whose reports only moved their figures are written once FIGURES_WRITE_S have passed."""
        for job_id in [i for i in self._quiet if now - self._figures_at.get(i, 0.0) >= FIGURES_WRITE_S]:
            self._quiet.discard(job_id)
            job = self.jobs.get(job_id)
            if job is not None:
                self._figures_at[job_id] = now
                self._mark(job)

    def _renumber(self) -> None:
        """Queue positions 1..n, oldest (priority first) at the front; only changed jobs are written."""
        for ids in self.tally.queued.values():
            ordered = sorted((self.jobs[i] for i in ids if i in self.jobs), key=limits.queue_order)
            for position, job in enumerate(ordered, 1):
                if job.get("position") != position:
                    job["position"] = position
                    self._mark(job)

    async def run(self, stop: asyncio.Event) -> None:
        await run_service(self, stop)
