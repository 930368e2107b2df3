"""Plain records shared by every layer."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class LeaseState:
    """What one acquire attempt saw."""

    acquired: bool
    epoch: int
    holder: str = ""
    ttl_ms: int = 0


@dataclass(frozen=True, slots=True)
class NodeRecord:
    """One node's heartbeat record in the registry."""

    id: str
    role: str  # "primary" | "satellite"
    epoch: int
    url: str
    version: str
    started: float
    pid: int
    hostname: str
    load: float
    redis_ok: bool = True
    loop_lag_ms: float = 0.0  # the node's event-loop lag, p99 over the last minute (cluster/watchdog.py)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> NodeRecord:
        fields = cls.__dataclass_fields__
        return cls(**{k: v for k, v in data.items() if k in fields})


@dataclass(frozen=True, slots=True)
class LiveNode:
    """A registry entry as read back: the record plus when it was last heard of."""

    record: NodeRecord
    expires_ms: int
    now_ms: int
    ttl_ms: int

    @property
    def heartbeat_age_ms(self) -> int:
        return max(0, self.now_ms - (self.expires_ms - self.ttl_ms))
