"""The primary lease and its fencing epoch, as Redis operations."""

from __future__ import annotations

from .connection import Database
from .models import LeaseState
from .scripts import LEASE_ACQUIRE, LEASE_RELEASE, LEASE_RENEW


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class LeaseStore:
    def __init__(self, db: Database) -> None:
        self.db = db
        k = db.keys
        self._keys = [k.leader, k.epoch]

    async def acquire(self, node_id: str, lease_ms: int, floor: int = 0) -> LeaseState:
        """Take the lease if free; the new epoch is above both the stored one and `floor`."""
        reply = await self.db.script(LEASE_ACQUIRE)(keys=self._keys, args=[node_id, lease_ms, floor])
        if int(reply[0]) == 1:
            return LeaseState(acquired=True, epoch=int(reply[1]), holder=node_id, ttl_ms=lease_ms)
        return LeaseState(acquired=False, holder=_text(reply[1]), ttl_ms=int(reply[2]), epoch=int(reply[3]))

    async def renew(self, node_id: str, epoch: int, lease_ms: int) -> bool:
        return int(await self.db.script(LEASE_RENEW)(keys=self._keys, args=[node_id, epoch, lease_ms])) == 1

    async def release(self, node_id: str, epoch: int) -> bool:
        return int(await self.db.script(LEASE_RELEASE)(keys=self._keys, args=[node_id, epoch])) == 1

    async def holder(self) -> tuple[str, int]:
        """(node id holding the lease or "", current epoch)."""
        leader, epoch = await self.db.client.mget(self._keys)
        return (_text(leader) if leader else "", int(epoch or 0))
