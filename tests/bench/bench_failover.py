"""Failover times of a three-node cluster (one Redis, three `podium serve` processes) on loopback.

Hard failover, `--cycles` times: find the primary through /health, `kill -9` it, and time until another
node answers /health with 200 (each surviving node is polled every 20 ms); then restart the killed node
(same data dir, so the same node id), wait until it answers and the cluster has exactly one primary.

Clean handover, `--clean-cycles` times: SIGTERM the primary (Node.terminate, run beside the polling) and
time until another node answers /health with 200; restart it the same way.

The cycles start at a random point of the primary's renew period, so the figures cover its whole range.

    python -m tests.bench.bench_failover [--cycles 20] [--clean-cycles 5] [--lease-ms 3000]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import random
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from api.settings import DEFAULT_LEASE_MS
from tests.servers import Cluster, Node

POLL_S = 0.020
GIVE_UP_S = 60.0


@dataclass
class Cycle:
    number: int
    old: str  # node id of the primary that was stopped
    new: str  # node id of the node that answered 200 first ("" if none did in time)
    seconds: float | None  # from the signal to the first 200 from another node
    exit_s: float | None = None  # from the signal until the old process had exited (clean cycles)


def percentile(sorted_values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile of an ascending, non-empty sequence."""
    rank = max(1, math.ceil(pct / 100 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


async def first_new_primary(cluster: Cluster, survivors: list[Node], started: float) -> tuple[Node, float]:
    """Poll every survivor's /health every 20 ms; the first to answer 200 and when (perf_counter)."""
    found: asyncio.Future[tuple[Node, float]] = asyncio.get_running_loop().create_future()

    async def poll(node: Node) -> None:
        while not found.done():
            reply = await cluster.health(node)
            if reply is not None and reply[0] == 200:
                if not found.done():
                    found.set_result((node, time.perf_counter()))
                return
            await asyncio.sleep(POLL_S)

    pollers = [asyncio.create_task(poll(node)) for node in survivors]
    try:
        return await asyncio.wait_for(found, GIVE_UP_S - (time.perf_counter() - started))
    finally:
        for task in pollers:
            task.cancel()
        await asyncio.gather(*pollers, return_exceptions=True)


async def restart(cluster: Cluster, node: Node) -> None:
    """Start `node` again (same data dir and node id) and wait for a settled cluster with one primary."""
    node.start()
    await cluster.wait_for(lambda: cluster.health(node), timeout=GIVE_UP_S)
    await cluster.wait_single_primary(timeout=GIVE_UP_S)


Stopper = Callable[[Node], Coroutine[Any, Any, float | None]]


async def kill9(node: Node) -> float | None:
    node.kill9()
    return None


async def terminate(node: Node) -> float | None:
    """Node.terminate (SIGTERM, then wait for the exit) in a thread, so the polling runs meanwhile."""
    start = time.perf_counter()
    await asyncio.to_thread(node.terminate)
    return time.perf_counter() - start


async def one_cycle(cluster: Cluster, number: int, stop: Stopper) -> Cycle:
    old = await cluster.wait_single_primary(timeout=GIVE_UP_S)
    old_id = old.node_id
    # Land somewhere in the primary's renew period (lease/3), not always just after a renew.
    await asyncio.sleep(random.uniform(0.2, 1.2))
    survivors = [n for n in cluster.nodes if n is not old and n.running]
    started = time.perf_counter()
    stopping = asyncio.create_task(stop(old))
    try:
        new, at = await first_new_primary(cluster, survivors, started)
        cycle = Cycle(number, old_id, new.node_id, at - started)
    except TimeoutError:
        cycle = Cycle(number, old_id, "", None)
    cycle.exit_s = await stopping
    await restart(cluster, old)
    return cycle


def _fmt(cycle: Cycle) -> str:
    took = f"{cycle.seconds:6.3f} s" if cycle.seconds is not None else f"none within {GIVE_UP_S:.0f} s"
    new = cycle.new or "-"
    line = f"  cycle {cycle.number:>3}: primary {cycle.old} stopped, {new} answered 200 after {took}"
    if cycle.exit_s is not None:
        line += f"  (old process exited after {cycle.exit_s:.3f} s)"
    return line


def summary(title: str, cycles: list[Cycle], with_p99: bool) -> list[str]:
    times = sorted(c.seconds for c in cycles if c.seconds is not None)
    missed = len(cycles) - len(times)
    lines = [f"{title}: {len(cycles)} cycles, {missed} without a new primary within {GIVE_UP_S:.0f} s"]
    if times:
        parts = [f"min {times[0]:.3f}", f"median {statistics.median(times):.3f}"]
        if with_p99:
            parts.append(f"p99 {percentile(times, 99):.3f}")
        parts.append(f"max {times[-1]:.3f}")
        lines.append("  seconds: " + "  ".join(parts))
    return lines


async def run(root: Path, cycles: int, clean_cycles: int, lease_ms: int | None) -> list[str]:
    extra = ["--lease-ms", str(lease_ms)] if lease_ms is not None else []
    report: list[str] = []
    async with Cluster(root, size=3, extra=extra) as cluster:
        await cluster.wait_all_up(timeout=GIVE_UP_S)
        await cluster.wait_single_primary(timeout=GIVE_UP_S)
        print(f"cluster up: {len(cluster.nodes)} nodes, redis {cluster.redis.url}", flush=True)
        hard: list[Cycle] = []
        if cycles:
            print("kill -9 of the primary:", flush=True)
        for number in range(1, cycles + 1):
            hard.append(await one_cycle(cluster, number, kill9))
            print(_fmt(hard[-1]), flush=True)
        clean: list[Cycle] = []
        if clean_cycles:
            print("SIGTERM of the primary (clean handover):", flush=True)
        for number in range(1, clean_cycles + 1):
            clean.append(await one_cycle(cluster, number, terminate))
            print(_fmt(clean[-1]), flush=True)
        if hard:
            report += summary("kill -9 failover", hard, with_p99=True)
        if clean:
            report += summary("clean handover (SIGTERM)", clean, with_p99=False)
    return report


async def amain(args: argparse.Namespace) -> list[str]:
    # SIGTERM ends the run like Ctrl-C: the main task is cancelled and the Cluster stops every process.
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    with tempfile.TemporaryDirectory(prefix="podium-failover-") as tmp:
        return await run(Path(tmp), args.cycles, args.clean_cycles, args.lease_ms)


def main(argv: Sequence[str] | None = None) -> int:
    raw = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=raw)
    parser.add_argument("--cycles", type=int, default=20, help="kill -9 cycles (default 20)")
    parser.add_argument("--clean-cycles", type=int, default=5, help="SIGTERM cycles (default 5)")
    parser.add_argument("--lease-ms", type=int, help=f"lease for the nodes (default {DEFAULT_LEASE_MS})")
    args = parser.parse_args(argv)
    if args.cycles < 0 or args.clean_cycles < 0 or args.cycles + args.clean_cycles == 0:
        parser.error("--cycles and --clean-cycles must not be negative, and not both 0")
    lease = args.lease_ms if args.lease_ms is not None else DEFAULT_LEASE_MS
    print(f"Podium failover benchmark: 3 nodes + 1 Redis on loopback, lease {lease} ms, /health polled every "
          f"{POLL_S * 1000:.0f} ms per surviving node", flush=True)  # fmt: skip
    try:
        report = asyncio.run(amain(args))
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("interrupted; every process started was stopped", file=sys.stderr)
        return 130
    print()
    print("\n".join(report))
    return 0


if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError):
        sys.exit(main())
