"""`podium serve --workers N` (api/workers.py): real node processes, each with HTTP workers on its one port.

A request on a fresh connection lands on whichever process the kernel picks (SO_REUSEPORT), and later requests
on the same keep-alive connection stay with it, so each check first asks /health which process holds the
connection, then makes its call there.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.servers import Cluster, Node

pytestmark = pytest.mark.asyncio

WORKERS = {"PODIUM_WORKERS": "2"}


class Pinned:
    """One keep-alive connection to one node: every call on it reaches the same process."""

    def __init__(self, node: Node, headers: dict[str, str]) -> None:
        self.node = node
        self.headers = headers
        self.http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1),
                                          timeout=aiohttp.ClientTimeout(total=10))  # fmt: skip

    async def health(self) -> dict[str, Any]:
        async with self.http.get(self.node.url + "/health") as resp:
            data: dict[str, Any] = await resp.json()
            return data

    async def post(self, api: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        async with self.http.post(f"{self.node.url}/api/app/{api}/v1", json=body, headers=self.headers) as resp:
            return resp.status, await resp.json()

    async def get(self, api: str, **query: str) -> tuple[int, dict[str, Any]]:
        async with self.http.get(f"{self.node.url}/api/app/{api}/v1", params=query, headers=self.headers) as resp:
            return resp.status, await resp.json()

    async def close(self) -> None:
        await self.http.close()


async def pinned_to(node: Node, worker: int, headers: dict[str, str], tries: int = 200) -> Pinned:
    """A connection to `node` held by its process number `worker` (new connections until one lands there)."""
    for _ in range(tries):
        conn = Pinned(node, headers)
        try:
            if (await conn.health())["worker"] == worker:
                return conn
        except (aiohttp.ClientError, TimeoutError, KeyError):
            pass
        await conn.close()
        await asyncio.sleep(0.01)
    raise AssertionError(f"no connection to {node.url} reached worker {worker} in {tries} tries")


async def worker_pids(node: Node, tries: int = 60) -> dict[int, int]:
    """worker index -> pid, from the /health of many fresh connections."""
    seen: dict[int, int] = {}
    for _ in range(tries):
        conn = Pinned(node, {})
        try:
            h = await conn.health()
            seen[int(h["worker"])] = int(h["pid"])
        except (aiohttp.ClientError, TimeoutError):
            pass
        finally:
            await conn.close()
    return seen


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").exists() and " Z " not in Path(f"/proc/{pid}/stat").read_text()


def event(title: str) -> dict[str, Any]:
    return {"title": title, "enabled": True, "category": "general", "plugin": "shellplug", "targets": ["main"],
            "triggers": [{"type": "manual", "enabled": True}], "params": {"script": "true"}}  # fmt: skip


@pytest.fixture
async def one_node(tmp_path: Path) -> AsyncIterator[Cluster]:
    async with Cluster(tmp_path, size=1, env=WORKERS) as c:
        await c.ready(60)
        yield c


async def test_every_worker_serves_reads_and_fenced_writes_on_the_primary(one_node: Cluster) -> None:
    c = one_node
    node = c.nodes[0]
    admin = await c.admin_session(node)
    for worker in (0, 1):
        conn = await pinned_to(node, worker, admin)
        try:
            h = await conn.health()
            assert (h["worker"], h["node"], h["role"]) == (worker, node.node_id, "primary")
            status, reply = await conn.post("create_event", event(f"from worker {worker}"))
            assert status == 200 and reply["code"] == 0, reply
            assert (await conn.health())["worker"] == worker  # the write was made by that process
            status, got = await conn.get("get_event", id=reply["event"]["id"])
            assert status == 200 and got["event"]["title"] == f"from worker {worker}"
        finally:
            await conn.close()
    epochs = set()
    for worker in (0, 1):
        conn = await pinned_to(node, worker, admin)
        epochs.add((await conn.health())["epoch"])
        await conn.close()
    assert len(epochs) == 1  # the workers know the node process's epoch
    await asyncio.sleep(0.5)  # access lines are written within 0.1 s
    lines = [line for line in node.log_text().splitlines() if '"event": "access"' in line or '"access"' in line]
    assert len(lines) > 10
    for line in lines:
        json.loads(line)  # both processes write to the node's stdout: no line is cut into by another


async def test_a_worker_hands_service_calls_to_the_node_process(one_node: Cluster) -> None:
    node = one_node.nodes[0]
    admin = await one_node.admin_session(node)
    conn = await pinned_to(node, 1, admin)
    try:
        status, reply = await conn.post("test_internal_job", {"duration": 1})
        assert status == 200 and reply["code"] == 0, reply
        status, running = await conn.get("get_internal_jobs", all="1")
        assert status == 200 and reply["id"] in [row["id"] for row in running["rows"]]
        status, bad = await conn.post("test_internal_job", {"duration": 0})  # the node process validates too
        assert status == 400 and bad["code"] == "api"
    finally:
        await conn.close()


async def test_a_job_launched_through_a_worker_is_dispatched(one_node: Cluster) -> None:
    """A launch is placed by the node process's dispatcher (here: aborted at once, since no agent runs)."""
    node = one_node.nodes[0]
    admin = await one_node.admin_session(node)
    conn = await pinned_to(node, 1, admin)
    try:
        status, made = await conn.post("create_event", event("launched by a worker"))
        assert status == 200, made
        status, run = await conn.post("run_event", {"id": made["event"]["id"]})
        assert status == 200 and run["code"] == 0, run

        async def finished() -> dict[str, Any] | None:
            _, got = await conn.get("get_job", id=run["id"])
            return got["job"] if got.get("job", {}).get("state") == "complete" else None

        job = await one_node.wait_for(finished, 30, interval=0.2)
        assert job["description"] == "No available servers matching targets."
    finally:
        await conn.close()


