"""Protocol compatibility: a foreign agent (tests/foreign_agent.py, written from the reference's frames, behaving
as xySat does) on the primary and on a satellite: it is sent to the primary, receives `launch_job`, reports,
uploads a file and finishes; the job completes with its code, its output, its data and its file."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.foreign_agent import ForeignAgent
from tests.jobkit import SECRET, Jobs
from tests.servers import Cluster, Node

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    # Two loopback addresses on one port: xySat follows a redirect to another host on its own port.
    async with Cluster(tmp_path, size=2, extra=("--secret-key", SECRET), hosts=("127.0.0.1", "127.0.0.2")) as c:
        await c.ready()
        yield c


async def wait_for(predicate: object, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not met"
        await asyncio.sleep(0.05)


async def run_one(jobs: Jobs, node: Node, agent: ForeignAgent) -> dict[str, object]:
    event = await jobs.event(node, "#!/bin/sh\necho ignored\n", targets=[agent.server_id])
    job_id = await jobs.run(node, event)
    job = await jobs.wait_job(node, job_id, timeout=60)
    assert job_id in agent.launched and job_id in agent.finished
    return job


@pytest.mark.parametrize("where", ["primary", "satellite"])
async def test_foreign_agent_runs_and_finishes_a_job(cluster: Cluster, where: str) -> None:
    primary = await cluster.wait_single_primary()
    satellite = next(n for n in cluster.nodes if n is not primary)
    first = primary if where == "primary" else satellite
    jobs = await Jobs.login(cluster, primary)
    agent = await ForeignAgent(first.host, first.port, SECRET, lines=3).start()
    try:
        await wait_for(lambda: bool(agent.masters))
        # On a satellite the agent is redirected to the primary, where it joins.
        assert agent.hosts_seen[-1] == primary.host
        assert agent.hosts_seen[0] == first.host
        assert primary.host in agent.masters and set(agent.masters) <= {"127.0.0.1", "127.0.0.2"}
        rows = await jobs.wait_servers(satellite, 1)  # every node answers
        assert rows[0]["id"] == agent.server_id and rows[0]["hostname"] == "foreign.example"
        job = await run_one(jobs, primary, agent)
        assert job["code"] == 0 and job["server"] == agent.server_id, job
        assert job["data"] == {"answer": 42}
        server = (await jobs.ok(satellite, "get_server", {"id": agent.server_id}, method="GET"))["server"]
        assert server["userData"] == {"last_job": job["id"]}  # a job's serverData joins its server's userData
        files = job["files"]
        assert isinstance(files, list) and len(files) == 1 and files[0]["filename"] == "report.txt"
        log = await jobs.log(satellite, str(job["id"]))
        assert log == "line 1\nline 2\nline 3\n", log
        assert cluster.http is not None
        async with cluster.http.get(f"{satellite.url}/{files[0]['path']}", headers=jobs.headers) as resp:
            assert resp.status == 200 and await resp.read() == b"report from a foreign agent\n"
        # A second, failing job: the code the agent reports is the job's.
        agent.code = 7
        failed = await run_one(jobs, primary, agent)
        assert failed["code"] == 7 and "_error" in failed["tags"]  # type: ignore[operator]
    finally:
        await agent.stop()


async def test_a_bad_secret_is_an_auth_failure(cluster: Cluster) -> None:
    primary = await cluster.wait_single_primary()
    agent = await ForeignAgent(primary.host, primary.port, "not-the-secret").start()
    try:
        await wait_for(lambda: bool(agent.auth_failed))
        assert agent.auth_failed == "Authentication failed." and not agent.masters
    finally:
        await agent.stop()
