"""Exactly-once scheduling across failovers: three real nodes, an event due every second, a primary that
is killed (kill -9) and paused (SIGSTOP) while it runs. Afterwards every second has exactly one job."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.servers import Cluster, Node

RUN_S = 64


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    async with Cluster(tmp_path, size=3) as c:
        await c.wait_all_up()
        await c.wait_single_primary()
        yield c


async def post(c: Cluster, node: Node, api: str, body: dict[str, Any], headers: dict[str, str],
               ns: str = "app") -> tuple[int, dict[str, Any]]:  # fmt: skip
    assert c.http is not None
    async with c.http.post(f"{node.url}/api/{ns}/{api}/v1", json=body, headers=headers) as resp:
        data: dict[str, Any] = await resp.json()
        return resp.status, data


async def on_primary(c: Cluster, api: str, body: dict[str, Any], headers: dict[str, str]) -> dict[str, Any]:
    """Call a write on whichever node is primary now (following failovers)."""
    deadline = time.monotonic() + 60
    while True:
        primary = await c.wait_single_primary(timeout=60)
        try:
            status, data = await post(c, primary, api, body, headers)
        except Exception:  # the primary may die under us; ask again
            status, data = 0, {}
        if status == 200:
            return data
        assert status in (0, 500, 503), f"{api} refused: {status} {data}"  # only failover is worth a retry
        assert time.monotonic() < deadline, f"{api} kept failing: {status} {data}"
        await asyncio.sleep(0.2)


async def login(c: Cluster) -> dict[str, str]:
    assert c.http is not None
    while True:
        primary = await c.wait_single_primary()
        async with c.http.post(f"{primary.url}/api/user/login/v1",
                               json={"username": "admin", "password": "admin"}) as resp:  # fmt: skip
            if resp.status == 200:
                sid = resp.cookies["session_id"].value
                c.http.cookie_jar.clear()
                return {"X-Session-ID": sid}
        await asyncio.sleep(0.2)


async def test_every_second_exactly_once_across_failovers(cluster: Cluster) -> None:
    admin = await login(cluster)
    start = int(time.time())
    event = {
        "title": "Every second", "enabled": True, "category": "general", "plugin": "shellplug",
        "targets": ["main"], "algo": "random", "params": {"script": "#!/bin/sh\necho tick"},
        "triggers": [{"type": "interval", "enabled": True, "start": start, "duration": 1}],
    }  # fmt: skip
    created = await on_primary(cluster, "create_event", event, admin)
    event_id = created["event"]["id"]

    async def chaos() -> None:
        await asyncio.sleep(12)
        for step in ("kill", "pause", "kill", "pause"):
            victim = await cluster.wait_single_primary(timeout=60)
            if step == "kill":
                victim.kill9()
                await asyncio.sleep(4)
                victim.start()
            else:
                victim.pause()
                await asyncio.sleep(5)  # longer than the lease: another node takes over meanwhile
                victim.resume()
            await asyncio.sleep(8)

    await asyncio.wait_for(chaos(), RUN_S + 30)
    await cluster.wait_all_up()
    await on_primary(cluster, "update_event", {"id": event_id, "enabled": False}, admin)
    stopped = int(time.time())
    await asyncio.sleep(2)

    primary = await cluster.wait_single_primary()
    _, found = await post(cluster, primary, "search_jobs", {"query": f"event:{event_id}", "limit": 1000,
                                                            "select": ["id", "now", "source"]}, admin)  # fmt: skip
    seconds = [int(job["now"]) for job in found["rows"]]
    assert found["list"]["length"] == len(seconds)
    assert all(job["source"] == "scheduler" for job in found["rows"])
    dupes = sorted({s for s in seconds if seconds.count(s) > 1})
    assert not dupes, f"seconds launched twice: {dupes}"
    first, last = min(seconds), max(seconds)
    missing = sorted(set(range(first, last + 1)) - set(seconds))
    assert not missing, f"seconds never launched: {missing}"
    # The run covered the whole window: from creation to the moment the event was disabled.
    assert first - start <= 5 and stopped - last <= 5, (start, first, last, stopped)
    assert len(seconds) >= RUN_S - 10
    # The same answer from every node (satellites read the same indexes).
    for node in cluster.nodes:
        _, other = await post(cluster, node, "search_jobs", {"query": f"event:{event_id}", "limit": 1}, admin)
        assert other["list"]["length"] == len(seconds)
