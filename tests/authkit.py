"""Helpers for auth tests: an in-process node with the first-start objects, and logged-in clients."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from api.app import RUNNER_OPTIONS, create_app
from api.bootstrap import first_start
from api.front import ApiRunner
from api.server import job_services
from api.settings import Settings
from cluster.node import NodeRuntime
from storage.connection import Database
from storage.stores import Stores

Client = TestClient[web.Request, web.Application]


class NodeTestServer(TestServer):
    """aiohttp's test server, answering through the node's request front as `podium serve` does."""

    async def _make_runner(self, **kwargs: Any) -> web.AppRunner:
        return ApiRunner(self.app, **kwargs)


async def wait_until(predicate: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not reached within {timeout} s")
        await asyncio.sleep(0.02)


@dataclass
class Site:
    client: Client
    node: NodeRuntime
    settings: Settings

    async def call(
        self, name: str, body: dict[str, Any] | None = None, *, ns: str = "app", method: str = "POST",
        headers: dict[str, str] | None = None, query: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, Any]]:  # fmt: skip
        url = f"/api/{ns}/{name}/v1"
        if method == "GET":
            resp = await self.client.get(url, params=query or {}, headers=headers or {})
        else:
            resp = await self.client.post(url, json=body or {}, params=query or {}, headers=headers or {})
        data: dict[str, Any] = await resp.json()
        return resp.status, data

    async def login(self, username: str = "admin", password: str = "admin") -> tuple[str, str]:
        """(session id from the cookie, csrf token)."""
        resp = await self.client.post("/api/user/login/v1", json={"username": username, "password": password})
        data = await resp.json()
        assert resp.status == 200 and data["code"] == 0, data
        morsel = resp.cookies.get("session_id")
        assert morsel is not None
        # Tests pass the session explicitly (X-Session-ID or a Cookie header), like an API client.
        self.client.session.cookie_jar.clear()
        return morsel.value, str(data.get("csrf_token", ""))

    async def admin_key(self, sid: str, **fields: Any) -> tuple[str, dict[str, Any]]:
        """Create an API key as admin via X-Session-ID; returns (plain key, record)."""
        body = {"title": "test key", **fields}
        status, data = await self.call("create_api_key", body, headers={"X-Session-ID": sid})
        assert status == 200 and data["code"] == 0, data
        return str(data["plain_key"]), dict(data["api_key"])


async def open_site(db: Database, data_dir: Path, **settings: Any) -> AsyncIterator[Site]:
    config = Settings(data_dir=data_dir, **settings)
    stores = Stores.open(db, secret_key="test-secret-" + db.keys.cluster)
    node = NodeRuntime(db, "n1", "http://127.0.0.1:5522", lease_ms=3000, services=[first_start], stores=stores)
    node.services += job_services(node, config)  # as `podium serve` wires it
    dispatcher = node.dispatcher
    assert dispatcher is not None
    site = Site(TestClient(NodeTestServer(create_app(config, node), **RUNNER_OPTIONS)), node, config)
    await site.client.start_server()
    await node.start()
    try:
        await wait_until(lambda: node.is_primary, "primary")
        deadline = time.monotonic() + 30
        while not await db.client.exists(db.keys.setup_done):
            assert time.monotonic() < deadline, "first start did not finish"
            await asyncio.sleep(0.05)
        await wait_until(lambda: node.stores.bus.healthy, "invalidation bus")
        await wait_until(lambda: dispatcher.loaded, "dispatcher")
        yield site
    finally:
        await node.stop()
        await site.client.close()


async def ok(site: Site, api: str, body: dict[str, Any] | None, headers: dict[str, str], **kw: Any) -> dict[str, Any]:
    """Call an API on `site` and insist on success; returns the reply."""
    status, data = await site.call(api, body, headers=headers, **kw)
    assert (status, data.get("code")) == (200, 0), (api, status, data)
    return data
