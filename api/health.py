"""GET /health: 200 on the primary, 503 elsewhere, with enough to find the primary."""

from __future__ import annotations

import os
from typing import Any

from aiohttp import web

from cluster.watchdog import ms

from .transport import json_reply
from .typedefs import NODE, SETTINGS


async def health(request: web.Request) -> web.StreamResponse:
    node = request.app[NODE]
    primary = node.is_primary
    body: dict[str, Any] = {
        "code": 0 if primary else "master",
        "master": primary,
        "role": node.role,
        "node": node.node_id,
        "epoch": node.epoch,
        "redis": node.redis_ok,
        "primary_id": node.election.primary_id,
        "primary": node.primary_url,
        "loop_lag_ms": node.watchdog.stats_ms(),  # last / p99 / max over the last minute
        # The longest time between two renews over the last minute; the primary steps down at 0.7 x lease.
        "renew_gap_ms": ms(max(node.election.renew_gaps, default=0.0)),
        # Which process of the node answered (0: the node process, else an HTTP worker; api/workers.py).
        "worker": request.app[SETTINGS].worker_index,
        "pid": os.getpid(),
    }
    if not primary:
        body["description"] = "This node is not the primary." if body["primary"] else "No primary is elected."
    return json_reply(body, 200 if primary else 503)
