"""The alert evaluator's primary half: warm counters, invocations and their actions (execution reference 2.4).

Nodes post each sample's alert results onto the alert inbox (cluster/monitoring/intake.py). This primary service
applies them in order, a batch at a time: it reads the warm entries of the servers in the batch, advances them
(cluster/monitoring/alerting.py), and writes in ONE fenced batch the new warm entries, each invocation that fired
(its record, queued for the search index), the action runs of every fire and clear (the outbox of
storage/actions.py, performed exactly once by the action runner), the `alerts_active` map and the inbox cursor.
A failover anywhere leaves either all of that or none of it, and the next primary resumes after the cursor.

Clearing rewrites an invocation that others may be changing (its tickets): it is done after the batch, by a
compare-and-swap, from a `clearing` set the batch fills, so a failover in between finishes it on the next term.

Stale entries (a server that stopped reporting, xyOps `stale_alert_timeout`) are cleared silently every minute.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import structlog

from storage import codec
from storage.alertstate import INBOX_BATCH
from storage.connection import UNAVAILABLE_ERRORS
from storage.errors import Conflict, FencedError
from storage.families import ALERTS, GROUPS
from storage.fence import FencedBatch
from storage.ids import generate_id

from ..actions.plan import action_key
from .alerting import Advance, advance

if TYPE_CHECKING:
    from ..dispatch.machine import Dispatcher
    from ..node import NodeRuntime

log = structlog.get_logger("podium.alerts")
Record = dict[str, Any]
ABORT_JOBS = "_abort_jobs"  # the internal run that aborts a server's jobs when an alert with abort_jobs fires
CONDITIONS = ("alert_new", "alert_cleared")


@dataclass(frozen=True, slots=True)
class AlertConfig:
    stale_s: float = 90.0  # xyOps stale_alert_timeout
    sweep_s: float = 60.0
    block_ms: int = 1000
    universal_actions: tuple[Record, ...] = ()  # xyOps alert_universal_actions (each with its condition)


def alert_actions(alert: Mapping[str, Any], groups: Sequence[Mapping[str, Any]], condition: str,
                  universal: Sequence[Mapping[str, Any]] = ()) -> list[Record]:  # fmt: skip
    """The enabled actions of an alert for `condition`: its own, then (unless `exclusive_actions`) those of the
    server's groups and the universal ones, each once (cluster/actions/plan.py action_key)."""
    found: list[Record] = [dict(a) for a in alert.get("actions") or [] if isinstance(a, Mapping)]
    if not alert.get("exclusive_actions"):
        for group in groups:
            found += [{**a, "source": "group"} for a in group.get("alert_actions") or [] if isinstance(a, Mapping)]
        found += [{**a, "source": "universal"} for a in universal]
    out: list[Record] = []
    seen: set[str] = set()
    for action in found:
        if not action.get("enabled") or action.get("condition") != condition:
            continue
        key = action_key(action)
        if key not in seen:
            seen.add(key)
            out.append(action)
    return out


def alert_run(invocation: Mapping[str, Any], condition: str, action: Mapping[str, Any], run_id: str,
              kind: str = "alert") -> Record:  # fmt: skip
    """An action run of an invocation (storage/actions.py), performed by the action runner."""
    return {"id": run_id, "kind": kind, "invocation": str(invocation["id"]), "alert": str(invocation["alert"]),
            "server": str(invocation["server"]), "condition": condition, "action": dict(action), "job": ""}  # fmt: skip


