"""Every branch of the Lua scripts, through the stores that call them, on a real server."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import pytest
from redis.exceptions import ResponseError

from storage import codec
from storage.connection import Database
from storage.errors import FencedError
from storage.fence import Fence, FencedBatch
from storage.lease import LeaseStore
from storage.models import NodeRecord
from storage.nodes import NodeStore
from storage.scripts import fenced

LEASE_MS = 10_000
SHORT_MS = 150  # for leases that must really expire


async def wait_until(predicate: Callable[[], Awaitable[bool]], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not await predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        await asyncio.sleep(0.02)


async def lease_gone(db: Database) -> None:
    async def gone() -> bool:
        return int(await db.client.exists(db.keys.leader)) == 0

    await wait_until(gone)


async def raw(db: Database, key: str) -> bytes | None:
    value = await db.client.get(key)
    assert value is None or isinstance(value, bytes)
    return value


async def text(db: Database, key: str) -> str | None:
    value = await raw(db, key)
    return None if value is None else value.decode()


async def score(db: Database, key: str, member: str) -> float | None:
    value = await db.client.zscore(key, member)
    assert value is None or isinstance(value, float)
    return value


@pytest.fixture
def leases(db: Database) -> LeaseStore:
    return LeaseStore(db)


# -- LEASE_ACQUIRE --------------------------------------------------------------


async def test_nobody_holds_a_fresh_lease(leases: LeaseStore) -> None:
    assert await leases.holder() == ("", 0)


async def test_acquire_when_free_draws_epochs_in_order(db: Database, leases: LeaseStore) -> None:
    for expected, node in enumerate(["a", "b", "a", "c"], start=1):
        state = await leases.acquire(node, LEASE_MS)
        assert state.acquired
        assert state.epoch == expected
        assert state.holder == node
        assert state.ttl_ms == LEASE_MS
        assert await text(db, db.keys.leader) == node
        assert await text(db, db.keys.epoch) == str(expected)
        assert 0 < int(await db.client.pttl(db.keys.leader)) <= LEASE_MS
        assert await leases.holder() == (node, expected)
        assert await leases.release(node, expected)


async def test_acquire_when_held_reports_holder(db: Database, leases: LeaseStore) -> None:
    first = await leases.acquire("a", LEASE_MS)
    assert first.acquired
    for node in ("b", "a"):  # the holder itself cannot re-acquire either
        state = await leases.acquire(node, 60_000)
        assert not state.acquired
        assert state.holder == "a"
        assert state.epoch == 1
        assert 0 < state.ttl_ms <= LEASE_MS
    assert await text(db, db.keys.epoch) == "1"  # no epoch drawn by a refused acquire
    assert await text(db, db.keys.leader) == "a"
    assert int(await db.client.pttl(db.keys.leader)) <= LEASE_MS  # and no lease extended


async def test_acquire_after_expiry(db: Database, leases: LeaseStore) -> None:
    assert (await leases.acquire("a", SHORT_MS)).acquired
    await lease_gone(db)
    assert await leases.holder() == ("", 1)
    state = await leases.acquire("b", LEASE_MS)
    assert state.acquired
    assert state.epoch == 2


# -- LEASE_RENEW ----------------------------------------------------------------


async def test_renew_by_holder_extends(db: Database, leases: LeaseStore) -> None:
    state = await leases.acquire("a", 1000)
    assert await leases.renew("a", state.epoch, 60_000)
    assert int(await db.client.pttl(db.keys.leader)) > 1000
    assert await leases.holder() == ("a", 1)


async def test_renew_refused_for_wrong_node(db: Database, leases: LeaseStore) -> None:
    state = await leases.acquire("a", 5000)
    assert not await leases.renew("b", state.epoch, 60_000)
    assert int(await db.client.pttl(db.keys.leader)) <= 5000
    assert await leases.holder() == ("a", 1)


async def test_renew_refused_for_stale_epoch(db: Database, leases: LeaseStore) -> None:
    old = await leases.acquire("a", 5000)
    assert await leases.release("a", old.epoch)
    new = await leases.acquire("a", 5000)  # same node, re-elected with a new epoch
    assert new.epoch == old.epoch + 1
    assert not await leases.renew("a", old.epoch, 60_000)
    assert int(await db.client.pttl(db.keys.leader)) <= 5000
    assert await leases.renew("a", new.epoch, 60_000)
    assert int(await db.client.pttl(db.keys.leader)) > 5000


async def test_renew_after_expiry_refused(db: Database, leases: LeaseStore) -> None:
    state = await leases.acquire("a", SHORT_MS)
    await lease_gone(db)
    assert not await leases.renew("a", state.epoch, 60_000)
    assert int(await db.client.exists(db.keys.leader)) == 0  # not brought back to life
    assert await leases.holder() == ("", 1)


# -- LEASE_RELEASE --------------------------------------------------------------


async def test_release_by_holder(db: Database, leases: LeaseStore) -> None:
    state = await leases.acquire("a", LEASE_MS)
    assert await leases.release("a", state.epoch)
    assert int(await db.client.exists(db.keys.leader)) == 0
    assert await text(db, db.keys.epoch) == "1"  # the epoch survives a release
    assert not await leases.release("a", state.epoch)  # a second release finds nothing
    nxt = await leases.acquire("b", LEASE_MS)
    assert nxt.acquired
    assert nxt.epoch == 2


async def test_release_refused_for_non_holder(db: Database, leases: LeaseStore) -> None:
    state = await leases.acquire("a", LEASE_MS)
    assert not await leases.release("b", state.epoch)
    assert await leases.holder() == ("a", 1)
    assert int(await db.client.pttl(db.keys.leader)) > 0


async def test_release_refused_for_stale_epoch(db: Database, leases: LeaseStore) -> None:
    old = await leases.acquire("a", LEASE_MS)
    assert await leases.release("a", old.epoch)
    new = await leases.acquire("a", LEASE_MS)
    assert not await leases.release("a", old.epoch)
    assert await leases.holder() == ("a", new.epoch)


async def test_release_when_nobody_holds(leases: LeaseStore) -> None:
    assert not await leases.release("a", 1)
    assert await leases.holder() == ("", 0)


# -- FENCED_EXEC ----------------------------------------------------------------


def sample_batch(db: Database) -> FencedBatch:
    k = db.keys
    return (
        FencedBatch()
        .add("SET", [k.probe("s")], "value")
        .add("HSET", [k.probe("h")], "f1", "v1", "f2", 2)
        .add("ZADD", [k.probe("z")], 1.5, "m1", 2**60, "m2")
        .add("SET", [k.probe("nx")], "first", "NX")
        .add("SET", [k.probe("nx")], "second", "NX")
    )


async def written(db: Database, batch: FencedBatch) -> int:
    return int(await db.client.exists(*batch.keys))


async def elect(leases: LeaseStore, node: str = "a", lease_ms: int = LEASE_MS) -> Fence:
    state = await leases.acquire(node, lease_ms)
    assert state.acquired
    return Fence(leases.db, node, state.epoch)


async def test_fenced_batch_applies_every_op_and_returns_replies(db: Database, leases: LeaseStore) -> None:
    fence = await elect(leases)
    batch = sample_batch(db)
    assert batch.keys == [db.keys.probe(n) for n in ("s", "h", "z", "nx")]  # one KEYS slot per key
    replies = await fence.execute(batch)
    assert replies == [b"OK", 2, 2, b"OK", None]
    k = db.keys
    assert await text(db, k.probe("s")) == "value"
    assert await db.client.hgetall(k.probe("h")) == {b"f1": b"v1", b"f2": b"2"}
    assert await db.client.zrange(k.probe("z"), 0, -1, withscores=True) == [(b"m1", 1.5), (b"m2", 2.0**60)]
    assert await text(db, k.probe("nx")) == "first"


async def test_fenced_batch_reads_and_exact_values(db: Database, leases: LeaseStore) -> None:
    fence = await elect(leases)
    k = db.keys
    record = {"id": "job1", "blob": b"\x00\xff\xfe", "name": "ünï ✓", "n": 2**62}
    big = 2**53 + 1  # beyond a Lua double's integer precision
    batch = (
        FencedBatch()
        .add("SET", [k.probe("rec")], codec.pack(record))
        .add("GET", [k.probe("rec")])
        .add("INCRBY", [k.probe("n")], big)
        .add("SET", [k.probe("f")], 0.1)
        .add("EXISTS", [k.probe("rec"), k.probe("missing")])
    )
    replies = await fence.execute(batch)
    assert codec.unpack(replies[1]) == record
    assert replies[3:] == [b"OK", 1]  # (an integer reply passes through a Lua double, so not [2])
    assert codec.unpack(await raw(db, k.probe("rec"))) == record
    assert await text(db, k.probe("n")) == str(big)
    assert float(await text(db, k.probe("f")) or "nan") == 0.1


async def test_fenced_batch_maps_several_keys_per_op(db: Database, leases: LeaseStore) -> None:
    fence = await elect(leases)
    k = db.keys
    batch = (
        FencedBatch()
        .add("SADD", [k.probe("from")], "x", "y")
        .add("SMOVE", [k.probe("from"), k.probe("to")], "x")
        .add("SCARD", [k.probe("to")])
    )
    assert batch.keys == [k.probe("from"), k.probe("to")]
    assert await fence.execute(batch) == [2, 1, 1]
    assert await db.client.smembers(k.probe("from")) == {b"y"}
    assert await db.client.smembers(k.probe("to")) == {b"x"}


async def test_fenced_batch_is_atomic_to_readers(db: Database, leases: LeaseStore) -> None:
    fence = await elect(leases)
    key = db.keys.probe("counter")
    batch = FencedBatch()
    for _ in range(2000):
        batch.add("INCR", [key])
    seen: set[bytes | None] = set()
    task = asyncio.create_task(fence.execute(batch))
    while not task.done():
        seen.add(await raw(db, key))
    replies = await task
    assert replies == list(range(1, 2001))
    assert seen <= {None, b"2000"}  # never a half-applied batch


async def test_fenced_refused_for_stale_epoch(db: Database, leases: LeaseStore) -> None:
    old = await elect(leases, "a")
    assert await leases.release("a", old.epoch)
    assert (await leases.acquire("a", LEASE_MS)).epoch == old.epoch + 1  # same node, new epoch
    batch = sample_batch(db)
    with pytest.raises(FencedError, match="FENCED"):
        await old.execute(batch)
    assert await written(db, batch) == 0


async def test_fenced_refused_when_another_node_holds(db: Database, leases: LeaseStore) -> None:
    await elect(leases, "a")
    batch = sample_batch(db)
    for intruder in (Fence(db, "b", 1), Fence(db, "b", 0), Fence(db, "b", 2)):
        with pytest.raises(FencedError):
            await intruder.execute(batch)
    with pytest.raises(FencedError):
        await Fence(db, "a", 2).execute(batch)  # the holder, at an epoch it was never given
    assert await written(db, batch) == 0


async def test_fenced_refused_after_takeover(db: Database, leases: LeaseStore) -> None:
    deposed = await elect(leases, "a", SHORT_MS)
    await lease_gone(db)
    successor = await elect(leases, "b")
    batch = sample_batch(db)
    with pytest.raises(FencedError):
        await deposed.execute(batch)
    assert await written(db, batch) == 0
    assert (await successor.execute(batch))[0] == b"OK"


async def test_fenced_refused_when_lease_expired_and_nobody_holds(db: Database, leases: LeaseStore) -> None:
    fence = await elect(leases, "a", SHORT_MS)
    await lease_gone(db)
    assert await leases.holder() == ("", fence.epoch)  # epoch still matches; only the lease is gone
    batch = sample_batch(db)
    with pytest.raises(FencedError):
        await fence.execute(batch)
    assert await written(db, batch) == 0


async def test_fenced_refused_before_any_election(db: Database) -> None:
    batch = sample_batch(db)
    for fence in (Fence(db, "a", 0), Fence(db, "a", 1), Fence(db, "", 0)):
        with pytest.raises(FencedError):
            await fence.execute(batch)
    assert await written(db, batch) == 0


async def test_command_errors_are_not_fence_errors(db: Database, leases: LeaseStore) -> None:
    fence = await elect(leases)
    batch = FencedBatch().add("NOSUCHCOMMAND", [db.keys.probe("x")])
    with pytest.raises(ResponseError) as caught:
        await fence.execute(batch)
    assert not isinstance(caught.value, FencedError)


# -- fenced() on a custom script via Fence.run ----------------------------------

CUSTOM = fenced("""
redis.call('SET', KEYS[3], ARGV[3])
return redis.call('INCRBY', KEYS[4], ARGV[4])
""")


async def test_custom_fenced_script_runs_for_the_holder(db: Database, leases: LeaseStore) -> None:
    fence = await elect(leases)
    k = db.keys
    assert await fence.run(CUSTOM, [k.probe("v"), k.probe("c")], ["hello", 5]) == 5
    assert await fence.run(CUSTOM, [k.probe("v"), k.probe("c")], ["again", 5]) == 10
    assert await text(db, k.probe("v")) == "again"


async def test_custom_fenced_script_refused(db: Database, leases: LeaseStore) -> None:
    old = await elect(leases, "a")
    assert await leases.release("a", old.epoch)
    await elect(leases, "b")
    k = db.keys
    keys = [k.probe("v"), k.probe("c")]
    for fence in (old, Fence(db, "a", old.epoch + 1), Fence(db, "b", old.epoch)):
        with pytest.raises(FencedError):
            await fence.run(CUSTOM, keys, ["hello", 5])
    assert int(await db.client.exists(*keys)) == 0


# -- NODE_HEARTBEAT / NODE_LIVE -------------------------------------------------


def record(node_id: str, **changes: object) -> NodeRecord:
    base = NodeRecord(
        id=node_id,
        role="satellite",
        epoch=3,
        url=f"http://127.0.0.1:5522/{node_id}",
        version="0.1.0",
        started=1712345678.123456,
        pid=4242,
        hostname="höst-ü",
        load=0.37,
        redis_ok=True,
    )
    data = base.to_dict()
    data.update(changes)
    return NodeRecord.from_dict(data)


async def live_ids(nodes: NodeStore) -> list[str]:
    return [n.record.id for n in await nodes.live()]


async def test_registry_starts_empty(db: Database) -> None:
    assert await NodeStore(db).live() == []


async def test_heartbeat_appears_and_record_round_trips(db: Database) -> None:
    nodes = NodeStore(db, ttl_ms=5000)
    rec = record("n1", role="primary", redis_ok=False, load=1.25)
    now = await nodes.heartbeat(rec)
    server_s, server_us = await db.client.time()
    assert abs(now - (server_s * 1000 + server_us // 1000)) < 60_000  # the Redis clock, in ms
    live = await nodes.live()
    assert len(live) == 1
    entry = live[0]
    assert entry.record == rec
    assert entry.ttl_ms == 5000
    assert entry.expires_ms == now + 5000
    assert entry.now_ms >= now
    assert entry.heartbeat_age_ms == entry.now_ms - now
    assert 0 < int(await db.client.pttl(db.keys.node("n1"))) <= 5000
    assert await score(db, db.keys.nodes, "n1") == now + 5000


async def test_heartbeat_replaces_the_record(db: Database) -> None:
    nodes = NodeStore(db, ttl_ms=5000)
    await nodes.heartbeat(record("n1"))
    newer = record("n1", role="primary", epoch=9)
    second = await nodes.heartbeat(newer)
    live = await nodes.live()
    assert [n.record for n in live] == [newer]
    assert live[0].expires_ms == second + 5000
    assert int(await db.client.zcard(db.keys.nodes)) == 1


async def test_silent_node_disappears_after_its_ttl(db: Database) -> None:
    nodes = NodeStore(db, ttl_ms=300)
    await nodes.heartbeat(record("quiet"))
    await nodes.heartbeat(record("busy"))
    assert await live_ids(nodes) == ["busy", "quiet"]

    async def quiet_gone() -> bool:
        await nodes.heartbeat(record("busy"))  # keeps beating well within its ttl
        return "quiet" not in await live_ids(nodes)

    await wait_until(quiet_gone)
    assert await live_ids(nodes) == ["busy"]
    assert int(await db.client.exists(db.keys.node("quiet"))) == 0  # the record expired too
    await nodes.heartbeat(record("busy"))
    assert await score(db, db.keys.nodes, "quiet") is None  # pruned by the next heartbeat


async def test_entry_without_record_is_skipped(db: Database) -> None:
    nodes = NodeStore(db, ttl_ms=5000)
    await nodes.heartbeat(record("n1"))
    await nodes.heartbeat(record("n2"))
    await db.client.delete(db.keys.node("n1"))
    assert await live_ids(nodes) == ["n2"]


async def test_remove(db: Database) -> None:
    nodes = NodeStore(db, ttl_ms=5000)
    await nodes.heartbeat(record("n1"))
    await nodes.heartbeat(record("n2"))
    await nodes.remove("n1")
    assert await live_ids(nodes) == ["n2"]
    assert await score(db, db.keys.nodes, "n1") is None
    assert int(await db.client.exists(db.keys.node("n1"))) == 0
    await nodes.remove("never-seen")  # harmless
    await nodes.remove("n2")
    assert await nodes.live() == []


async def test_live_is_ordered_by_id(db: Database) -> None:
    nodes = NodeStore(db, ttl_ms=5000)
    ids = ["n3", "n10", "a", "n1", "Z"]
    for ident in ids:  # each later heartbeat has a later expiry, so Redis order is insertion order
        await nodes.heartbeat(record(ident))
    assert await live_ids(nodes) == sorted(ids)
