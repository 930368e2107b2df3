"""Redis Sentinel: the `redis+sentinel://` URL, a bounded pool that follows the master, and the watch that
tells the election when the master it talks to may not hold what this node wrote.

    redis+sentinel://[[user]:password@]host[:port][,host[:port]...]/service[/db]
    rediss+sentinel://...   (TLS to the sentinels and to the master)

The URL's password (or PODIUM_REDIS_PASSWORD when the URL has none) authenticates to the master;
PODIUM_SENTINEL_PASSWORD, when set, to the sentinels. A sentinel's port defaults to 26379, the database to 0.

Sentinel fails over asynchronously: the promoted replica may miss the last writes the old master
acknowledged, a lease renew or an epoch INCR among them. So every connection of a Sentinel pool reads
`INFO replication` when it connects and refuses a server that is not a master; the master's address and
replication id are this store's identity, and the StoreWatch (shared by all the pools of one node) counts
each time it changes, and each READONLY reply (NOREPLICAS only makes the store unavailable for writes).
A promoted replica always has a new replication id, a restarted master (whose last second of writes may
be lost) usually too. The election reads the count and steps down on any change (cluster/election.py says
what it does next).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

import redis.asyncio as aioredis
import structlog
from redis.asyncio.connection import Connection, SSLConnection
from redis.asyncio.sentinel import MasterNotFoundError, Sentinel, SentinelConnectionPool, SentinelManagedConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ReadOnlyError, ResponseError

from .errors import BadRedisURL
from .pool import NO_RETRY, FairPool

log = structlog.get_logger("podium.store")

SCHEMES = ("redis+sentinel", "rediss+sentinel")
DEFAULT_SENTINEL_PORT = 26379
PASSWORD_ENV = "PODIUM_REDIS_PASSWORD"
SENTINEL_PASSWORD_ENV = "PODIUM_SENTINEL_PASSWORD"
SENTINEL_TIMEOUT_S = 1.0  # per sentinel asked: a dead one must not hold up finding the master for long


@dataclass(frozen=True, slots=True)
class SentinelTarget:
    sentinels: list[tuple[str, int]]
    service: str
    db: int = 0
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    tls: bool = False


def _host_port(item: str) -> tuple[str, int]:
    host, port = item, str(DEFAULT_SENTINEL_PORT)
    if item.startswith("["):  # [v6 address]:port
        host, _, rest = item[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else port
    elif item.count(":") == 1:
        host, port = item.split(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise BadRedisURL(f"Redis URL has a bad sentinel address {item!r} (use host:port)")
    return host, int(port)


def parse_url(url: str) -> SentinelTarget:
    """The sentinels, service and credentials a Sentinel URL names; BadRedisURL if it names none. The
    errors never quote the URL, which may hold a password."""
    scheme, _, rest = url.partition("://")
    # The user part runs to the last "@" of the raw string, so a password with "/", "?" or "#" in it is
    # never taken for a host or a path (and never quoted in an error).
    userinfo, _, rest = rest.rpartition("@")
    rest, hash_sign, _ = rest.partition("#")
    rest, question, query = rest.partition("?")
    if hash_sign:
        raise BadRedisURL("Redis URL must not have a #fragment")
    if question:
        # Only names written as name=value are quoted: a bare word there may be a misplaced secret.
        names = sorted({pair.partition("=")[0] for pair in query.split("&") if "=" in pair})
        shown = ", ".join(repr(n) for n in names if n.isidentifier() and len(n) <= 20) or "(not shown)"
        raise BadRedisURL(f"Redis URL has unknown query parameters {shown} (a sentinel URL takes none)")
    hosts, _, path_text = rest.partition("/")
    if not hosts:
        raise BadRedisURL("Redis URL names no sentinel (redis+sentinel://host:port,host:port/service)")
    sentinels = [_host_port(item) for item in hosts.split(",")]
    path = [p for p in path_text.split("/") if p]
    if not path or len(path) > 2:
        raise BadRedisURL("Redis URL must end in /service or /service/db (the master name the sentinels watch)")
    if len(path) == 2 and not path[1].isdigit():
        raise BadRedisURL(f"Redis URL has a bad database number {path[1][:20]!r}")
    username, _, password = userinfo.partition(":")
    return SentinelTarget(
        sentinels=sentinels,
        service=unquote(path[0]),
        db=int(path[1]) if len(path) == 2 else 0,
        username=unquote(username) or None,
        password=unquote(password) if password else os.environ.get(PASSWORD_ENV) or None,
        tls=scheme == "rediss+sentinel",
    )


@dataclass(slots=True)
class StoreWatch:
    """The identity of the master this node's connections reach, and how often it changed."""

    identity: tuple[str, int, str] | None = None  # host, port, master_replid
    changes: int = 0
    listeners: list[Callable[[], None]] = field(default_factory=list)  # told at once of each change

    def seen(self, host: str, port: int, replid: str) -> None:
        now = (host, port, replid)
        if self.identity is not None and now != self.identity:
            self.changed("new master", f"{host}:{port}")
        self.identity = now

    def changed(self, reason: str, master: str = "") -> None:
        self.changes += 1
        self.identity = None  # the next connection's server is the new identity, not a second change
        log.warning("store_master_changed", reason=reason, master=master, changes=self.changes)
        for listener in self.listeners:
            listener()


def _info(reply: Any) -> dict[str, str]:
    text = reply.decode() if isinstance(reply, bytes) else str(reply)
    pairs = (line.partition(":") for line in text.splitlines() if ":" in line)
    return {key: value.strip() for key, _, value in pairs}


