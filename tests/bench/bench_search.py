"""Search index benchmark: index N job-like records into a private valkey-server, time queries.

Prints the indexing rate, Redis memory per record (INFO used_memory delta / N) and p50/p95 latency
of `event:X`, `tags:Y date:>=D`, a PxQL query and a sort by a sorter, each run with many different
values. Latency is measured in this process around `Indexer.search` (parse + one script call).

    python -m tests.bench.bench_search                    # 1,000,000 records
    python -m tests.bench.bench_search --records 100000 --repeat 200
"""

from __future__ import annotations

import argparse
import asyncio
import random
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from storage.connection import Database, connect
from storage.jobs import JOBS_INDEX
from storage.keyspace import Keyspace
from storage.search import Indexer
from tests.bench.loadgen import percentile
from tests.servers import RedisServer

# The production jobs index, so the figures are those of search_jobs.
JOBS = JOBS_INDEX

START_MS = 1_735_689_600_000  # 2025-01-01; one job every 30 s on average, so 1M jobs span ~a year
EVENTS = [f"e{n:03d}" for n in range(200)]
EVENT_WEIGHTS = [1 / (n + 1) for n in range(200)]  # a few busy events, a long tail
TAGS = ["_success", "_error", "_last", "_retried", "_files", *[f"tag{n}" for n in range(15)]]
B36 = "0123456789abcdefghijklmnopqrstuvwxyz"


def base36(n: int) -> str:
    out = ""
    while True:
        n, r = divmod(n, 36)
        out = B36[r] + out
        if not n:
            return out


def jobs(count: int, seed: int = 1) -> Iterator[tuple[str, dict[str, Any], float]]:
    rng = random.Random(seed)
    ms = START_MS
    for i in range(count):
        ms += rng.randrange(0, 60_000)
        elapsed = round(rng.expovariate(1 / 60), 3)
        ok = rng.random() < 0.9
        tags = ["_success" if ok else "_error", *rng.sample(TAGS[2:], rng.choice([0, 0, 1, 2]))]
        record = {
            "code": 0 if ok else rng.choice([1, 1, "warning", "abort"]),
            "completed": ms / 1000 + elapsed, "elapsed": elapsed,
            "source": rng.choice(["scheduler", "scheduler", "scheduler", "user", "api", "workflow"]),
            "tags": tags, "event": rng.choices(EVENTS, EVENT_WEIGHTS)[0], "category": f"c{rng.randrange(10)}",
            "plugin": f"p{rng.randrange(8)}", "server": f"s{rng.randrange(50)}", "groups": [f"g{rng.randrange(5)}"],
            "workflow_job": f"j{base36(ms)}wf" if rng.random() < 0.05 else None,
            "tickets": [f"t{rng.randrange(5000)}"] if rng.random() < 0.01 else [],
        }  # fmt: skip
        rid = ("j" + base36(ms) + base36(i % 1296) + "".join(rng.choices(B36, k=6)))[:16]
        yield rid, record, float(ms)


async def timed(
    ix: Indexer, make: Callable[[], str], options: dict[str, Any], repeat: int
) -> tuple[list[float], list[int]]:
    """Latencies (ms, sorted) and totals of `repeat` searches, each for a freshly drawn query."""
    times, totals = [], []
    for _ in range(repeat):
        query = make()
        started = time.perf_counter()
        found = await ix.search(query, limit=50, **options)
        times.append((time.perf_counter() - started) * 1000)
        totals.append(found.total)
    return sorted(times), totals


def report(label: str, times: Sequence[float], totals: Sequence[int]) -> None:
    print(
        f"  {label:44s} p50 {percentile(times, 50):7.2f} ms  p95 {percentile(times, 95):7.2f} ms"
        f"  max {max(times):7.2f} ms   matches {min(totals):,}..{max(totals):,}"
    )


async def bench(records: int, batch: int, repeat: int, directory: Path) -> None:
    server = RedisServer(directory).start()
    db = Database(connect(server.url, timeout=30), Keyspace("bench"))
    try:
        ix = Indexer(db, JOBS)
        before = int((await db.client.info("memory"))["used_memory"])
        started = time.perf_counter()
        await ix.add_many(jobs(records), batch=batch)
        took = time.perf_counter() - started
        after = int((await db.client.info("memory"))["used_memory"])
        keys = await db.client.dbsize()
        print(f"indexed {records:,} records in {took:.1f} s ({records / took:,.0f} records/s), {keys:,} keys")
        print(f"memory: {(after - before) / 2**20:,.1f} MiB used_memory, {(after - before) / records:.1f} B/record")

        span_days = (records * 30) / 86400
        rng = random.Random(2)

        def recent() -> str:  # a date in the last fifth of the data
            day = START_MS / 1000 + rng.uniform(0.8, 0.98) * span_days * 86400
            return time.strftime("%Y-%m-%d", time.gmtime(day))

        print(f"queries: limit 50, offset 0, sort _id desc unless noted; {repeat} runs each, different values")
        await ix.search("*")  # loads the script
        cases: list[tuple[str, Callable[[], str], dict[str, Any]]] = [
            ("event:X", lambda: f"event:{rng.choice(EVENTS)}", {}),
            ("event:X (offset 200)", lambda: f"event:{rng.choice(EVENTS[:20])}", {"offset": 200}),
            ("tags:Y date:>=D", lambda: f"tags:{rng.choice(TAGS)} date:>={recent()}", {}),
            (
                "PxQL (event|event) & (tags|code !~) & date >=",
                lambda: (
                    f'((event = "{rng.choice(EVENTS)}" | event = "{rng.choice(EVENTS)}") '
                    f'& (tags = "_error" | code !~ "0") & date >= "{recent()}")'
                ),
                {},
            ),
            ("category:C sorted by elapsed desc", lambda: f"category:c{rng.randrange(10)}", {"sort_by": "elapsed"}),
            ("* (all records)", lambda: "*", {}),
        ]
        for label, make, options in cases:
            report(label, *await timed(ix, make, options, repeat))
    finally:
        await db.aclose()
        server.stop()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="search index benchmark")
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=2000, help="records per atomic bulk write")
    parser.add_argument("--repeat", type=int, default=100, help="runs per query form")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-search-") as tmp:
        asyncio.run(bench(args.records, args.batch, args.repeat, Path(tmp)))


if __name__ == "__main__":
    main()
