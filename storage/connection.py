"""Redis connections: URL checks, the client factory, and the start-up reachability probe.

Every client has a pool of its own that makes a command *wait* for a free connection, in arrival
order, up to a pool timeout, instead of failing at once; a command that waited longer fails with a
ConnectionError ("No connection available."), which the HTTP edge answers as `db` like any other
unreachable store. Each node has two clients: the request client (size and wait set by `--redis-pool`
and `--redis-pool-timeout`), used by handlers and primary-only services, and a small control client
(`Database.with_own_pool`) used only by the lease and the registry heartbeat, so those never queue
behind requests.

No command is ever sent twice by the client library (no automatic retry): a Lua script or MULTI/EXEC
that ran but whose reply was lost would otherwise run again, and a committed create would answer
"already exists". A broken connection is still replaced: the pool checks a connection before handing it
out and reconnects it if the server closed it, so a restarted Redis is picked up without any action.
Whoever sees a failed write decides whether to retry it (README: "Errors from the store").

A `redis+sentinel://` URL gives the same pool over connections to whichever server the sentinels name
master (storage/sentinel.py, which also tells the election when that master changed).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from . import sentinel
from .errors import BadRedisURL, StoreUnavailable
from .keyspace import Keyspace
from .pool import DEFAULT_POOL as DEFAULT_POOL
from .pool import DEFAULT_POOL_TIMEOUT_S as DEFAULT_POOL_TIMEOUT_S
from .pool import NO_RETRY, FairPool

Redis = aioredis.Redis

CONTROL_POOL = 2  # the control client: one for the election loop, one for the heartbeat loop
CONTROL_POOL_TIMEOUT_S = 1.0  # never reached while only those two loops use it
CONTROL_CLIENT_NAME = "podium-control"  # how its connections show in CLIENT LIST

# Errors that mean "Redis is not there right now" as opposed to a bad command. A pool timeout is a
# RedisConnectionError, so it is one of these (and of STORE_DOWN_ERRORS below).
UNAVAILABLE_ERRORS: tuple[type[BaseException], ...] = (
    RedisConnectionError,
    RedisTimeoutError,
    ConnectionError,
    OSError,
    asyncio.TimeoutError,
)

_SCHEMES = ("redis", "rediss", "unix", *sentinel.SCHEMES)


def check_url(url: str) -> str:
    """Return `url` if it names a usable Redis endpoint, else raise BadRedisURL. Errors quote it redacted."""
    parts = urlsplit(url)
    shown = redacted(url)
    if parts.scheme not in _SCHEMES:
        raise BadRedisURL(
            f"Redis URL must start with redis://, rediss://, unix:// or redis+sentinel:// (got {shown!r})"
        )
    if parts.scheme in sentinel.SCHEMES:
        sentinel.parse_url(url)
    elif parts.scheme == "unix":
        if not parts.path:
            raise BadRedisURL(f"Redis URL {shown!r} has no socket path")
    else:
        try:
            port = parts.port
        except ValueError:
            port = -1
        if not parts.hostname or (port is not None and not 0 < port < 65536):
            if "@" in url.partition("://")[2] and "@" not in parts.netloc:  # the "@" came after a / ? or #
                raise BadRedisURL(f"Redis URL {shown!r}: percent-encode a '/', '?' or '#' in the user or "
                                  "password (%2F, %3F, %23)")  # fmt: skip
            raise BadRedisURL(f"Redis URL {shown!r} has {'no host' if not parts.hostname else 'a bad port'}")
    return url


def redacted(url: str) -> str:
    """The URL without its password, for logs and errors. Read from the raw string, not a parser's view: a
    password with an unencoded `/`, `?` or `#` would otherwise end the address early and show up whole. The
    user part runs from `://` to the last `@`; a `password=` query parameter is hidden too."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return _QUERY_PASSWORD.sub(r"\1***", url)
    userinfo, at, tail = rest.rpartition("@")
    if at and (":" in userinfo or any(c in userinfo for c in "/?#")):
        user = userinfo.partition(":")[0]
        rest = f"{'' if any(c in user for c in '/?#') else user}:***@{tail}"
    return _QUERY_PASSWORD.sub(r"\1***", f"{scheme}://{rest}")


_QUERY_PASSWORD = re.compile(r"(?i)([?&]password=)[^&#]*")


def connect(
    url: str,
    *,
    timeout: float = 2.0,
    max_connections: int = DEFAULT_POOL,
    pool_timeout: float = DEFAULT_POOL_TIMEOUT_S,
) -> Redis:
    """A client that reconnects by itself and never re-sends a command; commands time out after
    `timeout` rather than hang, and wait up to `pool_timeout` for one of `max_connections` connections.
    A redis+sentinel:// URL gives a client of the master the sentinels name (storage/sentinel.py)."""
    check_url(url)
    if urlsplit(url).scheme in sentinel.SCHEMES:
        target = sentinel.parse_url(url)
        return sentinel.connect(target, timeout=timeout, max_connections=max_connections, pool_timeout=pool_timeout)
    pool = FairPool.from_url(
        url,
        max_connections=max_connections,
        timeout=pool_timeout,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        health_check_interval=15,
        retry=NO_RETRY,
    )
    return aioredis.Redis.from_pool(pool)


