"""Snapshots of a server or a group (xyOps lib/monitor.js createSnapshot, saveSnapshot, createGroupSnapshot,
checkGroupWatches): the last minute sample with the active jobs, alerts and QuickMon samples of the moment.

Every part is read from the store (the last sample, `alerts_active`, the active jobs, QuickMon), so any node can
take one: a watched server's sample on the node holding its socket, an API call or an action on the primary. The
active jobs come from the dispatcher's map in memory where the node runs one (the primary), else from the store.
The builders here are pure; `take_server_snapshot` / `take_group_snapshot` gather the parts and store the result.

A group snapshot keeps each member's brief sample (no process or connection lists, mounts or plugin output) and
reads only those (storage/hostdata.py), yielding to the loop every few members, so a large group never holds the
primary's loop (and its lease) for long. Job and alert actions take one snapshot per server, sample and source: a
second job error on a server within the same minute records the snapshot the first took (alerts alike); and
their snapshot ids come from their run ids, so a run repeated after a failover finds its snapshot instead of
making a second one. Past
the byte budget (storage/snapshots.py) the primary drops the oldest snapshots to make room; another node
refuses (code `snapshot`) until retention has made some.

Watches live in the global state, as in xyOps: `watches.servers.<id>` / `watches.groups.<id>` = expiry (epoch s),
written by watch_server / watch_group (0 cancels). A watched server's every minute sample takes a snapshot (source
`watch`, MonitorIntake.sample); a primary service takes one of each watched group every minute at :30.

Sizes are bounded whatever an agent sends: process and connection lists are capped, a server's part of a snapshot
that still packs past its budget loses its heavy parts (as a brief, storage/snapshots.py) and says `truncated`, and
a group snapshot holds at most MAX_GROUP_SERVERS members.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import structlog

from storage import codec
from storage.families import GROUPS
from storage.ids import generate_id
from storage.snapshots import ID_PREFIX, OverBudget, brief

if TYPE_CHECKING:
    from ..node import NodeRuntime

log = structlog.get_logger("podium.snapshots")
Record = dict[str, Any]
MAX_PROCESSES = 1000  # rows of a sample's process list kept in a snapshot
MAX_CONNS = 2000  # rows of its connection list
MAX_IDS = 1000  # active job and alert ids listed
MAX_GROUP_SERVERS = 200  # members of a group snapshot (online ones first)
SERVER_BYTES = 2 * 1024 * 1024  # one server's part of a snapshot, packed, after the lists are capped
GROUP_BYTES = 24 * 1024 * 1024  # a whole group snapshot's member data: each member gets its share
MIN_SHARE_BYTES = 64 * 1024
RECENT_OFFLINE_S = 3600  # offline members still in a group snapshot (xyOps: modified in the last hour)
WATCH_MAX_S = 31 * 86400  # the longest watch (a snapshot a minute; retention trims the oldest)
GROUP_WATCH_SECOND = 30.0  # group watches run at :30 of every minute, as xyOps
YIELD_EVERY = 20  # group members bounded between two yields to the loop
BUDGET_SLACK = 0.05  # what the primary frees past the byte budget when full: some room for the next ones
_WORD_ID = re.compile(r"^\w{1,64}$")
# xyOps' default universal alert action (config `alert_universal_actions`): a snapshot of the server when an alert
# fires, hidden in the UI's action lists.
ALERT_UNIVERSAL_ACTIONS: tuple[Record, ...] = (
    {"enabled": True, "hidden": True, "condition": "alert_new", "type": "snapshot"},
)


class SnapshotError(Exception):
    """A snapshot that cannot be taken: `code` names why ("notfound", "snapshot")."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


# -- pure builders ------------------------------------------------------------------------------
def _cap_processes(processes: Mapping[str, Any]) -> Mapping[str, Any]:
    rows = processes.get("list")
    if not isinstance(rows, list) or len(rows) <= MAX_PROCESSES:
        return processes

    def weight(row: Any) -> tuple[bool, float]:  # the agent's own order: job processes, then the busiest
        if not isinstance(row, Mapping):
            return True, 0.0
        cpu = row.get("cpu")
        return "job" not in row, -(float(cpu) if isinstance(cpu, int | float) else 0.0)

    return {**processes, "list": sorted(rows, key=weight)[:MAX_PROCESSES]}


