"""The bounded, first-come-first-served connection pool every client of the store uses."""

from __future__ import annotations

import asyncio
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError

DEFAULT_POOL = 64  # connections of the request client
DEFAULT_POOL_TIMEOUT_S = 5.0  # how long a command waits for one of them
NO_RETRY = Retry(NoBackoff(), retries=0)  # each connection gets a copy


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

    def sibling(self, max_connections: int, timeout: float, client_name: str) -> FairPool:
        """A pool of its own to the same server with the same settings (`Database.with_own_pool`)."""
        return FairPool(
            connection_class=self.connection_class,
            max_connections=max_connections,
            timeout=timeout,
            **{**self.connection_kwargs, "client_name": client_name},
        )
