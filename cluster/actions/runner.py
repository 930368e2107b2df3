"""The action runner: a primary-only service that claims due action runs, performs them, records the results.

Runs are written by the dispatcher with the change that calls for them (storage/actions.py explains the outbox).
Here each one is claimed through the fence before anything happens, performed (cluster/actions/perform.py), and
its result recorded on the job in the same fenced step that deletes the run: on the live job through the
dispatcher's writer, on a completed one by a compare-and-swap of its record.

A run left claimed by a primary that died is recovered when the next one starts (and, for runs a failed record
left behind, every RECOVER_S): if its result is on the job already, the run is just cleared; if repeating it is
harmless (a tag, a launch guarded by its own claim) it runs again; otherwise (an email, a web hook, a plugin) it
is recorded as interrupted and never repeated, so nothing is ever sent twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
import structlog

from storage.connection import UNAVAILABLE_ERRORS
from storage.errors import FencedError
from storage.fence import FencedBatch
from storage.jobs import JobWrite

from .alertperform import ABORT_JOBS, AlertPerformer
from .email import SmtpConfig
from .perform import REPEATABLE, Context, Performer
from .record import Change, recorded, with_result
from .result import Outcome

if TYPE_CHECKING:
    from ..dispatch.machine import Dispatcher
    from ..node import NodeRuntime

log = structlog.get_logger("podium.actions")
Record = dict[str, Any]
RECOVER_S = 30.0
INTERRUPTED = ("The primary conductor stopped while this action ran; it is not repeated, so it cannot happen twice.")
ALERT_KINDS = frozenset({"alert", "alert_internal"})  # runs of alert invocations (cluster/monitoring/alertservice.py)
ALERT_REPEATABLE = frozenset({"run_event", "snapshot", "ticket", ABORT_JOBS})


def result_entry(run: Mapping[str, Any], outcome: Mapping[str, Any], now: float) -> Record:
    """An alert action's result as its invocation keeps it (xyOps: the action with its result fields)."""
    found = run.get("action")
    action: Mapping[str, Any] = found if isinstance(found, Mapping) else {}
    return {**dict(action), "condition": run.get("condition"), "date": now, **dict(outcome)}


@dataclass(frozen=True, slots=True)
class RunnerConfig:
    base_url: str = ""  # links in messages
    smtp: SmtpConfig = field(default_factory=SmtpConfig)  # no host: email actions record that it is off
    local_url: str = ""  # this node, for action plugins that call back
    plugin_dir: Path | None = None  # where action plugins' scripts are written
    concurrency: int = 64  # runs performed at once
    poll_s: float = 0.5  # how often due runs are looked for without a word from the dispatcher
    record_tries: int = 600  # ~5 minutes of retries to record a result before leaving it to recovery


