"""Redis connection pools: requests wait for a connection, the lease has its own, nothing is re-sent."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from api.cli import build_parser, settings_from
from api.settings import ConfigError
from cluster.node import NodeRuntime
from storage.connection import CONTROL_CLIENT_NAME, STORE_DOWN_ERRORS, Database, connect
from storage.nodes import NodeStore
from tests.authkit import open_site, wait_until
from tests.servers import Cluster, Node, RedisServer
from tests.test_cluster import log_events

LEASE_MS = 1500
HOLD_S = LEASE_MS * 0.7 / 1000


def small(redis_server: RedisServer, db: Database, size: int, wait_s: float) -> Database:
    """A client on the test's keyspace (so the `db` fixture cleans up after it) with a small pool."""
    return Database(connect(redis_server.url, max_connections=size, pool_timeout=wait_s), db.keys)


async def take(database: Database) -> Any:
    """One connection out of the client's pool, as a command would take it."""
    return await database.client.connection_pool.get_connection()  # type: ignore[no-untyped-call]  # untyped upstream


@contextlib.asynccontextmanager
async def exhausted(database: Database) -> AsyncIterator[int]:
    """Take every connection the pool will give out (each further wait runs into the pool timeout) and
    give them back on exit; yields how many were taken."""
    pool = database.client.connection_pool
    taken: list[Any] = []
    try:
        while True:
            try:
                taken.append(await take(database))
            except STORE_DOWN_ERRORS:
                break
        yield len(taken)
    finally:
        for conn in taken:
            await pool.release(conn)


async def test_a_command_waits_for_a_busy_pool_instead_of_failing(redis_server: RedisServer, db: Database) -> None:
    client = small(redis_server, db, 2, 5.0)
    try:
        await client.client.set(db.keys.probe("wait"), "v")
        pool = client.client.connection_pool
        held = [await take(client), await take(client)]

        async def read() -> Any:
            return await client.client.get(db.keys.probe("wait"))

        waiting = asyncio.create_task(read())
        await asyncio.sleep(0.3)
        assert not waiting.done()  # the fail-fast pool raised MaxConnectionsError here
        await pool.release(held.pop())
        assert await asyncio.wait_for(waiting, 5) == b"v"
        await pool.release(held.pop())
    finally:
        await client.aclose()


async def test_waiting_commands_are_served_in_arrival_order(redis_server: RedisServer, db: Database) -> None:
    """A client that sends commands back to back cannot starve the ones already waiting: each released
    connection goes to the oldest waiter, not to whoever asks next."""
    client = small(redis_server, db, 1, 10.0)
    served: list[str] = []
    try:

        async def busy() -> None:
            for _ in range(30):
                await client.client.ping()
                served.append("busy")

        async def once(name: str) -> None:
            await client.client.ping()
            served.append(name)

        hog = asyncio.create_task(busy())
        await asyncio.sleep(0)  # its first command holds the only connection now
        others = [asyncio.create_task(once(f"w{i}")) for i in range(5)]
        await asyncio.wait_for(asyncio.gather(hog, *others), 10)
        # redis-py's Condition lets `busy` take the connection back every time: all five came last.
        assert max(served.index(f"w{i}") for i in range(5)) < 10, served
    finally:
        await client.aclose()


@pytest.mark.parametrize("how", ["stop", "kill"])
async def test_after_a_store_restart_the_next_command_on_every_pooled_connection_succeeds(
    tmp_path: Path, how: str
) -> None:
    """Nothing is retried, so the pool must not hand out a connection the old server closed."""
    server = RedisServer(tmp_path / "redis").start()
    client = connect(server.url)
    try:
        await asyncio.gather(*(client.ping() for _ in range(5)))  # five connections in the pool
        assert len(await client.client_list()) == 5
        await asyncio.to_thread(getattr(server, how))  # the loop keeps running, as in a node
        await asyncio.to_thread(server.start)
        await asyncio.sleep(0.1)
        assert await asyncio.gather(*(client.set("k", i) for i in range(5))) == [True] * 5
    finally:
        await client.aclose()
        server.stop()


async def test_a_request_that_waits_past_the_pool_timeout_answers_db(
    redis_server: RedisServer, db: Database, tmp_path: Path
) -> None:
    client = small(redis_server, db, 4, 0.3)
    try:
        async for site in open_site(client, tmp_path / "data", login_ip_limit=0):
            sid, _ = await site.login()
            key, _ = await site.admin_key(sid, privileges={"admin": True})
            headers = {"X-API-Key": key}
            status, data = await site.call("search_jobs", {"query": "*"}, headers=headers)
            assert (status, data["code"]) == (200, 0), data
            async with exhausted(client) as taken:
                assert taken >= 1
                started = time.monotonic()
                status, data = await site.call("search_jobs", {"query": "*"}, headers=headers)
                waited = time.monotonic() - started
            assert (status, data["code"]) == (500, "db"), data
            assert waited >= 0.3  # it waited for the pool timeout before giving up
            status, data = await site.call("search_jobs", {"query": "*"}, headers=headers)
            assert (status, data["code"]) == (200, 0), data
    finally:
        await client.aclose()


