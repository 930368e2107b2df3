"""The dispatcher's writer: every change to live jobs goes to Redis in coalesced, fenced, ordered batches.

Changes mark jobs dirty and add ops (agent frames, action runs, recorded runs, round-robin counters, the inbox
cursor); one task sends them all in one fenced JOB_WRITE, with each dirty job as it is at that moment. A write is
all or nothing, so when one fails nothing of it is known to be written: the dispatcher then starts a new term
from Redis (`on_failure`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from storage.errors import FencedError
from storage.jobs import JobWrite

from .updates import DONE_RUNS

if TYPE_CHECKING:
    from ..node import NodeRuntime

Record = dict[str, Any]
# A running job's timelines (a few KiB to 1 MiB) are written at most this often, not with every report: a new
# primary shows them this much behind at most, and the final record has them whole.
TIMELINE_WRITE_S = 30.0


def settle(waiters: list[asyncio.Future[None]], exc: BaseException | None = None) -> None:
    for waiter in waiters:
        if not waiter.done():
            if exc is None:
                waiter.set_result(None)
            else:
                waiter.set_exception(exc)


class Writer:
    """Pending changes of the dispatcher's view and the task that writes them."""

    def __init__(self, node: NodeRuntime, jobs: Mapping[str, Record], on_failure: Callable[[str], None]) -> None:
        self.node = node
        self._jobs = jobs  # the view: a dirty job is written as it is when the batch goes out
        self._on_failure = on_failure
        self.on_landed: Callable[[JobWrite], None] = lambda batch: None  # told of every write that landed
        self._dirty: dict[str, None] = {}
        self.extra = JobWrite(node.db.keys)  # ops that go with the next batch, in the order they were added
        self._cursor: str | None = None
        self._waiters: list[asyncio.Future[None]] = []
        self._wake = asyncio.Event()
        self._lines_at: dict[str, float] = {}  # when each job's timelines were last written (monotonic)

    def mark(self, job_id: str) -> None:
        self._dirty[job_id] = None
        self._wake.set()

    def send(self, server_id: str, cmd: str, data: Record) -> None:
        self.extra.frame(server_id, cmd, data)
        self._wake.set()

    def inbox_done(self, entry_id: str) -> None:
        self._cursor = entry_id
        self._wake.set()

    def wake(self) -> None:
        self._wake.set()

    @property
    def idle(self) -> bool:
        return not self._dirty and not self.extra and self._cursor is None

    async def flush(self) -> None:
        """Wait until everything changed so far is written."""
        if self.idle:
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        self._wake.set()
        await waiter

    def forget(self, job_id: str) -> None:
        self._lines_at.pop(job_id, None)

    def reset(self) -> None:
        """A new term starts from Redis alone: nothing a previous term left in memory is written."""
        self._dirty, self.extra, self._cursor = {}, JobWrite(self.node.db.keys), None
        self._lines_at = {}
        waiters, self._waiters = self._waiters, []
        settle(waiters, FencedError("a new term started"))
        self._wake.clear()

    async def run(self, stop: asyncio.Event) -> None:
        try:
            while not stop.is_set():
                await self._wake.wait()
                self._wake.clear()
                if not await self._write_once():
                    return
        finally:  # nobody waits forever on a writer that is gone
            waiters, self._waiters = self._waiters, []
            settle(waiters, FencedError("the dispatcher stopped"))

    async def _write_once(self) -> bool:
        """Write everything pending in one fenced step. False once this node is no longer primary."""
        dirty, self._dirty = self._dirty, {}
        extra, self.extra = self.extra, JobWrite(self.node.db.keys)
        cursor, self._cursor = self._cursor, None
        waiters, self._waiters = self._waiters, []
        batch = JobWrite(self.node.db.keys)
        now = time.monotonic()
        for job_id in dirty:
            job = self._jobs.get(job_id)
            if job is not None:
                done = job.pop(DONE_RUNS, None) or []
                batch.job(job)
                if job.get("timelines") and now - self._lines_at.get(job_id, 0.0) >= TIMELINE_WRITE_S:
                    self._lines_at[job_id] = now
                    batch.timelines(job_id, job["timelines"])
                for run_id in done:  # the runs whose results this record carries
                    batch.done(run_id)
        batch.extend(extra)
        if cursor is not None:
            batch.inbox_done(cursor)
        try:
            await self.node.stores.jobs.write(self.node.fence(), batch)
        except BaseException as exc:
            settle(waiters, exc if isinstance(exc, Exception) else FencedError("the dispatcher stopped"))
            if isinstance(exc, Exception) and not isinstance(exc, FencedError):
                self._on_failure(f"write failed: {exc!r}")
            if not isinstance(exc, Exception):
                raise
            return False
        settle(waiters)
        self.on_landed(batch)
        return True
