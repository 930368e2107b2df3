"""One helper for every periodic loop: run a step, log failures, keep going, stop on an Event."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

import structlog

log = structlog.get_logger("podium.loops")

Step = Callable[[], Awaitable[float]]


async def run_periodic(name: str, step: Step, stop: asyncio.Event, *, error_delay: float = 0.5) -> None:
    """Call `step` until `stop` is set; `step` returns how long to wait before the next call."""
    failures = 0
    while not stop.is_set():
        try:
            delay = await step()
            failures = 0
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            failures += 1
            # Log the first failure and then every 20th, so an outage does not flood the log.
            if failures == 1 or failures % 20 == 0:
                log.warning("loop_step_failed", loop=name, error=repr(exc), failures=failures)
            delay = error_delay
        # asyncio.timeout rather than wait_for: no extra task, so the step resumes one loop turn sooner.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max(delay, 0.0)):
                await stop.wait()


async def cancel_and_wait(task: asyncio.Task[None] | None, timeout: float = 5.0) -> None:
    """Cancel a task and wait (bounded) for it to finish."""
    if task is None or task.done():
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, asyncio.TimeoutError):
        await asyncio.wait_for(task, timeout)
