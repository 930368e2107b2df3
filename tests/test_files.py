"""The file store, every backend (Redis, directory, S3 on a real S3-compatible server): put/get/stat/read/delete,
streamed puts, caps, prefixes and hostile paths; then what only one backend does."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator, Iterable, Iterator
from pathlib import Path

import pytest

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
from tests.servers import S3Bucket, S3Server

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


class Bucket(S3Bucket):
    def store(self, max_file_bytes: int = 4_000, prefix: str = "t/") -> S3FileStore:
        config = S3Config(bucket=self.name, endpoint=self.server.url, prefix=prefix, path_style=True)
        return S3FileStore(config, max_file_bytes)


async def new_bucket(server: S3Server, monkeypatch: pytest.MonkeyPatch) -> Bucket:
    for name, value in server.env.items():  # botocore's standard chain finds them, as on a real node
        monkeypatch.setenv(name, value)
    bucket = Bucket(server)
    await bucket.create()
    return bucket


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


async def test_range_read(store: FileStore) -> None:
    path = "files/jobs/j1/rng/digits.txt"
    await store.put(path, b"0123456789")

    async def part(start: int, end: int | None, chunk: int = 3) -> bytes:
        return b"".join([piece async for piece in store.read(path, chunk, start=start, end=end)])

    assert await part(0, None) == b"0123456789"
    assert await part(2, 5) == b"234" and await part(7, None) == b"789" and await part(0, 1) == b"0"
    assert await part(8, 50) == b"89"  # an end past the file stops at its end
    assert await part(10, None) == b"" and await part(4, 4) == b""
    assert b"".join([p async for p in store.read("files/jobs/j1/rng/none.txt", 3, start=1, end=4)]) == b""


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


async def test_streamed_put_over_the_limit_leaves_nothing(store: FileStore) -> None:
    path = "files/jobs/j3/r/big.bin"
    with pytest.raises(FileTooLarge):
        await store.put_stream(path, chunks([b"x" * 1000] * 5))
    assert await store.stat(path) is None and await store.get(path) is None
    assert await gather(store, path) == b""
    assert await store.delete_prefix("files/jobs/j3/") == 0  # not even a staging file under the prefix


async def test_read_of_a_missing_file(store: FileStore) -> None:
    await store.put("files/jobs/j4/r/here.txt", b"here")
    for path in ("files/jobs/j4/r/gone.txt", "files/jobs/j4/r", "files/jobs/nojob/r/x.txt"):
        assert await gather(store, path) == b"", path
        assert await store.get(path) is None and await store.stat(path) is None, path
        assert await store.delete(path) is False, path


async def test_stat_types_and_content_type(store: FileStore, request: pytest.FixtureRequest) -> None:
    await store.put("files/a/data.bin", b"1,2\n", content_type="text/csv")
    await store.put_stream("files/a/more.bin", chunks([b"3,4\n"]), content_type="text/csv")
    await store.put("files/a/guessed.json", b"{}")
    info = await store.stat("files/a/guessed.json")
    assert info is not None
    assert type(info["size"]) is int and type(info["modified"]) is float and type(info["type"]) is str
    assert info["type"] == "application/json"  # guessed from the name when none is given
    if request.node.callspec.params["store"] == "directory":  # it keeps only the bytes; the name gives the type
        request.applymarker(pytest.mark.xfail(strict=True, reason="the directory store does not keep a type"))
    for path in ("files/a/data.bin", "files/a/more.bin"):
        info = await store.stat(path)
        assert info is not None and info["type"] == "text/csv", (path, info)


async def test_delete_prefix_of_many_files(store: FileStore) -> None:
    """More files than one page of a listing (S3 answers 1,000 keys a page, Redis scans 500)."""
    paths = [f"files/jobs/many/{i % 7}/f{i}.txt" for i in range(1205)]
    for start in range(0, len(paths), 100):
        await asyncio.gather(*(store.put(path, b"1") for path in paths[start:start + 100]))
    await store.put("files/jobs/many2/x/keep.txt", b"k")
    assert await store.delete_prefix("files/jobs/many/") == 1205
    assert await store.stat(paths[0]) is None and await store.stat(paths[-1]) is None
    assert await store.get("files/jobs/many2/x/keep.txt") == b"k"


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


async def test_s3_multipart_upload(bucket: Bucket) -> None:
    """A file larger than one part goes up in parts; it is whole afterwards, under the store's prefix."""
    store = S3FileStore(bucket.store(32 * 1024 * 1024).config, 32 * 1024 * 1024, part_bytes=MIN_PART)
    try:
        data = os.urandom(12 * 1024 * 1024 + 123)
        parts = [data[i:i + 65536] for i in range(0, len(data), 65536)]
        assert await store.put_stream("files/jobs/j/r/big.bin", chunks(parts), content_type="text/csv") == len(data)
        assert await bucket.keys() == ["t/files/jobs/j/r/big.bin"] and await bucket.uploads() == []
        info = await store.stat("files/jobs/j/r/big.bin")
        assert info is not None and (info["size"], info["type"]) == (len(data), "text/csv")
        digest = hashlib.sha256()
        async for piece in store.read("files/jobs/j/r/big.bin", 1 << 20):
            assert len(piece) <= 1 << 20
            digest.update(piece)
        assert digest.digest() == hashlib.sha256(data).digest()
    finally:
        await store.aclose()


