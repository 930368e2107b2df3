"""Internal jobs: background work the primary runs for an operator (maintenance, bulk deletes, admin tasks).

`InternalJobs.start(title, type, username, work)` records a running job (fenced) and runs `work(progress)` in a task
of this node: `progress(fraction, status)` advances the record (fenced, at most a few writes a second), and what
`work` returns becomes the job's `result` (its `details`, markdown, shown as xyOps' report). The finish is fenced too,
so a deposed primary neither starts, advances nor finishes one.

The work lives only in the primary's process. When the primary changes, it stops: the old primary cancels its
tasks as it steps down (the primary services end), and the new primary marks every job still running from an
earlier epoch as aborted (`sweep`, when it takes over and then every minute; also a job of its own term whose
finish could not be written), the rule the dispatcher applies to orphaned job state: the next primary settles what
the last one left, no record stays "running". Each finish leaves an `internal_job` activity record, as xyOps does.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import structlog

from storage.connection import STORE_DOWN_ERRORS, UNAVAILABLE_ERRORS
from storage.errors import FencedError
from storage.fence import Fence
from storage.ids import generate_id

from .loops import cancel_and_wait
from .node import NodeRuntime, NotPrimary

log = structlog.get_logger("podium.internaljobs")

Record = dict[str, Any]
PROGRESS_EVERY_S = 0.25  # progress writes per job at most this often (the last one always goes)
UPKEEP_EVERY_S = 60.0  # the sweep and the trim
ABORTED = "The primary conductor that ran this job stopped before it finished."
MAX_STATUS = 200  # characters of a status line


class Progress:
    """What a running internal job's work reports through: `await progress(0.4, "deleted 400 of 1000")`."""

    def __init__(self, jobs: InternalJobs, fence: Fence, job: Record) -> None:
        self._jobs, self._fence, self.job = jobs, fence, job
        self._written = 0.0

    async def __call__(self, fraction: float, status: str = "") -> None:
        self.job["progress"] = round(min(max(float(fraction), 0.0), 1.0), 4)
        if status:
            self.job["status"] = status[:MAX_STATUS]
        now = time.monotonic()
        if now - self._written >= PROGRESS_EVERY_S or self.job["progress"] >= 1.0:
            self._written = now
            await self._jobs.node.stores.internal.update(self._fence, self.job)


Work = Callable[[Progress], Awaitable[Mapping[str, Any] | None]]


