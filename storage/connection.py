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
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from .errors import BadRedisURL, StoreUnavailable
from .keyspace import Keyspace

Redis = aioredis.Redis

DEFAULT_POOL = 64  # connections of the request client
DEFAULT_POOL_TIMEOUT_S = 5.0  # how long a command waits for one of them
CONTROL_POOL = 2  # the control client: one for the election loop, one for the heartbeat loop
CONTROL_POOL_TIMEOUT_S = 1.0  # never reached while only those two loops use it
CONTROL_CLIENT_NAME = "podium-control"  # how its connections show in CLIENT LIST
_NO_RETRY = Retry(NoBackoff(), retries=0)  # each connection gets a copy

# Errors that mean "Redis is not there right now" as opposed to a bad command. A pool timeout is a
# RedisConnectionError, so it is one of these (and of STORE_DOWN_ERRORS below).
UNAVAILABLE_ERRORS: tuple[type[BaseException], ...] = (
    RedisConnectionError,
    RedisTimeoutError,
    ConnectionError,
    OSError,
    asyncio.TimeoutError,
)

_SCHEMES = ("redis", "rediss", "unix")


def check_url(url: str) -> str:
    """Return `url` if it names a usable Redis endpoint, else raise BadRedisURL."""
    parts = urlsplit(url)
    if parts.scheme not in _SCHEMES:
        raise BadRedisURL(f"Redis URL must start with redis://, rediss:// or unix:// (got {url!r})")
    if parts.scheme == "unix":
        if not parts.path:
            raise BadRedisURL(f"Redis URL {url!r} has no socket path")
    else:
        try:
            port = parts.port
        except ValueError as exc:
            raise BadRedisURL(f"Redis URL {url!r} has a bad port") from exc
        if not parts.hostname:
            raise BadRedisURL(f"Redis URL {url!r} has no host")
        if port is not None and not 0 < port < 65536:
            raise BadRedisURL(f"Redis URL {url!r} has a bad port")
    return url


def redacted(url: str) -> str:
    """The URL without its password, for logs and errors."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return parts._replace(netloc=netloc).geturl()


class FairPool(aioredis.ConnectionPool):
    """A connection pool where a command waits for a connection, in arrival order, instead of failing.

    redis-py's BlockingConnectionPool waits on a Condition: a waiter that is woken but beaten to the free
    connection by a newly arriving command goes to the back of the queue, so under a burst a few requests
    wait many times longer than the rest (seconds, up to the pool timeout, while the median waits
    milliseconds), and every command pays for the Condition and a timeout even when connections are free.
    Here a FIFO semaphore (asyncio's hands a released permit to the oldest waiter) admits at most
    `max_connections` commands to the plain pool behind it, which therefore always has a connection to
    give; a free permit is taken without suspending, and only a command that has to wait sets a timeout.
    """

    def __init__(self, max_connections: int = DEFAULT_POOL, timeout: float | None = DEFAULT_POOL_TIMEOUT_S,
                 **kwargs: Any) -> None:  # fmt: skip
        super().__init__(max_connections=max_connections, **kwargs)
        self.timeout = timeout
        self._turns = asyncio.Semaphore(max_connections)
        self._holders: set[Any] = set()  # connections handed out through a permit

    async def get_connection(self, *args: Any, **kwargs: Any) -> Any:
        if self._turns.locked():  # all taken, or others already queued: wait in line, bounded
            try:
                async with asyncio.timeout(self.timeout):
                    await self._turns.acquire()
            except TimeoutError:
                raise RedisConnectionError("No connection available.") from None
        else:
            await self._turns.acquire()  # returns at once
        try:
            connection = await super().get_connection(*args, **kwargs)  # type: ignore[no-untyped-call]  # untyped upstream
        except BaseException:
            self._turns.release()
            raise
        self._holders.add(connection)
        return connection

    async def ensure_connection(self, connection: Any) -> None:
        """As redis-py's, without its exception for maintenance notifications (on by default for TCP in
        redis-py 8, and then it hands out connections the server has closed): a connection the server has
        closed (a restart) is reconnected before the command is sent, so the first command after a restart
        succeeds without any retry. The stream's EOF flag tells without any I/O; redis-py's own check (a read
        with a zero timeout) costs a cancelled read per command, half the cost of a cached GET."""
        await connection.connect()
        reader = getattr(connection, "_reader", None)
        if reader is None or reader.at_eof() or reader.exception() is not None:
            await connection.disconnect()
            await connection.connect()

    async def release(self, connection: Any) -> None:
        # A release can only be cut off where it waits: for the pool's lock, or to disconnect a connection
        # marked for reconnection. Then it runs on its own to the end (as redis-py's Pipeline.reset shields
        # its release) and the permit comes back once the connection is back in the pool; otherwise it would
        # stay counted in use with its permit gone. The common case waits for nothing and costs no task.
        if self._lock.locked() or connection.should_reconnect():
            task = asyncio.ensure_future(super().release(connection))
            task.add_done_callback(lambda done: self._return_permit(connection, done))
            await asyncio.shield(task)
            return
        try:
            await super().release(connection)
        finally:
            self._return_permit(connection)

    def _return_permit(self, connection: Any, done: asyncio.Future[Any] | None = None) -> None:
        if done is not None and not done.cancelled():
            done.exception()  # seen here too, so a release nobody waits for any more is not reported as lost
        if connection in self._holders:
            self._holders.discard(connection)
            self._turns.release()


def connect(
    url: str,
    *,
    timeout: float = 2.0,
    max_connections: int = DEFAULT_POOL,
    pool_timeout: float = DEFAULT_POOL_TIMEOUT_S,
) -> Redis:
    """A client that reconnects by itself and never re-sends a command; commands time out after
    `timeout` rather than hang, and wait up to `pool_timeout` for one of `max_connections` connections."""
    check_url(url)
    pool = FairPool.from_url(
        url,
        max_connections=max_connections,
        timeout=pool_timeout,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        health_check_interval=15,
        retry=_NO_RETRY,
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
        own = FairPool(
            connection_class=pool.connection_class,
            max_connections=max_connections,
            timeout=pool_timeout,
            **{**pool.connection_kwargs, "client_name": client_name},
        )
        return Database(aioredis.Redis.from_pool(own), self.keys)

    async def aclose(self) -> None:
        await self.client.aclose()


# What a handler may see when Redis is down mid-request; the HTTP edge maps these to code `db`.
STORE_DOWN_ERRORS: tuple[type[BaseException], ...] = (RedisConnectionError, RedisTimeoutError, StoreUnavailable)
