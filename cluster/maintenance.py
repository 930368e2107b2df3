"""Retention: a primary-only service that trims job records, activity records, snapshots, sessions and monitor
timelines.

It runs shortly after this node becomes primary and then every `interval_s`. Old records are found
through the time-ordered search indexes (never a scan of the records), deleted together with their
index entries in bounded fenced batches (a deposed primary deletes nothing), and the loop yields between
batches, so a large backlog never holds up the node. A deleted job's log and files go right after its batch
(Stores.drop_job_output). What was removed is logged.

Limits (xyOps `db_maint.<table>.max_rows` keeps the newest rows of a table; `*_expire_days` is ours):
jobs, activity and snapshots beyond `*_max_rows`, or older than `*_expire_days` (a snapshot by the date of
its sample), and the oldest snapshots past 95% of their byte budget (--snapshot-max-mb; after the trims, with
the indexing of snapshots a crash left unindexed, so a failure there holds up no other retention); each user's
oldest sessions
beyond `max_sessions_per_user` (also applied at every login, storage/users.py `create_session`). Monitor
timelines keep each system's retention (storage/timeseries.py, xyOps `runTimelineMaintenance`), servers found
by a ZSCAN of one key and trimmed `timeline_step` servers per fenced script.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import structlog

from storage.errors import FencedError
from storage.fence import Fence

from .node import NodeRuntime, NotPrimary

log = structlog.get_logger("podium.maintenance")


@dataclass(frozen=True, slots=True)
class MaintenanceConfig:
    job_max_rows: int = 100_000  # 0 = no cap
    job_expire_days: int = 0  # 0 = no age limit
    activity_max_rows: int = 100_000
    activity_expire_days: int = 0
    # ⚠ xyOps keeps 100,000 snapshots (on disk); here they are in Redis memory, tens of KB each.
    snapshot_max_rows: int = 10_000
    snapshot_expire_days: int = 0
    max_sessions_per_user: int = 100  # 0 = no cap
    interval_s: float = 600.0
    first_run_s: float = 30.0  # after taking the primary: let a failover settle first
    batch: int = 500  # old records found per index query
    step: int = 100  # records deleted per fenced script: each blocks the store (and this loop) only briefly
    timeline_step: int = 25  # servers whose timelines (4 lists each) one fenced script trims


# The limits an admin may change for the whole cluster at run time (admin_update_config, stored in Redis): name ->
# (lowest, highest). Each pass reads them, so a change applies from the next pass on, on whichever node is primary.
EDITABLE: dict[str, tuple[int, int]] = {
    "job_max_rows": (0, 100_000_000),
    "job_expire_days": (0, 36500),
    "activity_max_rows": (0, 100_000_000),
    "activity_expire_days": (0, 36500),
    "snapshot_max_rows": (0, 10_000_000),
    "snapshot_expire_days": (0, 36500),
}


def with_overrides(config: MaintenanceConfig, overrides: Mapping[str, Any]) -> MaintenanceConfig:
    """`config` with the valid overrides applied (anything else stored there is ignored)."""
    valid = {k: v for k, v in overrides.items() if k in EDITABLE and isinstance(v, int) and not isinstance(v, bool)
             and EDITABLE[k][0] <= v <= EDITABLE[k][1]}  # fmt: skip
    return dataclasses.replace(config, **valid) if valid else config


@dataclass(slots=True)
class Removed:
    jobs: int = 0
    activity: int = 0
    snapshots: int = 0
    sessions: int = 0
    timeline_rows: int = 0


class Trimmed(Protocol):
    """A record family maintenance can trim (storage/jobs.py JobStore, storage/activity.py ActivityStore,
    storage/snapshots.py SnapshotStore)."""

    async def oldest(self, limit: int, *, before: float | None = None, offset: int = 0) -> tuple[list[str], int]: ...

    async def delete_many(self, fence: Fence, ids: Sequence[str]) -> tuple[int, list[str]]: ...


# What goes with a deleted batch besides the records (a job's log and files: Stores.drop_job_output). It is given
# the records as they were read before the delete (the id where there was none), so a job's input uploads go too.
After = Callable[[Sequence[str | Mapping[str, Any]]], Awaitable[None]]
Load = Callable[[Sequence[str]], Awaitable[Sequence[Mapping[str, Any] | None]]]


class Maintenance:
    def __init__(self, node: NodeRuntime, config: MaintenanceConfig) -> None:
        self.node = node
        self.config = config

    async def run(self, stop: asyncio.Event) -> None:
        delay = self.config.first_run_s
        while not stop.is_set():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
            if stop.is_set():
                return
            try:
                await self.run_once(stop)
            except (FencedError, NotPrimary):
                return  # deposed: the node's runtime stops this service
            except Exception as exc:  # one failed pass must not end retention
                log.warning("maintenance_failed", error=repr(exc))
            delay = self.config.interval_s

    async def run_once(self, stop: asyncio.Event | None = None, *, now: float | None = None) -> Removed:
        """One full pass, as of `now` (default: the clock). Raises NotPrimary / FencedError as soon as this node
        is not primary."""
        stores = self.node.stores
        cfg = with_overrides(self.config, await stores.config.overrides())
        started = time.monotonic()
        now = time.time() if now is None else now
        removed = Removed()
        trims: tuple[tuple[Trimmed, int, int, str, tuple[After, Load] | None], ...] = (
            (stores.jobs, cfg.job_max_rows, cfg.job_expire_days, "jobs",
             (stores.drop_job_output, stores.jobs.get_many)),
            (stores.activity, cfg.activity_max_rows, cfg.activity_expire_days, "activity", None),
            (stores.snapshots, cfg.snapshot_max_rows, cfg.snapshot_expire_days, "snapshots", None),
        )
        for family, max_rows, days, field, after in trims:
            count = await self._trim(family, stop, before=now - days * 86400, after=after) if days else 0
            count += await self._trim(family, stop, max_rows=max_rows, after=after) if max_rows else 0
            setattr(removed, field, count)
        removed.snapshots += await self._snapshot_upkeep(stop)
        removed.sessions = await self._trim_sessions(stop)
        removed.timeline_rows = await self._trim_timelines(stop, now)
        if removed.jobs or removed.activity or removed.snapshots or removed.sessions or removed.timeline_rows:
            log.info("maintenance_removed", jobs=removed.jobs, activity=removed.activity, snapshots=removed.snapshots,
                     sessions=removed.sessions, timeline_rows=removed.timeline_rows,
                     seconds=round(time.monotonic() - started, 3))  # fmt: skip
        return removed

    async def _trim(
        self, family: Trimmed, stop: asyncio.Event | None, *, before: float | None = None, max_rows: int = 0,
        after: tuple[After, Load] | None = None,
    ) -> int:  # fmt: skip
        """Delete, oldest first, records dated before `before`, or all but the newest `max_rows`; `after` (a hook and
        how it loads the records) is given each deleted batch: the records read before the delete, the id of those
        already gone (what they left goes with them)."""
        removed = 0
        skipped = 0  # index entries whose record is already gone: stepped over (they are the oldest left)
        while stop is None or not stop.is_set():
            ids, total = await family.oldest(self.config.batch, before=before, offset=skipped)
            if max_rows:
                ids = ids[: max(total - skipped - max_rows, 0)]
            if not ids:
                break
            for at in range(0, len(ids), self.config.step):
                chunk = ids[at : at + self.config.step]
                records = await after[1](chunk) if after is not None else []
                done, gone = await family.delete_many(self.node.fence(), chunk)
                if after is not None:
                    await after[0]([rec or job_id for job_id, rec in zip(chunk, records, strict=True)])
                removed += done
                skipped += len(gone)
                await asyncio.sleep(0)
        return removed

    async def _snapshot_upkeep(self, stop: asyncio.Event | None) -> int:
        """After the trims (a failure here must not hold up retention): index the snapshots a crash left
        unindexed, recount their bytes and drop the oldest past the byte budget (to 95% of it, so other nodes,
        which cannot drop any, have room again). Returns how many went."""
        snapshots = self.node.stores.snapshots
        try:
            for _ in range(1000):  # at most a million: a bound on one pass, the next goes on
                if (stop is not None and stop.is_set()) or not await snapshots.index_pending():
                    break
            await snapshots.recount()
            if snapshots.max_bytes:
                return await snapshots.trim_bytes(self.node.fence(), int(snapshots.max_bytes * 0.95))
        except (FencedError, NotPrimary):
            raise
        except Exception as exc:
            log.warning("snapshot_upkeep_failed", error=repr(exc))
        return 0

    async def _trim_sessions(self, stop: asyncio.Event | None) -> int:
        cap = self.config.max_sessions_per_user
        if not cap:
            return 0
        users = self.node.stores.users
        ended = offset = 0
        while stop is None or not stop.is_set():
            page = await users.session_counts(offset, self.config.batch)
            if not page:
                break
            for norm, count in page:
                if count > cap:
                    ended += await users.trim_sessions(self.node.fence(), norm, cap)
            offset += len(page)
            await asyncio.sleep(0)
        return ended

    async def _trim_timelines(self, stop: asyncio.Event | None, now: float) -> int:
        timelines = self.node.stores.timelines
        step = max(self.config.timeline_step, 1)
        removed = cursor = 0
        while stop is None or not stop.is_set():
            cursor, servers = await timelines.servers(cursor, self.config.batch)
            for at in range(0, len(servers), step):
                removed += await timelines.trim(servers[at : at + step], fence=self.node.fence(), now=now)
                await asyncio.sleep(0)
            if not cursor:
                break
        return removed


def maintenance_service(config: MaintenanceConfig) -> Any:
    """A primary service (see NodeRuntime) running retention."""

    async def service(node: NodeRuntime, stop: asyncio.Event) -> None:
        await Maintenance(node, config).run(stop)

    return service
