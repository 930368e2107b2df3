"""Retention benchmark: how fast maintenance deletes a backlog of old jobs, and what it costs others.

Loads N final job records (bench_search's generator, all dated 2025, so all past a 7-day retention)
with their `jobs` index entries into a private valkey-server, then runs one maintenance pass as the
primary (cluster/maintenance.py) while two probes run alongside: PING round trips to the store (every
fenced batch is one script, during which the store answers nobody: this is what the lease renewal
waits behind) and the event loop's lag (a 10 ms ticker).

    python -m tests.bench.bench_retention                      # 100,000 jobs, found 500 and deleted 100 at a time
    python -m tests.bench.bench_retention --records 20000 --step 50,100,500
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cluster.maintenance import Maintenance, MaintenanceConfig
from cluster.node import NodeRuntime
from storage import codec
from storage.connection import Database, connect
from storage.keyspace import Keyspace
from tests.authkit import wait_until
from tests.bench.bench_search import jobs
from tests.bench.loadgen import percentile
from tests.servers import RedisServer


async def load(db: Database, node: NodeRuntime, records: int) -> None:
    items = []
    async with db.client.pipeline(transaction=False) as pipe:
        for rid, fields, order in jobs(records):
            wf = fields.pop("workflow_job")
            job: dict[str, Any] = {**fields, "id": rid, "state": "complete", "started": order / 1000}
            if wf:
                job["workflow"] = {"job": wf}
            pipe.set(db.keys.job(rid), codec.pack(job))  # type: ignore[unused-awaitable]  # queued
            items.append((rid, {**fields, "workflow_job": wf}, order))
        await pipe.execute()
    await node.stores.jobs.index.add_many(items)


async def probe_store(db: Database, stop: asyncio.Event, out: list[float]) -> None:
    while not stop.is_set():
        started = time.perf_counter()
        await db.client.ping()
        out.append((time.perf_counter() - started) * 1000)
        await asyncio.sleep(0.005)


async def probe_loop(stop: asyncio.Event, out: list[float]) -> None:
    while not stop.is_set():
        started = time.perf_counter()
        await asyncio.sleep(0.01)
        out.append((time.perf_counter() - started - 0.01) * 1000)


async def bench(records: int, batch: int, step: int, directory: Path) -> None:
    server = RedisServer(directory).start()
    client = connect(server.url, timeout=30)
    db = Database(client, Keyspace("bench"))
    probe_db = Database(connect(server.url, timeout=30), Keyspace("bench"))
    node = NodeRuntime(db, "bench", "http://127.0.0.1:1", lease_ms=3000)
    try:
        await node.start()
        await wait_until(lambda: node.is_primary, "primary")
        await load(db, node, records)
        stop = asyncio.Event()
        pings: list[float] = []
        lags: list[float] = []
        probes = [asyncio.create_task(probe_store(probe_db, stop, pings)), asyncio.create_task(probe_loop(stop, lags))]
        config = MaintenanceConfig(job_expire_days=7, job_max_rows=0, activity_max_rows=0, max_sessions_per_user=0,
                                   batch=batch, step=step)  # fmt: skip
        started = time.perf_counter()
        removed = await Maintenance(node, config).run_once()
        took = time.perf_counter() - started
        stop.set()
        await asyncio.gather(*probes)
        left = await node.stores.jobs.search("*", offset=0, limit=1)
        pings.sort()
        lags.sort()
        print(f"batch {batch:5d} step {step:4d}: removed {removed.jobs:,} of {records:,} jobs in {took:.2f} s "
              f"({removed.jobs / took:,.0f}/s), {left[1]} left | store PING p50 {percentile(pings, 50):.2f} ms "
              f"p99 {percentile(pings, 99):.2f} max {pings[-1]:.2f} ms | loop lag p99 {percentile(lags, 99):.2f} "
              f"max {lags[-1]:.2f} ms")  # fmt: skip
    finally:
        await node.stop()
        await db.aclose()
        await probe_db.aclose()
        server.stop()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="retention benchmark")
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=500, help="records found per index query")
    parser.add_argument("--step", default="100", help="records per fenced delete; comma-separated, one run each")
    args = parser.parse_args(argv)
    for step in (int(s) for s in args.step.split(",")):
        with tempfile.TemporaryDirectory(prefix="podium-bench-") as tmp:
            asyncio.run(bench(args.records, args.batch, step, Path(tmp)))


if __name__ == "__main__":
    main()
