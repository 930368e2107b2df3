"""A node's clean stop: the primary services it stops finish their own clean-up (real Redis)."""

from __future__ import annotations

import asyncio

from cluster.node import NodeRuntime, PrimaryService
from storage.connection import Database
from tests.authkit import wait_until


async def test_stop_lets_every_primary_service_finish_its_clean_up(db: Database) -> None:
    """Stopping gives the lease back, which steps down and stops the services in a task of its own; the stop
    waits for that task instead of cancelling it, so no service is cancelled again in the middle of its clean-up
    (where the dispatcher closes its own connection pool) and none is left unawaited."""
    cleaned: list[str] = []

    def service(name: str) -> PrimaryService:
        async def run(node: NodeRuntime, stop: asyncio.Event) -> None:
            try:
                await stop.wait()
                await asyncio.sleep(3600)  # cancelled here by the stop
            finally:
                await asyncio.sleep(0.3)  # a clean-up that takes a moment, as closing a pool does
                cleaned.append(name)

        return run

    node = NodeRuntime(db, "n1", "http://127.0.0.1:5522", lease_ms=3000, services=[service("a"), service("b")])
    await node.start()
    await wait_until(lambda: node.is_primary, "primary")
    await node.stop()
    assert cleaned == ["a", "b"]
