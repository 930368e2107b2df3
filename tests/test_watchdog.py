"""The loop-lag watchdog: a blocked loop is measured, warned about (rate-limited) and reported."""

from __future__ import annotations

import asyncio
import time

from structlog.testing import capture_logs

from cluster.watchdog import LoopWatchdog
from tests.authkit import Site, ok


def block(seconds: float) -> None:
    """A synchronous call that holds the event loop, as a runaway regex or a huge JSON parse would."""
    time.sleep(seconds)


async def test_a_blocking_call_is_measured_as_lag() -> None:
    dog = LoopWatchdog()
    task = asyncio.create_task(dog.run())
    try:
        await asyncio.sleep(0.35)
        assert dog.samples
        with capture_logs() as logs:
            block(0.5)
            await asyncio.sleep(0.35)
        # The sleep in flight started before the block and ended after it: at least 0.5 - 0.1 s late.
        assert max(dog.samples) >= 0.4
        assert dog.stats_ms()["max"] >= 400
        assert dog.last_s < max(dog.samples)  # the samples after the block are small again
        [warning] = [e for e in logs if e["event"] == "loop_lag"]
        assert warning["log_level"] == "warning"
        assert warning["lag_ms"] >= 400 and warning["times"] == 1
    finally:
        task.cancel()


def test_warnings_are_rate_limited_and_count_what_they_skipped() -> None:
    now = [100.0]
    dog = LoopWatchdog(warn_s=0.25, warn_every_s=10.0, window=5, clock=lambda: now[0])
    with capture_logs() as logs:
        dog.record(0.3)  # logged at once
        for lag in (0.01, 0.5, 0.4, 0.02):
            now[0] += 1
            dog.record(lag)
        assert len(logs) == 1
        now[0] += 10  # the next lag over the threshold is logged with what was held back
        dog.record(0.26)
    assert [(e["lag_ms"], e["worst_ms"], e["times"]) for e in logs] == [(300.0, 300.0, 1), (260.0, 500.0, 3)]
    # Only the last `window` samples count.
    assert list(dog.samples) == [0.01, 0.5, 0.4, 0.02, 0.26]
    assert dog.stats_ms() == {"last": 260.0, "p99": 500.0, "max": 500.0}


async def test_health_and_get_servers_report_the_loop_lag(site: Site, admin: dict[str, str]) -> None:
    await asyncio.sleep(0.3)  # a few samples
    block(0.4)
    await asyncio.sleep(0.2)
    resp = await site.client.get("/health")
    body = await resp.json()
    assert set(body["loop_lag_ms"]) == {"last", "p99", "max"}
    assert body["loop_lag_ms"]["max"] >= 200
    assert body["renew_gap_ms"] >= 0

    async def reported() -> float:
        data = await ok(site, "get_servers", {}, admin)
        return float(data["masters"]["n1"]["stats"]["loop_lag_ms"])

    for _ in range(50):  # the record is rewritten with each heartbeat (1 s)
        if (lag := await reported()) >= 200:
            break
        await asyncio.sleep(0.2)
    assert lag >= 200  # p99 of fewer than 100 samples is their maximum
