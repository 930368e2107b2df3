"""A worker's view of its node's role: what the node process's election says, pushed to each HTTP worker.

The node process (api/workers.py) runs the election and the registry heartbeat; after every round that changes
anything it sends each worker `node_state`: whether it is primary and until when, its epoch, the lease holder it
knows of and its registry view. A worker's `FollowedElection` answers from the last state received, so handlers
and the transport read the role exactly as they do in the node process. The deadline is a reading of the same
system-wide monotonic clock the election uses, so a worker stops taking itself for the primary at the moment the
node process would, even when that process is stopped and sends nothing; and every fenced write is checked in
Redis anyway (storage/fence.py), so a worker of a deposed node is refused like the node itself.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from storage.lease import LeaseStore
from storage.models import LiveNode, NodeRecord

from .election import Election

if TYPE_CHECKING:
    from .node import NodeRuntime

def node_state(node: NodeRuntime) -> dict[str, Any]:
    """What the node process tells its workers (JSON-ready)."""
    election = node.election
    return {
        "primary_until": election.primary_until,
        "epoch": election.epoch,
        "leader": election.leader_id,
        "redis_ok": node.redis_ok,
        "view": [{"record": n.record.to_dict(), "expires_ms": n.expires_ms, "now_ms": n.now_ms, "ttl_ms": n.ttl_ms}
                 for n in node.registry.view],
    }  # fmt: skip


class FollowedElection(Election):
    """The election's read side, fed by the node process; a worker never renews or acquires."""

    def __init__(self, leases: LeaseStore, node_id: str, *, lease_ms: int) -> None:
        super().__init__(leases, node_id, lease_ms=lease_ms)
        self._until = 0.0  # primary until this clock reading (0.0: not primary)

    @property
    def primary_until(self) -> float:
        return self._until if self.is_primary else 0.0

    @property
    def is_primary(self) -> bool:
        return self.clock() < self._until

    async def step(self) -> float:
        return 1.0

    async def release(self) -> bool:
        return False

    def store_changed(self) -> bool:
        return False

    def apply(self, state: dict[str, Any], registry_view: list[LiveNode]) -> None:
        was = self.is_primary
        self._until = float(state.get("primary_until") or 0.0)
        self.epoch = max(self.epoch, int(state.get("epoch") or 0))
        self.leader_id = str(state.get("leader") or "")
        self.redis_ok = bool(state.get("redis_ok", True))
        registry_view[:] = [LiveNode(NodeRecord(**n["record"]), int(n["expires_ms"]), int(n["now_ms"]),
                                     int(n["ttl_ms"])) for n in state.get("view") or ()]  # fmt: skip
        if self.is_primary != was:
            self.on_change(self.is_primary)