async def test_an_exhausted_request_pool_does_not_delay_the_lease(redis_server: RedisServer, db: Database) -> None:
    client = small(redis_server, db, 3, 5.0)
    node = NodeRuntime(client, "n1", "http://127.0.0.1:9", lease_ms=LEASE_MS)
    assert node.control is not node.db
    await node.start()
    try:
        await wait_until(lambda: node.is_primary, "primary")
        epoch = node.epoch
        async with exhausted(client) as taken:
            assert taken >= 1
            renews = len(node.election.renew_gaps)
            # Three holds long: on a shared pool every renew would wait for a connection and the node
            # would step down after one hold; the heartbeat record would expire (its TTL is 2.5 s).
            deadline = time.monotonic() + 3 * HOLD_S
            while time.monotonic() < deadline:
                assert node.is_primary and node.epoch == epoch
                await asyncio.sleep(0.05)
            assert len(node.election.renew_gaps) - renews >= 3
            assert "n1" in {n.record.id for n in await NodeStore(db).live()}
    finally:
        await node.stop()
        await client.aclose()

    async def control_connections() -> list[dict[str, Any]]:
        return [c for c in await db.client.client_list() if c.get("name") == CONTROL_CLIENT_NAME]

    # stop() closed the control client: none of its connections are left on the server.
    for _ in range(100):  # the server may see the close a moment later
        if not await control_connections():
            break
        await asyncio.sleep(0.05)
    assert await control_connections() == []


def test_pool_options_from_flags_and_environment() -> None:
    def settings(argv: list[str], env: dict[str, str] | None = None) -> tuple[int, float]:
        found = settings_from(build_parser().parse_args(["serve", *argv]), env or {})
        return found.redis_pool, found.redis_pool_timeout

    assert settings([]) == (64, 5.0)
    assert settings(["--redis-pool", "8", "--redis-pool-timeout", "0.5"]) == (8, 0.5)
    assert settings([], {"PODIUM_REDIS_POOL": "16", "PODIUM_REDIS_POOL_TIMEOUT": "2"}) == (16, 2.0)
    assert settings(["--redis-pool", "4"], {"PODIUM_REDIS_POOL": "16"}) == (4, 5.0)  # the option wins
    for argv, named in ((["--redis-pool", "0"], "--redis-pool"), (["--redis-pool", "x"], "--redis-pool"),
                        (["--redis-pool-timeout", "0"], "--redis-pool-timeout"),
                        (["--redis-pool-timeout", "nan"], "--redis-pool-timeout"),
                        (["--redis-pool-timeout", "soon"], "--redis-pool-timeout")):  # fmt: skip
        with pytest.raises(ConfigError, match=named):
            settings(argv)


# -- a real `podium serve` node under a burst --------------------------------------------------------------


async def admin_key(c: Cluster, node: Node) -> str:
    """Log in as admin/admin once the first start is done, and create an admin API key with the session."""
    http = c.http
    assert http is not None

    async def login() -> str | None:
        async with http.post(f"{node.url}/api/user/login/v1", json={"username": "admin", "password": "admin"}) as r:
            return r.cookies["session_id"].value if r.status == 200 else None

    sid: str = await c.wait_for(login, timeout=30, interval=0.2)
    http.cookie_jar.clear()
    body = {"title": "burst", "privileges": {"admin": True}}
    async with http.post(f"{node.url}/api/app/create_api_key/v1", json=body, headers={"X-Session-ID": sid}) as r:
        data = await r.json()
        assert r.status == 200 and data["code"] == 0, data
        return str(data["plain_key"])


async def burst(url: str, key: str, clients: int, seconds: float) -> Counter[str]:
    """`clients` concurrent connections sending GETs back to back for `seconds`; outcome counts."""
    outcomes: Counter[str] = Counter()
    end = time.monotonic() + seconds

    async def worker(http: aiohttp.ClientSession) -> None:
        while time.monotonic() < end:
            try:
                async with http.get(url) as resp:
                    data = await resp.json()
                    outcomes[f"{resp.status} {data.get('code')}"] += 1
            except (TimeoutError, aiohttp.ClientError) as exc:
                outcomes[type(exc).__name__] += 1

    connector = aiohttp.TCPConnector(limit=clients)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout, headers={"X-API-Key": key}) as http:
        await asyncio.gather(*(worker(http) for _ in range(clients)))
    return outcomes


@pytest.mark.timeout(120)
async def test_a_burst_of_searches_on_a_small_pool_gets_no_db_errors_and_keeps_the_primary(tmp_path: Path) -> None:
    async with Cluster(tmp_path, size=1, extra=["--redis-pool", "8"]) as c:
        node = await c.wait_single_primary()
        key = await admin_key(c, node)
        health = await c.health(node)
        assert health is not None
        epoch = health[1]["epoch"]
        started = time.time()

        outcomes = await burst(f"{node.url}/api/app/search_jobs/v1?query=*&limit=5", key, 250, 4.0)

        assert sum(outcomes.values()) > 250
        assert set(outcomes) == {"200 0"}, outcomes  # the fail-fast pool answered most of these `500 db`
        health = await c.health(node)
        assert health is not None
        assert (health[0], health[1]["epoch"]) == (200, epoch)
        assert [t for t in log_events(node, "stepped_down") if t >= started] == []
