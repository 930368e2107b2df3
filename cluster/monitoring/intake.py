"""Monitoring samples, processed on the node that holds the agent's socket (execution reference 2.2).

Why there and not on the primary: the sample (tens of KB a minute per server, plus one QuickMon frame a second)
is already on that node, and the work (every monitor and alert expression) then spreads over the nodes with the
agents, so the primary does not become the bottleneck of a large fleet. Nothing here is a primary-only change:

- a minute sample writes the server's own keys (time series, last sample, `info` figures). One socket per server
  is live at a time; the time series refuses a second sample in the same minute atomically, which is what makes a
  sample resent across a reconnect (to this node or another) harmless: the duplicate is dropped before anything is
  written.
- alert results (which alerts hold, with their rendered messages) go to the primary's alert inbox; the primary
  alone changes warm counters and invocations, fenced (cluster/monitoring/alertservice.py).
- QuickMon samples are buffered and written for all agents of the node in one round trip every QUICK_FLUSH_S.

The conductor's clock dates every sample (as xyOps: agents' clocks drift).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import structlog

from cluster.expressions import Expression, ExpressionError, compile_expression
from storage.families import ALERTS, MONITORS

from .alerting import Alert, compile_alerts, evaluate
from .snapshots import watch_sample
from .values import Monitor, compile_monitors, compute, js_float, js_int, short_float

if TYPE_CHECKING:
    from ..node import NodeRuntime

log = structlog.get_logger("podium.monitoring")
Record = dict[str, Any]
QUICK_FLUSH_S = 0.25
INFO_FIELDS = ("cpu", "memory", "process")  # copied to the server record's `info` with the monitors and deltas
# Lists of a sample kept in the last sample (and so in snapshots): an agent may send more, the rest is dropped.
LIST_CAPS = {("processes", "list"): 1000, ("conns",): 2000, ("cpu", "cpus"): 512}
INFO_CPU_DROPPED = ("cpus", "flags", "cache")  # the bulky parts of `cpu`: the server record stays small

# xyOps' QuickMon presets (sample_conf quick_monitors): id -> (source over the per-second frame, type). The rate
# presets hold the agent's cumulative counters; the charts derive the rate, as in xyOps.
QUICK_MONITORS: tuple[tuple[str, str, str], ...] = (
    ("_qm_cpu_load", "cpu.avgLoad", "float"),
    ("_qm_cpu_usage", "cpu.currentLoad", "float"),
    ("_qm_mem_used", "mem.used", "bytes"),
    ("_qm_mem_avail", "mem.available", "bytes"),
    ("_qm_disk_read_sec", "fs.rx", "bytes"),
    ("_qm_disk_write_sec", "fs.wx", "bytes"),
    ("_qm_net_in_sec", "net.rx", "bytes"),
    ("_qm_net_out_sec", "net.tx", "bytes"),
)


class _Compiled:
    """Compiled monitors and alerts, rebuilt when the cached definition lists change (the definition cache hands
    out a new list after every write, so identity says whether anything changed)."""

    def __init__(self) -> None:
        self._monitors: tuple[Any, list[Monitor]] = (None, [])
        self._alerts: tuple[Any, list[Alert]] = (None, [])
        self.quick: list[tuple[str, Expression, str]] = [(i, compile_expression(s), t) for i, s, t in QUICK_MONITORS]

    def monitors(self, records: list[Record]) -> list[Monitor]:
        if self._monitors[0] is not records:
            self._monitors = (records, compile_monitors(records))
        return self._monitors[1]

    def alerts(self, records: list[Record]) -> list[Alert]:
        if self._alerts[0] is not records:
            self._alerts = (records, compile_alerts(records))
        return self._alerts[1]


def quick_values(compiled: Sequence[tuple[str, Expression, str]], frame: Mapping[str, Any]) -> dict[str, float]:
    """One QuickMon sample's values (xyOps handleQuickMonData: float presets kept to 5 decimals, others floored)."""
    out: dict[str, float] = {}
    for qid, expr, kind in compiled:
        try:
            value = expr.evaluate(frame)
        except ExpressionError:
            value = 0
        out[qid] = short_float(js_float(value)) if kind == "float" else js_int(js_float(value))
    return out


def capped(data: Mapping[str, Any]) -> Record:
    """A copy of a sample with its long lists cut to LIST_CAPS (the counts it reports stay as sent)."""
    out = dict(data)
    for path, cap in LIST_CAPS.items():
        parent: Any = out
        for key in path[:-1]:
            found = parent.get(key) if isinstance(parent, Mapping) else None
            if not isinstance(found, Mapping):
                parent = None
                break
            parent[key] = parent = dict(found)
        if isinstance(parent, dict) and isinstance(parent.get(path[-1]), list) and len(parent[path[-1]]) > cap:
            parent[path[-1]] = parent[path[-1]][:cap]
    return out