class InternalJobs:
    def __init__(self, node: NodeRuntime) -> None:
        self.node = node
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._starting: set[str] = set()  # recorded, task not yet made: never taken for an orphan
        self.finished = 0  # jobs this node has finished (tests wait on it)

    @property
    def active(self) -> int:
        """Internal jobs this node is running (or starting) now."""
        return len(self._tasks) + len(self._starting)

    async def start(self, title: str, kind: str, username: str, work: Work, *,
                    params: Mapping[str, Any] | None = None) -> Record:  # fmt: skip
        """Record a new internal job and start its work; returns the record. NotPrimary / FencedError when this
        node is not the primary."""
        fence = self.node.fence()
        job: Record = {
            "id": generate_id("i"), "title": title, "type": kind, "username": username, "started": time.time(),
            "progress": 0.0, "status": "", "node": self.node.node_id, "epoch": fence.epoch,
        }  # fmt: skip
        if params:
            job["params"] = dict(params)
        job_id = str(job["id"])
        self._starting.add(job_id)
        try:
            await self.node.stores.internal.start(fence, job)
        finally:
            self._starting.discard(job_id)
        task = self._tasks[job_id] = asyncio.create_task(self._run(fence, job, work))
        task.add_done_callback(lambda _t: self._tasks.pop(job_id, None))
        log.info("internal_job_started", id=job["id"], title=title, type=kind, username=username)
        return job

    async def _run(self, fence: Fence, job: Record, work: Work) -> None:
        progress = Progress(self, fence, job)
        final = job
        try:
            result = dict(await work(progress) or {})
            final = self._final(job, 0, "", result)
        except asyncio.CancelledError:  # this node stepped down or is stopping: the next primary marks it aborted
            with contextlib.suppress(FencedError, NotPrimary, *STORE_DOWN_ERRORS, *UNAVAILABLE_ERRORS):
                await self.node.stores.internal.finish(fence, self._final(job, "abort", ABORTED, {}))
            raise
        except (FencedError, NotPrimary):
            log.info("internal_job_deposed", id=job["id"])
            return
        except Exception as exc:
            log.exception("internal_job_failed", id=job["id"])
            final = self._final(job, "error", f"{type(exc).__name__}: {exc}"[:1000], {})
        try:
            await self.node.stores.internal.finish(fence, final)
        except (FencedError, NotPrimary):
            log.info("internal_job_deposed", id=job["id"])
            return
        except (*STORE_DOWN_ERRORS, *UNAVAILABLE_ERRORS) as exc:  # the sweep settles it once the store is back
            log.warning("internal_job_finish_failed", id=job["id"], error=repr(exc))
            return
        self.finished += 1
        await self._log(final)
        log.info("internal_job_finished", id=job["id"], code=final["code"], elapsed=final["elapsed"])

    @staticmethod
    def _final(job: Record, code: int | str, description: str, result: Record) -> Record:
        now = time.time()
        final = {**job, "complete": True, "completed": now, "elapsed": round(now - float(job["started"]), 3),
                 "code": code, "description": description}  # fmt: skip
        if code == 0:
            final["progress"] = 1.0
        details = result.pop("details", "")
        if details:
            final["details"] = str(details)
        if result:
            final["result"] = result
        return final

    async def _log(self, job: Record) -> None:
        """The `internal_job` activity record (xyOps logTransaction('internal_job', title, {job}))."""
        light = {k: v for k, v in job.items() if k not in ("result", "details")}
        record = {
            "id": generate_id("a"), "action": "internal_job", "epoch": int(time.time()),
            "description": f"Internal job finished: {job['title']}", "username": str(job.get("username") or ""),
            "keywords": sorted({str(job["id"]), *([str(job["username"])] if job.get("username") else [])}),
            "job": light,
        }  # fmt: skip
        with contextlib.suppress(*STORE_DOWN_ERRORS, *UNAVAILABLE_ERRORS):
            await self.node.stores.activity.add(record)

    async def sweep(self) -> int:
        """Mark as aborted every job still running whose work is gone: started in an earlier epoch (by a primary
        that has lost its process or its term), or in this one with no task here (its finish could not be written);
        returns how many."""
        fence = self.node.fence()
        aborted = 0
        for job in await self.node.stores.internal.running():
            job_id = str(job["id"])
            if job_id in self._tasks or job_id in self._starting:
                continue
            if int(job.get("epoch") or 0) > fence.epoch:  # cannot be: a newer primary's; never touched
                continue
            final = self._final(job, "abort", ABORTED, {})
            await self.node.stores.internal.finish(fence, final)
            await self._log(final)
            aborted += 1
            log.warning("internal_job_orphaned", id=job["id"], title=job.get("title"), node=job.get("node"))
        return aborted

    async def service(self, node: NodeRuntime, stop: asyncio.Event) -> None:
        """The primary service: settle orphans on taking over, trim old records, and stop this node's work when
        it steps down."""
        try:
            while not stop.is_set():
                delay = UPKEEP_EVERY_S
                try:
                    await self.sweep()
                    await node.stores.internal.trim(node.fence(), time.time())
                except (FencedError, NotPrimary):
                    return
                except (*STORE_DOWN_ERRORS, *UNAVAILABLE_ERRORS) as exc:
                    log.warning("internal_jobs_upkeep_failed", error=repr(exc))
                    delay = 1.0  # the orphans must not wait for the next round
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await stop.wait()
        finally:
            for task in list(self._tasks.values()):
                await cancel_and_wait(task)


def internal_jobs_service(jobs: InternalJobs) -> Any:
    """A primary service (see NodeRuntime) for `jobs`."""

    async def service(node: NodeRuntime, stop: asyncio.Event) -> None:
        await jobs.service(node, stop)

    return service
