"""Fixtures: a real Redis-compatible server per session, a clean database per test."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from storage.connection import Database, connect
from storage.keyspace import Keyspace
from tests.servers import RedisServer


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