class ActionRunner:
    def __init__(self, node: NodeRuntime, dispatcher: Dispatcher, config: RunnerConfig | None = None) -> None:
        self.node = node
        self.dispatcher = dispatcher
        self.config = config or RunnerConfig()
        self._inflight: dict[str, asyncio.Task[None]] = {}
        self.performed = 0  # runs performed by this runner (tests and the benchmark read it)
        self._poll: Any = None  # the client of the runner's own pool, while it runs

    async def run(self, stop: asyncio.Event) -> None:
        """The primary service."""
        slots = asyncio.Semaphore(self.config.concurrency)
        # The polling has a pool of its own, closed on the way out: a poll cut short by the end of the primary's
        # term never leaves a half-used connection behind.
        own = self.node.db.with_own_pool(2, client_name="podium-actions")
        self._poll = own.client
        async with contextlib.AsyncExitStack() as stack:
            stack.push_async_callback(own.aclose)
            session = await stack.enter_async_context(aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()))
            cfg = self.config
            ctx = Context(self.node, self.dispatcher, session, cfg.base_url or self.node.url, cfg.smtp, cfg.local_url,
                          cfg.plugin_dir)  # fmt: skip
            performer = AlertPerformer(ctx)
            recovered_at = 0.0
            try:
                while not stop.is_set():
                    try:
                        if time.time() - recovered_at >= RECOVER_S:
                            await self._recover(performer)
                            recovered_at = time.time()
                        await self._claim_due(performer, slots)
                    except FencedError:
                        return
                    except UNAVAILABLE_ERRORS as exc:
                        log.warning("actions_store_unavailable", error=str(exc))
                    except Exception:  # a bug here must not end the runner for the rest of the term
                        log.exception("actions_loop_failed")
                        await asyncio.sleep(1.0)
                    await self._wait(stop)
            finally:
                tasks = list(self._inflight.values())
                for task in tasks:
                    task.cancel()
                for task in tasks:
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await task
                self._inflight.clear()

    async def _wait(self, stop: asyncio.Event) -> None:
        ready = self.dispatcher.runs_ready
        waits = [asyncio.ensure_future(ready.wait()), asyncio.ensure_future(stop.wait())]
        try:
            await asyncio.wait(waits, timeout=self.config.poll_s, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waits:
                waiter.cancel()
        ready.clear()

    async def _claim_due(self, performer: Performer, slots: asyncio.Semaphore) -> None:
        actions = self.node.stores.actions
        while True:
            ids = [i for i in await actions.due(time.time(), client=self._poll) if i not in self._inflight]
            if not ids:
                return
            for run_id in ids:
                # A run is claimed only when a slot is free to perform it at once: whatever a dying primary had
                # claimed but not begun would be recorded as interrupted, never done.
                await slots.acquire()
                try:
                    run = await actions.claim(self.node.fence(), run_id, time.time())
                except BaseException:
                    slots.release()
                    raise
                if run is None:
                    slots.release()
                else:
                    self._start(run, self._perform_and_record(performer, run, slots))

    def _start(self, run: Record, work: Any) -> None:
        run_id = str(run["id"])
        task = asyncio.create_task(work)
        self._inflight[run_id] = task
        task.add_done_callback(lambda _: self._inflight.pop(run_id, None))

    async def _perform_and_record(self, performer: Performer, run: Record, slots: asyncio.Semaphore) -> None:
        """Perform a claimed run (its slot was taken for it) and record the result."""
        try:
            if run.get("kind") in ALERT_KINDS and isinstance(performer, AlertPerformer):
                outcome, change = await performer.perform_alert(run), None
            else:
                outcome, change = await performer.perform(run)
        except Exception as exc:  # a bug in one action never stops the others
            log.exception("action_failed", run=run.get("id"), type=(run.get("action") or {}).get("type"))
            outcome, change = Outcome(code="action", description=f"Internal error: {type(exc).__name__}"), None
        finally:
            slots.release()
        self.performed += 1
        await self.record(run, outcome.record(), change)

    async def record(self, run: Record, outcome: Record, change: Change | None = None) -> bool:
        """Write a run's result onto its job, with the run's removal, fenced. True once written (or once the job
        is gone); False when this node stopped being primary or it kept failing (recovery takes it then)."""
        if run.get("kind") in ALERT_KINDS:
            return await self._record_alert(run, outcome)
        jobs, job_id = self.node.stores.jobs, str(run.get("job"))
        for _ in range(self.config.record_tries):
            try:
                if await self.dispatcher.record(run, outcome, change):
                    await self.dispatcher.flush()
                    return True
                got = await jobs.stored(job_id)
                batch = JobWrite(self.node.db.keys).done(str(run["id"]))
                if got is None:  # the job was deleted meanwhile: only the run goes
                    await jobs.write(self.node.fence(), batch)
                    return True
                stored, digest = got
                if not stored.get("final"):  # live, but the view is loading or the finish is in flight
                    await asyncio.sleep(0.1)
                    continue
                changed = copy.deepcopy(stored)
                with_result(changed, run, outcome, time.time(), change, server=f"m:{self.node.node_id}")
                if await jobs.swap(self.node.fence(), digest, stored, changed, batch):
                    return True
            except FencedError:
                if not self.node.is_primary:
                    return False
                await asyncio.sleep(0.2)  # the dispatcher started a new term: record again on its view
            except Exception as exc:  # the store is away or the write failed: try again
                log.warning("action_record_retry", run=run.get("id"), error=repr(exc))
                await asyncio.sleep(0.5)
        log.error("action_record_gave_up", run=run.get("id"))
        return False

    async def _record_alert(self, run: Record, outcome: Record) -> bool:
        """Append an alert action's result to its invocation, retiring the run in the same fenced batch."""
        state = self.node.stores.alertstate
        for _ in range(self.config.record_tries):
            try:
                batch = FencedBatch()
                state.result_ops(batch, str(run.get("invocation")), str(run["id"]), result_entry(run, outcome,
                                                                                                  time.time()))
                await self.node.fence().execute(batch)
                return True
            except FencedError:
                return False
            except Exception as exc:
                log.warning("action_record_retry", run=run.get("id"), error=repr(exc))
                await asyncio.sleep(0.5)
        log.error("action_record_gave_up", run=run.get("id"))
        return False

    async def _recover(self, performer: Performer) -> None:
        """Runs claimed and never recorded, by this primary's predecessors or by a record that gave up."""
        actions, jobs = self.node.stores.actions, self.node.stores.jobs
        for run_id in await actions.claimed(client=self._poll):
            if run_id in self._inflight:
                continue
            run = await actions.get(run_id)
            if run is None:
                continue
            if run.get("kind") in ALERT_KINDS:
                await self._recover_alert(run)
                continue
            job_id = str(run.get("job"))
            job = self.dispatcher.live(job_id)
            if job is None:
                got = await jobs.stored(job_id)
                job = got[0] if got else None
            kind = str((run.get("action") or {}).get("type", ""))
            if job is not None and recorded(job, run_id):
                self._start(run, self.record(run, {"code": 0}))  # recorded already: the run is cleared only
            elif kind in REPEATABLE:
                await actions.requeue(self.node.fence(), run_id, time.time())
            else:
                log.warning("action_interrupted", run=run_id, type=kind, job=job_id)
                self._start(run, self.record(run, Outcome(code="interrupted", description=INTERRUPTED).record()))


    async def _recover_alert(self, run: Record) -> None:
        run_id = str(run["id"])
        done = await self.node.stores.alertstate.results(str(run.get("invocation")))
        kind = str((run.get("action") or {}).get("type", ""))
        if any(r.get("run") == run_id for r in done):
            batch = FencedBatch().add("DEL", [self.node.db.keys.action_run(run_id)])
            batch.add("ZREM", [self.node.db.keys.actions_claimed], run_id)
            await self.node.fence().execute(batch)
        elif kind in ALERT_REPEATABLE:
            await self.node.stores.actions.requeue(self.node.fence(), run_id, time.time())
        else:
            log.warning("action_interrupted", run=run_id, type=kind, invocation=run.get("invocation"))
            self._start(run, self.record(run, Outcome(code="interrupted", description=INTERRUPTED).record()))


def actions_service(runner: ActionRunner) -> Any:
    """The primary service that runs `runner` (cluster/node.py PrimaryService)."""

    async def service(node: NodeRuntime, stop: asyncio.Event) -> None:
        await runner.run(stop)

    return service
