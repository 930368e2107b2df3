"""Event-loop lag: how late the loop wakes a short sleep, the recent worst and p99, and a warning.

Every 100 ms a task sleeps and measures how much later than asked it woke up. That overshoot is the
time the loop spent on other work in between (or blocked in a synchronous call): how long any request,
and the lease renew, had to wait for their turn. The last minute of samples gives `last`, `p99` and
`max`, reported in `/health` (`loop_lag_ms`) and, as the p99, in the node's registry record. A sample
over 250 ms logs `loop_lag` at warning, at most once per 10 s (with how many samples were over and the
worst of them since the last such line).

What a node does when its loop lags: it keeps serving and only reports it. The watchdog never deposes
the node; the election's own rule does, and only when the node really cannot serve:

- the renew and the registry heartbeat have a connection pool of their own (`Database.with_own_pool`),
  so request traffic never makes them wait for a Redis connection;
- the renew runs on the event loop on purpose: a node whose loop is blocked for most of the lease
  (0.7 x lease less the time since its last renew, 1.1 s at worst with the default lease of 3 s) could
  not answer requests either, so handing the lease to a node that can is right;
- every request is bounded (regexes run in bounded time, bodies are capped before they are parsed,
  pages have a maximum size), so no single request blocks the loop that long, and a slow request only
  shows up here.

A thread that renews the lease while the loop is stuck would keep a node primary that answers nothing,
which is exactly the case where another node should take over; so there is none.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Callable

import structlog

log = structlog.get_logger("podium.watchdog")

INTERVAL_S = 0.1
WINDOW = 600  # samples kept: the last minute while the loop keeps up
WARN_S = 0.25
WARN_EVERY_S = 10.0


class LoopWatchdog:
    def __init__(
        self,
        *,
        interval_s: float = INTERVAL_S,
        warn_s: float = WARN_S,
        warn_every_s: float = WARN_EVERY_S,
        window: int = WINDOW,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.interval_s = interval_s
        self.warn_s = warn_s
        self.warn_every_s = warn_every_s
        self.clock = clock
        self.samples: deque[float] = deque(maxlen=window)
        self.last_s = 0.0
        self._warned_at = -math.inf
        self._over = 0  # samples over warn_s not yet logged
        self._worst = 0.0  # the worst of them

    def record(self, lag_s: float) -> None:
        self.last_s = lag_s
        self.samples.append(lag_s)
        if lag_s < self.warn_s:
            return
        self._over += 1
        self._worst = max(self._worst, lag_s)
        now = self.clock()
        if now - self._warned_at >= self.warn_every_s:
            log.warning("loop_lag", lag_ms=ms(lag_s), worst_ms=ms(self._worst), times=self._over,
                        threshold_ms=ms(self.warn_s))  # fmt: skip
            self._warned_at = now
            self._over = 0
            self._worst = 0.0

    async def run(self) -> None:
        """Measure until cancelled."""
        loop = asyncio.get_running_loop()
        while True:
            start = loop.time()
            await asyncio.sleep(self.interval_s)
            self.record(max(0.0, loop.time() - start - self.interval_s))

    @property
    def p99_s(self) -> float:
        if not self.samples:
            return 0.0
        values = sorted(self.samples)
        return values[min(len(values), math.ceil(0.99 * len(values))) - 1]

    def stats_ms(self) -> dict[str, float]:
        """`last`, `p99` and `max` over the recent samples, in milliseconds."""
        return {
            "last": ms(self.last_s),
            "p99": ms(self.p99_s),
            "max": ms(max(self.samples, default=0.0)),
        }


def ms(seconds: float) -> float:
    return round(seconds * 1000, 1)
