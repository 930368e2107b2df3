"""Cluster-wide cache invalidation: a pub/sub listener that tells local caches when to forget.

Writers publish '<kind>|<name>' on the invalidation channel in the same atomic step as the write
(see `invalidation_ops`). A node serves from a cache only while its listener is subscribed and has
heard from Redis within `stale_after` seconds; otherwise caches read through to Redis. A reconnect
drops every cached value, because messages sent while disconnected are lost.

Under Sentinel the listener must also be subscribed on the master this node writes to: after a failover
the old master may stay up (and answer pings) while invalidations are published on the new one. So the
listener is healthy only while the store has not changed since it subscribed (`Database.store_changes`),
and on a change it drops its connection and subscribes again, on the master the sentinels now name.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

import structlog

from .connection import Database

log = structlog.get_logger("podium.bus")

Listener = Callable[[str], None]  # called with the object name ("*" = the whole kind)

PING_S = 0.5


class StoreChanged(ConnectionError):
    """The subscription is dropped because the store behind it changed (Sentinel failover)."""


class InvalidationBus:
    def __init__(self, db: Database, *, stale_after: float = 2.0) -> None:
        self.db = db
        self.stale_after = stale_after
        self._listeners: dict[str, list[Listener]] = {}
        self._reset: list[Callable[[], None]] = []
        self._subscribed = False
        self._heard = 0.0
        self._store = db.store_changes  # the store's change count when the current subscription was made

    @property
    def healthy(self) -> bool:
        return (
            self._subscribed
            and time.monotonic() - self._heard < self.stale_after
            and self.db.store_changes == self._store
        )

    def on(self, kind: str, listener: Listener) -> None:
        self._listeners.setdefault(kind, []).append(listener)

    def on_reset(self, callback: Callable[[], None]) -> None:
        self._reset.append(callback)

    def deliver(self, message: str) -> None:
        kind, _, name = message.partition("|")
        for listener in self._listeners.get(kind, ()):
            listener(name.partition("|")[0] or "*")

    def _drop_all(self) -> None:
        self._subscribed = False
        for callback in self._reset:
            callback()

    async def run(self, stop: asyncio.Event) -> None:
        """Listen until `stop`; reconnect after any failure."""
        failures = 0
        while not stop.is_set():
            try:
                await self._listen(stop)
                failures = 0
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failures += 1
                if failures == 1:
                    log.warning("invalidation_bus_down", error=repr(exc))
            finally:
                self._drop_all()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.2)

    async def _listen(self, stop: asyncio.Event) -> None:
        store = self.db.store_changes  # read before connecting: a change counted from here on resubscribes
        pubsub = self.db.client.pubsub()
        try:
            await pubsub.subscribe(self.db.keys.invalidate_channel)
            next_ping = 0.0
            while not stop.is_set():
                if self.db.store_changes != store:  # the master changed: this subscription may be on the old one
                    raise StoreChanged("the store changed; subscribing on the current master")
                now = time.monotonic()
                if now >= next_ping:
                    await pubsub.ping()
                    next_ping = now + PING_S
                msg = await pubsub.get_message(timeout=PING_S)
                if msg is None:
                    if time.monotonic() - self._heard > self.stale_after:
                        raise ConnectionError("no reply on the invalidation channel")
                    continue
                self._heard = time.monotonic()
                kind = msg.get("type")
                if kind == "subscribe":
                    self._drop_all()  # anything cached before this point may have missed messages
                    self._store = store
                    self._subscribed = True
                elif kind == "message":
                    data = msg["data"]
                    self.deliver(data.decode() if isinstance(data, bytes) else str(data))
        finally:
            with contextlib.suppress(Exception):
                await pubsub.aclose()  # type: ignore[no-untyped-call,unused-ignore]  # typed from redis-py 8.2


def invalidation_message(kind: str, name: str = "*") -> str:
    return f"{kind}|{name}"
