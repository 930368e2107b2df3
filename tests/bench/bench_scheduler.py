"""Scheduler benchmark: `Scheduler.tick` over 10,000 stored events, and run_event over HTTP.

Part 1 starts a private valkey-server and an in-process node (made primary, with a long lease; its first
start creates the default category and plugins), stores N enabled events with a fixed-seed mix of triggers
directly through the definition store, then calls `Scheduler.tick(now)` for S consecutive explicit seconds
from 30 s before a minute boundary (so the run crosses two minute boundaries and, with the default start,
an hour, a day and a year). Launches happen for real (fenced claim + job record + index; no agent is
connected, so each job completes at once as "no servers", as on a cluster without agents). Printed:

- the first tick (compiles every schedule and gives each event its cursor), timed apart;
- for the S ticks: ms per tick (min / median / p95 / max) for all ticks, for ticks that launched and
  skipped nothing, for minute-boundary ticks, and for the scheduler's own work (the tick less the time
  inside `launch_job` and inside skip logging), this process's CPU ms per tick, the launches and
  skipped slots with ms per launch, and the longest event-loop stall (a stall delays lease renewals);
- the first tick of a new primary (a fresh `Scheduler`: nothing compiled or remembered) 5 s later.

Part 2 starts `podium serve` (a separate process, its own cluster prefix on the same valkey-server,
access log off), creates an API key and an event with a manual trigger over HTTP, then sends
`POST /api/app/run_event/v1 {"id": ...}` back to back from C aiohttp workers for D seconds (after a
1 s warm-up) and prints jobs/s, p50 / p99 latency, errors, the jobs `search_jobs` finds, and the CPU
used by the node and by the store.

    python -m tests.bench.bench_scheduler                            # 10,000 events, 120 ticks, 8 x 10 s
    python -m tests.bench.bench_scheduler --events 20000 --seconds 300 --max-jobs-per-min 100
    python -m tests.bench.bench_scheduler --profile --skip-http      # cProfile of the ticks (top 25)

The brake (`--max-jobs-per-min`) is off by default so that launches are measured; with the production
default of 100 most due slots are skipped and logged instead. Every process it starts it stops (also on
Ctrl-C), and it removes its temporary directory.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import io
import pstats
import random
import statistics
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

import cluster.scheduler as scheduler_module
from api.bootstrap import first_start
from cluster.launcher import Launch, launch_job
from cluster.node import NodeRuntime
from cluster.scheduler import Scheduler, SchedulerConfig
from cluster.triggers import validate_triggers
from storage.connection import Database, connect
from storage.families import EVENTS
from storage.ids import generate_id
from storage.keyspace import Keyspace
from storage.stores import Stores
from tests.bench.loadgen import percentile, process_cpu_seconds
from tests.servers import Node, RedisServer

ZONES = ["UTC", "America/New_York", "Europe/London", "Europe/Berlin", "Asia/Tokyo", "Asia/Kolkata",
         "Australia/Sydney", "America/Los_Angeles"]  # fmt: skip
START = 1_767_225_570  # 2025-12-31T23:59:30Z: the run crosses a minute, an hour, a day and a year
INTERVALS = [5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600]
Record = dict[str, Any]


# -- part 1: ticks ---------------------------------------------------------------------------------


def event_triggers(rng: random.Random, now: int) -> list[Record]:
    """One event's triggers. Shares (of all events): every minute 5 %, hourly 25 %, weekday mornings
    20 %, daily 10 % (all but every-minute in a random zone), intervals of 5-3600 s 15 %, schedules with
    precision seconds 10 %, singles 15 %; then 10 % get a delay (where allowed), 5 % a range around the
    run, 5 % a blackout after it; every event has a manual trigger too."""
    kind = rng.random()
    zone = rng.choice(ZONES)
    extra: list[Record] = []
    if rng.random() < 0.1:
        extra.append({"type": "delay", "enabled": True, "duration": rng.randint(1, 300)})
    if rng.random() < 0.05:
        extra.append({"type": "range", "enabled": True, "start": now - 86400, "end": now + 86400})
    if rng.random() < 0.05:
        extra.append({"type": "blackout", "enabled": True, "start": now + 3600, "end": now + 7200})
    no_delay = False
    if kind < 0.05:
        main = [{"type": "schedule", "enabled": True}]
    elif kind < 0.30:
        main = [{"type": "schedule", "enabled": True, "minutes": [rng.randrange(60)], "timezone": zone}]
    elif kind < 0.50:
        main = [{"type": "schedule", "enabled": True, "weekdays": [1, 2, 3, 4, 5], "hours": [rng.randrange(24)],
                 "minutes": [0, 30], "timezone": zone}]  # fmt: skip
    elif kind < 0.60:
        main = [{"type": "schedule", "enabled": True, "hours": [rng.randrange(24)], "minutes": [rng.randrange(60)],
                 "timezone": zone}]  # fmt: skip
    elif kind < 0.75:
        main = [{"type": "interval", "enabled": True, "start": now - rng.randrange(86400),
                 "duration": rng.choice(INTERVALS)}]  # fmt: skip
        no_delay = True  # interval and delay are exclusive
    elif kind < 0.85:
        main = [{"type": "schedule", "enabled": True, "minutes": sorted(rng.sample(range(60), 4)), "timezone": zone},
                {"type": "precision", "enabled": True, "seconds": sorted(rng.sample(range(60), 3))}]  # fmt: skip
        no_delay = True  # precision and delay are exclusive
    else:
        main = [{"type": "single", "enabled": True, "epoch": now + rng.randrange(-3600, 86400)}]
    if no_delay:
        extra = [t for t in extra if t["type"] != "delay"]
    return [*main, *extra, {"type": "manual", "enabled": True}]


def event_record(n: int, triggers: list[Record], created: int) -> Record:
    return {
        "id": generate_id("e"), "title": f"Bench event {n}", "enabled": True, "category": "general",
        "plugin": "shellplug", "targets": ["main"], "algo": "random", "params": {"script": "#!/bin/sh\ntrue"},
        "fields": [], "tags": [], "limits": [], "actions": [], "notes": "", "icon": "", "username": "admin",
        "created": created, "modified": created, "revision": 1, "triggers": validate_triggers(triggers),
    }  # fmt: skip


@dataclass
class TickStats:
    """What one tick cost: wall time, the parts spent launching and logging skips, and the counts."""

    now: int
    ms: float = 0.0
    cpu_ms: float = 0.0  # this process's CPU time during the tick (steadier than wall time on a busy machine)
    launch_ms: float = 0.0
    skip_ms: float = 0.0
    launches: int = 0
    skipped: int = 0

    @property
    def own_ms(self) -> float:
        return self.ms - self.launch_ms - self.skip_ms


@dataclass
class Meter:
    """Accumulates launch and skip time for the tick being measured."""

    current: TickStats = field(default_factory=lambda: TickStats(0))


class MeteredScheduler(Scheduler):
    """The real scheduler; skip logging is timed (launches are timed by wrapping `launch_job`)."""

    def __init__(self, node: NodeRuntime, config: SchedulerConfig, meter: Meter) -> None:
        super().__init__(node, config)
        self.meter = meter

    async def _skip(self, event: Record, seconds: list[int], reason: str, kind: str) -> None:
        began = time.perf_counter()
        try:
            await super()._skip(event, seconds, reason, kind)
        finally:
            self.meter.current.skip_ms += (time.perf_counter() - began) * 1000
            self.meter.current.skipped += len(seconds)


def meter_launches(meter: Meter) -> None:
    """Time every `launch_job` the scheduler makes (the real function, called through a wrapper)."""
    real = launch_job

    async def timed(node: NodeRuntime, launch: Launch) -> Record | None:
        began = time.perf_counter()
        try:
            return await real(node, launch)
        finally:
            meter.current.launch_ms += (time.perf_counter() - began) * 1000

    vars(scheduler_module)["launch_job"] = timed  # the name the scheduler calls


def stats_line(label: str, values: Sequence[float]) -> str:
    if not values:
        return f"  {label:<34} (none)"
    ordered = sorted(values)
    return (f"  {label:<34} min {ordered[0]:8.2f}  median {statistics.median(ordered):8.2f}  "
            f"p95 {percentile(ordered, 95):8.2f}  max {ordered[-1]:8.2f}   (n={len(ordered)})")  # fmt: skip


async def wait_for(predicate: Any, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not await predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        await asyncio.sleep(0.05)


def build_events(count: int, seed: int) -> list[Record]:
    rng = random.Random(seed)
    created = int(time.time())
    return [event_record(n, event_triggers(rng, START), created) for n in range(count)]


async def store_events(node: NodeRuntime, records: list[Record]) -> float:
    count = len(records)
    began = time.perf_counter()
    for chunk in range(0, count, 32):
        fence = node.fence()
        await asyncio.gather(*(node.stores.defs.create(fence, EVENTS, r) for r in records[chunk : chunk + 32]))
    return time.perf_counter() - began


async def tick_bench(redis: RedisServer, args: argparse.Namespace) -> None:
    records = build_events(args.events, args.seed)  # before the node starts: 10,000 validations take a while
    db = Database(connect(redis.url), Keyspace("benchtick"))
    # A long lease: a tick that holds the event loop for seconds must not cost this node its lease here.
    node = NodeRuntime(db, "bench", "http://127.0.0.1:9", lease_ms=args.lease_ms, services=[first_start],
                       stores=Stores.open(db))  # fmt: skip

    async def primary() -> bool:
        return node.is_primary

    await node.start()
    try:
        await wait_for(primary, "primary")
        await wait_for(lambda: db.client.exists(db.keys.setup_done), "first start")
        took = await store_events(node, records)
        print(f"part 1: {args.events} events stored through the definition store in {took:.1f} s")

        meter = Meter()
        meter_launches(meter)
        config = SchedulerConfig(stagger_ms=0, max_jobs_per_min=args.max_jobs_per_min)
        lag = LagMonitor()
        lag.start()
        scheduler = MeteredScheduler(node, config, meter)
        began = time.perf_counter()
        first = await scheduler.tick(START - 1)
        print(f"first tick (compiles {args.events} schedules, gives each event a cursor): "
              f"{(time.perf_counter() - began) * 1000:.0f} ms, {first} launched, longest event-loop stall "
              f"{lag.take():.0f} ms")  # fmt: skip

        profiler = cProfile.Profile() if args.profile else None
        ticks: list[TickStats] = []
        for now in range(START, START + args.seconds):
            meter.current = stats = TickStats(now)
            if profiler is not None:
                profiler.enable()
            began, cpu = time.perf_counter(), time.process_time()
            stats.launches = await scheduler.tick(now)
            stats.ms = (time.perf_counter() - began) * 1000
            stats.cpu_ms = (time.process_time() - cpu) * 1000
            if profiler is not None:
                profiler.disable()
            ticks.append(stats)
        report_ticks(args, ticks, lag.take())

        # A new primary (a fresh scheduler: nothing compiled, nothing remembered) after a 5 s failover.
        resume = START + args.seconds + 5
        meter.current = stats = TickStats(resume)
        began = time.perf_counter()
        stats.launches = await MeteredScheduler(node, config, meter).tick(resume)
        stats.ms = (time.perf_counter() - began) * 1000
        print(f"a new primary's first tick, 5 s after the last one: {stats.ms:.0f} ms ({stats.own_ms:.0f} ms less "
              f"launches), {stats.launches} launched (the missed seconds' slots), {stats.skipped} skipped, longest "
              f"event-loop stall {lag.take():.0f} ms")  # fmt: skip
        await lag.stop()
        if profiler is not None:
            out = io.StringIO()
            pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(25)
            print(out.getvalue())
    finally:
        await node.stop()
        await db.aclose()


class LagMonitor:
    """The longest time the event loop went without running a 10 ms sleeper (a stall blocks renewals too)."""

    def __init__(self) -> None:
        self.worst = 0.0
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            began = time.perf_counter()
            await asyncio.sleep(0.01)
            self.worst = max(self.worst, (time.perf_counter() - began - 0.01) * 1000)

    def take(self) -> float:
        worst, self.worst = self.worst, 0.0
        return worst

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task


def report_ticks(args: argparse.Namespace, ticks: list[TickStats], stall_ms: float) -> None:
    brake = args.max_jobs_per_min
    print(f"{len(ticks)} ticks, one per second from {START} (minute boundaries at ticks "
          f"{[t.now - START for t in ticks if t.now % 60 == 0]}), max_jobs_per_min={brake}, stagger 0 ms")  # fmt: skip
    launches = sum(t.launches for t in ticks)
    skipped = sum(t.skipped for t in ticks)
    launch_ms = sum(t.launch_ms for t in ticks)
    print(f"  launches {launches} ({launches / len(ticks):.1f} per tick), skipped slots {skipped}, "
          f"{launch_ms / max(launches, 1):.2f} ms per launch_job")  # fmt: skip
    print("  ms per tick:")
    print(stats_line("every tick", [t.ms for t in ticks]))
    print(stats_line("ticks that launched nothing", [t.ms for t in ticks if not t.launches and not t.skipped]))
    print(stats_line("minute-boundary ticks", [t.ms for t in ticks if t.now % 60 == 0]))
    print(stats_line("scheduler's own work (less launches)", [t.own_ms for t in ticks]))
    print(stats_line("CPU ms per tick, this process", [t.cpu_ms for t in ticks]))
    busiest = max(ticks, key=lambda t: t.ms)
    print(f"  longest event-loop stall during these ticks: {stall_ms:.0f} ms")
    print(f"  slowest tick: {busiest.now} ({busiest.now - START:+d} s), {busiest.ms:.1f} ms: "
          f"{busiest.launches} launches in {busiest.launch_ms:.1f} ms, {busiest.skipped} skipped in "
          f"{busiest.skip_ms:.1f} ms, {busiest.own_ms:.1f} ms of its own")  # fmt: skip


# -- part 2: run_event over HTTP ---------------------------------------------------------------------


async def post(http: aiohttp.ClientSession, url: str, body: Record, headers: dict[str, str]) -> tuple[int, Record]:
    async with http.post(url, json=body, headers=headers) as resp:
        data: Record = await resp.json()
        return resp.status, data


async def admin_key(http: aiohttp.ClientSession, base: str) -> str:
    deadline = time.monotonic() + 60
    pause = 0.1
    while True:  # the node answers before its first start has created the admin user
        try:
            async with http.post(f"{base}/api/user/login/v1", json={"username": "admin", "password": "admin"}) as resp:
                data = await resp.json()
                if resp.status == 200 and data.get("code") == 0:
                    session = resp.cookies["session_id"].value
                    break
        except aiohttp.ClientError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError("login as admin/admin")
        await asyncio.sleep(pause)
        pause = min(pause * 2, 1.0)
    http.cookie_jar.clear()
    status, data = await post(http, f"{base}/api/app/create_api_key/v1",
                              {"title": "bench", "privileges": {"admin": True}}, {"X-Session-ID": session})  # fmt: skip
    if status != 200 or data.get("code") != 0:
        raise RuntimeError(f"create_api_key: HTTP {status} {data}")
    return str(data["plain_key"])


@dataclass
class LoadResult:
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    sent: int = 0
    last_error: str = ""


async def run_load(url: str, body: Record, headers: dict[str, str], concurrency: int, warmup: float,
                   duration: float) -> tuple[LoadResult, float]:  # fmt: skip
    result = LoadResult()
    window_start = time.perf_counter() + warmup
    window_end = window_start + duration

    async def worker(http: aiohttp.ClientSession) -> None:
        while (start := time.perf_counter()) < window_end:
            result.sent += 1
            ok = False
            try:
                async with http.post(url, json=body) as resp:
                    data = await resp.json()
                    ok = resp.status == 200 and data.get("code") == 0
                    if not ok:
                        result.last_error = f"HTTP {resp.status} {data}"
            except (TimeoutError, aiohttp.ClientError) as exc:
                result.last_error = repr(exc)
            done = time.perf_counter()
            if window_start <= start and done <= window_end:
                if ok:
                    result.latencies.append(done - start)
                else:
                    result.errors += 1

    connector = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout, headers=headers) as http:
        await asyncio.gather(*(worker(http) for _ in range(concurrency)))
    return result, duration


async def http_bench(redis: RedisServer, root: Path, args: argparse.Namespace) -> None:
    node = Node(0, root / "node", redis.url, ["--cluster", "benchhttp", "--access-log", "off",
                                               "--log-level", "warning"])  # fmt: skip
    node.start()
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
            key = await admin_key(http, node.url)
            headers = {"X-API-Key": key}
            status, data = await post(http, f"{node.url}/api/app/create_event/v1", {
                "title": "Run by hand", "enabled": True, "category": "general", "plugin": "shellplug",
                "targets": ["main"], "algo": "random", "params": {"script": "#!/bin/sh\ntrue"},
                "triggers": [{"type": "manual", "enabled": True}],
            }, headers)  # fmt: skip
            if status != 200 or data.get("code") != 0:
                raise RuntimeError(f"create_event: HTTP {status} {data}")
            event_id = data["event"]["id"]
        url = f"{node.url}/api/app/run_event/v1"
        node_cpu0, store_cpu0 = process_cpu_seconds(node.pid), process_cpu_seconds(redis_pid(redis))
        began = time.perf_counter()
        result, window = await run_load(url, {"id": event_id}, headers, args.concurrency, 1.0, args.http_seconds)
        elapsed = time.perf_counter() - began
        node_cpu1, store_cpu1 = process_cpu_seconds(node.pid), process_cpu_seconds(redis_pid(redis))
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
            status, found = await post(http, f"{node.url}/api/app/search_jobs/v1",
                                       {"query": f"event:{event_id}", "limit": 1}, headers)  # fmt: skip
        lat = sorted(result.latencies)
        print(f"part 2: run_event over HTTP on the primary (podium serve, pid {node.pid}), "
              f"concurrency {args.concurrency}, {window:.0f} s after a 1 s warm-up")  # fmt: skip
        print(f"  jobs/s {len(lat) / window:8.1f}   p50 {percentile(lat, 50) * 1000:6.2f} ms   "
              f"p99 {percentile(lat, 99) * 1000:6.2f} ms   max {(lat[-1] if lat else 0) * 1000:6.2f} ms   "
              f"errors {result.errors}")  # fmt: skip
        if result.last_error:
            print(f"  last error: {result.last_error}")
        print(f"  requests sent {result.sent} (warm-up included); jobs found by search_jobs: "
              f"{found.get('list', {}).get('length')} (HTTP {status})")  # fmt: skip
        if None not in (node_cpu0, node_cpu1, store_cpu0, store_cpu1):
            assert node_cpu0 is not None and node_cpu1 is not None
            assert store_cpu0 is not None and store_cpu1 is not None
            print(f"  CPU over the whole run ({elapsed:.1f} s): node {100 * (node_cpu1 - node_cpu0) / elapsed:.0f} %, "
                  f"store {100 * (store_cpu1 - store_cpu0) / elapsed:.0f} % (100 = one core)")  # fmt: skip
    finally:
        node.terminate()


def redis_pid(redis: RedisServer) -> int:
    assert redis.proc is not None
    return redis.proc.pid


async def bench(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="podium-bench-sched-") as tmp:
        root = Path(tmp)
        redis = RedisServer(root / "redis").start()
        try:
            if not args.skip_ticks:
                await tick_bench(redis, args)
            if not args.skip_http:
                await http_bench(redis, root, args)
        finally:
            redis.stop()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="scheduler tick and run_event benchmark")
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--seconds", type=int, default=120, help="consecutive ticks to time")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--max-jobs-per-min", type=int, default=1_000_000,
                        help="scheduler brake (default: high enough never to brake)")  # fmt: skip
    parser.add_argument("--lease-ms", type=int, default=60_000, help="lease of the in-process node")
    parser.add_argument("--profile", action="store_true", help="cProfile the timed ticks")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--http-seconds", type=float, default=10.0)
    parser.add_argument("--skip-ticks", action="store_true")
    parser.add_argument("--skip-http", action="store_true")
    args = parser.parse_args(argv)
    asyncio.run(bench(args))


if __name__ == "__main__":
    main()
