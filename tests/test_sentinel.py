"""A store failover under Redis Sentinel with real processes: a valkey master, one replica, three sentinels,
and two `podium serve` nodes given `redis+sentinel://...`.

The replica is made to miss the last epoch (the INCR that elected the primary, as an asynchronous replica
can), then promoted. The cluster must elect a primary on the new master with an epoch above every epoch
used before, serve reads and writes, and fence every write after the switch with that new epoch."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from cluster.election import Election
from storage.bus import InvalidationBus
from storage.connection import UNAVAILABLE_ERRORS, Database, check_url, connect, redacted, wait_reachable
from storage.errors import BadRedisURL, FencedError
from storage.fence import Fence, FencedBatch
from storage.keyspace import Keyspace
from storage.lease import LeaseStore
from storage.models import LeaseState
from storage.sentinel import SentinelPool, parse_url
from tests.servers import Cluster, Node, RedisServer, SentinelStore

KEYS = Keyspace("podium")


def plain(port: int) -> aioredis.Redis:
    return aioredis.Redis(host="127.0.0.1", port=port, socket_timeout=2)


async def info(port: int, *, sentinel: bool = False) -> dict[str, Any]:
    client = plain(port)
    try:
        if sentinel:
            masters = await client.sentinel_masters()
            assert isinstance(masters, dict)
            return masters
        return dict(await client.info("replication"))
    finally:
        await client.aclose()


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    store = SentinelStore(tmp_path / "store")
    async with Cluster(tmp_path, size=2, sentinel=store) as c:
        async def ready() -> bool:  # replica in sync, every sentinel knows the replica and the other two
            if (await info(store.replica.port)).get("master_link_status") != "up":
                return False
            for port in store.sentinel_ports:
                state = (await info(port, sentinel=True)).get(store.service, {})
                if state.get("num-slaves", 0) < 1 or state.get("num-other-sentinels", 0) < 2:
                    return False
            return True

        await c.wait_for(ready, timeout=30, interval=0.2)
        for server in (store.master, store.replica):  # as the README recommends (set once the replica is in sync,
            client = plain(server.port)  # so the nodes' first writes are not refused)
            try:
                await client.config_set("min-replicas-to-write", 1)
                await client.config_set("min-replicas-max-lag", 2)
            finally:
                await client.aclose()
        await c.ready()
        yield c


def log_records(node: Node, event: str) -> list[dict[str, Any]]:
    found = []
    for line in node.log_text().splitlines():
        if f'"{event}"' in line:
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            if rec.get("event") == event:
                found.append(rec)
    return found


async def test_failover_to_a_replica_that_missed_the_epoch(cluster: Cluster) -> None:
    store = cluster.sentinel
    assert store is not None
    old = await cluster.wait_single_primary()
    admin = await cluster.admin_session(old)
    status, body = await cluster.post(old, "create_category", {"id": "before", "title": "Before"}, headers=admin)
    assert (status, body["code"]) == (200, 0), body
    health = await cluster.health(old)
    assert health is not None
    before, old_id = int(health[1]["epoch"]), str(health[1]["node"])
    assert before >= 1
    # The other node caches the category (its invalidation listener subscribed on the first master).
    other = next(n for n in cluster.nodes if n is not old)
    status, body = await cluster.post(other, "get_category", {"id": "before"}, headers=admin)
    assert (status, body.get("category", {}).get("title")) == (200, "Before"), body

    # The replica loses the epoch key, as if the INCR that drew it had not reached it; nothing rewrites the
    # key until the next election, so the promoted replica starts from no epoch at all.
    replica = plain(store.replica.port)
    try:
        await replica.config_set("replica-read-only", "no")
        await replica.delete(KEYS.epoch)
        await replica.config_set("replica-read-only", "yes")
        sentinel = plain(store.sentinel_ports[0])
        try:
            assert await sentinel.execute_command("SENTINEL", "FAILOVER", store.service)  # type: ignore[no-untyped-call]
        finally:
            await sentinel.aclose()

        async def promoted() -> bool:
            return (await info(store.replica.port)).get("role") == "master"

        await cluster.wait_for(promoted, timeout=30, interval=0.1)

        async def elected_above() -> Node | None:  # one primary, at an epoch no node used before
            found = await cluster.primaries()
            if len(found) != 1:
                return None
            h = await cluster.health(found[0])
            return found[0] if h is not None and int(h[1]["epoch"]) > before else None

        new: Node = await cluster.wait_for(elected_above, timeout=60, interval=0.1)
        h = await cluster.health(new)
        assert h is not None
        after = int(h[1]["epoch"])
        assert int(await replica.get(KEYS.epoch) or 0) == after  # the new master holds the epoch in use
    finally:
        await replica.aclose()

    # The node that was primary stepped down on seeing the master change, not merely on a lost renew.
    reasons = {rec.get("reason") for rec in log_records(old, "stepped_down")}
    assert "store_failover" in reasons, [line for line in old.log_text().splitlines() if '"access"' not in line][-30:]
    # No epoch was drawn twice: the election on the new master did not reuse the one it had lost.
    elections = [int(rec["epoch"]) for n in cluster.nodes for rec in log_records(n, "elected_primary")]
    assert len(elections) == len(set(elections)) and max(elections) == after, elections

    # The old primary stepped down before the new primary was elected (the log times are UTC ISO strings).
    downs = [str(rec["timestamp"]) for rec in log_records(old, "stepped_down") if rec.get("reason") == "store_failover"]
    down = min(downs)
    elected = [str(rec["timestamp"]) for rec in log_records(new, "elected_primary") if int(rec["epoch"]) == after]
    assert len(elected) == 1 and down < elected[0], (down, elected)

    # Writes after the switch are fenced with the new epoch; one node is primary.
    status, body = await cluster.call(new, "test_fenced_write", "POST", name="after", value="x")
    assert (status, body["epoch"]) == (200, after), body
    assert len(await cluster.primaries()) == 1

    # No stale primary write: the old primary's fence is refused by the new master, and the old node
    # (unless it is the one that won again, with the new epoch) answers a write with `master`.
    new_master = Database(plain(store.replica.port), KEYS)
    try:
        with pytest.raises(FencedError):
            await Fence(new_master, old_id, before).execute(FencedBatch().add("SET", [KEYS.probe("stale")], "x"))
        assert await new_master.client.get(KEYS.probe("stale")) is None
    finally:
        await new_master.aclose()
    status, body = await cluster.call(old, "test_fenced_write", "POST", name="stale", value="x")
    if old is new:
        assert (status, body["epoch"]) == (200, after), body
    else:
        assert (status, body["code"]) == (500, "master"), body

    # Reads and writes through the API: a category written before the switch (and changed after it, which
    # the node that cached it must hear of on the new master) and one after, read back from the other node.
    reader = next(n for n in cluster.nodes if n is not new)
    admin = await cluster.admin_session(new)
    status, body = await cluster.post(new, "create_category", {"id": "after", "title": "After"}, headers=admin)
    assert (status, body["code"]) == (200, 0), body
    status, body = await cluster.post(new, "update_category", {"id": "before", "title": "Changed"}, headers=admin)
    assert (status, body["code"]) == (200, 0), body

    async def readable() -> bool:
        found = []
        for cid, title in (("before", "Changed"), ("after", "After")):
            status, body = await cluster.post(reader, "get_category", {"id": cid}, headers=admin)
            found.append(status == 200 and body.get("category", {}).get("title") == title)
        return all(found)

    assert await cluster.wait_for(readable, timeout=20, interval=0.1)


def test_sentinel_urls_are_checked_and_never_show_the_password() -> None:
    url = "redis+sentinel://:s3cret@10.0.0.1:26379,[::1]:26380,sentinel-c/mymaster/2"
    assert check_url(url) == url
    target = parse_url(url)
    assert target.sentinels == [("10.0.0.1", 26379), ("::1", 26380), ("sentinel-c", 26379)]
    assert (target.service, target.db, target.password, target.tls) == ("mymaster", 2, "s3cret", False)
    assert "s3cret" not in repr(target) and "s3cret" not in redacted(url)
    assert redacted(url) == "redis+sentinel://:***@10.0.0.1:26379,[::1]:26380,sentinel-c/mymaster/2"
    assert parse_url("rediss+sentinel://u:p@h:1/m").tls
    odd = parse_url("redis+sentinel://u:s3/c#r?et@h:1/m/3")  # unencoded "/", "#", "?" in the password
    assert (odd.username, odd.password, odd.sentinels, odd.db) == ("u", "s3/c#r?et", [("h", 1)], 3)
    for raw, shown in [
        ("redis://:se/cret@h/0", "redis://:***@h/0"),
        ("redis://u:se#cr?et@h:1/0", "redis://u:***@h:1/0"),
        ("redis://h:1/0?password=s3cret&x=1", "redis://h:1/0?password=***&x=1"),
        ("redis://u@h/0", "redis://u@h/0"),
    ]:
        assert redacted(raw) == shown
    for bad, says in [
        ("redis+sentinel://:s3cret@h:1", "/service"),
        ("redis+sentinel://:s3cret@h:1/m/x", "database"),
        ("redis+sentinel://:s3cret@h:99999/m", "sentinel address"),
        ("redis+sentinel://:s3cret@/m", "names no sentinel"),
        ("redis+sentinal://:s3cret@h:1/m", "must start with"),
        ("redis+sentinel://:s3/cr?et@h:1/m/x", "database"),  # a password with / and ? stays the password
        ("redis+sentinel://:s3cret@h:1/m?db=1&s3cret", "unknown query parameters 'db'"),
        ("redis+sentinel://:s3cret@h:1/m#frag", "fragment"),
        ("redis://:s3/cret@h/0", "percent-encode"),
        ("redis://:s3#cret@h:99999/0", "percent-encode"),
        ("redis://:s3cret@h:99999/0", "bad port"),
        ("redis://:s3cret@/0", "no host"),
    ]:
        with pytest.raises(BadRedisURL) as err:
            check_url(bad)
        assert says in str(err.value) and "s3cret" not in str(err.value)


async def test_clients_follow_the_master_and_count_each_way_a_change_shows(tmp_path: Path) -> None:
    """Three clients, as of three nodes, on the master when the sentinels promote the replica. Until Sentinel
    demotes it (seconds later) the old master still takes writes; each client learns of the change in one of
    the three ways: asking the sentinels (the heartbeat's check), a connection the old master closed and that
    reconnects to the new one, or a READONLY reply once the old master is a replica."""
    store = SentinelStore(tmp_path / "store")
    asks, reconnects, refused = (Database(connect(store.url, max_connections=3), KEYS) for _ in range(3))
    control = asks.with_own_pool()
    replica, old_master = plain(store.replica.port), plain(store.master.port)
    clients = [asks, reconnects, refused, control]
    bus, stop_bus = InvalidationBus(asks), asyncio.Event()
    heard: list[str] = []
    bus.on("probe", heard.append)
    bus_task: asyncio.Task[None] | None = None
    try:
        store.start()
        for db in clients:
            await wait_reachable(db.client)
            await db.client.set("probe", "before")
        pools = [asks.client.connection_pool, control.client.connection_pool]
        assert all(isinstance(p, SentinelPool) for p in pools)
        assert [p.max_connections for p in pools] == [3, 2]  # the bounded pools, also under Sentinel
        assert [db.store_changes for db in clients] == [0, 0, 0, 0]
        await _wait(lambda: _link_up(replica))
        bus_task = asyncio.create_task(bus.run(stop_bus))
        await _wait(lambda: _true(bus.healthy))

        sentinel = plain(store.sentinel_ports[0])
        try:
            assert await sentinel.execute_command("SENTINEL", "FAILOVER", store.service)  # type: ignore[no-untyped-call]

            async def moved() -> bool:
                masters = await info(store.sentinel_ports[0], sentinel=True)
                return bool(masters[store.service]["port"] == store.replica.port)

            await _wait(moved)
        finally:
            await sentinel.aclose()

        await asks.verify_store()  # the sentinels name another master
        assert asks.store_changes == control.store_changes == 1  # one watch for the node's pools
        # The invalidation listener, still subscribed on the old master (which answers its pings), stops
        # vouching for caches at once, then subscribes on the new master and hears what is published there.
        assert not bus.healthy
        await _wait(lambda: _subscribed(replica, KEYS.invalidate_channel))
        await _wait(lambda: _true(bus.healthy))
        await replica.publish(KEYS.invalidate_channel, "probe|p1")
        await _wait(lambda: _true(heard == ["p1"]))
        await asks.client.set("probe", "asks")
        assert await replica.get("probe") == b"asks"
        await control.client.set("probe", "control")  # its idle connection to the old master was dropped
        assert await replica.get("probe") == b"control"

        own_id = await reconnects.client.client_id()  # the old master closes it, as Sentinel does on demotion
        with contextlib.suppress(ResponseError):  # "No such client": Sentinel demoted it (and closed it) first
            await old_master.execute_command("CLIENT", "KILL", "ID", str(own_id))  # type: ignore[no-untyped-call]
        for _ in range(20):  # until the client notices the closed socket (bounded)
            try:
                await reconnects.client.set("probe", "reconnects")
                break
            except UNAVAILABLE_ERRORS:
                await asyncio.sleep(0.1)
        assert reconnects.store_changes == 1 and await replica.get("probe") == b"reconnects"

        assert refused.store_changes == 0
        await old_master.replicaof("127.0.0.1", store.replica.port)
        with pytest.raises(UNAVAILABLE_ERRORS):  # READONLY, as "the store is not there right now"
            await refused.client.set("probe", "refused")
        assert refused.store_changes == 1
        await refused.client.set("probe", "refused")  # reconnected to the new master, no second change
        assert refused.store_changes == 1 and await replica.get("probe") == b"refused"

        await _wait(lambda: _link_up(old_master))  # the old master, now the new one's replica
        await _claims_wait_for_a_replica(store, store.master, old_master)

        # No sentinel answers, and the master is demoted: the heartbeat's check still asks the master its role.
        for proc in store.sentinels:
            proc.terminate()
            proc.wait(10)
        await asks.client.ping()  # a connection open to the master
        await replica.replicaof("127.0.0.1", store.master.port)
        await asks.verify_store()
        assert asks.store_changes == 2
    finally:
        stop_bus.set()
        if bus_task is not None:
            await bus_task
        for db in clients:
            await db.aclose()
        await replica.aclose()
        await old_master.aclose()
        store.stop()


async def _claims_wait_for_a_replica(store: SentinelStore, server: RedisServer, replica: aioredis.Redis) -> None:
    """A durable fenced write returns once the replica holds it; with the replica stopped it fails and counts
    as a store change (this client's own watch); the plain redis:// path never waits."""
    unchanged = Database(connect("redis://127.0.0.1:1/0"), KEYS)
    unchanged.confirm_claims(500)
    assert unchanged.confirm_ms == 0
    await unchanged.aclose()
    db = Database(connect(store.url), KEYS)
    db.confirm_claims(500)
    assert db.confirm_ms == 500
    try:
        await db.client.mset({KEYS.leader: "n1", KEYS.epoch: 1})
        fence = Fence(db, "n1", 1)
        await fence.execute(FencedBatch().add("SET", [KEYS.probe("claim")], "1"), durable=True)
        assert await replica.get(KEYS.probe("claim")) == b"1"  # confirmed: the replica has it already
        with pytest.raises(FencedError):  # the fence's refusal comes through as before
            await Fence(db, "n2", 1).execute(FencedBatch().add("SET", [KEYS.probe("claim")], "2"), durable=True)
        assert server.proc is not None
        os.kill(server.proc.pid, signal.SIGSTOP)  # the replica stops acknowledging
        try:
            with pytest.raises(UNAVAILABLE_ERRORS):
                await fence.execute(FencedBatch().add("SET", [KEYS.probe("claim")], "3"), durable=True)
        finally:
            os.kill(server.proc.pid, signal.SIGCONT)
        assert db.store_changes == 1
    finally:
        await db.aclose()


async def _true(value: bool) -> bool:
    return value


async def _subscribed(client: aioredis.Redis, channel: str) -> bool:
    counts = dict(await client.pubsub_numsub(channel))
    return bool(counts.get(channel.encode(), 0) >= 1)


async def _link_up(client: aioredis.Redis) -> bool:
    return bool((await client.info("replication")).get("master_link_status") == "up")


async def _wait(predicate: Callable[[], Awaitable[bool]], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not await predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.1)


async def test_a_store_change_deposes_the_primary_and_the_next_epoch_rises_above_the_floor(db: Database) -> None:
    """The election's side, on one real server with a hand-moved clock: a counted store change ends the
    primary at once, nobody acquires during the hold, and the epoch drawn after it is above the floor even
    when the store's own epoch went back (here: deleted, as on a replica that missed the INCR)."""
    now = [1000.0]
    changes = [0]
    floor = [0]
    node = Election(LeaseStore(db), "a", lease_ms=3000, clock=lambda: now[0], store_changes=lambda: changes[0],
                    epoch_floor=lambda: floor[0], failover_hold_s=3.0)  # fmt: skip
    roles: list[bool] = []
    node.on_change = roles.append
    await node.step()
    assert node.is_primary and node.epoch == 1

    floor[0] = 7  # another live node reports epoch 7 in the registry
    await db.client.delete(db.keys.leader, db.keys.epoch)  # the new master lost the lease and the epoch
    changes[0] += 1
    assert not node.is_primary  # before the election loop runs again: no fenced write from here on
    assert await node.step() > 0 and roles == [True, False]
    now[0] += 2.9
    await node.step()
    assert not node.is_primary and await db.client.get(db.keys.leader) is None  # held off
    now[0] += 0.2
    await node.step()
    assert node.is_primary and node.epoch == 8 and int(await db.client.get(db.keys.epoch)) == 8
    assert roles == [True, False, True]


async def test_a_satellite_never_lowers_the_epoch_it_knows(db: Database) -> None:
    node = Election(LeaseStore(db), "b", lease_ms=3000)
    assert (await LeaseStore(db).acquire("other", 60_000, floor=5)).epoch == 6
    await node.step()
    assert not node.is_primary and node.epoch == 6
    await db.client.set(db.keys.epoch, 2)  # a store that went back
    await node.step()
    assert node.epoch == 6


async def test_a_lease_taken_while_the_store_changed_is_not_taken_as_elected(db: Database) -> None:
    """The master changed while the acquire was on its way (its connection reached the new master, or the
    heartbeat's check counted a change meanwhile): the node does not call itself primary, and holds off."""
    changes = [0]

    class SwitchingLeases(LeaseStore):  # the real lease script, with the change counted while it runs
        async def acquire(self, node_id: str, lease_ms: int, floor: int = 0) -> LeaseState:
            state = await super().acquire(node_id, lease_ms, floor)
            changes[0] += 1
            return state

    now = [1000.0]
    node = Election(SwitchingLeases(db), "a", lease_ms=3000, clock=lambda: now[0],
                    store_changes=lambda: changes[0], failover_hold_s=3.0)  # fmt: skip
    roles: list[bool] = []
    node.on_change = roles.append
    await node.step()
    assert not node.is_primary and roles == [] and node.epoch == 1  # the epoch drawn is still remembered
    now[0] += 1.0
    await node.step()
    assert (node.is_primary, roles) == (False, [])  # held off: no acquire in the hold
    assert changes == [1]