class MonitorIntake:
    """The node's side of monitoring: one per node, fed by the agent gateway."""

    def __init__(self, node: NodeRuntime) -> None:
        self.node = node
        self.compiled = _Compiled()
        self._quick: dict[str, Record] = {}  # server -> its latest sample since the last flush
        self._task: asyncio.Task[None] | None = None
        self.samples = 0  # minute samples processed (tests and the benchmark read them)
        self.duplicates = 0

    # -- minute samples ---------------------------------------------------------------------
    async def sample(self, server_id: str, frame: Mapping[str, Any], ip: str = "") -> bool:
        """Process one `monitor` frame; False when it was dropped (a duplicate minute, no such server)."""
        data = frame.get("data")
        if not isinstance(data, Mapping):
            return False
        stores = self.node.stores
        server = await stores.servers.get(server_id)
        if server is None:
            return False
        now = time.time()
        groups = [str(g) for g in server.get("groups") or []]
        data = capped(data)
        record: Record = {"version": str(frame.get("version") or "1.0"), "date": now, "server": server_id,
                          "hostname": str(server.get("hostname") or ""), "ip": ip or str(server.get("ip") or ""),
                          "groups": groups, "data": data}  # fmt: skip
        if data.get("dummy"):  # monitoring is off on the agent: kept as the last sample, never processed
            await stores.hosts.put(server_id, record)
            return True
        previous = (await stores.hosts.get_briefs([server_id]))[0]  # its date and monitors: the brief holds them
        prev_monitors, elapsed = None, None
        if previous is not None and isinstance(previous.get("data"), Mapping):
            found = previous["data"].get("monitors")
            prev_monitors = found if isinstance(found, Mapping) else None
            elapsed = now - float(previous.get("date") or now)
        monitors = self.compiled.monitors(await stores.defs.all(MONITORS))
        values, deltas = compute(monitors, data, groups, prev_monitors, elapsed)
        data["monitors"], data["deltas"] = values, deltas
        results = evaluate(self.compiled.alerts(await stores.defs.all(ALERTS)), data, groups)
        if not await stores.timelines.add(server_id, now, values):
            self.duplicates += 1
            log.debug("monitor_sample_duplicate", server=server_id)
            return False
        await stores.hosts.put(server_id, record)
        if results:
            await stores.alertstate.post([{"server": server_id, "date": now, "groups": groups, "results": results,
                                           "hostname": record["hostname"], "ip": record["ip"]}])  # fmt: skip
        await self._refresh_info(server_id, data, values, deltas)
        await watch_sample(self.node, server_id, record)  # snapshots: a watched server's every sample
        self.samples += 1
        return True

    async def _refresh_info(self, server_id: str, data: Mapping[str, Any], values: Record, deltas: Record) -> None:
        """`info.{cpu, memory, process, monitors, deltas}` of the server record: what `least_cpu`, `least_mem` and
        `monitor:<id>` placement read."""
        info_update = {k: data[k] for k in INFO_FIELDS if isinstance(data.get(k), Mapping)}
        if "cpu" in info_update:  # `avgLoad`, `currentLoad`, `cores`, ...: what placement and messages read
            info_update["cpu"] = {k: v for k, v in info_update["cpu"].items() if k not in INFO_CPU_DROPPED}

        async def change(server: Record) -> Record:
            info = dict(server.get("info") or {})
            info.update(info_update, monitors=values, deltas=deltas)
            return {**server, "info": info}

        await self.node.stores.servers.modify(server_id, change, reindex=False)

    # -- per-second samples ---------------------------------------------------------------------
    def quick(self, server_id: str, frame: Mapping[str, Any]) -> None:
        """Buffer one `quickmon` frame's values; written with the next flush."""
        # Whole seconds, as xyOps dates them: the store moves a sample in the same second one second on.
        # One per server per flush: an agent that floods frames replaces its own sample, never pushes out others'.
        self._quick[server_id] = {"date": int(time.time()), **quick_values(self.compiled.quick, frame)}

    async def flush_quick(self) -> None:
        batch, self._quick = self._quick, {}
        if batch:
            await self.node.stores.quickmon.add_many(list(batch.items()))

    async def _flusher(self) -> None:
        while True:
            await asyncio.sleep(QUICK_FLUSH_S)
            try:
                await self.flush_quick()
            except Exception as exc:  # the store is away: those samples are gone, the next ones go on
                log.warning("quickmon_flush_failed", error=repr(exc))

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._flusher())

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        with contextlib.suppress(Exception):
            await self.flush_quick()
