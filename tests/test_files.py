"""The file store, every backend (Redis, directory, S3 on a real S3-compatible server): put/get/stat/read/delete,
streamed puts, caps, prefixes and hostile paths; then what only one backend does."""

from __future__ import annotations

import asyncio
import hashlib
import os
import secrets
from collections.abc import AsyncIterator, Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiobotocore.session import get_session

from storage.connection import Database
from storage.files import (
    BadPath,
    DirectoryFileStore,
    FileStore,
    FileTooLarge,
    RedisFileStore,
    StorageFull,
    check_path,
)
from storage.files.s3 import MIN_PART, S3Config, S3FileStore, S3Unavailable
from tests.servers import S3Server

HOSTILE = [
    "", "/etc/passwd", "../x", "files/../../x", "files/./x", "files//x", "files/x/", "files/.hidden",
    "files/x\x00y", "files/x y", "files/ü", "files\\x", "files/x:y", "files/*", "files/x?", "files/[a]",
    "a" * 513, "files/%2e%2e/x",
]  # fmt: skip


async def chunks(parts: Iterable[bytes]) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


async def failing(parts: Iterable[bytes]) -> AsyncIterator[bytes]:
    for part in parts:
        yield part
    raise ConnectionResetError("client went away")


@pytest.fixture(scope="module")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    server = S3Server(tmp_path_factory.mktemp("s3")).start()
    yield server
    server.stop()


class Bucket:
    """A fresh bucket on the test server, and a plain client to look at it from outside the store."""

    def __init__(self, server: S3Server) -> None:
        self.server = server
        self.name = f"podium-{secrets.token_hex(6)}"

    def client(self) -> Any:
        return get_session().create_client("s3", endpoint_url=self.server.url, region_name="us-east-1")

    async def create(self) -> Bucket:
        async with self.client() as s3:
            await s3.create_bucket(Bucket=self.name)
        return self

    async def keys(self) -> list[str]:
        async with self.client() as s3:
            found: list[str] = []
            async for page in s3.get_paginator("list_objects_v2").paginate(Bucket=self.name):
                found += [item["Key"] for item in page.get("Contents", [])]
            return sorted(found)

    async def uploads(self) -> list[str]:
        """Multipart uploads begun and neither completed nor aborted."""
        async with self.client() as s3:
            reply = await s3.list_multipart_uploads(Bucket=self.name)
            return [upload["Key"] for upload in reply.get("Uploads", [])]

    def store(self, max_file_bytes: int = 4_000, prefix: str = "t/") -> S3FileStore:
        config = S3Config(bucket=self.name, endpoint=self.server.url, prefix=prefix, path_style=True)
        return S3FileStore(config, max_file_bytes)


async def new_bucket(server: S3Server, monkeypatch: pytest.MonkeyPatch) -> Bucket:
    for name, value in server.env.items():  # botocore's standard chain finds them, as on a real node
        monkeypatch.setenv(name, value)
    return await Bucket(server).create()


