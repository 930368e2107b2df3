"""Redis connections: URL checks, the client factory, and the start-up reachability probe."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from .errors import BadRedisURL, StoreUnavailable
from .keyspace import Keyspace

Redis = aioredis.Redis

# Errors that mean "Redis is not there right now" as opposed to a bad command.
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


def connect(url: str, *, timeout: float = 2.0, max_connections: int = 64) -> Redis:
    """A client that reconnects by itself; commands time out rather than hang."""
    check_url(url)
    return aioredis.Redis.from_url(
        url,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        health_check_interval=15,
        retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), retries=2),
        retry_on_error=[RedisConnectionError, RedisTimeoutError],
        max_connections=max_connections,
    )


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

    async def aclose(self) -> None:
        await self.client.aclose()


# What a handler may see when Redis is down mid-request; the HTTP edge maps these to code `db`.
STORE_DOWN_ERRORS: tuple[type[BaseException], ...] = (RedisConnectionError, RedisTimeoutError, StoreUnavailable)
