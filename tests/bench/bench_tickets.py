"""search_tickets benchmark: N tickets created through the ticket store (the fenced create script, its number
counter and the `tickets` index) in a private valkey-server, then timed searches.

Prints the create rate and p50/p95 latency of a column query (`status:S assignees:U`), a bare-word query (words of
subjects and bodies) and a sort by `num`, each run with many different values. Latency is measured in this process
around `TicketStore.search` (parse, one script call, the page's records): what `search_tickets` spends in the
store, without HTTP.

    python -m tests.bench.bench_tickets                   # 100,000 tickets
    python -m tests.bench.bench_tickets --tickets 20000 --repeat 200
"""

from __future__ import annotations

import argparse
import asyncio
import random
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from storage.connection import Database, connect
from storage.fence import Fence
from storage.keyspace import Keyspace
from storage.lease import LeaseStore
from storage.tickets import TicketStore
from tests.bench.loadgen import percentile
from tests.servers import RedisServer

USERS = [f"user{n}" for n in range(50)]
WORDS = [f"{stem}{n}" for stem in ("disk", "backup", "latency", "deploy", "cert", "queue", "login", "memory")
         for n in range(60)]  # fmt: skip
TYPES = ["issue", "feature", "release", "change", "maintenance", "question", "other"]
STATUSES = ["open", "open", "open", "closed", "draft"]


def ticket(rng: random.Random, i: int, now: int) -> dict[str, Any]:
    subject = " ".join(rng.sample(WORDS, 5))
    body = " ".join(rng.choices(WORDS, k=40))
    created = now - rng.randrange(0, 365 * 86400)
    return {"id": f"tb{i:07d}", "subject": subject, "body": body, "type": rng.choice(TYPES),
            "status": rng.choice(STATUSES), "category": f"c{rng.randrange(10)}", "server": f"s{rng.randrange(100)}",
            "assignees": rng.sample(USERS, rng.choice([0, 1, 1, 2])), "cc": rng.sample(USERS, rng.choice([0, 1])),
            "notify": [], "due": 0, "tags": [], "events": [], "files": [], "username": rng.choice(USERS),
            "created": created, "modified": created + rng.randrange(0, 86400), "jobs": [], "alerts": [],
            "changes": [{"type": "change", "username": "system", "date": created, "key": "created"}]}  # fmt: skip


async def timed(store: TicketStore, make: Callable[[], str], options: dict[str, Any],
                repeat: int) -> tuple[list[float], list[int]]:  # fmt: skip
    times, totals = [], []
    for _ in range(repeat):
        query = make()
        started = time.perf_counter()
        _, total = await store.search(query, 0, 50, -1, **options)
        times.append((time.perf_counter() - started) * 1000)
        totals.append(total)
    return sorted(times), totals


def report(label: str, times: Sequence[float], totals: Sequence[int]) -> None:
    print(f"  {label:40s} p50 {percentile(times, 50):7.2f} ms  p95 {percentile(times, 95):7.2f} ms"
          f"  max {max(times):7.2f} ms   matches {min(totals):,}..{max(totals):,}")  # fmt: skip


async def bench(count: int, repeat: int, concurrency: int, directory: Path) -> None:
    server = RedisServer(directory).start()
    db = Database(connect(server.url, timeout=30), Keyspace("bench"))
    try:
        leases = LeaseStore(db)
        state = await leases.acquire("bench", 3_600_000)
        fence = Fence(db, "bench", state.epoch)
        store = TicketStore(db)
        rng, now = random.Random(1), int(time.time())
        records = [ticket(rng, i, now) for i in range(count)]
        started = time.perf_counter()
        for start in range(0, count, concurrency):
            await asyncio.gather(*(store.create(fence, r) for r in records[start:start + concurrency]))
        took = time.perf_counter() - started
        used = int((await db.client.info("memory"))["used_memory"])
        print(f"created {count:,} tickets in {took:.1f} s ({count / took:,.0f}/s, {concurrency} at a time); "
              f"{used / count:,.0f} B/ticket used_memory")  # fmt: skip
        print(f"queries: limit 50, offset 0; {repeat} runs each, different values")
        q = random.Random(2)
        cases: list[tuple[str, Callable[[], str], dict[str, Any]]] = [
            ("column: status:S assignees:U", lambda: f"status:{q.choice(STATUSES)} assignees:{q.choice(USERS)}", {}),
            ("column: type:T category:C", lambda: f"type:{q.choice(TYPES)} category:c{q.randrange(10)}", {}),
            ("bare words: two words", lambda: f"{q.choice(WORDS)} {q.choice(WORDS)}", {}),
            ("bare word, sorted by num", lambda: q.choice(WORDS), {"sort_by": "num"}),
            ("* sorted by modified", lambda: "*", {"sort_by": "modified"}),
        ]
        await store.search("*", 0, 1)
        for label, make, options in cases:
            report(label, *await timed(store, make, options, repeat))
    finally:
        await db.aclose()
        server.stop()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="search_tickets benchmark")
    parser.add_argument("--tickets", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=100, help="runs per query form")
    parser.add_argument("--concurrency", type=int, default=32, help="creates in flight")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-tickets-") as tmp:
        asyncio.run(bench(args.tickets, args.repeat, args.concurrency, Path(tmp)))


if __name__ == "__main__":
    main()
