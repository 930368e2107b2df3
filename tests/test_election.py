"""Election on a real server, with a fake clock for the node's own sense of time."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from cluster.election import Election
from storage.connection import Database, connect
from storage.errors import FencedError
from storage.fence import Fence, FencedBatch
from storage.keyspace import Keyspace
from storage.lease import LeaseStore
from tests.servers import free_port

LEASE_MS = 3000
HOLD_S = LEASE_MS * 0.7 / 1000
REAL_LEASE_MS = 600  # for leases that must really run out


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def advance(self, seconds: float) -> None:
        self.now += seconds


def election(db: Database, node_id: str, clock: FakeClock, lease_ms: int = LEASE_MS) -> Election:
    return Election(LeaseStore(db), node_id, lease_ms=lease_ms, clock=lambda: clock.now)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def dead_db() -> AsyncIterator[Database]:
    """A Database whose client points at a loopback port nothing listens on."""
    database = Database(connect(f"redis://127.0.0.1:{free_port()}/0", timeout=0.2), Keyspace("dead"))
    yield database
    await database.aclose()


async def step_until_primary(node: Election, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not node.is_primary:
        if time.monotonic() > deadline:
            raise AssertionError(f"{node.node_id} not primary within {timeout} s")
        delay = await node.step()
        await asyncio.sleep(min(delay, 0.05))


async def test_first_node_becomes_primary_with_epoch_1(db: Database, clock: FakeClock) -> None:
    a = election(db, "a", clock)
    assert not a.is_primary
    delay = await a.step()
    assert a.is_primary
    assert a.epoch == 1
    assert a.primary_id == "a"
    assert a.redis_ok
    assert delay == pytest.approx(LEASE_MS / 3 / 1000)
    assert await a.leases.holder() == ("a", 1)


async def test_second_node_stays_satellite(db: Database, clock: FakeClock) -> None:
    a = election(db, "a", clock)
    b = election(db, "b", FakeClock())
    await a.step()
    for _ in range(3):
        delay = await b.step()
        assert not b.is_primary
        assert b.primary_id == "a"
        assert b.epoch == 1
        assert 0 < delay <= b.poll_s
    assert a.is_primary
    assert await b.leases.holder() == ("a", 1)  # no epoch drawn by the satellite's attempts


async def test_renew_keeps_the_primary(db: Database, clock: FakeClock) -> None:
    a = election(db, "a", clock)
    await a.step()
    clock.advance(1.0)
    delay = await a.step()  # renews
    assert delay == pytest.approx(a.renew_s)
    assert list(a.renew_gaps) == [pytest.approx(1.0)]  # what /health reports as renew_gap_ms
    clock.advance(HOLD_S - 0.1)  # past the first hold, within the renewed one
    assert a.is_primary
    assert a.epoch == 1
    assert await a.leases.holder() == ("a", 1)


async def test_primary_deposed_by_its_clock_without_a_step(db: Database, clock: FakeClock) -> None:
    a = election(db, "a", clock)
    changes: list[bool] = []
    a.on_change = changes.append
    await a.step()
    clock.advance(HOLD_S - 0.05)
    assert a.is_primary
    clock.advance(0.1)  # as after a SIGSTOP: no step ran, yet the node knows it is deposed
    assert not a.is_primary
    assert a.primary_id == ""
    assert changes == [True]  # the callback waits for the next step
    await a.step()
    assert changes == [True, False]
    assert not a.is_primary  # its old lease still stands in Redis, so it cannot take a new one yet
    assert a.epoch == 1


async def test_deposed_primary_fence_is_refused(db: Database) -> None:
    a_clock, b_clock = FakeClock(), FakeClock()
    a = election(db, "a", a_clock, REAL_LEASE_MS)
    b = election(db, "b", b_clock, REAL_LEASE_MS)
    await a.step()
    assert a.is_primary
    fence = Fence(db, "a", a.epoch)
    key = db.keys.probe("owner")
    assert await fence.execute(FencedBatch().add("SET", [key], "a")) == [b"OK"]

    # a is paused: no renew. Its lease runs out in Redis and b takes over.
    await step_until_primary(b)
    assert b.epoch == 2
    a_clock.advance(REAL_LEASE_MS / 1000)
    assert not a.is_primary

    with pytest.raises(FencedError):
        await fence.execute(FencedBatch().add("SET", [key], "a-again"))
    assert await db.client.get(key) == b"a"
    assert await Fence(db, "b", b.epoch).execute(FencedBatch().add("SET", [key], "b")) == [b"OK"]
    assert await db.client.get(key) == b"b"

    # When a resumes and steps, it learns who the primary is and stays out.
    await a.step()
    assert not a.is_primary
    assert a.primary_id == "b"
    assert a.epoch == 2


async def test_lost_lease_steps_down_on_renew(db: Database) -> None:
    a_clock = FakeClock()
    a = election(db, "a", a_clock, REAL_LEASE_MS)
    b = election(db, "b", FakeClock(), REAL_LEASE_MS)
    changes: list[bool] = []
    a.on_change = changes.append
    await a.step()
    await step_until_primary(b)  # a's clock stood still, so a still believes it is primary
    assert a.is_primary
    delay = await a.step()  # the renew is refused
    assert delay == 0.0
    assert not a.is_primary
    assert changes == [True, False]
    await a.step()
    assert a.primary_id == "b"
    assert changes == [True, False]


async def test_release_hands_over_at_once(db: Database, clock: FakeClock) -> None:
    a = election(db, "a", clock)
    b = election(db, "b", FakeClock())
    await a.step()
    await b.step()
    assert not b.is_primary
    assert not await b.release()  # a satellite has nothing to give back
    assert await b.leases.holder() == ("a", 1)

    assert await a.release()
    assert not a.is_primary
    assert await a.leases.holder() == ("", 1)
    assert not await a.release()

    await b.step()  # no waiting for the lease to run out
    assert b.is_primary
    assert b.epoch == 2
    assert b.primary_id == "b"
    await a.step()
    assert not a.is_primary
    assert a.primary_id == "b"


async def test_on_change_fires_true_then_false(db: Database, clock: FakeClock) -> None:
    a = election(db, "a", clock)
    b = election(db, "b", FakeClock())
    a_changes: list[bool] = []
    b_changes: list[bool] = []
    a.on_change = a_changes.append
    b.on_change = b_changes.append
    await a.step()
    await b.step()
    assert a_changes == [True]
    await a.step()  # a renew is not a change
    assert a_changes == [True]
    await a.release()
    assert a_changes == [True, False]
    await b.step()
    assert b_changes == [True]
    assert a_changes == [True, False]


async def test_redis_unreachable(dead_db: Database, clock: FakeClock) -> None:
    a = Election(LeaseStore(dead_db), "a", lease_ms=1000, clock=lambda: clock.now)
    changes: list[bool] = []
    a.on_change = changes.append
    delay = await a.step()  # must not raise
    assert not a.redis_ok
    assert not a.is_primary
    assert a.primary_id == ""
    assert delay == pytest.approx(a.poll_s)
    await a.step()
    assert not a.redis_ok
    assert changes == []


async def test_primary_survives_a_short_outage_then_steps_down(
    db: Database, dead_db: Database, clock: FakeClock
) -> None:
    a = election(db, "a", clock)
    changes: list[bool] = []
    a.on_change = changes.append
    await a.step()
    live = a.leases
    a.leases = LeaseStore(dead_db)

    clock.advance(1.0)
    delay = await a.step()  # the renew fails, but the hold has not run out
    assert not a.redis_ok
    assert a.is_primary
    assert 0 <= delay <= a.poll_s

    clock.advance(HOLD_S)
    await a.step()
    assert not a.is_primary
    assert changes == [True, False]

    a.leases = live  # Redis is back; a's old lease still stands, so it waits
    await a.step()
    assert a.redis_ok
    assert not a.is_primary
    assert a.epoch == 1
