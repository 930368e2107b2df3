"""Monitor time series benchmark (storage/timeseries.py): store memory per server per day, add() cost, read latency.

Starts a private valkey-server, then:

1. memory: `--servers` servers (default 100) send a simulated day of 1,440 per-minute samples of the 15 default
   xyOps monitors (realistic values: 5-digit floats, byte counts, growing counters of the delta monitors);
   MEMORY USAGE (all samples) of every timeline key, per server per day, per system, plus what the same items
   would take stored as msgpack with monitor ids in every item, and the steady state at the default retention.
2. add(): `--writers` servers (default 1,000) each add one sample per simulated minute, all at once (as many
   concurrent add() calls as servers, through the node's pool of 64 connections): wall time per sample and the
   store's own time per call (INFO commandstats).
3. reads: latest and historical, limit 60 (hourly) and 720 (daily), p50/p95 over `--reads` calls each.
4. the worst gap fill: a server back after 89.9 days with 90 days of hourly retention (129,600 stubs, written
   5,000 per script call): the add() in all, and the longest single call (SLOWLOG).

    python -m tests.bench.bench_timeseries [--servers 100] [--writers 1000] [--minutes 10] [--reads 500]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from storage import codec
from storage.connection import Database, connect
from storage.keyspace import Keyspace
from storage.timeseries import DEFAULT_RETENTION_S, SYSTEMS, TimelineStore
from tests.bench.loadgen import percentile
from tests.servers import RedisServer

DAY = 86400
START = 1_767_225_600.0  # 2026-01-01 00:00 UTC
GB = 1024**3


class Host:
    """One server's monitor values, minute by minute (the 15 default monitors of xyOps internal/setup.json)."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.mem_total = rng.choice([8, 16, 32, 64]) * GB
        self.counters = {k: rng.randrange(10**9, 10**12) for k in
                         ("disk_read_sec", "disk_write_sec", "os_bytes_in_sec", "os_bytes_out_sec")}  # fmt: skip
        self.iops = rng.randrange(10**6, 10**8)

    def sample(self) -> dict[str, float]:
        r = self.rng
        used = int(self.mem_total * r.uniform(0.2, 0.9))
        for key in self.counters:
            self.counters[key] += r.randrange(0, 50 * 1024 * 1024)
        self.iops += r.randrange(0, 20_000)
        return {
            "load_avg": round(r.uniform(0, 8), 5), "cpu_usage": round(r.uniform(0, 100), 5),
            "mem_used": used, "mem_free": self.mem_total - used, "net_conns": r.randrange(5, 2000),
            "disk_usage_root": round(r.uniform(10, 95), 5), **self.counters, "disk_iops_sec": self.iops,
            "io_wait": round(r.uniform(0, 5), 5), "open_files": r.randrange(500, 20000),
            "total_procs": r.randrange(100, 800), "active_jobs": r.randrange(0, 4),
        }  # fmt: skip


async def memory(db: Database, store: TimelineStore, servers: int) -> None:
    rng = random.Random(1)
    hosts = {f"m{n:04d}": Host(rng) for n in range(servers)}
    for minute in range(1440):
        date = START + minute * 60 + rng.uniform(0, 29)  # staggered within the minute, as agents are
        await asyncio.gather(*(store.add(sid, date, host.sample()) for sid, host in hosts.items()))
    per_sys = dict.fromkeys(SYSTEMS, 0)
    items = dict.fromkeys(SYSTEMS, 0)
    named = dict.fromkeys(SYSTEMS, 0)  # the same items as msgpack with monitor ids in each
    for sid in hosts:
        for sys in SYSTEMS:
            key = db.keys.timeline(sid, sys)
            per_sys[sys] += int(await db.client.memory_usage(key, samples=0) or 0)
            rows = await store.latest(sid, sys, 50_000)
            items[sys] += len(rows)
            named[sys] += sum(len(codec.pack(row)) for row in rows)
    shared = 0
    for key in (db.keys.timelines, db.keys.timeline_columns):
        shared += int(await db.client.memory_usage(key, samples=0) or 0)
    total = sum(per_sys.values()) / servers
    print(f"memory, {servers} servers x 1 day (1,440 samples of 15 monitors each):")
    for sys in SYSTEMS:
        print(f"  {sys:8s} {per_sys[sys] / servers:10,.0f} B/server/day  {items[sys] / servers:6,.0f} items"
              f"  {per_sys[sys] / max(items[sys], 1):5.0f} B/item in Redis"
              f"  (msgpack with ids: {named[sys] / max(items[sys], 1):4.0f} B/item)")  # fmt: skip
    print(f"  total    {total:10,.0f} B/server/day (+ {shared / servers:,.0f} B/server of shared keys)")
    steady = sum(per_sys[sys] / servers * DEFAULT_RETENTION_S[sys] / DAY for sys in SYSTEMS)
    print(f"  steady state at the default retention (7/90/1826/3652 days): {steady / 1024**2:,.1f} MiB/server, "
          f"{steady * 1000 / GB:,.1f} GiB per 1,000 servers")  # fmt: skip


