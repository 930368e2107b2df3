"""Read throughput through the client (podium.AsyncClient) against 1, 2 and 3 nodes of one cluster, and the CPU
each request costs on a node, on the store and in the client, for a capacity model.

One valkey server and three `podium serve` nodes (access log off) on loopback. The script logs in as admin,
creates an admin API key and, for each node count, runs `--concurrency` tasks of one client calling
`get_global_state` (an authenticated read) back to back for `--duration` seconds after a short warm-up. CPU
is psutil's user + system time of each process, read before and after.

    python -m tests.bench.bench_client [--duration 5] [--concurrency 32] [--call get_global_state]

The client runs in this one process on the same cores as the nodes and the store, so on a small machine it is
part of what limits the figures: the CPU columns say how the time was shared.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

import psutil

from podium import AsyncClient
from tests.servers import Cluster

WARMUP_S = 1.0


def cpu(proc: psutil.Process) -> float:
    times = proc.cpu_times()
    return float(times.user + times.system)


async def load(client: AsyncClient, call: str, duration: float, concurrency: int) -> int:
    stop = time.monotonic() + duration
    count = 0

    async def worker() -> None:
        nonlocal count
        while time.monotonic() < stop:
            await client.call(call)
            count += 1

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return count


async def admin_key(c: Cluster) -> str:
    urls = [n.url for n in c.nodes]
    async with AsyncClient(urls, username="admin", password="admin") as admin:
        deadline = time.monotonic() + 60
        while True:  # the first start may still be creating the admin
            try:
                await admin.call("get_global_state")
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.5)
        reply = await admin.call("create_api_key", {"title": "bench", "privileges": {"admin": True}})
        return str(reply["plain_key"])


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-client-") as tmp:
        async with Cluster(Path(tmp), size=3, extra=("--access-log", "off")) as c:
            await c.wait_all_up()
            await c.wait_single_primary()
            key = await admin_key(c)
            assert c.redis.proc is not None
            store = psutil.Process(c.redis.proc.pid)
            me = psutil.Process()
            print(f"call {args.call}, {args.concurrency} concurrent calls, {args.duration:g} s per run, "
                  f"{psutil.cpu_count()} cores")  # fmt: skip
            print(f"{'nodes':>5} {'req/s':>8} {'node ms/req':>12} {'store us/req':>13} {'client ms/req':>14} "
                  f"{'node cpu %':>11} {'store cpu %':>12} {'client cpu %':>13}")  # fmt: skip
            for n in (1, 2, 3):
                nodes = [psutil.Process(node.pid) for node in c.nodes[:n]]
                async with AsyncClient([node.url for node in c.nodes[:n]], api_key=key) as client:
                    await load(client, args.call, WARMUP_S, args.concurrency)
                    before = [cpu(p) for p in nodes], cpu(store), cpu(me)
                    started = time.monotonic()
                    count = await load(client, args.call, args.duration, args.concurrency)
                    wall = time.monotonic() - started
                    node_s = sum(cpu(p) for p in nodes) - sum(before[0])
                    store_s, client_s = cpu(store) - before[1], cpu(me) - before[2]
                print(f"{n:>5} {count / wall:>8.0f} {node_s / count * 1e3:>12.3f} {store_s / count * 1e6:>13.1f} "
                      f"{client_s / count * 1e3:>14.3f} {node_s / wall * 100:>11.0f} {store_s / wall * 100:>12.0f} "
                      f"{client_s / wall * 100:>13.0f}")  # fmt: skip


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--call", default="get_global_state")
    return parser.parse_args()


if __name__ == "__main__":
    asyncio.run(main(parse()))
