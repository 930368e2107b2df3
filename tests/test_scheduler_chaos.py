"""Exactly-once scheduling across failovers: three real nodes, an event due every second, a primary that
is killed (kill -9) and paused (SIGSTOP) while it runs. Afterwards every second has exactly one job."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from tests.servers import Cluster

RUN_S = 64


async def on_primary(c: Cluster, api: str, body: dict[str, Any], headers: dict[str, str]) -> dict[str, Any]:
    """Call a write on whichever node is primary now (following failovers)."""
    deadline = time.monotonic() + 60
    while True:
        primary = await c.wait_single_primary(timeout=60)
        try:
            status, data = await c.post(primary, api, body, headers=headers)
        except Exception:  # the primary may die under us; ask again
            status, data = 0, {}
        if status == 200:
            return data
        assert status in (0, 500, 503), f"{api} refused: {status} {data}"  # only failover is worth a retry
        assert time.monotonic() < deadline, f"{api} kept failing: {status} {data}"
        await asyncio.sleep(0.2)


async def test_every_second_exactly_once_across_failovers(cluster: Cluster) -> None:
    admin = await cluster.admin_session()
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
    query = {"query": f"event:{event_id}", "limit": 1000, "select": ["id", "now", "source"]}
    _, found = await cluster.post(primary, "search_jobs", query, headers=admin)
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
        _, other = await cluster.post(node, "search_jobs", {"query": f"event:{event_id}", "limit": 1}, headers=admin)
        assert other["list"]["length"] == len(seconds)