@pytest.fixture
async def bucket(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> Bucket:
    return await new_bucket(s3_server, monkeypatch)


@pytest.fixture(params=["redis", "directory", "s3"])
async def store(request: pytest.FixtureRequest, db: Database, tmp_path: Path, s3_server: S3Server,
                monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[FileStore]:  # fmt: skip
    if request.param == "redis":
        yield RedisFileStore(db, max_bytes_total=10_000, max_file_bytes=4_000)
    elif request.param == "directory":
        yield DirectoryFileStore(tmp_path / "store", max_file_bytes=4_000)
    else:
        s3 = (await new_bucket(s3_server, monkeypatch)).store()
        yield s3
        await s3.aclose()


async def gather(store: FileStore, path: str, chunk: int = 7) -> bytes:
    return b"".join([piece async for piece in store.read(path, chunk)])


async def test_put_get_stat_read_delete(store: FileStore) -> None:
    path = "files/jobs/j1/abc/report.txt"
    assert await store.get(path) is None and await store.stat(path) is None
    assert await gather(store, path) == b""
    assert await store.put(path, b"hello world") == 11
    assert await store.get(path) == b"hello world"
    info = await store.stat(path)
    assert info is not None and info["size"] == 11 and info["type"] == "text/plain" and info["modified"] > 0
    for size in (1, 5, 11, 64):
        assert await gather(store, path, size) == b"hello world"
    assert await store.put(path, b"replaced") == 8  # a put replaces
    assert await store.get(path) == b"replaced"
    assert await store.delete(path) is True
    assert await store.delete(path) is False
    assert await store.get(path) is None and await store.stat(path) is None
    assert await store.put("files/jobs/j1/abc/empty.bin", b"") == 0
    assert await store.get("files/jobs/j1/abc/empty.bin") == b""


async def test_streamed_put(store: FileStore) -> None:
    path = "files/jobs/j2/r/data.bin"
    parts = [os.urandom(1000) for _ in range(3)] + [b"", os.urandom(5)]
    assert await store.put_stream(path, chunks(parts)) == 3005
    assert await store.get(path) == b"".join(parts)
    assert await store.put_stream("files/jobs/j2/r/none.txt", chunks([])) == 0
    assert await store.get("files/jobs/j2/r/none.txt") == b""
    # Over the per-file limit while streaming: refused, nothing left behind, the old file kept.
    with pytest.raises(FileTooLarge):
        await store.put_stream(path, chunks([b"x" * 3000, b"y" * 3000]))
    assert await store.get(path) == b"".join(parts)
    # The source failing midway leaves nothing either.
    with pytest.raises(ConnectionResetError):
        await store.put_stream("files/jobs/j2/r/broken.txt", failing([b"abc"]))
    assert await store.stat("files/jobs/j2/r/broken.txt") is None


async def test_per_file_limit(store: FileStore) -> None:
    with pytest.raises(FileTooLarge):
        await store.put("files/big.bin", b"x" * 4001)
    assert await store.get("files/big.bin") is None
    assert await store.put("files/big.bin", b"x" * 4000) == 4000


async def test_delete_prefix(store: FileStore) -> None:
    for path in ("files/jobs/j1/a/x.txt", "files/jobs/j1/b/y.txt", "files/jobs/j10/a/z.txt", "logs/jobs/j1/log.txt.gz"):
        await store.put(path, b"1")
    assert await store.delete_prefix("files/jobs/j1/") == 2
    assert await store.get("files/jobs/j1/a/x.txt") is None and await store.get("files/jobs/j1/b/y.txt") is None
    assert await store.get("files/jobs/j10/a/z.txt") == b"1"  # a longer id with the same start is another job
    assert await store.get("logs/jobs/j1/log.txt.gz") == b"1"
    assert await store.delete_prefix("files/jobs/j1/") == 0
    assert await store.delete_prefix("files/jobs/j") == 1
    with pytest.raises(BadPath):
        await store.delete_prefix("../")


@pytest.mark.parametrize("path", HOSTILE)
async def test_hostile_paths(store: FileStore, path: str) -> None:
    with pytest.raises(BadPath):
        check_path(path)
    with pytest.raises(BadPath):
        await store.put(path, b"x")
    with pytest.raises(BadPath):
        await store.put_stream(path, chunks([b"x"]))
    with pytest.raises(BadPath):
        await store.get(path)
    with pytest.raises(BadPath):
        await store.stat(path)
    with pytest.raises(BadPath):
        await store.delete(path)


async def test_redis_total_cap(db: Database) -> None:
    store = RedisFileStore(db, max_bytes_total=10_000, max_file_bytes=6_000)
    await store.put("files/a.bin", b"a" * 6000)
    await store.put("files/b.bin", b"b" * 3000)
    assert await store.total_bytes() == 9000
    with pytest.raises(StorageFull):
        await store.put("files/c.bin", b"c" * 1001)
    with pytest.raises(StorageFull):
        await store.put_stream("files/c.bin", chunks([b"c" * 500, b"c" * 501]))
    assert await store.stat("files/c.bin") is None and await store.total_bytes() == 9000
    # Replacing a file counts only the difference; exactly at the cap is allowed.
    await store.put("files/b.bin", b"b" * 4000)
    assert await store.total_bytes() == 10_000
    assert await store.delete("files/a.bin")
    assert await store.total_bytes() == 4000
    assert await store.put_stream("files/c.bin", chunks([b"c" * 3000, b"c" * 3000])) == 6000
    assert await store.total_bytes() == 10_000
    assert await store.delete_prefix("files/") == 2
    assert await store.total_bytes() == 0
    # No staging key survives a refused or finished upload.
    left = [k async for k in db.client.scan_iter(match=db.keys.file_staging("*"))]
    assert left == []


async def test_directory_stays_inside_root(tmp_path: Path) -> None:
    root = tmp_path / "store"
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_bytes(b"secret")
    store = DirectoryFileStore(root, max_file_bytes=1000)
    await store.put("files/ok.txt", b"ok")
    (root / "files" / "link").symlink_to(outside)
    with pytest.raises(BadPath):
        await store.get("files/link/secret.txt")
    with pytest.raises(BadPath):
        await store.put("files/link/new.txt", b"x")
    assert not (outside / "new.txt").exists()
    # A path below an existing file, or naming a directory, is refused clearly.
    with pytest.raises(BadPath):
        await store.put("files/ok.txt/below.txt", b"x")
    with pytest.raises(BadPath):
        await store.put("files", b"x")
    # No temporary files are left beside the stored ones; emptied directories go.
    assert sorted(p.name for p in (root / "files").iterdir()) == ["link", "ok.txt"]
    (root / "files" / "link").unlink()
    assert await store.delete("files/ok.txt")
    assert not (root / "files").exists()