async def test_a_dead_worker_is_started_again_and_workers_end_with_their_node(one_node: Cluster) -> None:
    node = one_node.nodes[0]
    pids = await one_node.wait_for(lambda: _both(node), 30)
    os.kill(pids[1], signal.SIGKILL)

    async def replaced() -> dict[int, int] | None:
        now = await worker_pids(node, 10)
        return now if now.get(1) not in (None, pids[1]) else None

    now = await one_node.wait_for(replaced, 30, interval=0.2)
    assert now[0] == pids[0] == node.pid
    node.kill9()  # the node process: its workers must not outlive it

    async def gone() -> bool:
        return not alive(now[1])

    await one_node.wait_for(gone, 30, interval=0.1)


async def _both(node: Node) -> dict[int, int] | None:
    seen = await worker_pids(node, 20)
    return seen if set(seen) == {0, 1} else None


async def test_a_worker_of_a_deposed_node_refuses_writes(tmp_path: Path) -> None:
    async with Cluster(tmp_path, size=2, env=WORKERS, extra=["--lease-ms", "1500"]) as c:
        first = await c.ready(60)
        other = next(n for n in c.nodes if n is not first)
        admin = await c.admin_session(first)
        conn = await pinned_to(first, 1, admin)
        try:
            status, reply = await conn.post("create_event", event("before"))
            assert status == 200, reply
            first.pause()  # the node process only: its worker keeps answering
            try:
                await c.wait_single_primary(30, nodes=[other])
                status, refused = await conn.post("create_event", event("while deposed"))
                assert refused["code"] == "master", refused
                assert (await conn.health())["role"] == "satellite"
            finally:
                first.resume()
            status, listed = await conn.get("get_events")
            assert status == 200, listed
            titles = {e["title"] for e in listed["rows"]}
            assert "before" in titles and "while deposed" not in titles
        finally:
            await conn.close()


async def test_metrics_count_the_requests_of_every_process(one_node: Cluster) -> None:
    """A scrape reaches any process; it answers with the node's figures: its own requests and its workers'."""
    node = one_node.nodes[0]
    counted: dict[int, int] = {}
    for worker in (0, 1):
        conn = await pinned_to(node, worker, {})
        try:
            for _ in range(25 + 10 * worker):
                status, _ = await conn.get("ping")
                assert status == 200
            counted[worker] = 25 + 10 * worker
        finally:
            await conn.close()

    async def scraped(worker: int) -> float:
        conn = await pinned_to(node, worker, {})
        try:
            async with conn.http.get(node.url + "/metrics") as resp:
                text = await resp.text()
        finally:
            await conn.close()
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                   if line.startswith('podium_requests_total{api="ping",code="0"}'))  # fmt: skip

    async def complete() -> bool:  # a worker writes its counts every 2 s
        return all([await scraped(w) >= sum(counted.values()) for w in (0, 1)])

    await one_node.wait_for(complete, 30, interval=0.5)
