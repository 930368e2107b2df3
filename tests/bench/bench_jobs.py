"""Jobs end to end: throughput, launch latency, a big log, and many running jobs. Prints figures.

Starts real `podium serve` nodes (access log off) on one Redis server and real `podium agent` processes, all on
127.0.0.1, and stops every process it started when it ends.

(a) `throughput`: trivial jobs (`[shell-plugin]` running `true`) launched by `--clients` concurrent callers for
    `--duration` seconds, on one node with its own agent and on three nodes with three agents (agents spread over
    the nodes). Prints launches and completions per second, and CPU seconds per completed job of the node
    processes (the conductor: dispatch, state changes, updates, finish, indexing), of the agents (which spawn
    the plugins) and of Redis. The cost of a bare asyncio spawn of `/bin/sh -c true` is measured apart.
(b) `latency`: from the `run_event` reply to the plugin's first output line (the plugin prints its clock),
    p50/p99 over `--samples` jobs, one at a time.
(c) `biglog`: one job printing `--log-mb` MB: MB/s from launch to the stored log, and node CPU.
(d) `many`: `--running` jobs (`sleep --hold`) at once on three agents, measured `--settle` s after they all run
    (their timelines fill up meanwhile): the primary's CPU, the agents' CPU (measuring every job's process tree
    each second) and Redis commands per second while they run, and the size of one running job's stored record.

    python -m tests.bench.bench_jobs                 # everything
    python -m tests.bench.bench_jobs throughput --duration 10
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import orjson

from storage.connection import Database, connect
from storage.keyspace import Keyspace
from tests.bench.loadgen import process_cpu_seconds
from tests.jobkit import SECRET, Jobs, agent
from tests.servers import AgentProcess, Cluster, Node

TRUE = "#!/bin/sh\ntrue\n"


def pct(values: Sequence[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))] if ordered else 0.0


def cpu(pids: Sequence[int]) -> float:
    return sum(process_cpu_seconds(p) or 0.0 for p in pids)


def children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


@contextlib.asynccontextmanager
async def topology(
    root: Path, nodes: int, agents: int, own_agent: bool, extra_args: Sequence[str] = ()
) -> AsyncIterator[tuple[Cluster, Jobs, list[AgentProcess]]]:
    """`nodes` nodes (each with its own agent if `own_agent`) and `agents` agent processes; `extra_args` go to
    every `podium serve`."""
    extra = ("--secret-key", SECRET, "--access-log", "off", "--job-max-rows", "0", *extra_args)
    env = {"PODIUM_AGENT": "on" if own_agent else "off"}
    async with Cluster(root, size=nodes, extra=extra, env=env) as c:
        await c.wait_all_up(60)
        primary = await c.wait_single_primary(60)
        jobs = await Jobs.login(c, primary)
        urls = [n.url for n in c.nodes]
        procs = [agent(root, f"b{i}", *(urls[i % nodes :] + urls[: i % nodes])).start() for i in range(agents)]
        try:
            await jobs.wait_servers(primary, agents + (1 if own_agent else 0), timeout=60)
            yield c, jobs, procs
        finally:
            for proc in procs:
                proc.terminate()


async def redis_ops(c: Cluster) -> tuple[int, float]:
    db = Database(connect(c.redis.url), Keyspace("podium"))
    try:
        info: Any = await db.client.info("stats")
        cpu_info: Any = await db.client.info("cpu")
    finally:
        await db.aclose()
    return int(info["total_commands_processed"]), float(cpu_info["used_cpu_sys"]) + float(cpu_info["used_cpu_user"])


async def completed(jobs: Jobs, node: Node) -> int:
    return int((await jobs.ok(node, "search_jobs", {"query": "*", "limit": 1}, method="GET"))["list"]["length"])


async def throughput(root: Path, nodes: int, agents: int, own: bool, clients: int, duration: float,
                     window: int) -> None:  # fmt: skip
    """Sustained: callers launch while fewer than `window` launched jobs are unfinished, so the rate measured is
    what the whole pipeline completes, not how fast jobs pile up."""
    async with topology(root, nodes, agents, own) as (c, jobs, procs):
        primary = await c.wait_single_primary()
        event = await jobs.event(primary, TRUE)
        node_pids = [n.pid for n in c.nodes]
        agent_pids = [p.proc.pid for p in procs if p.proc] + [k for n in c.nodes for k in children(n.pid)]
        launched, done = 0, 0
        done0 = await completed(jobs, primary)
        stop = time.monotonic() + duration

        async def client() -> None:
            nonlocal launched
            while time.monotonic() < stop:
                if launched - done >= window:
                    await asyncio.sleep(0.005)
                    continue
                launched += 1
                status, data = await jobs.call(primary, "run_event", {"id": event})
                if status != 200 or data.get("code") != 0:
                    launched -= 1

        async def counter() -> None:
            nonlocal done
            while time.monotonic() < stop + 60 and (time.monotonic() < stop or done < launched):
                done = await completed(jobs, primary) - done0
                await asyncio.sleep(0.05)

        ops0, rcpu0 = await redis_ops(c)
        cpu0, acpu0, t0 = cpu(node_pids), cpu(agent_pids), time.monotonic()
        count = asyncio.create_task(counter())
        await asyncio.gather(*(client() for _ in range(clients)))
        await count
        elapsed = time.monotonic() - t0
        ops1, rcpu1 = await redis_ops(c)
        ncpu, acpu = cpu(node_pids) - cpu0, cpu(agent_pids) - acpu0
        codes = await jobs.ok(primary, "search_jobs", {"query": "code:0", "limit": 1}, method="GET")
        print(f"  {nodes} node(s), {agents + own} agent(s), {clients} clients, at most {window} unfinished, "
              f"{duration:.0f} s: {done / elapsed:.0f} jobs/s launched and completed ({done} jobs in {elapsed:.1f} s; "
              f"{codes['list']['length']} with code 0)")  # fmt: skip
        if done:
            print(
                f"    CPU per job: nodes {ncpu / done * 1000:.2f} ms, agents {acpu / done * 1000:.2f} ms, "
                f"redis {(rcpu1 - rcpu0) / done * 1000:.2f} ms; redis commands per job {(ops1 - ops0) / done:.0f}"
            )


async def bare_spawn(count: int = 500) -> None:
    t0, c0 = time.monotonic(), time.process_time()
    for _ in range(count):
        proc = await asyncio.create_subprocess_exec("/bin/sh", "-c", "true")
        await proc.wait()
    wall = time.monotonic() - t0
    print(
        f"  bare asyncio spawn of /bin/sh -c true, one at a time: {count / wall:.0f}/s, "
        f"{wall / count * 1000:.2f} ms each ({(time.process_time() - c0) / count * 1000:.2f} ms CPU in the parent)"
    )


async def latency(root: Path, samples: int) -> None:
    async with topology(root, 1, 0, True) as (c, jobs, _procs):
        primary = c.nodes[0]
        event = await jobs.event(primary, "#!/bin/sh\ndate +%s.%N\n")
        gaps = []
        for _ in range(samples):
            status, data = await jobs.call(primary, "run_event", {"id": event})
            replied = time.time()
            assert status == 200, data
            await jobs.wait_job(primary, data["id"])
            first = (await jobs.log(primary, data["id"])).split("\n", 1)[0]
            gaps.append((float(first) - replied) * 1000)
        print(
            f"  run_event reply -> first output line, {samples} jobs: p50 {statistics.median(gaps):.1f} ms, "
            f"p99 {pct(gaps, 99):.1f} ms, max {max(gaps):.1f} ms"
        )


async def biglog(root: Path, mb: int) -> None:
    async with topology(root, 1, 0, True) as (c, jobs, _procs):
        primary = c.nodes[0]
        script = f"#!/bin/sh\nhead -c {mb * 1000 * 1000} /dev/zero | tr '\\0' 'x' | fold -w 99\n"
        event = await jobs.event(primary, script)
        cpu0, t0 = cpu([primary.pid]), time.monotonic()
        job_id = await jobs.run(primary, event)
        job = await jobs.wait_job(primary, job_id, timeout=600)
        elapsed = time.monotonic() - t0
        size = int(job.get("log_file_size") or 0)
        print(f"  one job printing {mb} MB: {size / 1e6:.0f} MB stored in {elapsed:.1f} s = {size / 1e6 / elapsed:.1f}"
              f" MB/s; node CPU {cpu([primary.pid]) - cpu0:.1f} s; code {job.get('code')}")  # fmt: skip


async def many(root: Path, running: int, hold: int, settle: float) -> None:
    async with topology(root, 3, 3, False) as (c, jobs, procs):
        primary = await c.wait_single_primary()
        event = await jobs.event(primary, f"#!/bin/sh\necho started\nsleep {hold}\n")
        agent_pids = [p.proc.pid for p in procs if p.proc]
        ids = [await jobs.run(primary, event) for _ in range(running)]
        deadline = time.monotonic() + 120
        while True:
            rows = await jobs.ok(primary, "get_active_jobs", {"state": "active", "limit": 1}, method="GET")
            if rows["list"]["length"] >= running or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.5)
        await asyncio.sleep(settle)
        ops0, rcpu0 = await redis_ops(c)
        cpu0, acpu0, t0 = cpu([primary.pid]), cpu(agent_pids), time.monotonic()
        await asyncio.sleep(15)
        ops1, rcpu1 = await redis_ops(c)
        wall = time.monotonic() - t0
        share, rshare = (cpu([primary.pid]) - cpu0) / wall * 100, (rcpu1 - rcpu0) / wall * 100
        ashare = (cpu(agent_pids) - acpu0) / wall * 100
        size = len(orjson.dumps(await jobs.job(primary, ids[0])))
        print(
            f"  {rows['list']['length']} jobs running on 3 agents: primary CPU {share:.0f} % of a core, "
            f"agents {ashare:.0f} % together, redis {(ops1 - ops0) / wall:.0f} commands/s, redis CPU {rshare:.0f} %;"
            f" one job's record {size / 1024:.1f} KiB as JSON"
        )


async def main_async(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="podium-bench-jobs-") as tmp:
        root = Path(tmp)
        what = args.what
        if what in ("all", "throughput"):
            print("(a) throughput")
            await bare_spawn()
            await throughput(root / "a1", 1, 0, True, args.clients, args.duration, args.window)
            await throughput(root / "a3", 3, 3, False, args.clients, args.duration, args.window)
        if what in ("all", "latency"):
            print("(b) latency")
            await latency(root / "b", args.samples)
        if what in ("all", "biglog"):
            print("(c) big log")
            await biglog(root / "c", args.log_mb)
        if what in ("all", "many"):
            print("(d) many running jobs")
            await many(root / "d", args.running, args.hold, args.settle)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("what", nargs="?", default="all", choices=["all", "throughput", "latency", "biglog", "many"])
    parser.add_argument("--duration", type=float, default=30.0)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--window", type=int, default=100, help="most launched jobs not yet complete")
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--log-mb", type=int, default=100)
    parser.add_argument("--running", type=int, default=1000)
    parser.add_argument("--hold", type=int, default=60, help="seconds each of the many jobs runs")
    parser.add_argument("--settle", type=float, default=3.0,
                        help="seconds between all of them running and the measurement (their timelines fill up)")
    args = parser.parse_args(argv)
    asyncio.run(main_async(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
