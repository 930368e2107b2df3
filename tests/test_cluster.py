"""Cluster behaviour with real processes: one Redis, three `podium serve` nodes."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import datetime

from storage.connection import Database, connect
from storage.keyspace import Keyspace
from storage.nodes import NodeStore
from tests.servers import Cluster, Node

LEASE_MS = 3000  # the default lease: failover figures are meant for it


def log_events(node: Node, event: str) -> list[float]:
    """Unix times of every `event` line in a node's JSON log."""
    times = []
    for line in node.log_text().splitlines():
        if f'"{event}"' not in line:
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if rec.get("event") == event:
            times.append(datetime.fromisoformat(rec["timestamp"]).timestamp())
    return times


async def live_node_ids(c: Cluster) -> set[str]:
    db = Database(connect(c.redis.url), Keyspace("podium"))
    try:
        return {n.record.id for n in await NodeStore(db).live()}
    finally:
        await db.aclose()


async def probe_value(c: Cluster, name: str) -> bytes | None:
    db = Database(connect(c.redis.url), Keyspace("podium"))
    try:
        value = await db.client.get(db.keys.probe(name))
        return value if value is None or isinstance(value, bytes) else value.encode()
    finally:
        await db.aclose()


async def test_one_primary_and_satellites_redirect_writes(cluster: Cluster) -> None:
    primary = await cluster.wait_single_primary()
    satellites = [n for n in cluster.nodes if n is not primary]
    assert len(await cluster.primaries()) == 1

    for sat in satellites:
        status, body = await cluster.call(sat, "test_fenced_write", "POST", name="redirect", value="x")
        assert status == 500
        assert body["code"] == "master"
        assert body["host"] == f"127.0.0.1:{primary.port}"
        assert body["url"] == primary.url
        assert body["description"] == "This API call can only be invoked on the primary conductor server."
        # Reads work on satellites.
        status, body = await cluster.call(sat, "ping")
        assert (status, body) == (200, {"code": 0})
        health = await cluster.health(sat)
        assert health is not None and health[0] == 503
        assert health[1]["role"] == "satellite" and health[1]["primary"] == primary.url

    status, body = await cluster.call(primary, "test_fenced_write", "POST", name="redirect", value="ok")
    assert (status, body["code"]) == (200, 0)
    assert await probe_value(cluster, "redirect") == b"ok"
    ids = await live_node_ids(cluster)
    assert ids == {n.node_id for n in cluster.nodes}


async def test_kill9_primary_fails_over_within_lease(cluster: Cluster) -> None:
    old = await cluster.wait_single_primary()
    old_id = old.node_id
    killed_at = time.time()
    old.kill9()
    survivors = [n for n in cluster.nodes if n is not old]
    new = await cluster.wait_single_primary(timeout=LEASE_MS / 1000 + 10, nodes=survivors)
    elected = [t for t in log_events(new, "elected_primary") if t >= killed_at]
    assert elected, "the new primary logged no election after the kill"
    # Measured from the nodes' own log clock, so polling noise does not count.
    assert elected[0] - killed_at < LEASE_MS / 1000 + 1.0

    # The dead node leaves the registry within 3 s of its last heartbeat.
    async def gone() -> bool:
        return old_id not in await live_node_ids(cluster)

    await cluster.wait_for(gone, timeout=10)
    assert time.time() - killed_at < LEASE_MS / 1000 + 10

    # Restarted with the same data dir it keeps its id and rejoins as a satellite.
    old.start()
    await cluster.wait_all_up()

    async def back() -> bool:
        return old_id in await live_node_ids(cluster)

    await cluster.wait_for(back, timeout=20)
    assert old.node_id == old_id
    assert await cluster.wait_single_primary() is new


async def test_paused_primary_cannot_write_after_losing_lease(cluster: Cluster) -> None:
    old = await cluster.wait_single_primary()
    old.pause()
    try:
        survivors = [n for n in cluster.nodes if n is not old]
        new = await cluster.wait_single_primary(timeout=LEASE_MS / 1000 + 10, nodes=survivors)
        # The request waits in the paused process's socket buffer and runs as soon as it resumes,
        # while it may still believe it is primary.
        pending = asyncio.create_task(cluster.call(old, "test_fenced_write", "POST", name="paused", value="stale"))
        await asyncio.sleep(0.5)
    finally:
        old.resume()
    status, body = await asyncio.wait_for(pending, 15)
    assert status == 500 and body["code"] == "master"
    assert body["url"] == new.url
    assert await probe_value(cluster, "paused") is None

    async def settled() -> bool:
        h = await cluster.health(old)
        return h is not None and h[0] == 503

    await cluster.wait_for(settled, timeout=10)
    assert await cluster.wait_single_primary() is new


async def test_clean_shutdown_hands_over_within_a_second(cluster: Cluster) -> None:
    old = await cluster.wait_single_primary()
    assert old.terminate() == 0
    released = log_events(old, "stepped_down")
    assert released, "the stopping primary logged no step-down"
    survivors = [n for n in cluster.nodes if n is not old]
    new = await cluster.wait_single_primary(timeout=10, nodes=survivors)
    elected = [t for t in log_events(new, "elected_primary") if t >= released[-1]]
    assert elected and elected[0] - released[-1] < 1.0
    assert old.node_id not in await live_node_ids(cluster)


async def test_cluster_recovers_after_redis_restart(cluster: Cluster) -> None:
    await cluster.wait_single_primary()
    cluster.redis.stop()
    try:
        # Every node keeps answering /health, says Redis is down, and nobody stays primary.
        async def all_down() -> bool:
            states = [await cluster.health(n) for n in cluster.nodes]
            return all(s is not None and s[0] == 503 and s[1]["redis"] is False for s in states)

        await cluster.wait_for(all_down, timeout=LEASE_MS / 1000 + 10)
        status, body = await cluster.call(cluster.nodes[0], "ping")
        assert (status, body) == (200, {"code": 0})
    finally:
        cluster.redis.start()
    primary = await cluster.wait_single_primary(timeout=30)
    status, body = await cluster.call(primary, "test_fenced_write", "POST", name="after", value="1")
    assert (status, body["code"]) == (200, 0)

    async def all_registered() -> bool:
        return await live_node_ids(cluster) == {n.node_id for n in cluster.nodes}

    await cluster.wait_for(all_registered, timeout=15)
    for node in cluster.nodes:
        h = await cluster.health(node)
        assert h is not None and h[1]["redis"] is True
