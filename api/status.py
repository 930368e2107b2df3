"""`podium status`: the cluster as the registry and the lease see it."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from storage.connection import Database, connect, redacted, wait_reachable
from storage.errors import BadRedisURL, StorageError
from storage.keyspace import Keyspace, valid_cluster_name
from storage.lease import LeaseStore
from storage.nodes import NodeStore

from .settings import ConfigError


@asynccontextmanager
async def operator_store(url: str, cluster: str) -> AsyncIterator[Database]:
    """The store as the operator commands (`status`, `user`) reach it; a bad URL or cluster name, or a store
    that does not answer, is a ConfigError (one line, exit 2)."""
    if not valid_cluster_name(cluster):
        raise ConfigError(f"--cluster {cluster!r}: use letters, digits, '_', '.', '-' (max 64)")
    try:
        client = connect(url)
    except BadRedisURL as exc:
        raise ConfigError(str(exc)) from None
    db = Database(client, Keyspace(cluster))
    try:
        try:
            await wait_reachable(db.client, attempts=3, delay=0.2)
        except StorageError:
            raise ConfigError(f"Redis at {redacted(url)} is unreachable") from None
        yield db
    finally:
        await db.aclose()


async def cluster_status(url: str, cluster: str) -> str:
    async with operator_store(url, cluster) as db:
        holder, epoch = await LeaseStore(db).holder()
        nodes = await NodeStore(db).live()
    lines = [
        f"cluster  {cluster}  (redis {redacted(url)})",
        f"primary  {holder or '(none)'}  epoch {epoch}",
        "",
        f"{'NODE':<16}{'ROLE':<11}{'EPOCH':>6}  {'URL':<28}{'VERSION':<9}{'PID':>8}  {'UP':>8}  HEARTBEAT",
    ]
    now = time.time()
    for node in nodes:
        rec = node.record
        role = "primary" if rec.id == holder else "satellite"
        up = _duration(now - rec.started)
        lines.append(
            f"{rec.id:<16}{role:<11}{rec.epoch:>6}  {rec.url:<28}{rec.version:<9}{rec.pid:>8}  {up:>8}  "
            f"{node.heartbeat_age_ms / 1000:.1f}s ago"
        )
    if not nodes:
        lines.append("(no live nodes)")
    return "\n".join(lines)


def _duration(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    return f"{seconds // 3600}h"
