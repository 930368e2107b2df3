"""Snapshots API (xyOps lib/api/servers.js, groups.js, search.js): take a snapshot of a server or a group, watch
one for a while (a snapshot every minute), search and delete them (storage/snapshots.py).

Snapshots are taken and deleted on the primary (a write call on a satellite answers `master`); search reads
Redis, so every node answers it alike. A group-limited caller snapshots and watches only servers and groups it
may see, finds only snapshots of its groups, and may not delete any (as xyOps). xyOps has no `get_snapshot`: its
UI asks `search_snapshots` for `#id:<id>` with `verbose`, which is answered here too.
"""

from __future__ import annotations

import re
import time
from typing import Any

from cluster.monitoring.snapshots import WATCH_MAX_S, SnapshotError, take_group_snapshot, take_server_snapshot
from storage.families import GROUPS
from storage.search.query import QueryError

from ..activity import log_activity
from ..call import Call
from ..errors import ApiError
from ..params import QUERY_LEN, flag, ident, integer, page, text
from ..principal import Principal
from ..registry import AUTH, HANDLERS, Params, Reply
from .servers import group_restriction, server_visible

_ID_PATTERN = "^(?:[a-z0-9_]+)$"
SNAPSHOT_ID = ident(doc="snapshot id").with_(max_len=32, pattern=_ID_PATTERN)
SERVER = ident("server", doc="server id").with_(max_len=32, pattern=_ID_PATTERN)
GROUP = ident("group", doc="group id").with_(max_len=64, pattern=r"^(?:\w+)$")
WATCH_ID = ident(doc="server or group id").with_(max_len=64, pattern=_ID_PATTERN)
DURATION = integer("duration", ge=0, le=WATCH_MAX_S, required=True,
                   doc=f"seconds to watch for (at most {WATCH_MAX_S}); 0 cancels the watch")  # fmt: skip
SORTERS = ("_id", "date")
_BY_ID = re.compile(r"^\s*#id:([a-z0-9_]{1,32})\s*$")


def _refusal(exc: SnapshotError) -> ApiError:
    # ⚠ xyOps answers code `server` for an unknown server and `snapshot` for a group; `notfound` as for every other
    # missing record here. A server without a usable sample is `snapshot`, as in xyOps.
    if exc.code == "notfound":
        return ApiError("notfound", exc.message)
    return ApiError("snapshot", f"Failed to create snapshot: {exc.message}")


async def _visible_server(call: Call, server_id: str, *, online: bool) -> dict[str, Any]:
    server = await call.stores.servers.get(server_id)
    if server is None or (online and not await call.stores.servers.is_online(server_id)):
        raise ApiError("notfound", f"Unknown or inactive server: {server_id}")
    if not server_visible(call.who, server):
        raise ApiError("access", f"You do not have the required account privileges to access server ID {server_id}.")
    return server


async def _visible_group(call: Call, group_id: str) -> dict[str, Any]:
    group = await call.stores.defs.get(GROUPS, group_id)
    if group is None:
        raise ApiError("notfound", f"Unknown group: {group_id}")
    if not call.who.is_admin and call.who.groups and group_id not in call.who.groups:
        raise ApiError("access", f"You do not have the required account privileges to access group ID {group_id}.")
    return group


def snapshot_visible(who: Principal, snapshot: dict[str, Any]) -> bool:
    if who.is_admin or not who.groups:
        return True
    return any(g in who.groups for g in snapshot.get("groups") or [])


@HANDLERS.add("create_snapshot", write=True, privilege="create_snapshots", params=Params.READ, args=(SERVER,))
async def create_snapshot(call: Call) -> Reply:
    """Snapshot an online server from its last minute sample (source `user`); answers the new `id`."""
    server_id = call.params["server"]
    await _visible_server(call, server_id, online=True)
    try:
        snapshot_id = await take_server_snapshot(call.node, server_id, "user", {"username": call.who.username})
    except SnapshotError as exc:
        raise _refusal(exc) from None
    return {"id": snapshot_id}


@HANDLERS.add("create_group_snapshot", write=True, privilege="create_snapshots", params=Params.READ,
              args=(GROUP,))  # fmt: skip
async def create_group_snapshot(call: Call) -> Reply:
    """Snapshot a group: its online members and those offline for under an hour (source `user`)."""
    group_id = call.params["group"]
    await _visible_group(call, group_id)
    try:
        snapshot_id = await take_group_snapshot(call.node, group_id, "user", {"username": call.who.username})
    except SnapshotError as exc:
        raise _refusal(exc) from None
    return {"id": snapshot_id}