def bounded_host(host: Mapping[str, Any], budget: int = SERVER_BYTES) -> Record:
    """A copy of a host record (storage/hostdata.py) fit for a snapshot: lists capped, and past `budget` packed
    bytes only its brief part (no process or connection lists, mounts, plugin output) with `truncated`."""
    out = dict(host)
    data = dict(host["data"]) if isinstance(host.get("data"), Mapping) else {}
    if isinstance(data.get("processes"), Mapping):
        data["processes"] = _cap_processes(data["processes"])
    if isinstance(data.get("conns"), list) and len(data["conns"]) > MAX_CONNS:
        data["conns"] = data["conns"][:MAX_CONNS]
    out["data"] = data
    if len(codec.pack(out)) > budget:
        out = brief(out)
        out["truncated"] = True
        if len(codec.pack(out)) > budget:  # a sample of little else than huge figures: only the envelope
            out["data"] = {}
    return out


def server_alerts(active: Mapping[str, str], server_id: str) -> list[str]:
    """Invocation ids of the alerts active on a server, from `alerts_active` ('<server>-<alert>' -> id). Server
    ids hold no '-', so the prefix is exact."""
    prefix = f"{server_id}-"
    return sorted(inv for key, inv in active.items() if key.startswith(prefix))[:MAX_IDS]


def server_jobs(active: Iterable[Mapping[str, Any]], servers: set[str], *, parents: bool = True) -> list[str]:
    """Ids of the active jobs on `servers`; with `parents`, the workflow job of each as well (xyOps
    saveSnapshot, which lists a sub-job's workflow for context)."""
    found: list[str] = []
    wanted: list[str] = []
    for job in active:
        if str(job.get("server") or "") in servers:
            found.append(str(job.get("id")))
            workflow = job.get("workflow")
            if parents and isinstance(workflow, Mapping) and workflow.get("job"):
                wanted.append(str(workflow["job"]))
    return list(dict.fromkeys([*found, *wanted]))[:MAX_IDS]


def build_server_snapshot(
    host: Mapping[str, Any], server: Mapping[str, Any], *, snapshot_id: str, source: str,
    extra: Mapping[str, Any] | None = None, alerts: Sequence[str] = (), jobs: Sequence[str] = (),
    quickmon: Sequence[Mapping[str, Any]] = (),
) -> Record:  # fmt: skip
    """A server snapshot: the last sample (its `date` is the sample's), what the caller adds (`username`, `job`,
    `alert`), then the snapshot's own fields, which win (xyOps mergeHashes order)."""
    return {**bounded_host(host), **(extra or {}), "source": source, "id": snapshot_id, "type": "server",
            "server": str(server.get("id") or host.get("server") or ""),
            "groups": [str(g) for g in server.get("groups") or []], "alerts": list(alerts)[:MAX_IDS],
            "jobs": list(jobs)[:MAX_IDS], "quickmon": [dict(q) for q in quickmon]}  # fmt: skip


