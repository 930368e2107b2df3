"""Stored servers follow the server groups: after a group is created, deleted or given a new `hostname_match`,
every stored server's groups are re-derived (cluster.servers.regrouped) and online agents are told theirs.

The pass reads the servers a page at a time (at most MAX_SERVERS of them) and writes only those whose groups
change, each by a read-modify-write that re-derives from the record and the groups as they are at that moment.
So a pass that overlaps a later group write, or a join or update_server, leaves every record derived from the
newest groups: nothing waits for an earlier pass to finish.
"""

from __future__ import annotations

import time
from typing import Any

import structlog

from storage.families import GROUPS
from storage.stores import Stores

from .servers import regrouped

log = structlog.get_logger("podium.servers")

PAGE = 200
MAX_SERVERS = 20_000  # xyOps keeps at most 10,000 server records


async def regroup_servers(stores: Stores) -> int:
    """Re-derive the groups of the stored servers from the groups as they are now; stores those that changed
    and queues `update {groups}` for those online. Returns how many changed."""
    changed = 0
    offset = 0
    while offset < MAX_SERVERS:
        rows, total = await stores.servers.search("*", offset, PAGE, sort_dir=1)
        groups = await stores.defs.all(GROUPS)  # cached; a group write meanwhile is seen from here on
        for row in rows:
            if regrouped(row, groups, 0) is not None and await _regroup_one(stores, str(row["id"])):
                changed += 1
        offset += PAGE  # by index position: a page may hold fewer rows (a record deleted meanwhile)
        if offset >= total:
            break
    else:
        log.warning("regroup_servers_capped", servers=total, regrouped=MAX_SERVERS)
    return changed


async def _regroup_one(stores: Stores, server_id: str) -> bool:
    wrote: list[dict[str, Any]] = []

    async def change(current: dict[str, Any]) -> dict[str, Any] | None:
        wrote.clear()  # a retry after a concurrent write starts over
        updated = regrouped(current, await stores.defs.all(GROUPS), time.time())
        if updated is not None:
            wrote.append(updated)
        return updated

    await stores.servers.modify(server_id, change)
    if not wrote:
        return False
    if await stores.servers.is_online(server_id):
        await stores.agents.send(server_id, "update", {"groups": wrote[0]["groups"]})
    return True