async def _watch(call: Call, kind: str, obj_id: str, duration: int) -> None:
    # ⚠ xyOps deletes the state key to cancel; the state document has no deletes here, so 0 (expired) is written.
    expiry = int(time.time()) + duration if duration else 0
    await call.stores.state.update(call.node.fence(), {f"watches.{kind}.{obj_id}": expiry})


def _nice(seconds: int) -> str:
    return f"{seconds} seconds" if seconds else "0 seconds (disabled)"


@HANDLERS.add("watch_server", write=True, privilege="create_snapshots", params=Params.READ,
              args=(WATCH_ID.with_(doc="server id", max_len=32), DURATION))  # fmt: skip
async def watch_server(call: Call) -> Reply:
    """Take a snapshot of an online server with each of its minute samples for `duration` seconds (0 cancels)."""
    server_id, duration = call.params["id"], call.params["duration"]
    server = await _visible_server(call, server_id, online=True)
    await _watch(call, "servers", server_id, duration)
    await log_activity(call, "server_watch", f"Server watch set: {server.get('hostname', server_id)}",
                       server={"id": server_id, "hostname": server.get("hostname")},
                       duration=_nice(duration), seconds=duration, keywords=[server_id])  # fmt: skip
    return {}


@HANDLERS.add("watch_group", write=True, privilege="create_snapshots", params=Params.READ,
              args=(WATCH_ID.with_(doc="group id", pattern=r"^(?:\w+)$"), DURATION))  # fmt: skip
async def watch_group(call: Call) -> Reply:
    """Take a snapshot of a group every minute (at :30) for `duration` seconds (0 cancels)."""
    group_id, duration = call.params["id"], call.params["duration"]
    group = await _visible_group(call, group_id)
    await _watch(call, "groups", group_id, duration)
    await log_activity(call, "group_watch", f"Group watch set: {group.get('title', group_id)}",
                       group={"id": group_id, "title": group.get("title")}, duration=_nice(duration),
                       seconds=duration, keywords=[group_id])  # fmt: skip
    return {}


@HANDLERS.add("search_snapshots", write=False, privilege=AUTH,
              args=(text("query", max_len=QUERY_LEN, doc="search query (type, source, server, groups, date, alerts, "
                                                          "jobs) or #id:<id>; empty or * = every snapshot"),
                    *page(limit=1), text("sort_by", choices=SORTERS, default="_id"),
                    integer("sort_dir", -1, doc="-1 newest first, 1 oldest first"),
                    flag("verbose", False, doc="whole records: process and connection lists, mounts, plugin output "
                                               "and a group's member data")))  # fmt: skip
async def search_snapshots(call: Call) -> Reply:
    """Search snapshots, newest first by default; a group-limited caller finds only those of its groups."""
    p = call.params
    query = (p.get("query") or "*").strip() or "*"
    by_id = _BY_ID.fullmatch(query)
    if by_id is not None:  # the xyOps UI's way to open one snapshot
        (found,) = await call.stores.snapshots.get_many([by_id.group(1)], full=bool(p["verbose"]))
        rows = [found] if found is not None and snapshot_visible(call.who, found) else []
        return {"rows": rows[p["offset"] : p["offset"] + p["limit"]], "list": {"length": len(rows)}}
    try:
        rows, total = await call.stores.snapshots.search(
            query, p["offset"], p["limit"], -1 if p["sort_dir"] < 0 else 1, sort_by=p["sort_by"],
            also=group_restriction(call.who), verbose=bool(p["verbose"]),
        )  # fmt: skip
    except QueryError as exc:
        raise ApiError("api", f"Invalid search query: {exc}") from None
    return {"rows": rows, "list": {"length": total}}


@HANDLERS.add("delete_snapshot", write=True, privilege="delete_snapshots", params=Params.READ, args=(SNAPSHOT_ID,))
async def delete_snapshot(call: Call) -> Reply:
    """Delete one snapshot and its search entries."""
    if not call.who.is_admin and call.who.groups:
        # ⚠ xyOps answers code `alert` here; a refusal of the caller's account is `access` everywhere else.
        raise ApiError("access", "Group-limited users may not delete server snapshots.")
    snapshot_id = call.params["id"]
    if not await call.stores.snapshots.delete(call.node.fence(), snapshot_id):
        raise ApiError("notfound", f"Failed to locate snapshot: {snapshot_id}")
    return {}