def group_share(members: int) -> int:
    """Packed bytes each member of a group snapshot may take."""
    return max(MIN_SHARE_BYTES, GROUP_BYTES // max(members, 1))


def build_group_snapshot(
    group: Mapping[str, Any], members: Sequence[tuple[Mapping[str, Any], bool, Mapping[str, Any]]], *,
    snapshot_id: str, source: str, now: float, extra: Mapping[str, Any] | None = None, alerts: Sequence[str] = (),
    jobs: Sequence[str] = (), quickmons: Sequence[Sequence[Mapping[str, Any]]] = (), bounded: bool = False,
) -> Record:  # fmt: skip
    """A group snapshot: `members` are (server record, offline, host record); `servers`, `snapshots` and
    `quickmons` are aligned one to one with them, as xyOps has them. `bounded`: the host records are bounded to
    their share already (bound_members)."""
    kept = list(members)[:MAX_GROUP_SERVERS]
    share = group_share(len(kept))
    return {**(extra or {}), "source": source, "id": snapshot_id, "type": "group", "date": now, "server": "",
            "groups": [str(group.get("id"))],
            "servers": [{**server, "offline": offline} for server, offline, _ in kept],
            "snapshots": [dict(host) if bounded else bounded_host(host, share) for _, _, host in kept],
            "group_def": dict(group),
            "alerts": list(alerts)[:MAX_IDS], "jobs": list(jobs)[:MAX_IDS],
            "quickmons": [[dict(q) for q in samples] for samples in list(quickmons)[: len(kept)]]}  # fmt: skip


def watched(state: Mapping[str, Any], kind: str, now: float) -> dict[str, float]:
    """Watches of `kind` ("servers" or "groups") in the state document still running at `now`: id -> expiry."""
    watches = state.get("watches")
    found = watches.get(kind) if isinstance(watches, Mapping) else None
    if not isinstance(found, Mapping):
        return {}
    return {str(i): float(e) for i, e in found.items() if isinstance(e, int | float) and float(e) >= now}


def run_snapshot_id(run_id: str) -> str:
    """The snapshot id of an action run: the same for every attempt of the run (a repeat after a failover)."""
    return ID_PREFIX + hashlib.sha256(run_id.encode()).hexdigest()[:30]


# -- taking snapshots -------------------------------------------------------------------------------
async def active_jobs(node: NodeRuntime) -> list[Mapping[str, Any]]:
    """The active jobs: the dispatcher's map when this node runs one (no store read), else the store's."""
    dispatcher = node.dispatcher
    if dispatcher is not None:
        return list(dispatcher.jobs.values())
    return list(await node.stores.jobs.active())


async def store_snapshot(node: NodeRuntime, snapshot: Record) -> None:
    """Store a new snapshot. Past the byte budget the primary drops the oldest first; another node answers
    SnapshotError("snapshot"). A snapshot of that id stored already is left as it is (a repeated action)."""
    snapshots = node.stores.snapshots
    try:
        await snapshots.add(snapshot)
        return
    except OverBudget as exc:
        if not node.is_primary:
            raise SnapshotError("snapshot", str(exc)) from None
        target = max(int(snapshots.max_bytes * (1 - BUDGET_SLACK)) - exc.size, 0)
        dropped = await snapshots.trim_bytes(node.fence(), target)
        log.info("snapshots_dropped_for_budget", dropped=dropped, budget=snapshots.max_bytes)
    try:
        await snapshots.add(snapshot)
    except OverBudget as exc:  # larger than the whole budget, or others filled the room meanwhile
        raise SnapshotError("snapshot", str(exc)) from None


async def take_server_snapshot(
    node: NodeRuntime, server_id: str, source: str, extra: Mapping[str, Any] | None = None, *,
    host: Mapping[str, Any] | None = None, snapshot_id: str | None = None, per_sample: bool = False,
) -> str:  # fmt: skip
    """Snapshot one server from its last sample (or `host`, the record just written); returns the id. SnapshotError
    when the server is unknown, has sent no sample yet or has monitoring disabled. `snapshot_id`: a stable id (an
    action run's, run_snapshot_id); `per_sample`: the id of a snapshot of the same sample and source taken already
    (by another job's action, or another alert's), if there is one, instead of a new copy."""
    stores = node.stores
    server = await stores.servers.get(server_id)
    if server is None:
        raise SnapshotError("notfound", f"Failed to locate server: {server_id}")
    host = host if host is not None else await stores.hosts.get(server_id)
    if host is None:
        raise SnapshotError("snapshot", f"No monitoring data has arrived from server {server_id} yet.")
    if isinstance(host.get("data"), Mapping) and host["data"].get("dummy"):
        raise SnapshotError("snapshot", f"Monitoring is disabled on server: {server_id}")
    if snapshot_id and await stores.snapshots.exists(snapshot_id):
        return snapshot_id  # a repeated run: its snapshot is there already
    snapshot_id = snapshot_id or generate_id(ID_PREFIX)
    if per_sample:
        taken = await stores.snapshots.claim_sample(server_id, source, float(host.get("date") or 0), snapshot_id)
        if taken is not None:
            log.info("snapshot_reused", id=taken, server=server_id, source=source)
            return taken
    quick = await stores.quickmon.get([server_id])
    snapshot = build_server_snapshot(
        host, server, snapshot_id=snapshot_id, source=source, extra=extra,
        alerts=server_alerts(await stores.alertstate.active(), server_id),
        jobs=server_jobs(await active_jobs(node), {server_id}), quickmon=quick.get(server_id, []),
    )  # fmt: skip
    await store_snapshot(node, snapshot)
    log.info("snapshot_taken", id=snapshot["id"], server=server_id, source=source)
    return str(snapshot["id"])


async def group_members(node: NodeRuntime, group_id: str, now: float) -> list[tuple[Record, bool, Record]]:
    """(server, offline, brief host record) of a group's members: the online ones, then those offline whose last
    sample is under RECENT_OFFLINE_S old; members that never sent a sample are left out (nothing to show)."""
    stores = node.stores
    online = {sid: rec for sid, rec in (await stores.servers.online()).items() if group_id in (rec.get("groups") or [])}
    offline: dict[str, Record] = {}
    if _WORD_ID.fullmatch(group_id) and len(online) < MAX_GROUP_SERVERS:
        rows, _ = await stores.servers.search(f"groups:{group_id}", 0, min(MAX_GROUP_SERVERS * 2, 1000),
                                              sort_by="modified")  # fmt: skip
        offline = {str(r["id"]): r for r in rows if str(r.get("id")) not in online}
    candidates = [(sid, rec, False) for sid, rec in online.items()] + [(sid, r, True) for sid, r in offline.items()]
    hosts = await stores.hosts.get_briefs([sid for sid, _, _ in candidates])
    members: list[tuple[Record, bool, Record]] = []
    for (_, server, is_offline), host in zip(candidates, hosts, strict=True):
        if host is None or (is_offline and float(host.get("date") or 0) < now - RECENT_OFFLINE_S):
            continue
        members.append((server, is_offline, host))
        if len(members) >= MAX_GROUP_SERVERS:
            break
    return members


async def bound_members(
    members: Sequence[tuple[Record, bool, Record]],
) -> list[tuple[Record, bool, Mapping[str, Any]]]:
    """`members` with each host record bounded to its share of a group snapshot, yielding to the loop every
    YIELD_EVERY members (each bound packs the record once or twice)."""
    kept = list(members)[:MAX_GROUP_SERVERS]
    share = group_share(len(kept))
    out: list[tuple[Record, bool, Mapping[str, Any]]] = []
    for i, (server, offline, host) in enumerate(kept):
        out.append((server, offline, bounded_host(host, share)))
        if i % YIELD_EVERY == YIELD_EVERY - 1:
            await asyncio.sleep(0)
    return out


async def take_group_snapshot(
    node: NodeRuntime, group_id: str, source: str, extra: Mapping[str, Any] | None = None
) -> str:
    """Snapshot a group: every member's last sample, the active jobs on them, the active alerts of the group and
    their QuickMon samples; returns the id. SnapshotError("notfound") for an unknown group."""
    stores = node.stores
    group = await stores.defs.get(GROUPS, group_id)
    if group is None:
        raise SnapshotError("notfound", f"Unknown group: {group_id}")
    now = time.time()
    members = await group_members(node, group_id, now)
    ids = [str(server["id"]) for server, _, _ in members]
    active = list((await stores.alertstate.active()).values())
    alerts = [str(inv["id"]) for inv in await stores.alerts.get_many(active)
              if inv is not None and group_id in (inv.get("groups") or [])]  # fmt: skip
    quick = await stores.quickmon.get(ids) if ids else {}
    snapshot = build_group_snapshot(
        group, await bound_members(members), snapshot_id=generate_id(ID_PREFIX), source=source, now=now,
        extra=extra, alerts=sorted(alerts), jobs=server_jobs(await active_jobs(node), set(ids), parents=False),
        quickmons=[quick.get(i, []) for i in ids], bounded=True,
    )  # fmt: skip
    await asyncio.sleep(0)
    await store_snapshot(node, snapshot)
    log.info("group_snapshot_taken", id=snapshot["id"], group=group_id, servers=len(ids), source=source)
    return str(snapshot["id"])


# -- watches ------------------------------------------------------------------------------------------
async def watch_sample(node: NodeRuntime, server_id: str, host: Mapping[str, Any]) -> str | None:
    """After a minute sample was stored: a snapshot of it (source `watch`) while its server is watched (xyOps: the
    watch's expiry at or after the sample's date). Never fails the sample: a refusal is logged. Returns the id."""
    date = float(host.get("date") or time.time())
    if server_id not in watched(await node.stores.state.get(), "servers", date):
        return None
    try:
        return await take_server_snapshot(node, server_id, "watch", host=host)
    except SnapshotError as exc:
        log.info("watch_snapshot_skipped", server=server_id, reason=exc.message)
    except Exception as exc:  # the store is away: this minute's snapshot is lost, the sample is not
        log.warning("watch_snapshot_failed", server=server_id, error=repr(exc))
    return None


async def watch_groups(node: NodeRuntime, now: float | None = None) -> list[str]:
    """A snapshot of every watched group (source `watch`); returns their ids."""
    now = time.time() if now is None else now
    taken: list[str] = []
    for group_id in sorted(watched(await node.stores.state.get(), "groups", now)):
        try:
            taken.append(await take_group_snapshot(node, group_id, "watch"))
        except SnapshotError as exc:
            log.info("watch_snapshot_skipped", group=group_id, reason=exc.message)
    return taken


def seconds_to_mark(now: float, second: float = GROUP_WATCH_SECOND) -> float:
    """Seconds from `now` to the next `second` past a minute (a full minute when it is exactly that now)."""
    wait = (second - now % 60) % 60
    return wait or 60.0


def group_watch_service(second: float = GROUP_WATCH_SECOND) -> Any:
    """A primary service (cluster/node.py) taking the group watches' snapshots every minute at `second`."""

    async def service(node: NodeRuntime, stop: asyncio.Event) -> None:
        while not stop.is_set():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), seconds_to_mark(time.time(), second))
            if stop.is_set():
                return
            try:
                await watch_groups(node)
            except Exception as exc:  # one failed minute must not end the watches
                log.warning("group_watch_failed", error=repr(exc))

    return service
