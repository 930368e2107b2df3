"""The Redis file store: each file one string plus a meta hash, with a total byte counter kept by the same scripts.

For a single node or a small cluster; a shared directory (DirectoryFileStore) or an object store takes the bulk
once files outgrow memory. Uploads arrive in chunks into a staging key that a script renames into place, so a
large file never sits in this process's memory and a broken upload leaves at most a staging key that expires.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import AsyncIterable, AsyncIterator
from typing import Any

from redis.exceptions import ResponseError

from ..connection import Database
from .base import (
    CHUNK,
    DEFAULT_MAX_FILE,
    DEFAULT_MAX_TOTAL,
    FileInfo,
    FileTooLarge,
    StorageFull,
    check_path,
    check_prefix,
    guess_type,
)
from .base import as_bytes as _bytes

STAGING_TTL_S = 3600  # an upload interrupted mid-way is forgotten after this
PREFIX_BATCH = 500

# Store (or replace) one file, unless the store's total would pass its cap.
# KEYS[1] file, KEYS[2] file meta, KEYS[3] total bytes counter, KEYS[4] paths index
# ARGV[1] path, ARGV[2] data, ARGV[3] modified (epoch s), ARGV[4] content type, ARGV[5] cap (bytes)
# return the file's size, or error "FULL" (nothing written)
FILE_PUT = """
local old = tonumber(redis.call('HGET', KEYS[2], 'size') or '0')
local size = string.len(ARGV[2])
if tonumber(redis.call('GET', KEYS[3]) or '0') - old + size > tonumber(ARGV[5]) then
  return redis.error_reply('FULL')
end
redis.call('SET', KEYS[1], ARGV[2])
redis.call('HSET', KEYS[2], 'size', size, 'modified', ARGV[3], 'type', ARGV[4])
redis.call('INCRBY', KEYS[3], size - old)
redis.call('ZADD', KEYS[4], 0, ARGV[1])
return size
"""

# Move a completely received upload into place, unless the store's total would pass its cap.
# KEYS[1] staging key, KEYS[2] file, KEYS[3] file meta, KEYS[4] total bytes counter, KEYS[5] paths index
# ARGV[1] path, ARGV[2] modified (epoch s), ARGV[3] content type, ARGV[4] cap (bytes)
# return the file's size, error "GONE" (the staging key expired) or "FULL" (staging key dropped, file untouched)
FILE_COMMIT = """
if redis.call('EXISTS', KEYS[1]) == 0 then return redis.error_reply('GONE') end
local old = tonumber(redis.call('HGET', KEYS[3], 'size') or '0')
local size = redis.call('STRLEN', KEYS[1])
if tonumber(redis.call('GET', KEYS[4]) or '0') - old + size > tonumber(ARGV[4]) then
  redis.call('DEL', KEYS[1])
  return redis.error_reply('FULL')
