"""The node runtime: election, registry heartbeats, and the primary-only services they gate.

The election and the heartbeat talk to Redis through `control`, a client with a small pool of its own
(`Database.with_own_pool`), so a burst of requests that takes every connection of the request pool
cannot delay a renew; the runtime owns that client and closes it on stop. Everything else (handlers,
primary-only services, the invalidation bus, the redirect's look-ups) uses `db`.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from storage.connection import UNAVAILABLE_ERRORS, Database
from storage.fence import Fence
from storage.lease import LeaseStore
from storage.models import NodeRecord
from storage.nodes import NodeStore
from storage.stores import Stores

from .election import Election
from .follower import FollowedElection
from .loops import cancel_and_wait, run_periodic
from .metrics import NodeMetrics
from .registry import HEARTBEAT_S, Registry, make_record
from .watchdog import LoopWatchdog

if TYPE_CHECKING:
    from .actions.runner import ActionRunner
    from .dispatch.machine import Dispatcher
    from .internaljobs import InternalJobs
    from .maintenance import Maintenance
    from .monitoring.alertservice import AlertService

log = structlog.get_logger("podium.node")

# After a store failover no node of ours acquires for this many heartbeats (or a lease, if longer): time
# for every live node to write its epoch into the new master's registry (cluster/election.py).
FAILOVER_HOLD_HEARTBEATS = 3

# A primary-only service: a coroutine run while this node is primary, cancelled when it is not.
PrimaryService = Callable[["NodeRuntime", asyncio.Event], Coroutine[Any, Any, None]]


class NotPrimary(Exception):
    """A primary-only action was attempted on a node that is not (or no longer) primary."""


def load_node_id(data_dir: Path) -> str:
    """A stable id kept in the data dir, never the hostname."""
    path = data_dir / "node_id"
    if path.exists():
        value = path.read_text().strip()
        if value:
            return value
    data_dir.mkdir(parents=True, exist_ok=True)
    value = "n" + secrets.token_hex(6)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(value + "\n")
    tmp.replace(path)
    return value


class NodeRuntime:
    def __init__(
        self,
        db: Database,
        node_id: str,
        advertise_url: str,
        *,
        lease_ms: int = 3000,
        services: list[PrimaryService] | None = None,
        stores: Stores | None = None,
        control: Database | None = None,
        follower: bool = False,
    ) -> None:
        self.db = db
        self.control = control if control is not None else db.with_own_pool()
        self.stores = stores or Stores.open(db)
        self.node_id = node_id
        self.url = advertise_url.rstrip("/")
        self.started = time.time()
        self.registry = Registry(NodeStore(self.control), self._record)
        # An HTTP worker (api/workers.py) follows the role its node process pushes; it runs no election itself.
        self.follower = follower
        self.election = FollowedElection(LeaseStore(self.control), node_id, lease_ms=lease_ms) if follower else (
            Election(
                LeaseStore(self.control), node_id, lease_ms=lease_ms,
                store_changes=lambda: self.control.store_changes,  # one watch for all of this node's pools
                epoch_floor=self.registry.highest_epoch,
                failover_hold_s=max(lease_ms / 1000, FAILOVER_HOLD_HEARTBEATS * HEARTBEAT_S),
            ))  # fmt: skip
        # Called after each election round and heartbeat, and on a role change: the node process tells its workers.
        self.on_state: Callable[[], None] = lambda: None
        self.election.on_change = self._role_changed
        self.control.on_store_change(self._store_changed)
        # Under Sentinel a claim that precedes an outside effect waits for a replica, a third of a lease at most.
        self.db.confirm_claims(lease_ms // 3)
        self.watchdog = LoopWatchdog()
        self.services = list(services or [])
        self.dispatcher: Dispatcher | None = None  # the job state machine, when this node runs one
        self.alerting: AlertService | None = None  # the alert evaluator's primary half, when this node runs one
        self.actions: ActionRunner | None = None  # the job action runner (its SMTP settings send admin test mail)
        self.internal: InternalJobs | None = None  # the primary's internal jobs (cluster/internaljobs.py)
        self.maintenance: Maintenance | None = None  # retention, also run on demand as an internal job
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._primary_stop: asyncio.Event | None = None
        self._primary_tasks: list[asyncio.Task[None]] = []
        self._stoppers: list[asyncio.Task[None]] = []  # step-downs stopping the primary services
        self.metrics = NodeMetrics()
        self.election.on_round_trip = self.metrics.store_rtt.observe
        users, state = self.stores.users, self.stores.state
        self.metrics.caches.update(
            definitions=self.stores.defs.cache_counts,
            state=lambda: (state.cache.hits, state.cache.misses),
            users=lambda: (users.users.hits, users.users.misses),
            sessions=lambda: (users.sessions.hits, users.sessions.misses),
        )
        self.metrics.watch(self)

    # -- state ------------------------------------------------------------------
    @property
    def is_primary(self) -> bool:
        return self.election.is_primary

    @property
    def role(self) -> str:
        return "primary" if self.is_primary else "satellite"

    @property
    def epoch(self) -> int:
        return self.election.epoch

    @property
    def redis_ok(self) -> bool:
        return self.election.redis_ok and self.registry.ok

    def primary_record(self) -> NodeRecord | None:
        pid = self.election.primary_id
        if not pid:
            return None
        if pid == self.node_id:
            return self._record()
        return self.registry.find(pid)

    @property
    def primary_url(self) -> str:
        rec = self.primary_record()
        return rec.url if rec else ""

    async def locate_primary(self) -> NodeRecord | None:
        """The primary's record. On a miss (this node just resumed from a pause, or has not heard of
        the primary yet) ask Redis for the lease holder and a fresh registry view, so a redirect can
        still name it. Only the redirect path pays for this."""
        rec = self.primary_record()
        if rec is None and not self.is_primary:
            # Through the request client: a storm of redirects must not use the control pool.
            with contextlib.suppress(*UNAVAILABLE_ERRORS):
                holder, _ = await asyncio.wait_for(LeaseStore(self.db).holder(), 1.0)
                if holder and holder != self.node_id:
                    self.election.leader_id = holder
                    rec = self.registry.find(holder)
                    if rec is None:
                        self.registry.view = await asyncio.wait_for(NodeStore(self.db).live(), 1.0)
                        rec = self.registry.find(holder)
        return rec

    def fence(self) -> Fence:
        """The credential for a fenced write; NotPrimary if this node is not primary right now."""
        if not self.is_primary:
            raise NotPrimary(self.node_id)
        return Fence(self.db, self.node_id, self.election.epoch)

    def _record(self) -> NodeRecord:
        return make_record(
            self.node_id, self.url, self.started, self.role, self.epoch, self.redis_ok, self.watchdog.p99_s
        )

    # -- lifecycle --------------------------------------------------------------
    async def start(self) -> None:
        self._tasks = [asyncio.create_task(self.watchdog.run()), asyncio.create_task(self.stores.bus.run(self._stop))]
        if self.follower:  # the node process elects, heartbeats and runs the primary services
            return
        # Register before electing so a fresh primary is visible in the registry at once.
        with contextlib.suppress(*UNAVAILABLE_ERRORS):
            await self.registry.step()
        self._tasks += [
            asyncio.create_task(run_periodic("election", self._election_round, self._stop)),
            asyncio.create_task(run_periodic("heartbeat", self._heartbeat, self._stop)),
        ]

    async def stop(self) -> None:
        """Stop loops, hand the lease over at once and leave the registry."""
        self._stop.set()
        for task in self._tasks:
            await cancel_and_wait(task)
        released = await self.election.release()  # a worker holds no lease and runs no service: no-ops
        await self._stop_primary_services()
        # A step-down (the release above among them) stops the services in a task of its own, which may have
        # taken them over before the call above: it runs to its end (each service it waits for is bounded). Were it
        # cancelled, the service it waits for at that moment would be cancelled again in the middle of its own
        # clean-up (the dispatcher's pool was left open that way).
        for task in self._stoppers:
            await task
        if not self.follower:  # a worker shares its node's record
            with contextlib.suppress(*UNAVAILABLE_ERRORS):
                await asyncio.wait_for(self.registry.nodes.remove(self.node_id), 2.0)
        if self.control is not self.db:
            await self.control.aclose()
        log.info("node_stopped", node=self.node_id, released_lease=released)

    async def _election_round(self) -> float:
        try:
            return await self.election.step()
        finally:
            self.on_state()

    async def _heartbeat(self) -> float:
        try:
            return await self.registry.step()
        finally:  # also when the heartbeat failed: a Sentinel store, is the master still the one we know?
            with contextlib.suppress(*UNAVAILABLE_ERRORS):
                await self.control.verify_store()
            self.on_state()

    def _store_changed(self) -> None:
        # Called from inside a command on any of this node's pools: step down now, not at the next round.
        try:
            asyncio.get_running_loop()
        except RuntimeError:  # no running loop (a pool closed at exit): nothing to stop
            return
        self.election.store_changed()

    # -- primary-only services --------------------------------------------------
    def _role_changed(self, primary: bool) -> None:
        self.metrics.role_changed(primary)
        self.on_state()
        if primary:
            self._start_primary_services()
        else:
            # Stop the services at once (synchronously signal, cancel in the background).
            task = asyncio.get_running_loop().create_task(self._stop_primary_services())
            self._stoppers = [*(t for t in self._stoppers if not t.done()), task]

    def _start_primary_services(self) -> None:
        stop = self._primary_stop = asyncio.Event()
        self._primary_tasks = [asyncio.create_task(svc(self, stop)) for svc in self.services]

    async def _stop_primary_services(self) -> None:
        if self._primary_stop is not None:
            self._primary_stop.set()
        tasks, self._primary_tasks = self._primary_tasks, []
        for task in tasks:
            await cancel_and_wait(task)
