"""Heartbeats into the node registry, and a per-node view of the cluster refreshed with them."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable

from storage.connection import UNAVAILABLE_ERRORS
from storage.models import LiveNode, NodeRecord
from storage.nodes import NodeStore

from . import __version__
from .watchdog import ms

HEARTBEAT_S = 1.0


class Registry:
    """Writes this node's record about once a second and keeps the last listing of live nodes."""

    def __init__(self, nodes: NodeStore, record: Callable[[], NodeRecord]) -> None:
        self.nodes = nodes
        self.record = record
        self.view: list[LiveNode] = []
        self.ok = True

    async def step(self) -> float:
        try:
            await self.nodes.heartbeat(self.record())
            self.view = await self.nodes.live()
            self.ok = True
        except UNAVAILABLE_ERRORS:
            self.ok = False
            raise
        return HEARTBEAT_S

    def highest_epoch(self) -> int:
        """The highest epoch any live node reported: part of the floor of the next election."""
        return max((node.record.epoch for node in self.view), default=0)

    def find(self, node_id: str) -> NodeRecord | None:
        for node in self.view:
            if node.record.id == node_id:
                return node.record
        return None


def load_average() -> float:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return 0.0


def make_record(
    node_id: str, url: str, started: float, role: str, epoch: int, redis_ok: bool, loop_lag_s: float = 0.0
) -> NodeRecord:
    return NodeRecord(
        id=node_id,
        role=role,
        epoch=epoch,
        url=url,
        version=__version__,
        started=started,
        pid=os.getpid(),
        hostname=socket.gethostname(),
        load=load_average(),
        redis_ok=redis_ok,
        loop_lag_ms=ms(loop_lag_s),
    )

