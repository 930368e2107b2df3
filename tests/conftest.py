"""Fixtures: a real Redis-compatible server per session, a clean database per test."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from storage.connection import Database, connect
from storage.keyspace import Keyspace
from tests.authkit import Site, open_site
from tests.servers import Cluster, RedisServer


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture
async def db(redis_server: RedisServer) -> AsyncIterator[Database]:
    """A client on the shared server under a cluster prefix of its own, so tests never collide."""
    database = Database(connect(redis_server.url), Keyspace(f"t{secrets.token_hex(4)}"))
    yield database
    keys = [k async for k in database.client.scan_iter(match=f"{database.keys.cluster}:*")]
    if keys:
        await database.client.delete(*keys)
    await database.aclose()


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
async def site(db: Database, tmp_path: Path) -> AsyncIterator[Site]:
    """A real in-process primary with the first-start objects (tests/authkit.py)."""
    async for s in open_site(db, tmp_path / "data", login_ip_limit=0):
        yield s


@pytest.fixture
async def admin(site: Site) -> dict[str, str]:
    """Headers of a logged-in admin session on `site`."""
    sid, _ = await site.login()
    return {"X-Session-ID": sid}


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    """Three real `podium serve` nodes on one Redis, one of them elected primary."""
    async with Cluster(tmp_path, size=3) as c:
        await c.ready()
        yield c