async def writes(db: Database, store: TimelineStore, writers: int, minutes: int) -> None:
    rng = random.Random(2)
    hosts = {f"w{n:04d}": Host(rng) for n in range(writers)}
    await db.client.config_resetstat()
    walls = []
    for minute in range(minutes):
        date = START + minute * 60 + 1
        samples = [(sid, host.sample()) for sid, host in hosts.items()]
        started = time.perf_counter()
        done = await asyncio.gather(*(store.add(sid, date, values) for sid, values in samples))
        walls.append((time.perf_counter() - started) / writers * 1e6)
        assert all(done)
    stats = (await db.client.info("commandstats")).get("cmdstat_evalsha", {})
    print(f"add(), {writers} servers at once, {minutes} minutes: wall {statistics.median(walls):.0f} us/sample "
          f"(median of minutes), store {float(stats.get('usec_per_call', 0)):.0f} us/call")  # fmt: skip


async def timed(call: Callable[[], Awaitable[Any]], count: int) -> tuple[float, float]:
    times = []
    for _ in range(count):
        started = time.perf_counter()
        await call()
        times.append((time.perf_counter() - started) * 1000)
    times.sort()
    return percentile(times, 50), percentile(times, 95)


async def reads(store: TimelineStore, servers: int, count: int) -> None:
    rng = random.Random(3)
    ids = [f"m{n:04d}" for n in range(servers)]

    def pick() -> str:
        return rng.choice(ids)

    cases: dict[str, Callable[[], Awaitable[Any]]] = {
        "latest hourly 60": lambda: store.latest(pick(), "hourly", 60),
        "latest daily 720": lambda: store.latest(pick(), "daily", 720),
        "historical hourly 60": lambda: store.historical(pick(), "hourly", START + rng.uniform(0, 23 * 3600), 60),
        "historical daily 720": lambda: store.historical(pick(), "daily", START, 720),
    }
    print(f"reads, {count} calls each (p50 / p95 ms):")
    for name, call in cases.items():
        rows = len(await call())
        p50, p95 = await timed(call, count)
        print(f"  {name:22s} {p50:6.2f} / {p95:6.2f}  ({rows} rows)")


async def gap_fill(db: Database) -> None:
    store = TimelineStore(db, {**DEFAULT_RETENTION_S, "hourly": 90 * DAY})
    host = Host(random.Random(4))
    await store.add("gap", START, host.sample())
    await db.client.config_set("slowlog-log-slower-than", 0)
    await db.client.config_set("slowlog-max-len", 10_000)
    await db.client.slowlog_reset()
    started = time.perf_counter()
    assert await store.add("gap", START + 89.9 * DAY, host.sample())
    took = (time.perf_counter() - started) * 1000
    calls = [entry for entry in await db.client.slowlog_get(10_000) if entry["command"][:7].upper() == b"EVALSHA"]
    longest = max(int(entry["duration"]) for entry in calls) / 1000
    rows = await db.client.llen(db.keys.timeline("gap", "hourly"))
    print(f"worst gap fill (90 days of hourly retention, back after 89.9 days): {took:.0f} ms for {rows:,} rows, "
          f"{len(calls)} calls, longest {longest:.1f} ms")  # fmt: skip


async def bench(args: argparse.Namespace, directory: Path) -> None:
    server = RedisServer(directory).start()
    db = Database(connect(server.url, timeout=30), Keyspace("bench"))
    try:
        store = TimelineStore(db)
        await memory(db, store, args.servers)
        await reads(store, args.servers, args.reads)
        await writes(db, store, args.writers, args.minutes)
        await gap_fill(db)
    finally:
        await db.aclose()
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--servers", type=int, default=100)
    parser.add_argument("--writers", type=int, default=1000)
    parser.add_argument("--minutes", type=int, default=10)
    parser.add_argument("--reads", type=int, default=500)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-ts-") as tmp:
        asyncio.run(bench(args, Path(tmp)))


if __name__ == "__main__":
    main()