class WatchedConnection(SentinelManagedConnection):
    """A connection to the master the sentinels name, that checks it is one and reports what it sees."""

    connection_pool: SentinelPool

    async def on_connect_check_health(self, check_health: bool = True) -> None:
        await super().on_connect_check_health(check_health)
        await self.send_command("INFO", "replication", check_health=False)
        info = _info(await Connection.read_response(self))
        if info.get("role") != "master":  # a sentinel that has not heard of the failover yet
            raise RedisConnectionError(f"{self.host}:{self.port} is not a master (role {info.get('role')})")
        self.connection_pool.watch.seen(str(self.host), int(self.port), info.get("master_replid", ""))

    async def read_response(self, disable_decoding: bool = False, timeout: float | None = None, *,
                            disconnect_on_error: Any = True, push_request: bool | None = False) -> Any:  # fmt: skip
        try:
            return await Connection.read_response(
                self, disable_decoding=disable_decoding, timeout=timeout,
                disconnect_on_error=disconnect_on_error, push_request=push_request,
            )  # fmt: skip
        except ReadOnlyError as exc:
            # READONLY: this master was demoted, so what it held is in doubt.
            self.connection_pool.watch.changed("readonly", f"{self.host}:{self.port}")
            await self.disconnect()
            raise RedisConnectionError(f"the master at {self.host}:{self.port} refused a write: {exc}") from None
        except ResponseError as exc:
            # NOREPLICAS: the master reaches too few replicas (min-replicas-to-write). Not a change of master
            # (a promoted replica says so until its own replicas catch up): the store is unavailable for
            # writes, and a primary whose renews fail this way steps down as for any unreachable store.
            if not str(exc).startswith("NOREPLICAS"):
                raise
            raise RedisConnectionError(f"the master at {self.host}:{self.port} refused a write: {exc}") from None


class WatchedSSLConnection(WatchedConnection, SSLConnection):
    pass


class SentinelPool(FairPool, SentinelConnectionPool):
    """FairPool's bounded, in-order waiting on connections to whichever server the sentinels name master."""

    def __init__(self, service_name: str, sentinel_manager: Sentinel, *, watch: StoreWatch, owns_manager: bool,
                 **kwargs: Any) -> None:  # fmt: skip
        self.watch = watch
        self.owns_manager = owns_manager
        self._changes_seen = watch.changes
        super().__init__(service_name=service_name, sentinel_manager=sentinel_manager, **kwargs)

    async def get_connection(self, *args: Any, **kwargs: Any) -> Any:
        if self._changes_seen != self.watch.changes:
            # Another pool of this node (or this one) saw the master change: connections that may still reach
            # the old master are dropped, so that every command from now on asks the sentinels afresh.
            # The idle ones are taken out under the pool's lock, so none is handed out while it is closed;
            # those in use are closed when they come back.
            self._changes_seen = self.watch.changes
            self.master_address = None
            async with self._lock:
                idle, self._available_connections = self._available_connections, []
                for connection in self._in_use_connections:
                    connection.mark_for_reconnect()  # type: ignore[no-untyped-call]  # untyped upstream
            for connection in idle:
                with contextlib.suppress(Exception):
                    await connection.disconnect()
        return await super().get_connection(*args, **kwargs)

    def sibling(self, max_connections: int, timeout: float, client_name: str) -> SentinelPool:
        kwargs = {k: v for k, v in self.connection_kwargs.items() if k != "connection_pool"}
        return SentinelPool(self.service_name, self.sentinel_manager, watch=self.watch, owns_manager=False,
                            connection_class=self.connection_class, max_connections=max_connections,
                            timeout=timeout, **{**kwargs, "client_name": client_name})  # fmt: skip

    async def verify(self, client: aioredis.Redis) -> None:
        """Ask the sentinels where the master is and the master for its replication id: catches a failover
        even while this node's connections to the old master stay open."""
        known = self.watch.identity
        try:
            host, port = await self.sentinel_manager.discover_master(self.service_name)
        except MasterNotFoundError:
            host = None  # no sentinel answers: the master itself can still say it was demoted
        if known is not None and host is not None and (known[0], known[1]) != (str(host), int(port)):
            self.watch.changed("sentinels name another master", f"{host}:{port}")
            return  # every pool of the node drops its connections at its next command (get_connection)
        info = await client.info("replication")
        if known is None:
            return
        if info.get("role") != "master":  # demoted, while our connection to it stayed open
            self.watch.changed("master is now a replica", f"{known[0]}:{known[1]}")
        else:
            self.watch.seen(known[0], known[1], str(info.get("master_replid", "")))

    async def aclose(self) -> None:
        await super().aclose()
        if self.owns_manager:
            await self.sentinel_manager.aclose()


def connect(target: SentinelTarget, *, timeout: float, max_connections: int, pool_timeout: float) -> aioredis.Redis:
    sentinel_options: dict[str, Any] = {
        "socket_timeout": min(timeout, SENTINEL_TIMEOUT_S),
        "socket_connect_timeout": min(timeout, SENTINEL_TIMEOUT_S),
        "password": os.environ.get(SENTINEL_PASSWORD_ENV) or None,
        "retry": NO_RETRY,  # one try per sentinel: with none up, a heartbeat must not wait through retries
    }
    if target.tls:
        sentinel_options["ssl"] = True
    manager = Sentinel(target.sentinels, sentinel_kwargs=sentinel_options)  # type: ignore[no-untyped-call,unused-ignore]  # typed from redis-py 8.2
    pool = SentinelPool(
        target.service, manager, watch=StoreWatch(), owns_manager=True,
        connection_class=WatchedSSLConnection if target.tls else WatchedConnection,
        max_connections=max_connections, timeout=pool_timeout, db=target.db,
        username=target.username, password=target.password,
        socket_timeout=timeout, socket_connect_timeout=timeout, health_check_interval=15, retry=NO_RETRY,
    )  # fmt: skip
    return aioredis.Redis.from_pool(pool)
