"""Chaos: three nodes, three agents spread over them, 300 jobs of 1-5 s printing numbered lines. During the
run the primary is killed (-9) twice and paused (SIGSTOP) once, and a satellite holding agent sockets is killed.

Afterwards every job has exactly one final record with the code its plugin reported, its stored log has every
line once and in order, nothing is left active, and no job ran twice (each run appends its job id to a file
all agents share, being on this machine)."""

from __future__ import annotations

import asyncio
import random
import signal
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from storage.connection import Database, connect
from storage.keyspace import Keyspace
from tests.jobkit import SECRET, Jobs, agent
from tests.servers import Cluster, Node

pytestmark = pytest.mark.timeout(600)

JOBS = 300
SCRIPT = """#!/bin/sh
echo "$JOB_ID" >> "$runs"
i=1
while [ "$i" -le "$lines" ]; do echo "line $i"; i=$((i+1)); sleep 0.1; done
exit "$code"
"""


class Launcher:
    """Launches jobs through whichever node is primary, as a client that follows the primary would."""

    def __init__(self, c: Cluster, jobs: Jobs, event_id: str, runs: Path) -> None:
        self.c, self.jobs, self.event_id, self.runs = c, jobs, event_id, runs
        self.expected: dict[str, tuple[int, int]] = {}  # job id -> (lines, code)

    async def launch(self, seq: int) -> None:
        lines, code = random.randint(10, 50), (3 if seq % 10 == 0 else 0)
        body = {"id": self.event_id, "params": {"lines": str(lines), "code": str(code), "runs": str(self.runs)}}
        while True:
            for node in self.c.nodes:
                if not node.running:
                    continue
                try:
                    status, data = await asyncio.wait_for(self.jobs.call(node, "run_event", body), 5)
                except (aiohttp.ClientError, OSError, TimeoutError, ValueError):
                    continue
                if status == 200 and data.get("code") == 0:
                    self.expected[str(data["id"])] = (lines, code)
                    return
            await asyncio.sleep(0.2)


async def primary_of(c: Cluster) -> Node:
    return await c.wait_single_primary(timeout=60)


async def chaos(c: Cluster, restart_after: float = 4.0) -> list[str]:
    """The faults, spaced over the launch window; every killed node is started again."""
    done: list[str] = []

    async def kill_primary() -> None:
        node = await primary_of(c)
        node.kill9()
        done.append(f"kill -9 primary node{node.index}")
        await asyncio.sleep(restart_after)
        node.start()

    # First a satellite holding agent sockets (at the start every node holds one: agent i joined node i).
    await asyncio.sleep(4)
    primary = await primary_of(c)
    holders = await socket_holders(c)
    victim = next((n for n in c.nodes if n is not primary and n.running and n.node_id in holders), None)
    assert victim is not None, f"no satellite holds an agent socket: {holders}"
    victim.kill9()
    done.append(f"kill -9 satellite node{victim.index} holding {holders[victim.node_id]} agent socket(s)")
    await asyncio.sleep(restart_after)
    victim.start()
    await asyncio.sleep(3)
    await kill_primary()
    await asyncio.sleep(5)
    node = await primary_of(c)
    node.signal(signal.SIGSTOP)
    done.append(f"SIGSTOP primary node{node.index}")
    await asyncio.sleep(6)
    node.signal(signal.SIGCONT)
    await asyncio.sleep(5)
    await kill_primary()
    return done


async def socket_holders(c: Cluster) -> Counter[str]:
    db = Database(connect(c.redis.url), Keyspace("podium"))
    try:
        owners: Any = await db.client.hgetall(db.keys.servers_owner)
    finally:
        await db.aclose()
    return Counter(v.decode().split("|")[0] for v in owners.values())


async def test_jobs_survive_the_death_of_any_node(tmp_path: Path) -> None:
    extra = ("--secret-key", SECRET, "--dead-job-timeout", "120")
    async with Cluster(tmp_path, size=3, extra=extra) as c:
        await c.wait_all_up()
        primary = await primary_of(c)
        jobs = await Jobs.login(c, primary)
        urls = [n.url for n in c.nodes]
        agents = [agent(tmp_path, f"c{i}", *(urls[i:] + urls[:i])).start() for i in range(3)]
        runs = tmp_path / "runs.txt"
        try:
            await jobs.wait_servers(primary, 3)
            event_id = await jobs.event(primary, SCRIPT, params={"script": SCRIPT, "annotate": False})
            launcher = Launcher(c, jobs, event_id, runs)

            async def launch_all() -> None:
                for seq in range(JOBS):
                    await launcher.launch(seq)
                    await asyncio.sleep(0.1)

            faults, _ = await asyncio.gather(chaos(c), launch_all())
            print("faults:", faults)
            await verify(c, jobs, launcher, runs)
        finally:
            for a in agents:
                a.terminate()


async def verify(c: Cluster, jobs: Jobs, launcher: Launcher, runs: Path) -> None:
    deadline = time.monotonic() + 300
    while True:
        node = await primary_of(c)
        active = (await jobs.ok(node, "get_active_jobs", {"limit": 1000}, method="GET"))["rows"]
        if not active:
            break
        assert time.monotonic() < deadline, f"{len(active)} jobs still active: {[j['state'] for j in active][:20]}"
        await asyncio.sleep(1.0)
    node = await primary_of(c)
    found = (await jobs.ok(node, "search_jobs", {"query": "*", "limit": 1000}, method="GET"))
    records = {r["id"]: r for r in found["rows"]}
    assert found["list"]["length"] == len(records) >= len(launcher.expected) == JOBS
    ran = Counter((await asyncio.to_thread(runs.read_text)).split())
    twice = [j for j, n in ran.items() if n > 1]
    assert not twice, f"jobs that ran twice: {twice}"
    problems = []
    for job_id, (lines, code) in launcher.expected.items():
        job = records.get(job_id)
        if job is None:
            problems.append(f"{job_id}: no final record")
            continue
        if job.get("code") != code:
            problems.append(f"{job_id}: code {job.get('code')!r} ({job.get('description')}), expected {code}")
            continue
        log = await jobs.log(node, job_id)
        want = "".join(f"line {i}\n" for i in range(1, lines + 1))
        if log != want:
            problems.append(f"{job_id}: log of {len(log)} bytes, expected {len(want)}: {log[-200:]!r}")
    assert not problems, f"{len(problems)} bad jobs: " + "; ".join(problems[:10])
    for job_id in records.keys() - launcher.expected.keys():  # a launch whose reply was lost: it ran once too
        assert ran[job_id] == 1 or records[job_id].get("code") == "abort", records[job_id]