class AlertService:
    def __init__(self, node: NodeRuntime, dispatcher: Dispatcher | None = None,
                 config: AlertConfig | None = None) -> None:  # fmt: skip
        self.node = node
        self.dispatcher = dispatcher
        self.config = config or AlertConfig()
        self.applied = 0  # inbox entries applied (tests read it)
        self.cursor = "0-0"  # the last inbox entry applied, as committed
        # apply(), sweep() and clear() each read a server's warm entries and write them back whole: one at a time.
        self._lock = asyncio.Lock()

    async def run(self, stop: asyncio.Event) -> None:
        own = self.node.db.with_own_pool(2, client_name="podium-alerts")
        try:
            started = False
            swept = time.time()
            while not stop.is_set():
                try:
                    if not started:  # (again after any error: the cursor in Redis is the truth)
                        self.cursor = await self.node.stores.alertstate.cursor()
                        await self._finish_clearing()
                        await self.node.stores.alerts.index_pending()  # what a predecessor did not index
                        started = True
                    entries = await self.node.stores.alertstate.read(self.cursor, block_ms=self.config.block_ms,
                                                                     client=own.client)  # fmt: skip
                    if entries:
                        await self.apply(entries)
                    # Only once the inbox is drained: a server whose samples still wait in a backlog is not stale.
                    if len(entries) < INBOX_BATCH and time.time() - swept >= self.config.sweep_s:
                        swept = time.time()
                        await self.sweep(swept)
                except FencedError:
                    return
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # the store is away, or a bug: alerting must not end for the term
                    if isinstance(exc, UNAVAILABLE_ERRORS):
                        log.warning("alerts_store_unavailable", error=str(exc))
                    else:
                        log.exception("alerts_loop_failed")
                    started = False
                    await asyncio.sleep(1.0)
        finally:
            await own.aclose()

    # -- applying samples ---------------------------------------------------------------------
    async def apply(self, entries: Sequence[tuple[str, Record]]) -> None:
        async with self._lock:
            fired, cleared = await self._apply(entries)
        await self._after(fired, cleared)

    async def _apply(self, entries: Sequence[tuple[str, Record]]
                     ) -> tuple[list[tuple[Record, Record]], list[tuple[Record, Record | None, bool]]]:  # fmt: skip
        stores, keys = self.node.stores, self.node.db.keys
        defs = {str(a["id"]): a for a in await stores.defs.all(ALERTS) if a.get("enabled", True)}
        groups = {str(g["id"]): g for g in await stores.defs.all(GROUPS)}
        samples = {aid: _samples(a) for aid, a in defs.items()}
        servers = [str(e.get("server")) for _, e in entries]
        warm = await stores.alertstate.warm(servers)
        snoozed = float((await stores.state.get()).get("alert_snooze") or 0) > time.time()
        batch = FencedBatch()
        fired: list[tuple[Record, Record]] = []  # (invocation, alert def)
        cleared: list[tuple[Record, Record | None, bool]] = []  # (warm entry, alert def, silent)
        touched: dict[str, float] = {}
        for _, entry in entries:
            server = str(entry.get("server"))
            found = entry.get("results")
            results: Mapping[str, str | None] = found if isinstance(found, Mapping) else {}
            now = float(entry.get("date") or time.time())
            step: Advance = advance(warm.get(server, {}), results, samples, server, now, lambda: generate_id("a"))
            warm[server] = step.warm
            touched[server] = now
            server_groups = [groups[g] for g in entry.get("groups") or [] if g in groups]
            for item in step.fired:
                alert = defs[str(item["alert"])]
                invocation = self._invocation(item, alert, entry)
                fired.append((invocation, alert))
                batch.add("SET", [keys.alert_invocation(invocation["id"])], codec.pack(invocation))
                batch.add("SADD", [keys.alerts_unindexed], invocation["id"])
                stores.alertstate.active_ops(batch, server, str(item["alert"]), str(invocation["id"]))
                runs = [] if snoozed else [alert_run(invocation, "alert_new", a, generate_id("r"))
                                           for a in alert_actions(alert, server_groups, "alert_new",
                                                                  self.config.universal_actions)]  # fmt: skip
                if alert.get("abort_jobs"):
                    runs.append(alert_run(invocation, "alert_new", {"type": ABORT_JOBS, "enabled": True},
                                          generate_id("r"), kind="alert_internal"))  # fmt: skip
                for run in runs:
                    self._queue(batch, run, now)
            for item in step.cleared:
                silent = any(item is s for s in step.silent)
                gone_or_def = defs.get(str(item["alert"]))
                cleared.append((item, gone_or_def, silent))
                stores.alertstate.active_ops(batch, server, str(item["alert"]), None)
                batch.add("ZADD", [keys.alerts_clearing], repr(now), str(item["id"]))
                if not silent and not snoozed and gone_or_def is not None:
                    invocation = {**item, "active": False, "modified": now}
                    universal = self.config.universal_actions
                    for action in alert_actions(gone_or_def, server_groups, "alert_cleared", universal):
                        run = alert_run(invocation, "alert_cleared", action, generate_id("r"))
                        run["elapsed"] = max(0.0, now - float(item.get("date") or now))
                        self._queue(batch, run, now)
        for server, now in touched.items():
            stores.alertstate.warm_ops(batch, server, warm[server], now)
        stores.alertstate.done_ops(batch, entries[-1][0])
        await self.node.fence().execute(batch)
        self.cursor = entries[-1][0]  # committed: whatever follows must not apply these again
        self.applied += len(entries)
        return fired, cleared

    def _invocation(self, item: Mapping[str, Any], alert: Mapping[str, Any], entry: Mapping[str, Any]) -> Record:
        server = str(item["server"])
        jobs: list[str] = []
        tickets: list[str] = []
        if self.dispatcher is not None:
            for job in self.dispatcher.jobs.values():
                if job.get("server") != server or job.get("state") != "active":
                    continue
                jobs.append(str(job["id"]))
                parent = (job.get("workflow") or {}).get("job") if isinstance(job.get("workflow"), Mapping) else None
                if parent and str(parent) not in jobs:
                    jobs.append(str(parent))
            for job_id in jobs:
                found = self.dispatcher.jobs.get(job_id) or {}
                tickets += [str(t) for t in found.get("tickets") or [] if str(t) not in tickets]
        return {**item, "active": True, "notified": True, "exp": str(alert.get("expression") or ""),
                "groups": list(entry.get("groups") or []), "jobs": jobs, "tickets": tickets, "actions": []}  # fmt: skip

    def _queue(self, batch: FencedBatch, run: Record, at: float) -> None:
        keys = self.node.db.keys
        batch.add("SET", [keys.action_run(str(run["id"]))], codec.pack(run))
        batch.add("ZADD", [keys.actions_due], repr(float(at)), str(run["id"]))

    async def _after(self, fired: list[tuple[Record, Record]], cleared: list[tuple[Record, Record | None, bool]]
                     ) -> None:  # fmt: skip
        """What follows a committed batch: search entries, clears, activity, time series flags, the runner."""
        stores = self.node.stores
        if fired or cleared:
            with contextlib.suppress(Exception):
                await stores.alerts.index_pending()
        for invocation, alert in fired:
            log.info("alert_new", alert=invocation["alert"], server=invocation["server"], id=invocation["id"])
            await _activity(self.node, "alert_new", f"New alert: {alert.get('title', invocation['alert'])}",
                            invocation)  # fmt: skip
            with contextlib.suppress(Exception):
                await stores.timelines.flag_alerts(str(invocation["server"]), float(invocation["modified"]),
                                                   [str(invocation["alert"])])  # fmt: skip
        if cleared:
            await self._finish_clearing()
            for item, definition, _ in cleared:
                log.info("alert_cleared", alert=item["alert"], server=item["server"], id=item["id"])
                title = (definition or {}).get("title", item["alert"])
                await _activity(self.node, "alert_cleared", f"Alert cleared: {title}", item)
        if self.dispatcher is not None and (fired or cleared):
            self.dispatcher.runs_ready.set()

    async def _finish_clearing(self) -> None:
        """Mark cleared invocations inactive (compare-and-swap: tickets may change meanwhile)."""
        stores, keys = self.node.stores, self.node.db.keys
        found: Any = await self.node.db.client.zrange(keys.alerts_clearing, 0, -1,
                                                                          withscores=True)  # fmt: skip
        for raw_id, when in found:
            inv_id = raw_id.decode() if isinstance(raw_id, bytes) else str(raw_id)

            def change(record: Record, when: float = float(when)) -> Record | None:
                if not record.get("active"):
                    return None
                return {**record, "active": False, "modified": when}

            try:
                await stores.alerts.update(self.node.fence(), inv_id, change)
            except FencedError:
                raise
            except Conflict:  # kept changing: tried again at the next batch (a bad record: see alerts_clear_failed)
                log.warning("alerts_clear_failed", id=inv_id)
                continue
            await self.node.fence().execute(FencedBatch().add("ZREM", [keys.alerts_clearing], inv_id))
        if found:
            with contextlib.suppress(Exception):
                await stores.alerts.index_pending()

    # -- a clear asked for (a job launched with clear_alert) ------------------------------------------
    async def clear(self, invocation_id: str) -> bool:
        """Clear an active invocation now, with its alert_cleared actions (xyOps clearActiveAlert). False when it
        is not active (cleared already: doing it again changes nothing)."""
        async with self._lock:
            done = await self._clear(invocation_id)
        if done is None:
            return False
        await self._after([], [done])
        return True

    async def _clear(self, invocation_id: str) -> tuple[Record, Record | None, bool] | None:
        stores, keys = self.node.stores, self.node.db.keys
        invocation = await stores.alerts.get(invocation_id)
        if invocation is None or not invocation.get("active"):
            return None
        server, alert_id = str(invocation.get("server")), str(invocation.get("alert"))
        if (await stores.alertstate.active()).get(f"{server}-{alert_id}") != invocation_id:
            return None
        now = time.time()
        warm = (await stores.alertstate.warm([server])).get(server, {})
        warm.pop(alert_id, None)
        batch = FencedBatch()
        stores.alertstate.warm_ops(batch, server, warm, now)
        stores.alertstate.active_ops(batch, server, alert_id, None)
        batch.add("ZADD", [keys.alerts_clearing], repr(now), invocation_id)
        alert = await stores.defs.get(ALERTS, alert_id)
        snoozed = float((await stores.state.get()).get("alert_snooze") or 0) > now
        if alert is not None and alert.get("enabled", True) and not snoozed:
            groups = [g for g in await stores.defs.all(GROUPS) if g.get("id") in (invocation.get("groups") or [])]
            for action in alert_actions(alert, groups, "alert_cleared", self.config.universal_actions):
                run = alert_run(invocation, "alert_cleared", action, generate_id("r"))
                run["elapsed"] = max(0.0, now - float(invocation.get("date") or now))
                self._queue(batch, run, now)
        await self.node.fence().execute(batch)
        return invocation, alert, False

    # -- stale entries ----------------------------------------------------------------------------
    async def sweep(self, now: float) -> int:
        """Clear, silently, the warm and active entries of servers that stopped reporting."""
        async with self._lock:
            cleared = await self._sweep(now)
        if cleared:
            await self._finish_clearing()
        return cleared

    async def _sweep(self, now: float) -> int:
        stores, keys = self.node.stores, self.node.db.keys
        servers = await stores.alertstate.stale(now - self.config.stale_s)
        if not servers:
            return 0
        warm = await stores.alertstate.warm(servers)
        batch = FencedBatch()
        cleared = 0
        for server in servers:
            for alert_id, item in warm.get(server, {}).items():
                if item.get("notified"):
                    stores.alertstate.active_ops(batch, server, alert_id, None)
                    batch.add("ZADD", [keys.alerts_clearing], repr(float(now)), str(item["id"]))
                    cleared += 1
            stores.alertstate.warm_ops(batch, server, {}, now)
        await self.node.fence().execute(batch)
        log.info("alerts_stale_cleared", servers=len(servers), invocations=cleared)
        return cleared


def _samples(alert: Mapping[str, Any]) -> int:
    samples = alert.get("samples")
    return max(1, int(samples)) if isinstance(samples, int | float) and not isinstance(samples, bool) else 1


async def _activity(node: NodeRuntime, action: str, description: str, item: Mapping[str, Any]) -> None:
    """The activity record of a fire or a clear (a log: written after the change, never blocking it)."""
    record = {"id": generate_id("a"), "action": action, "epoch": int(time.time()), "description": description,
              "username": "system", "alert": dict(item), "server": str(item.get("server") or ""),
              "keywords": sorted({str(item.get(k)) for k in ("id", "alert", "server") if item.get(k)})}  # fmt: skip
    try:
        await node.stores.activity.add(record)
    except Exception as exc:
        log.warning("alert_activity_failed", error=repr(exc))


def alert_service(service: AlertService) -> Any:
    """The primary service that runs `service` (cluster/node.py PrimaryService)."""

    async def run(node: NodeRuntime, stop: asyncio.Event) -> None:
        await service.run(stop)

    return run
