"""The file store options on a real `podium serve` process: `--file-store DIR` and `--file-max-bytes` reach the
node (an agent's upload lands in the directory, a larger one is refused), and bad values are refused at start."""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from api.cli import build_parser, settings_from
from api.settings import ConfigError
from storage.connection import Database, connect
from storage.fence import Fence
from storage.jobs import JobStore
from storage.keyspace import Keyspace
from tests.servers import Node, RedisServer


def serve_args(*extra: str) -> argparse.Namespace:
    return build_parser().parse_args(["serve", *extra])


def test_options_and_variables() -> None:
    settings = settings_from(serve_args(), {})
    assert (settings.file_store, settings.file_max_bytes, settings.file_store_max_bytes) == (
        "redis", 256 * 1024 * 1024, 2 * 1024 * 1024 * 1024)  # fmt: skip
    settings = settings_from(serve_args("--file-store", "/srv/shared", "--file-max-bytes", "4096"),
                             {"PODIUM_FILE_STORE_MAX_BYTES": "65536", "PODIUM_FILE_STORE": "ignored"})  # fmt: skip
    assert (settings.file_store, settings.file_max_bytes, settings.file_store_max_bytes) == ("/srv/shared", 4096, 65536)
    for args, env, fragment in (
        (("--file-max-bytes", "10"), {}, "--file-max-bytes 10: must be at least 1024"),
        ((), {"PODIUM_FILE_STORE_MAX_BYTES": "x"}, "PODIUM_FILE_STORE_MAX_BYTES='x'"),
        ((), {"PODIUM_FILE_MAX_BYTES": "100"}, "PODIUM_FILE_MAX_BYTES=100"),
    ):  # fmt: skip
        with pytest.raises(ConfigError, match=fragment.replace("[", r"\[")):
            settings_from(serve_args(*args), env)


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[tuple[Node, Database, Path]]:
    redis = RedisServer(tmp_path / "redis").start()
    shared = tmp_path / "shared"
    node = Node(0, tmp_path / "node", redis.url, ["--file-store", str(shared), "--file-max-bytes", "4096",
                                                  "--secret-key", "s3cret"]).start()  # fmt: skip
    db = Database(connect(redis.url), Keyspace("podium"))
    try:
        yield node, db, shared
    finally:
        node.terminate()
        await db.aclose()
        redis.stop()


async def test_uploads_land_in_the_directory(node: tuple[Node, Database, Path]) -> None:
    proc, db, shared = node
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
        deadline = time.monotonic() + 30
        while True:  # until the node is primary
            try:
                async with http.get(proc.url + "/health") as resp:
                    if resp.status == 200:
                        break
            except aiohttp.ClientError:
                pass
            assert time.monotonic() < deadline, proc.log_text()
            await asyncio.sleep(0.1)
        # Seed a running job as the primary would, under its lease and epoch.
        leader, epoch = await db.client.get(db.keys.leader), await db.client.get(db.keys.epoch)
        assert isinstance(leader, bytes) and isinstance(epoch, bytes)
        fence = Fence(db, leader.decode(), int(epoch))
        job = {"id": "jserve1", "state": "active", "category": "general", "targets": ["main"], "server": "s1",
               "started": time.time()}  # fmt: skip
        assert await JobStore(db).launch(fence, job)
        auth = hashlib.sha256(b"jserve1s3cret").hexdigest()

        async def upload(content: bytes) -> tuple[int, dict[str, object]]:
            form = aiohttp.FormData(default_to_multipart=True)
            form.add_field("id", "jserve1")
            form.add_field("auth", auth)
            form.add_field("file1", content, filename="out.csv", content_type="text/csv")
            async with http.post(proc.url + "/api/app/upload_job_file/v1", data=form) as resp:
                return resp.status, await resp.json()

        status, data = await upload(b"a,b\n1,2\n")
        assert (status, data["code"], data["size"]) == (200, 0, 8), data
        key = str(data["key"])
        assert (shared / key).read_bytes() == b"a,b\n1,2\n"
        assert [p.name for p in (shared / key).parent.iterdir()] == ["out.csv"]  # no temporary file left
        assert await db.client.exists(db.keys.file(key)) == 0  # not in Redis
        status, data = await upload(b"x" * 5000)
        assert (status, data["code"]) == (413, "api") and "4096" in str(data["description"]), data
        async with http.get(proc.url + "/" + key, params={"server": "s1", "auth": hashlib.sha256(b"s1s3cret")
                                                          .hexdigest()}) as resp:  # fmt: skip
            assert resp.status == 200 and await resp.read() == b"a,b\n1,2\n"
