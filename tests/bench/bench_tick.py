"""Scheduler tick benchmark: `Schedule.due(t - 1, t)` over 10,000 compiled events, second by second.

Builds N events with a fixed-seed mix of triggers (every-minute and hourly schedules, weekday schedules in
several time zones, intervals of 5-3600 s, schedules with precision seconds, singles, some with a delay,
range or blackout), then times one tick (every event asked about one second) for S consecutive seconds
starting 30 s before a minute boundary, so ticks both inside a minute and on boundaries are measured. The
local-time cache starts cold, as after a restart. Also times one catch-up window of H hours over all
events. Prints ms per tick (min / median / p95 / max), the boundary ticks apart, and slot counts.

    python -m tests.bench.bench_tick                          # 10,000 events, 120 ticks, 1 h catch-up
    python -m tests.bench.bench_tick --events 20000 --seconds 300 --catchup-hours 6
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from typing import Any

from cluster.timing import local_minute
from cluster.triggers import Schedule, compile_triggers, validate_triggers
from tests.bench.loadgen import percentile

ZONES = ["UTC", "America/New_York", "Europe/London", "Europe/Berlin", "Asia/Tokyo", "Asia/Kolkata",
         "Australia/Sydney", "America/Los_Angeles"]
START = 1_767_225_570  # 2025-12-31T23:59:30Z: the run crosses a minute, an hour, a day and a year


def event_triggers(rng: random.Random, now: int) -> list[dict[str, Any]]:
    """One event's triggers, drawn from the mix described in the module docstring."""
    kind = rng.random()
    zone = rng.choice(ZONES)
    extra: list[dict[str, Any]] = []
    if rng.random() < 0.1:
        extra.append({"type": "delay", "enabled": True, "duration": rng.randint(1, 300)})
    if rng.random() < 0.05:
        extra.append({"type": "range", "enabled": True, "start": now - 86400, "end": now + 86400})
    if rng.random() < 0.05:
        extra.append({"type": "blackout", "enabled": True, "start": now + 3600, "end": now + 7200})
    if kind < 0.25:
        main = [{"type": "schedule", "enabled": True}]
    elif kind < 0.50:
        main = [{"type": "schedule", "enabled": True, "minutes": [rng.randrange(60)], "timezone": zone}]
    elif kind < 0.65:
        main = [{"type": "schedule", "enabled": True, "weekdays": [1, 2, 3, 4, 5], "hours": [rng.randrange(24)],
                 "minutes": [0, 30], "timezone": zone}]
    elif kind < 0.85:
        main = [{"type": "interval", "enabled": True, "start": now - rng.randrange(86400),
                 "duration": rng.choice([5, 10, 15, 30, 60, 90, 300, 600, 3600])}]
        extra = [t for t in extra if t["type"] != "delay"]  # interval and delay are exclusive
    elif kind < 0.95:
        main = [{"type": "schedule", "enabled": True, "minutes": sorted(rng.sample(range(60), 4)), "timezone": zone},
                {"type": "precision", "enabled": True, "seconds": sorted(rng.sample(range(60), 3))}]
        extra = [t for t in extra if t["type"] != "delay"]  # precision and delay are exclusive
    else:
        main = [{"type": "single", "enabled": True, "epoch": now + rng.randrange(-60, 600)}]
    return [*main, *extra, {"type": "manual", "enabled": True}]


def build(count: int, seed: int) -> list[Schedule]:
    rng = random.Random(seed)
    return [compile_triggers(validate_triggers(event_triggers(rng, START))) for _ in range(count)]


def ticks(schedules: list[Schedule], start: int, seconds: int) -> tuple[list[float], list[float], int]:
    """ms per tick for every tick, for boundary ticks only, and the number of slots found."""
    all_ms: list[float] = []
    boundary_ms: list[float] = []
    slots = 0
    for t in range(start, start + seconds):
        began = time.perf_counter()
        found = 0
        for schedule in schedules:
            due = schedule.due(t - 1, t)
            if due:
                found += len(due)
        ms = (time.perf_counter() - began) * 1000
        all_ms.append(ms)
        if t % 60 == 0:
            boundary_ms.append(ms)
        slots += found
    return all_ms, boundary_ms, slots


def summary(values: list[float]) -> str:
    ordered = sorted(values)
    return (f"min {ordered[0]:.2f}  median {statistics.median(ordered):.2f}  "
            f"p95 {percentile(ordered, 95):.2f}  max {ordered[-1]:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--seconds", type=int, default=120)
    parser.add_argument("--catchup-hours", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()

    began = time.perf_counter()
    schedules = build(args.events, args.seed)
    print(f"{args.events} events validated and compiled in {(time.perf_counter() - began) * 1000:.0f} ms")

    began = time.perf_counter()
    for _ in schedules:
        pass
    loop_ms = (time.perf_counter() - began) * 1000
    print(f"baseline: an empty loop over {len(schedules)} events takes {loop_ms:.2f} ms on this machine")

    local_minute.cache_clear()
    all_ms, boundary_ms, slots = ticks(schedules, START, args.seconds)
    print(f"tick = due(t-1, t) on every event, {args.seconds} ticks from {START} ({slots} slots)")
    print(f"  all ticks       ms: {summary(all_ms)}")
    print(f"  minute boundary ms: {summary(boundary_ms)}  ({len(boundary_ms)} ticks)")

    window = int(args.catchup_hours * 3600)
    local_minute.cache_clear()
    began = time.perf_counter()
    found = sum(len(schedule.due(START - window, START)) for schedule in schedules)
    ms = (time.perf_counter() - began) * 1000
    print(f"catch-up: one {args.catchup_hours:g} h window on every event: {ms:.0f} ms ({found} slots)")


if __name__ == "__main__":
    main()