end
redis.call('RENAME', KEYS[1], KEYS[2])
redis.call('PERSIST', KEYS[2])
redis.call('HSET', KEYS[3], 'size', size, 'modified', ARGV[2], 'type', ARGV[3])
redis.call('INCRBY', KEYS[4], size - old)
redis.call('ZADD', KEYS[5], 0, ARGV[1])
return size
"""

# Delete one file and give its bytes back to the counter.
# KEYS[1] file, KEYS[2] file meta, KEYS[3] total bytes counter, KEYS[4] paths index
# ARGV[1] path
# return 1 deleted, 0 there was no such file
FILE_DELETE = """
local old = redis.call('HGET', KEYS[2], 'size')
redis.call('ZREM', KEYS[4], ARGV[1])
if not old then return redis.call('DEL', KEYS[1]) end
redis.call('DEL', KEYS[1], KEYS[2])
redis.call('DECRBY', KEYS[3], tonumber(old))
return 1
"""


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _full(exc: ResponseError) -> bool:
    return str(exc).startswith("FULL")


class RedisFileStore:
    """Files in Redis, capped in total (`max_bytes_total`) and per file (`max_file_bytes`)."""

    def __init__(self, db: Database, max_bytes_total: int = DEFAULT_MAX_TOTAL,
                 max_file_bytes: int = DEFAULT_MAX_FILE) -> None:  # fmt: skip
        self.db = db
        self.max_bytes_total = max_bytes_total
        self.max_file_bytes = max_file_bytes

    def _keys(self, path: str) -> list[str]:
        k = self.db.keys
        return [k.file(path), k.file_meta(path), k.files_bytes, k.files_index]

    async def put(self, path: str, data: bytes, *, content_type: str = "") -> int:
        check_path(path)
        if len(data) > self.max_file_bytes:
            raise FileTooLarge(self.max_file_bytes)
        try:
            size = await self.db.script(FILE_PUT)(
                keys=self._keys(path),
                args=[path, data, repr(time.time()), content_type or guess_type(path), self.max_bytes_total],
            )
        except ResponseError as exc:
            if _full(exc):
                raise StorageFull(self.max_bytes_total) from None
            raise
        return int(size)

    async def put_stream(self, path: str, chunks: AsyncIterable[bytes], *, content_type: str = "") -> int:
        check_path(path)
        k = self.db.keys
        staging = k.file_staging(secrets.token_hex(12))
        client = self.db.client
        received = 0
        try:
            async for chunk in chunks:
                if not chunk:
                    continue
                received += len(chunk)
                if received > self.max_file_bytes:
                    raise FileTooLarge(self.max_file_bytes)
                first = received == len(chunk)
                if first and int(await client.get(k.files_bytes) or 0) + received > self.max_bytes_total:
                    raise StorageFull(self.max_bytes_total)  # refused early; the commit checks again
                async with client.pipeline(transaction=True) as pipe:
                    pipe.append(staging, chunk)  # type: ignore[unused-awaitable]  # queued, not awaited
                    pipe.expire(staging, STAGING_TTL_S)  # type: ignore[unused-awaitable]
                    await pipe.execute()
            if received == 0:
                return await self.put(path, b"", content_type=content_type)
            size = await self.db.script(FILE_COMMIT)(
                keys=[staging, *self._keys(path)],
                args=[path, repr(time.time()), content_type or guess_type(path), self.max_bytes_total],
            )
        except ResponseError as exc:
            if _full(exc):
                raise StorageFull(self.max_bytes_total) from None
            raise
        finally:
            await client.delete(staging)  # gone already after a commit; a failed upload leaves nothing
        return int(size)

    async def get(self, path: str) -> bytes | None:
        raw = await self.db.client.get(self.db.keys.file(check_path(path)))
        return None if raw is None else _bytes(raw)

    async def read(self, path: str, chunk: int = CHUNK, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        key = self.db.keys.file(check_path(path))
        while end is None or start < end:
            want = chunk if end is None else min(chunk, end - start)
            piece = _bytes(await self.db.client.getrange(key, start, start + want - 1))
            if piece:
                yield piece
            if len(piece) < want:
                return
            start += want

    async def stat(self, path: str) -> FileInfo | None:
        raw = await self.db.client.hgetall(self.db.keys.file_meta(check_path(path)))
        if not raw:
            return None
        meta = {_text(key): _text(value) for key, value in raw.items()}
        return {"size": int(meta.get("size", 0)), "modified": float(meta.get("modified", 0)),
                "type": meta.get("type") or guess_type(path)}  # fmt: skip

    async def delete(self, path: str) -> bool:
        done = await self.db.script(FILE_DELETE)(keys=self._keys(check_path(path)), args=[path])
        return int(done) == 1

    async def delete_prefix(self, prefix: str) -> int:
        check_prefix(prefix)
        deleted = 0
        while True:
            # Every path is [A-Za-z0-9_./+-], so a byte above them bounds the range.
            found = await self.db.client.zrangebylex(self.db.keys.files_index, "[" + prefix, "(" + prefix + "\x7f",
                                                     start=0, num=PREFIX_BATCH)  # fmt: skip
            if not found:
                return deleted
            for raw in found:
                if await self.delete(_text(raw)):
                    deleted += 1

    async def total_bytes(self) -> int:
        return int(await self.db.client.get(self.db.keys.files_bytes) or 0)
