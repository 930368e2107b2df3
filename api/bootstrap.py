"""First start of a new cluster: the admin user, the default definitions and the global state (digest 4).

Runs as a primary-only service, so only one node does it, behind the fence; every step is
idempotent and the `setup` marker is set last, so a primary that dies half-way leaves the next
one to finish.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import time
from typing import Any

import structlog

from cluster.node import NodeRuntime
from storage.errors import Conflict, FencedError
from storage.fence import FencedBatch

from .activity import build_record
from .defaults import default_definitions
from .passwords import hash_password

log = structlog.get_logger("podium.bootstrap")

ADMIN_SALT = "salty"  # xyOps' setup.json uses this literal salt for the first admin


async def admin_user(now: int) -> dict[str, Any]:
    return {
        "username": "admin",
        "full_name": "Administrator",
        "email": "admin@localhost",
        "active": 1,
        "privileges": {"admin": True},
        "roles": [],
        "categories": [],
        "groups": [],
        "force_password_change": True,
        "salt": ADMIN_SALT,
        "password": await hash_password("admin", ADMIN_SALT),
        "created": now,
        "modified": now,
    }


async def first_start(node: NodeRuntime, stop: asyncio.Event) -> None:
    """Create the default objects once per cluster."""
    stores = node.stores
    keys = node.db.keys
    if await node.db.client.exists(keys.setup_done):
        return
    try:
        fence = node.fence()
        now = int(time.time())
        with contextlib.suppress(Conflict):
            await stores.users.create(fence, await admin_user(now))
        for family, kind, template in default_definitions():
            record = {**copy.deepcopy(template), "username": "admin", "created": now, "modified": now, "revision": 1}
            try:
                await stores.defs.create(fence, family, record)
            except Conflict:
                continue  # made by an earlier, interrupted first start
            description = f"Created {kind.replace('_', ' ')}: {record['title']}"
            await stores.activity.add(build_record(None, f"{kind}_create", description, "admin", **{kind: record}))
        if "scheduler" not in await stores.state.get():
            await stores.state.update(fence, {"scheduler.enabled": True})
        await fence.execute(FencedBatch().add("SET", [keys.setup_done], str(now), "NX"))
        log.info("first_start_complete", node=node.node_id)
    except FencedError:
        log.warning("first_start_interrupted", reason="no longer primary")
