"""The scheduler: a primary-only service that launches every due slot exactly once.

Each tick (about once a second) looks at every enabled event with timing triggers, asks its compiled
schedule for the slots between the event's cursor and now, and launches each through the fenced
launch path, which claims `(event, second)` with SET NX and advances the cursor in the same script.
A new primary therefore resumes from the cursors in Redis: it launches what the old one missed
within the grace period (everything, for `catchup` events) and can never launch a claimed slot again.
Skipped slots are logged in the activity log with the reason.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
from dataclasses import dataclass
from typing import Any

import structlog

from storage.errors import FencedError
from storage.families import EVENTS
from storage.ids import generate_id

from .launcher import Launch, LaunchError, launch_job
from .node import NodeRuntime
from .timing import Schedule, Slot, compile_triggers

log = structlog.get_logger("podium.scheduler")

Record = dict[str, Any]
YIELD_EVERY = 500  # events handled between two yields to the event loop in one tick


@dataclass(frozen=True, slots=True)
class SchedulerConfig:
    grace_s: int = 60  # slots missed by more than this are skipped (unless the event catches up)
    stagger_ms: int = 50  # spacing between launches in one tick
    max_jobs_per_min: int = 100  # global brake
    tick_s: float = 1.0
    default_tz: str = "UTC"
    max_catchup_s: int = 7 * 86400


class Scheduler:
    def __init__(self, node: NodeRuntime, config: SchedulerConfig) -> None:
        self.node = node
        self.config = config
        self._compiled: dict[str, tuple[Any, Schedule]] = {}
        self._recent: collections.deque[float] = collections.deque()
        self.started = time.time()
        # The timed events of the last definition snapshot seen (rebuilt when the snapshot changes).
        self._rows: list[Record] | None = None
        self._timed: list[tuple[str, Record, Schedule]] = []
        # event id -> (schedule, cursor, second): with this schedule and this cursor in Redis, nothing was
        # due in (cursor, second], so the next tick need only look after `second`.
        self._clear: dict[str, tuple[Schedule, int, int]] = {}

    def schedule(self, event: Record) -> Schedule:
        key = (event.get("revision"), event.get("modified"))
        hit = self._compiled.get(str(event["id"]))
        if hit is None or hit[0] != key:
            hit = (key, compile_triggers(event.get("triggers") or [], self.config.default_tz))
            self._compiled[str(event["id"])] = hit
        return hit[1]

    async def run(self, stop: asyncio.Event) -> None:
        # A primary that died between storing a final job and indexing it left it in the unindexed set.
        while await self.node.stores.jobs.index_pending():
            pass
        await self.startup_launches()
        while not stop.is_set():
            now = time.time()
            try:
                await self.tick(int(now))
                self.node.metrics.scheduler_lag.set(max(0.0, time.time() - int(now)))
            except FencedError:
                return  # deposed: the node's runtime stops this service
            except Exception as exc:  # one bad tick must not end the scheduler
                log.warning("scheduler_tick_failed", error=repr(exc))
            # Wake just after the next second boundary.
            delay = self.config.tick_s - (time.time() % self.config.tick_s) + 0.005
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)

    async def tick(self, now_s: int) -> int:
        """Launch every due slot up to `now_s`; returns how many jobs were launched."""
        stores = self.node.stores
        state = await stores.state.get()
        enabled = bool((state.get("scheduler") or {}).get("enabled", True))
        events = await self._timed_events(await stores.defs.all(EVENTS))
        if not events:
            return 0
        cursors = await stores.jobs.cursors()
        fresh = [event_id for event_id, _, _ in events if event_id not in cursors]
        if fresh:
            # Record where a new event starts, so a failover before its first launch loses nothing.
            await stores.jobs.init_cursors(self.node.fence(), fresh, now_s - 1)
            cursors.update(dict.fromkeys(fresh, now_s - 1))
        launched = 0
        clear = self._clear
        # Window starts (exclusive): a slot missed by up to grace_s seconds is launched, as is every slot
        # of a catch-up event back to max_catchup_s; older slots are skipped and logged.
        grace_floor = now_s - self.config.grace_s - 1
        catchup_floor = now_s - self.config.max_catchup_s - 1
        for index, (event_id, event, schedule) in enumerate(events):
            if index % YIELD_EVERY == YIELD_EVERY - 1:
                await asyncio.sleep(0)  # long windows (a new primary's first tick) must not stall the node
            cursor = cursors[event_id]
            # Skip the part of the window an earlier tick of this scheduler found empty. Valid while the
            # schedule and the cursor are those it saw: anything else (an edit, another primary, a
            # cursor moved by the API) means looking again from the cursor.
            known = clear.get(event_id)
            seen = known[2] if known is not None and known[0] is schedule and known[1] == cursor else cursor
            start = max(seen, catchup_floor if schedule.catchup else grace_floor)
            missed = schedule.due(max(seen, catchup_floor), start) if seen < start else None
            slots = schedule.due(start, now_s)
            if not missed and not slots:
                clear[event_id] = (schedule, cursor, max(start, now_s))
                continue
            clear.pop(event_id, None)
            if missed:
                await self._skip(event, [s.epoch for s in missed], "missed by more than the grace period", "grace")
            if not slots:
                continue
            if not enabled:
                await self._skip(event, [s.epoch for s in slots], "the scheduler is disabled", "disabled")
                continue
            launched += await self._launch_slots(event, slots)
        return launched

    async def _timed_events(self, rows: list[Record]) -> list[tuple[str, Record, Schedule]]:
        """(id, event, schedule) of the enabled events with timing triggers, kept per snapshot."""
        if rows is not self._rows:
            timed = []
            for index, event in enumerate(rows):
                if index % YIELD_EVERY == YIELD_EVERY - 1:
                    await asyncio.sleep(0)  # compiling 10,000 events takes about a second: let renewals run
                if event.get("enabled") and event.get("triggers"):
                    schedule = self.schedule(event)
                    if schedule.has_timing:
                        timed.append((str(event["id"]), event, schedule))
            ids = {event_id for event_id, _, _ in timed}
            self._compiled = {k: v for k, v in self._compiled.items() if k in ids}
            self._clear = {k: v for k, v in self._clear.items() if k in ids}
            self._rows, self._timed = rows, timed
        return self._timed

    async def _nth_allows(self, event: Record, every: int, slot: Slot, seen: dict[int, bool]) -> bool:
        """`nth`: only every Nth scheduled minute launches (counted per minute, as xyOps does)."""
        if slot.minute not in seen:
            count = await self.node.stores.jobs.count_nth(self.node.fence(), str(event["id"]))
            seen[slot.minute] = count % every == 0
        return seen[slot.minute]

    async def _launch_slots(self, event: Record, slots: list[Slot]) -> int:
        launched = 0
        schedule = self.schedule(event)
        quiet = {k: True for k in ("invisible", "ephemeral") if getattr(schedule, k)}
        minutes: dict[int, bool] = {}
        for slot in slots:
            if schedule.nth_every and not await self._nth_allows(event, schedule.nth_every, slot, minutes):
                await self.node.stores.jobs.advance_cursor(self.node.fence(), str(event["id"]), slot.epoch)
                continue
            if not self._brake_ok():
                await self._skip(event, [slot.epoch], f"max_jobs_per_min ({self.config.max_jobs_per_min}) reached",
                                 "brake")
                continue
            job_input = _trigger_input(slot)
            launch = Launch(event=event, source="scheduler", username="", now=slot.epoch, params=dict(slot.params),
                            input=job_input, tags=list(slot.tags), start_delay=slot.delay, extra=quiet,
                            claim=(str(event["id"]), slot.epoch), cursor=(str(event["id"]), slot.epoch))  # fmt: skip
            try:
                job = await launch_job(self.node, launch)
            except LaunchError as exc:
                await self._skip(event, [slot.epoch], str(exc), "launch_error")
                continue
            if job is not None:
                launched += 1
                self.node.metrics.scheduler_launches.inc()
                self._recent.append(time.monotonic())
                if self.config.stagger_ms:
                    await asyncio.sleep(self.config.stagger_ms / 1000)
        return launched

    def _brake_ok(self) -> bool:
        cutoff = time.monotonic() - 60
        while self._recent and self._recent[0] < cutoff:
            self._recent.popleft()
        return len(self._recent) < self.config.max_jobs_per_min

    async def _skip(self, event: Record, seconds: list[int], reason: str, kind: str) -> None:
        """Log skipped slots (one activity record per event and reason) and move the cursor past them; `kind`
        is the reason's label in the node's metrics (cluster/metrics.py SKIP_KINDS)."""
        stores = self.node.stores
        fence = self.node.fence()
        await stores.jobs.advance_cursor(fence, str(event["id"]), max(seconds))
        record = {
            "id": generate_id("a"), "action": "warning", "epoch": int(time.time()), "username": "",
            "description": f"Skipped {len(seconds)} scheduled launch(es) of event {event.get('title')}: {reason}",
            "keywords": [str(event["id"])], "event": {"id": event["id"], "title": event.get("title")},
            "skipped": seconds[:100], "reason": reason,
        }  # fmt: skip
        await stores.activity.add(record)
        self.node.metrics.scheduler_skipped.labels(kind).inc(len(seconds))
        log.info("scheduled_slots_skipped", event_id=event["id"], count=len(seconds), reason=reason)

    async def startup_launches(self) -> None:
        """`startup` triggers: once when this node becomes primary, unless the process is old (> 5 min)."""
        if time.time() - self.node.started > 300:
            return
        for event in await self.node.stores.defs.all(EVENTS):
            if event.get("enabled") and self.schedule(event).startup:
                now_s = int(time.time())
                with contextlib.suppress(LaunchError):
                    # A claim of its own, so a scheduled run in the same second is not swallowed.
                    claim = (f"{event['id']}:startup", now_s)
                    await launch_job(self.node, Launch(event=event, source="startup", now=now_s, claim=claim))


def _trigger_input(slot: Slot) -> Record:
    """A trigger's `data` becomes the job's input data (an array goes under `items`)."""
    data = slot.data
    if not data:
        return {}
    return {"data": {"items": list(data)} if isinstance(data, list | tuple) else dict(data)}


def scheduler_service(config: SchedulerConfig) -> Any:
    """A primary service (see NodeRuntime) running the scheduler."""

    async def service(node: NodeRuntime, stop: asyncio.Event) -> None:
        await Scheduler(node, config).run(stop)

    return service
