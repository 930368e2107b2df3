"""The S3 file store: each file one object in a bucket (AWS S3 or any S3-compatible server: MinIO, Ceph, R2 ...).

For clusters whose nodes run on different machines once files outgrow Redis: every node reaches the bucket, and
nothing is held in Redis or on a node's disk. One aiobotocore client per store, opened on first use (so building
the store does no I/O) and closed by `aclose` when the node stops. Credentials come from botocore's standard
chain (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN, the shared credentials file, an instance
role ...), never from Podium's options, so they appear in no config table and no log.

Streamed uploads go up as a multipart upload of `part_bytes` parts (one part in memory at a time); a file that
ends within the first part is one PUT. S3 replaces an object only when a PUT or a multipart completion succeeds,
so readers see the old file or the new one, and a failed upload (over the per-file limit, the source gone, the
task cancelled) is aborted, which discards every part sent. There is no total cap: S3 has no practical limit and
bills by use, so the bucket's own quota or lifecycle rules are the place for one.

Failures of the server (unreachable, refused, throttled beyond botocore's retries) become S3Unavailable, a
StoreUnavailable, which the HTTP edge answers as the store being down (500 "db").
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncIterable, AsyncIterator, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import aiohttp
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import BotoCoreError, ClientError

from ..errors import StoreUnavailable
from .base import CHUNK, DEFAULT_MAX_FILE, BadPath, FileInfo, FileTooLarge, check_path, check_prefix, guess_type

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client
    from types_aiobotocore_s3.type_defs import CompletedPartTypeDef, ObjectIdentifierTypeDef

MIN_PART = 5 * 1024 * 1024  # S3's smallest part (but the last)
DEFAULT_PART = 8 * 1024 * 1024
MAX_PARTS = 10_000  # S3's most parts in one upload
DELETE_BATCH = 1000  # S3's most keys in one DeleteObjects (and one ListObjectsV2 page)
_NOT_FOUND = ("404", "NoSuchKey", "NotFound")
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_REGION = re.compile(r"^[a-z0-9-]{1,32}$")
MAX_PREFIX = 256


class S3Unavailable(StoreUnavailable):
    """The S3 server could not be reached or refused a request (the message names the operation, no secret)."""


@dataclass(frozen=True, slots=True)
class S3Config:
    """Where the files go: `bucket`, under `prefix` (''; or 'podium/' for a bucket shared with other data),
    at `endpoint` ('': AWS itself; a URL for an S3-compatible server) in `region` ('': botocore's default).
    `path_style`: address the bucket in the path (`http://host/bucket/key`) rather than the host name, which
    local servers without wildcard DNS need."""

    bucket: str
    endpoint: str = ""
    region: str = ""
    prefix: str = ""
    path_style: bool = False

    def problems(self) -> list[str]:
        """What is wrong with these values, as '<option> <value>: <why>' lines (empty when they can be used)."""
        found = []
        if not _BUCKET.match(self.bucket) or ".." in self.bucket:
            found.append(f"--s3-bucket {self.bucket[:80]!r}: must be a bucket name (3 to 63 of a-z 0-9 . -)")
        if self.region and not _REGION.match(self.region):
            found.append(f"--s3-region {self.region[:80]!r}: must be a region name such as eu-west-1")
        if self.endpoint and (not re.match(r"^https?://[^\s/?#@]+(/[^\s?#]*)?$", self.endpoint)
                              or len(self.endpoint) > 2048):  # fmt: skip
            found.append(f"--s3-endpoint {self.endpoint[:80]!r}: must be an http(s):// URL without credentials")
        if self.prefix and not _good_prefix(self.prefix):
            found.append(f"--s3-prefix {self.prefix[:80]!r}: must be up to {MAX_PREFIX} of A-Z a-z 0-9 _ . / + - "
                         "with no leading '/', no '//' and no segment starting with '.'")  # fmt: skip
        return found

    @property
    def key_prefix(self) -> str:
        """The prefix as it starts every key: '' or ending with '/'."""
        return self.prefix if not self.prefix or self.prefix.endswith("/") else self.prefix + "/"


def _good_prefix(prefix: str) -> bool:
    if len(prefix) > MAX_PREFIX:
        return False
    try:
        check_prefix(prefix)
    except BadPath:
        return False
    return True


def part_size(max_file_bytes: int) -> int:
    """Parts large enough that the largest allowed file fits in S3's 10,000 parts."""
    return max(DEFAULT_PART, -(-max_file_bytes // MAX_PARTS))


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


# What a request to the server may raise: botocore's own errors, the transport's, a timeout.
_FAILURES: tuple[type[BaseException], ...] = (ClientError, BotoCoreError, aiohttp.ClientError, TimeoutError)


@contextlib.contextmanager
def _failing(operation: str) -> Iterator[None]:
    """S3Unavailable for a failed request (named by `operation` and the server's error code, nothing else)."""
    try:
        yield
    except _FAILURES as exc:
        detail = _code(exc) if isinstance(exc, ClientError) else type(exc).__name__
        raise S3Unavailable(f"the S3 file store failed to {operation}: {detail or 'error'}") from None


def _missing(exc: ClientError) -> bool:
    return _code(exc) in _NOT_FOUND


class S3FileStore:
    """Files as objects under `config.prefix` in `config.bucket`, at most `max_file_bytes` each (no total cap)."""

    def __init__(self, config: S3Config, max_file_bytes: int = DEFAULT_MAX_FILE, *, part_bytes: int = 0) -> None:
        self.config = config
        self.bucket = config.bucket
        self.prefix = config.key_prefix
        self.max_file_bytes = max_file_bytes
        self.part_bytes = max(MIN_PART, part_bytes or part_size(max_file_bytes))
        self._stack: contextlib.AsyncExitStack | None = None
        self._client: S3Client | None = None
        self._opening = asyncio.Lock()
        # botocore logs every request (and its signing) at debug; a node run at debug gets Podium's logs only.
        for name in ("botocore", "aiobotocore"):
            logging.getLogger(name).setLevel(max(logging.INFO, logging.getLogger(name).level))

    # -- the client -------------------------------------------------------------------------------------------
    async def _s3(self) -> S3Client:
        if self._client is not None:
            return self._client
        async with self._opening:
            if self._client is None:
                config = AioConfig(
                    s3={"addressing_style": "path" if self.config.path_style else "auto"},
                    retries={"max_attempts": 4, "mode": "standard"},
                    connect_timeout=10,
                    read_timeout=60,
                    max_pool_connections=32,
                    # Checksums only where S3 requires them: many S3-compatible servers reject the newer ones.
                    request_checksum_calculation="when_required",
                    response_checksum_validation="when_required",
                )
                stack = contextlib.AsyncExitStack()
                self._client = await stack.enter_async_context(get_session().create_client(
                    "s3", endpoint_url=self.config.endpoint or None, region_name=self.config.region or None,
                    config=config))  # fmt: skip
                self._stack = stack
            return self._client

    async def aclose(self) -> None:
        """Close the client (its connection pool); the next call opens a new one."""
        stack, self._stack, self._client = self._stack, None, None
        if stack is not None:
            await stack.aclose()

    async def check(self) -> None:
        """S3Unavailable unless the bucket answers (run once when a node starts, to fail on a wrong setting)."""
        with _failing(f"reach bucket {self.bucket!r}"):
            await (await self._s3()).head_bucket(Bucket=self.bucket)

    def _key(self, path: str) -> str:
        return self.prefix + check_path(path)

    # -- writing ----------------------------------------------------------------------------------------------
    async def put(self, path: str, data: bytes, *, content_type: str = "") -> int:
        key = self._key(path)
        if len(data) > self.max_file_bytes:
            raise FileTooLarge(self.max_file_bytes)
        with _failing("store a file"):
            await (await self._s3()).put_object(Bucket=self.bucket, Key=key, Body=data,
                                                ContentType=content_type or guess_type(path))  # fmt: skip
        return len(data)

    async def put_stream(self, path: str, chunks: AsyncIterable[bytes], *, content_type: str = "") -> int:
        key = self._key(path)
        ctype = content_type or guess_type(path)
        buffer = bytearray()
        size = 0
        upload: _Multipart | None = None
        try:
            async for chunk in chunks:
                size += len(chunk)
                if size > self.max_file_bytes:
                    raise FileTooLarge(self.max_file_bytes)
                buffer += chunk
                if len(buffer) >= self.part_bytes:
                    if upload is None:
                        upload = await _Multipart.start(await self._s3(), self.bucket, key, ctype)
                    await upload.send(bytes(buffer))
                    buffer.clear()
            if upload is None:  # the whole file fit in one part: one PUT
                return await self.put(path, bytes(buffer), content_type=ctype)
            if buffer:
                await upload.send(bytes(buffer))
            await upload.complete()
            upload = None
        finally:
            if upload is not None:  # over the limit, the source failed, a part failed, or cancelled
                await upload.abort()
        return size

    # -- reading ----------------------------------------------------------------------------------------------
    async def get(self, path: str) -> bytes | None:
        key = self._key(path)
        with _failing("read a file"):
            try:
                reply = await (await self._s3()).get_object(Bucket=self.bucket, Key=key)
            except ClientError as exc:
                if _missing(exc):
                    return None
                raise
            async with reply["Body"] as body:
                return await body.read()

    async def read(self, path: str, chunk: int = CHUNK, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        key = self._key(path)
        if end is not None and end <= start:
            return
        extra: dict[str, Any] = {}
        if start or end is not None:  # an HTTP range of the object: `end` is exclusive here, inclusive in S3
            extra["Range"] = f"bytes={start}-{'' if end is None else end - 1}"
        with _failing("read a file"):
            try:
                reply = await (await self._s3()).get_object(Bucket=self.bucket, Key=key, **extra)
            except ClientError as exc:
                if _missing(exc) or exc.response.get("Error", {}).get("Code") == "InvalidRange":
                    return  # a start past the end reads nothing, as on the other backends
                raise
            async with reply["Body"] as body:  # closed (its connection released) when the reader stops early too
                async for piece in body.iter_chunks(chunk):
                    if piece:
                        yield piece

    async def stat(self, path: str) -> FileInfo | None:
        key = self._key(path)
        with _failing("look up a file"):
            try:
                head = await (await self._s3()).head_object(Bucket=self.bucket, Key=key)
            except ClientError as exc:
                if _missing(exc):
                    return None
                raise
        return {"size": int(head["ContentLength"]), "modified": float(head["LastModified"].timestamp()),
                "type": head.get("ContentType") or guess_type(path)}  # fmt: skip

    # -- deleting ---------------------------------------------------------------------------------------------
    async def delete(self, path: str) -> bool:
        # S3 answers a delete the same whether the key existed or not, so a HEAD tells which it was.
        if await self.stat(path) is None:
            return False
        with _failing("delete a file"):
            await (await self._s3()).delete_object(Bucket=self.bucket, Key=self._key(path))
        return True

    async def delete_prefix(self, prefix: str) -> int:
        """Lists the keys a page of 1,000 at a time and deletes each page in one request."""
        check_prefix(prefix)
        deleted = 0
        with _failing("delete files"):
            s3 = await self._s3()
            pages = s3.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=self.prefix + prefix, PaginationConfig={"PageSize": DELETE_BATCH})
            async for page in pages:
                keys: list[ObjectIdentifierTypeDef] = [{"Key": item["Key"]} for item in page.get("Contents", [])]
                if not keys:
                    continue
                reply = await s3.delete_objects(Bucket=self.bucket, Delete={"Objects": keys, "Quiet": True})
                failed = reply.get("Errors", [])
                if failed:
                    raise S3Unavailable(f"the S3 file store failed to delete {len(failed)} files: "
                                        f"{failed[0].get('Code', 'error')}")  # fmt: skip
                deleted += len(keys)
        return deleted


class _Multipart:
    """One multipart upload in progress: its parts in order, then completed or aborted. One part is on its way
    while the next is received (so at most two parts are in memory), which keeps the source and the server
    busy at the same time."""

    def __init__(self, s3: S3Client, bucket: str, key: str, upload_id: str) -> None:
        self.s3 = s3
        self.bucket = bucket
        self.key = key
        self.upload_id = upload_id
        self.parts: list[CompletedPartTypeDef] = []
        self._sending: asyncio.Task[None] | None = None

    @classmethod
    async def start(cls, s3: S3Client, bucket: str, key: str, content_type: str) -> _Multipart:
        with _failing("store a file"):
            reply = await s3.create_multipart_upload(Bucket=bucket, Key=key, ContentType=content_type)
        return cls(s3, bucket, key, reply["UploadId"])

    async def send(self, data: bytes) -> None:
        """Start sending the next part once the one before it is stored (its failure is raised here)."""
        await self._sent()
        self._sending = asyncio.create_task(self._part(len(self.parts) + 1, data))

    async def _part(self, number: int, data: bytes) -> None:
        with _failing("store a file"):
            reply = await self.s3.upload_part(Bucket=self.bucket, Key=self.key, UploadId=self.upload_id,
                                              PartNumber=number, Body=data)  # fmt: skip
        self.parts.append({"PartNumber": number, "ETag": reply["ETag"]})

    async def _sent(self) -> None:
        sending, self._sending = self._sending, None
        if sending is not None:
            await sending

    async def complete(self) -> None:
        await self._sent()
        with _failing("store a file"):
            await self.s3.complete_multipart_upload(Bucket=self.bucket, Key=self.key, UploadId=self.upload_id,
                                                    MultipartUpload={"Parts": self.parts})

    async def abort(self) -> None:
        """Discard the parts sent; shielded, so a cancelled upload still aborts. A failing abort is left to the
        bucket's lifecycle rule for incomplete uploads (the README recommends one)."""
        sending, self._sending = self._sending, None
        if sending is not None:  # a part still on its way would land after the abort and be kept
            sending.cancel()
            with contextlib.suppress(BaseException):  # its own failure is the one already being raised
                await sending
        with contextlib.suppress(*_FAILURES):
            await asyncio.shield(self.s3.abort_multipart_upload(Bucket=self.bucket, Key=self.key,
                                                                UploadId=self.upload_id))  # fmt: skip
