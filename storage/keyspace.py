"""Every Redis key Podium uses, built from one cluster prefix.

No other module spells a key. The README's keyspace table mirrors this file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_CLUSTER_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def valid_cluster_name(name: str) -> bool:
    return bool(_CLUSTER_NAME.fullmatch(name))


@dataclass(frozen=True, slots=True)
class Keyspace:
    """Keys of one cluster. `cluster` becomes the prefix `<cluster>:`."""

    cluster: str = "podium"

    def __post_init__(self) -> None:
        if not valid_cluster_name(self.cluster):
            raise ValueError(f"invalid cluster name: {self.cluster!r} (letters, digits, _ . - only)")

    def key(self, *parts: str) -> str:
        return ":".join((self.cluster, *parts))

    # -- election -------------------------------------------------------------
    @property
    def leader(self) -> str:
        """STRING node id of the primary, with a PX lease."""
        return self.key("leader")

    @property
    def epoch(self) -> str:
        """STRING integer fencing token, INCR'd on every successful election."""
        return self.key("epoch")

    # -- node registry --------------------------------------------------------
    @property
    def nodes(self) -> str:
        """ZSET node id -> expiry (ms, Redis clock)."""
        return self.key("nodes")

    def node(self, node_id: str) -> str:
        """STRING msgpack node record, PX = heartbeat TTL."""
        return self.key("node", node_id)

    # -- cluster-wide settings ------------------------------------------------
    @property
    def secret_key(self) -> str:
        """STRING cluster secret key, generated once (SET NX)."""
        return self.key("config", "secret_key")

    def probe(self, name: str) -> str:
        """STRING scratch keys written by fenced-write self tests."""
        return self.key("probe", name)
