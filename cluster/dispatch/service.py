"""The dispatcher as a primary-only service: terms, and the tasks of a term.

A term loads the view from Redis, then runs the writer, the inbox reader, the ticker, the step loop and the
indexer side by side. If any of them fails (a bug, a lost connection, a write that may or may not have landed)
the term ends, and the next one starts again from Redis alone: nothing the failed term held in memory is used.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Any

import structlog

from storage.connection import UNAVAILABLE_ERRORS, Database
from storage.errors import FencedError

if TYPE_CHECKING:
    from ..node import NodeRuntime
    from .machine import Dispatcher

log = structlog.get_logger("podium.dispatch")


async def run(d: Dispatcher, stop: asyncio.Event) -> None:
    """Terms until `stop` (this node stops being primary) or a newer run of the same dispatcher takes over."""
    d.generation += 1
    generation = d.generation
    d.reset()
    own: Database = d.node.db.with_own_pool(2, client_name="podium-dispatch")
    try:
        while not stop.is_set() and d.generation == generation:
            await _term(d, stop, own, generation)
            if not stop.is_set():
                await asyncio.sleep(0.5)
    finally:
        if d.generation == generation:
            d.loaded = False
        await own.aclose()


async def _term(d: Dispatcher, stop: asyncio.Event, own: Database, generation: int) -> None:
    while not stop.is_set():
        try:
            await d.load()
            break
        except FencedError:
            return
        except Exception as exc:
            log.warning("dispatch_load_failed", error=repr(exc))
            await asyncio.sleep(0.5)
    if stop.is_set():
        return
    tasks = [asyncio.create_task(d.writer.run(stop)), asyncio.create_task(_inbox(d, stop, own)),
             asyncio.create_task(_ticker(d, stop)), asyncio.create_task(_steps(d, stop)),
             asyncio.create_task(_indexer(d, stop))]  # fmt: skip
    watchers = [asyncio.create_task(stop.wait()), asyncio.create_task(d.restarting.wait())]
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
        if d.generation == generation:
            d.loaded = False
            d.reset()


async def _steps(d: Dispatcher, stop: asyncio.Event) -> None:
    while not stop.is_set():
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(d.kicked.wait(), d.config.tick_s)
        d.kicked.clear()
        try:
            await d.step()
        except FencedError:
            return
        except Exception as exc:
            d.restart(f"step failed: {exc!r}")
            return


async def _indexer(d: Dispatcher, stop: asyncio.Event) -> None:
    """Search entries of finished jobs, a batch at a time. A job is in the unindexed set until its entries are
    written, and every term starts by draining that set, so a crash or a lost batch loses none."""
    jobs = d.node.stores.jobs
    with contextlib.suppress(*UNAVAILABLE_ERRORS):
        while await jobs.index_pending():
            pass
    while not stop.is_set():
        await d.index_wake.wait()
        d.index_wake.clear()
        await asyncio.sleep(0.01)  # let a burst of finishes gather
        while d.to_index:
            batch, d.to_index = d.to_index[:500], d.to_index[500:]
            done = False
            try:
                await jobs.index_many(batch)
                done = True
            except Exception as exc:
                log.warning("dispatch_index_failed", jobs=len(batch), error=str(exc))
                await asyncio.sleep(0.5)
            finally:
                if not done:  # failed or cancelled: kept for the next try (the unindexed set has them too)
                    d.to_index[:0] = batch


async def _ticker(d: Dispatcher, stop: asyncio.Event) -> None:
    while not stop.is_set():
        await asyncio.sleep(d.config.tick_s)
        d.kick()


async def _inbox(d: Dispatcher, stop: asyncio.Event, own: Database) -> None:
    agents = d.node.stores.agents
    after = ""
    while not stop.is_set():
        try:
            if not after:
                after = d.applied = await agents.inbox_cursor()
            entries = await agents.read_inbox(after, block_ms=d.config.inbox_block_ms, client=own.client)
        except UNAVAILABLE_ERRORS as exc:  # nothing applied: read again
            log.warning("dispatch_inbox_read_failed", error=str(exc))
            await asyncio.sleep(0.5)
            continue
        if not entries:
            continue
        try:
            await d.apply(entries)
        except FencedError:
            return
        except Exception as exc:
            d.restart(f"inbox entry failed: {exc!r}")
            return
        after = entries[-1][0]


def dispatch_service(dispatcher: Dispatcher) -> Any:
    """The primary service that runs `dispatcher` (cluster/node.py PrimaryService)."""

    async def service(node: NodeRuntime, stop: asyncio.Event) -> None:
        await run(dispatcher, stop)

    return service