async def test_s3_failed_uploads_are_aborted(bucket: Bucket) -> None:
    """Past the limit, the source failing, or the task cancelled after parts went up: the multipart upload is
    aborted (no parts kept) and an older file of that path stays as it was."""
    limit = 12 * 1024 * 1024
    store = S3FileStore(bucket.store(limit).config, limit, part_bytes=MIN_PART)
    path = "files/jobs/j/r/big.bin"
    try:
        await store.put(path, b"old")
        mib = b"m" * (1024 * 1024)
        with pytest.raises(FileTooLarge):
            await store.put_stream(path, chunks([mib] * 13))
        assert await bucket.uploads() == [] and await store.get(path) == b"old"
        with pytest.raises(ConnectionResetError):  # the source's own error, not a store error
            await store.put_stream(path, failing([mib] * 7))
        assert await bucket.uploads() == [] and await store.get(path) == b"old"
        sent = asyncio.Event()

        async def slow() -> AsyncIterator[bytes]:
            for _ in range(6):
                yield mib
            sent.set()
            await asyncio.sleep(3600)
            yield mib

        task = asyncio.create_task(store.put_stream(path, slow()))
        await sent.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await bucket.uploads() == [] and await store.get(path) == b"old"
        assert await bucket.keys() == ["t/" + path]
    finally:
        await store.aclose()


async def test_s3_prefixes_keep_stores_apart(bucket: Bucket) -> None:
    one, two, bare = bucket.store(prefix="one"), bucket.store(prefix="two/"), bucket.store(prefix="")
    try:
        await one.put("files/x.txt", b"1")
        await two.put("files/x.txt", b"2")
        await bare.put("files/x.txt", b"3")
        assert await bucket.keys() == ["files/x.txt", "one/files/x.txt", "two/files/x.txt"]
        assert [await s.get("files/x.txt") for s in (one, two, bare)] == [b"1", b"2", b"3"]
        assert await one.delete_prefix("files/") == 1
        assert await bucket.keys() == ["files/x.txt", "two/files/x.txt"]
        assert await bare.delete_prefix("files/") == 1  # the other store's keys do not start with files/
        assert await bucket.keys() == ["two/files/x.txt"]
    finally:
        for s in (one, two, bare):
            await s.aclose()


async def test_s3_reader_stopping_early_and_reopening(bucket: Bucket) -> None:
    store = bucket.store(1 << 20)
    try:
        await store.put("files/r.bin", os.urandom(300_000))
        for _ in range(40):  # more than the client's connection pool: a reader left early gives its connection back
            reader = store.read("files/r.bin", 1000)
            assert len(await anext(reader)) <= 1000
            await reader.aclose()  # type: ignore[attr-defined]
        assert len(await store.get("files/r.bin") or b"") == 300_000
        await store.aclose()
        assert await store.stat("files/r.bin") is not None  # a closed store opens a new client on use
    finally:
        await store.aclose()


async def test_s3_unreachable_and_missing_bucket(bucket: Bucket) -> None:
    gone = S3FileStore(S3Config(bucket=bucket.name, endpoint="http://127.0.0.1:9", path_style=True), 1000)
    missing = S3FileStore(S3Config(bucket="podium-no-such-bucket", endpoint=bucket.server.url, path_style=True), 1000)
    good = bucket.store()
    try:
        with pytest.raises(S3Unavailable) as caught:
            await gone.put("files/x.txt", b"x")
        assert "store a file" in str(caught.value) and "podium-test-secret" not in str(caught.value)
        with pytest.raises(S3Unavailable, match=r"NoSuchBucket|404"):
            await missing.check()
        with pytest.raises(S3Unavailable, match="NoSuchBucket"):
            await missing.put("files/x.txt", b"x")
        await good.check()
    finally:
        for store in (gone, missing, good):
            await store.aclose()


def test_s3_config_problems() -> None:
    assert S3Config(bucket="podium-files", endpoint="https://s3.example.com", region="eu-west-1",
                    prefix="a/b/").problems() == []  # fmt: skip
    for config, option in (
        (S3Config(bucket="Bad_Bucket"), "--s3-bucket"),
        (S3Config(bucket="ab"), "--s3-bucket"),
        (S3Config(bucket="podium", region="EU west"), "--s3-region"),
        (S3Config(bucket="podium", endpoint="ftp://x"), "--s3-endpoint"),
        (S3Config(bucket="podium", endpoint="http://key:secret@host"), "--s3-endpoint"),
        (S3Config(bucket="podium", prefix="/abs"), "--s3-prefix"),
        (S3Config(bucket="podium", prefix="a/../b"), "--s3-prefix"),
        (S3Config(bucket="podium", prefix="a" * 300), "--s3-prefix"),
    ):  # fmt: skip
        problems = config.problems()
        assert len(problems) == 1 and problems[0].startswith(option), (config, problems)
    assert S3Config(bucket="b12", prefix="p").key_prefix == "p/" and S3Config(bucket="b12").key_prefix == ""