async def wait_reachable(client: Redis, *, attempts: int = 10, delay: float = 0.3) -> None:
    """PING until it answers; raise StoreUnavailable after `attempts` failures."""
    last: BaseException | None = None
    for _ in range(attempts):
        try:
            await client.ping()
            return
        except (RedisError, *UNAVAILABLE_ERRORS) as exc:  # type: ignore[misc]  # tuple of exception types
            last = exc
            await asyncio.sleep(delay)
    raise StoreUnavailable(f"Redis is unreachable: {last}")


@dataclass(slots=True)
class Database:
    """One Redis client plus the cluster's keyspace: what every store is built from."""

    client: Redis
    keys: Keyspace
    scripts: dict[str, Any] = field(default_factory=dict)
    confirm_ms: int = 0  # > 0: claims wait this long for a replica to hold them (Sentinel only; confirm_claims)

    def script(self, source: str) -> Any:
        """The registered (EVALSHA with reload on NOSCRIPT) form of a Lua source, cached."""
        found = self.scripts.get(source)
        if found is None:
            found = self.scripts[source] = self.client.register_script(source)
        return found

    def with_own_pool(
        self,
        max_connections: int = CONTROL_POOL,
        pool_timeout: float = CONTROL_POOL_TIMEOUT_S,
        client_name: str = CONTROL_CLIENT_NAME,
    ) -> Database:
        """Another client to the same server, keyspace and settings, with a pool of its own: what the
        lease and the heartbeat use, so that request traffic can never make them wait for a connection."""
        pool = self.client.connection_pool
        if isinstance(pool, FairPool):
            own = pool.sibling(max_connections, pool_timeout, client_name)
        else:
            own = FairPool(
                connection_class=pool.connection_class,
                max_connections=max_connections,
                timeout=pool_timeout,
                **{**pool.connection_kwargs, "client_name": client_name},
            )
        return Database(aioredis.Redis.from_pool(own), self.keys)

    @property
    def store_changes(self) -> int:
        """How often the store behind this client changed identity (Sentinel only; always 0 otherwise)."""
        pool = self.client.connection_pool
        return pool.watch.changes if isinstance(pool, sentinel.SentinelPool) else 0

    def confirm_claims(self, timeout_ms: int) -> None:
        """Under Sentinel, make the claims that precede an outside effect (Fence.run(durable=True)) wait up to
        `timeout_ms` for a replica to hold them, so a failover cannot lose a claim whose run went ahead.
        No effect on any other store: the plain path sends nothing more."""
        if isinstance(self.client.connection_pool, sentinel.SentinelPool):
            self.confirm_ms = max(1, timeout_ms)

    async def run_confirmed(self, source: str, keys: list[Any], args: list[Any]) -> Any:
        """A script, then `WAIT 1 confirm_ms` on the same connection (one pipeline). The script's own error is
        raised as it came (not annotated by the pipeline). No replica in time: counted as a store change (the
        claim may be lost in a failover, so this node steps down) and raised as a connection error."""
        async with self.client.pipeline(transaction=False) as pipe:
            await self.script(source)(keys=keys, args=args, client=pipe)
            pipe.execute_command("WAIT", 1, self.confirm_ms)
            result, replicas = await pipe.execute(raise_on_error=False)
        if isinstance(result, BaseException):
            raise result
        if isinstance(replicas, BaseException) or int(replicas) < 1:
            pool = self.client.connection_pool
            if isinstance(pool, sentinel.SentinelPool):
                pool.watch.changed("no replica confirmed a claim")
            raise RedisConnectionError(f"no replica confirmed the write within {self.confirm_ms} ms")
        return result

    def on_store_change(self, callback: Callable[[], None]) -> None:
        """Call `callback` as soon as any pool sharing this client's watch counts a store change (Sentinel only)."""
        pool = self.client.connection_pool
        if isinstance(pool, sentinel.SentinelPool):
            pool.watch.listeners.append(callback)

    async def verify_store(self) -> None:
        """Check the store is still the master this node knows (Sentinel only); a change shows in
        `store_changes`."""
        pool = self.client.connection_pool
        if isinstance(pool, sentinel.SentinelPool):
            await pool.verify(self.client)

    async def aclose(self) -> None:
        await self.client.aclose()


# What a handler may see when Redis is down mid-request; the HTTP edge maps these to code `db`.
STORE_DOWN_ERRORS: tuple[type[BaseException], ...] = (RedisConnectionError, RedisTimeoutError, StoreUnavailable)
