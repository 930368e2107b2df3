"""Primary election on a Redis lease with a fencing epoch.

A node is primary while it holds the lease *and* its last successful renew (timed from when the
request was sent, so network delay only shortens our belief) is younger than 0.7 x lease. The role is
computed from the clock on every read, so a process resumed after SIGSTOP knows it is no longer
primary before it runs a single handler; the lease itself lasts the full 1.0 x lease, which leaves a
0.3 x lease gap in which nobody is primary rather than two.

The lease store is built on the node's control client (a connection pool of its own), so requests never
make a renew wait for a connection. The next renew is timed from when the last one was sent, not from
when its reply arrived, and it runs inline under a timeout rather than as a task of its own, so a busy
loop delays it as little as possible. What a node does when its loop lags: see cluster/watchdog.py.

A store failover (Redis Sentinel, storage/sentinel.py) may lose the last writes the old master
acknowledged: a renew, the INCR that drew our epoch, or the lease itself. `store_changes` counts the
changes of master the node's connections saw (a new address or replication id, READONLY).
On any change the node stops being primary at once (is_primary reads the count, so no fenced write is
even attempted) and steps down at once too, stopping the primary-only services: the store watch calls
`store_changed` the moment it counts a change, and each round checks the count again after its lease
command, so a renew or acquire during which the master changed is not taken as a success. The election
then runs again against the new master, with two rules:

- Epochs must keep rising although the new master may hold an older `epoch` than one already used (the
  INCR was not replicated). Epochs order primaries: the ticket outbox takes over the claims of every
  smaller epoch as interrupted, and records and logs name the epoch they were written under, so a reused
  or smaller one would let a successor pass for its predecessor. Each acquire therefore passes a
  floor, the highest epoch this node knows of: its own (kept monotonic, never lowered by what a store
  says) and every epoch in the registry (`epoch_floor`), and the script draws max(INCR, floor + 1).
- The floor is only as good as the registry the candidate has read, so after a change a node does not
  try to acquire for `failover_hold_s` (at least a lease, and several heartbeats): by then every live
  node, the deposed primary among them, has heartbeated its epoch into the new master's registry.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable

import structlog

from storage.connection import UNAVAILABLE_ERRORS
from storage.lease import LeaseStore

log = structlog.get_logger("podium.election")

Clock = Callable[[], float]
STEP_DOWN_FRACTION = 0.7


class Election:
    def __init__(
        self,
        leases: LeaseStore,
        node_id: str,
        *,
        lease_ms: int = 3000,
        renew_ms: int | None = None,
        poll_ms: int = 250,
        clock: Clock = time.monotonic,
        store_changes: Callable[[], int] = lambda: 0,
        epoch_floor: Callable[[], int] = lambda: 0,
        failover_hold_s: float | None = None,
    ) -> None:
        self.leases = leases
        self.node_id = node_id
        self.lease_ms = lease_ms
        self.renew_s = (renew_ms if renew_ms is not None else lease_ms // 3) / 1000
        self.poll_s = min(poll_ms, lease_ms // 4) / 1000
        self.clock = clock
        self.store_changes = store_changes
        self.epoch_floor = epoch_floor
        self.failover_hold_s = failover_hold_s if failover_hold_s is not None else lease_ms / 1000
        self._store_seen = store_changes()
        self._hold_until = 0.0  # after a store change: no acquire before this (clock)
        self.epoch = 0  # our epoch while primary; otherwise the highest epoch seen (never lowered)
        self.leader_id = ""  # who holds the lease, as last seen ("" = nobody / unknown)
        self.redis_ok = True
        self._renewed_at: float | None = None
        # Seconds between consecutive successful renews, the last minute or so: how close the primary came
        # to stepping down (at hold_s).
        self.renew_gaps: deque[float] = deque(maxlen=max(2, round(60 / max(self.renew_s, 0.01))))
        self.on_change: Callable[[bool], None] = lambda primary: None
        self.on_round_trip: Callable[[float], None] = lambda seconds: None  # each answered lease call (metrics)

    @property
    def hold_s(self) -> float:
        return self.lease_ms * STEP_DOWN_FRACTION / 1000

    @property
    def is_primary(self) -> bool:
        return (
            self._renewed_at is not None
            and self.clock() - self._renewed_at < self.hold_s
            and self.store_changes() == self._store_seen
        )

    @property
    def primary_until(self) -> float:
        """The clock reading at which this node stops being primary unless it renews; 0.0 when it is not."""
        return self._renewed_at + self.hold_s if self.is_primary and self._renewed_at is not None else 0.0

    @property
    def primary_id(self) -> str:
        """The node believed to be primary: ourselves, or the lease holder last seen."""
        if self.is_primary:
            return self.node_id
        return "" if self.leader_id == self.node_id else self.leader_id

    async def step(self) -> float:
        """One round: renew if primary, else try to take the lease. Returns seconds to the next round."""
        self.store_changed()
        if self._renewed_at is not None:
            if not self.is_primary:
                self._step_down("renew_overdue")
            else:
                return await self._renew()
        wait = self._hold_until - self.clock()
        if wait > 0:
            return min(self.poll_s, wait)
        return await self._acquire()

    def store_changed(self) -> bool:
        """Step down at once if the store changed since last seen (the node also calls this the moment a
        change is counted, so the primary-only services stop without waiting for the next round)."""
        changes = self.store_changes()
        if changes == self._store_seen:
            return False
        self._store_seen = changes
        self._hold_until = self.clock() + self.failover_hold_s
        self._step_down("store_failover")
        return True

    async def _renew(self) -> float:
        assert self._renewed_at is not None
        sent, seen = self.clock(), self._store_seen
        remaining = self._renewed_at + self.hold_s - sent
        try:
            async with asyncio.timeout(remaining):  # inline, not a task of its own: no extra loop turn
                ok = await self.leases.renew(self.node_id, self.epoch, self.lease_ms)
        except UNAVAILABLE_ERRORS as exc:
            self._unavailable(exc)
            if self.store_changed() or seen != self._store_seen:
                return self.poll_s
            if not self.is_primary:
                self._step_down("redis_unreachable")
                return self.poll_s
            return min(self.poll_s, max(0.0, self._renewed_at + self.hold_s - self.clock()))
        self.redis_ok = True
        self.on_round_trip(self.clock() - sent)
        if self.store_changed() or seen != self._store_seen:  # the renew may have gone to another master
            return self.poll_s
        if not ok:
            self._step_down("lease_lost")
            return 0.0
        self.renew_gaps.append(sent - self._renewed_at)
        self._renewed_at = sent
        # Counted from when this renew was sent, so a slow reply does not push the next one later.
        return max(0.0, sent + self.renew_s - self.clock())

    async def _acquire(self) -> float:
        sent, seen = self.clock(), self._store_seen
        try:
            floor = max(self.epoch, self.epoch_floor())
            acquire = self.leases.acquire(self.node_id, self.lease_ms, floor)
            state = await asyncio.wait_for(acquire, self.lease_ms / 2000)
        except UNAVAILABLE_ERRORS as exc:
            self._unavailable(exc)
            return self.poll_s
        self.redis_ok = True
        self.on_round_trip(self.clock() - sent)
        if self.store_changed() or seen != self._store_seen:
            # The store changed while the acquire was on its way: a lease it took may be on the old master.
            # Not elected; the hold applies (the lease, if on the new master, runs out before it ends).
            self.epoch = max(self.epoch, state.epoch)
            return self.poll_s
        self.epoch = state.epoch if state.acquired else max(self.epoch, state.epoch)
        self.leader_id = state.holder
        if state.acquired:
            self._renewed_at = sent
            log.info("elected_primary", node=self.node_id, epoch=self.epoch)
            self.on_change(True)
            return self.renew_s
        # Sleep until the holder's lease would run out, but never longer than the poll interval.
        wait = state.ttl_ms / 1000 if state.ttl_ms > 0 else self.poll_s
        return max(0.01, min(self.poll_s, wait))

    async def release(self) -> bool:
        """Clean shutdown: give the lease back at once so a satellite takes over without waiting."""
        if not self.is_primary:
            return False
        epoch = self.epoch
        self._step_down("shutdown")
        try:
            return await asyncio.wait_for(self.leases.release(self.node_id, epoch), self.lease_ms / 1000)
        except UNAVAILABLE_ERRORS:
            return False

    def _unavailable(self, exc: BaseException) -> None:
        if self.redis_ok:
            log.warning("redis_unreachable", node=self.node_id, error=repr(exc))
        self.redis_ok = False

    def _step_down(self, reason: str) -> None:
        was = self._renewed_at is not None
        self._renewed_at = None
        if self.leader_id == self.node_id:
            self.leader_id = ""
        if was:
            log.warning("stepped_down", node=self.node_id, epoch=self.epoch, reason=reason)
            self.on_change(False)
