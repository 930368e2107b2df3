"""The one multipart receiver of user uploads (upload_files, job input, ticket and bucket files).

`receive_upload` reads a multipart/form-data body part by part: form fields (bounded in number and size, the
`json` field parsed and merged) and file parts, each streamed to the file store under
`<prefix>/<random>/<name>` (one random segment per request), never held whole in memory. It answers the fields
and one File object per stored file, in xyOps' shape. Every limit (per file, per request, files per request) is
checked while the bytes arrive, and a request that fails for any reason leaves none of its files behind.

The file name rules are xyOps' (cleanFilename for the display name, cleanURLFilename for the key), in one place
here; the agents' job file upload (api/handlers/jobfiles.py) uses the same cleaner.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import re
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import structlog
from aiohttp import BodyPartReader, web
from aiohttp.http_exceptions import BadHttpMessage

from storage.files import CHUNK, BadPath, FileTooLarge, StorageFull

from .call import Call, Upload
from .errors import ApiError
from .transport import parse_json

log = structlog.get_logger("podium.uploads")

MiB = 1024 * 1024
MAX_FIELDS = 64  # form fields per request (besides the files)
FIELD_BYTES = 16 * 1024  # one plain form field; the `json` field has the node's JSON limit
NAME_LEN = 128  # characters of a stored name (the key's last segment), keeping the end
DISPLAY_LEN = 255  # characters of a File's `filename`, keeping the end
_OVERHEAD = 64 * 1024  # multipart boundaries and part headers, on top of the declared limits

File = dict[str, Any]
Fields = dict[str, Any]
Prefix = str | Callable[[Fields], str | Awaitable[str]]


# -- names --------------------------------------------------------------------------------------------------


def base_name(name: str) -> str:
    """The last path segment of a client's file name (`/` and `\\` both separate: old browsers send full
    Windows paths)."""
    return re.split(r"[\\/]", name)[-1]


def stored_name(name: str) -> str:
    """An uploaded file's name as stored: its last path segment, lower-cased, runs of anything but letters,
    digits, `_`, `-` and `.` as `_` (xyOps' cleanURLFilename), no leading dot, at most NAME_LEN characters
    (keeping the end)."""
    clean = re.sub(r"[^A-Za-z0-9_.-]+", "_", base_name(name)).lower()[-NAME_LEN:]
    clean = re.sub(r"^\.+", "_", clean)
    return clean or "file"


def url_name(name: str) -> str:
    """The key's last segment for a user upload: stored_name, plus `.bin` when it has no extension (xyOps'
    binary-key rule, so `README` is stored as `readme.bin`)."""
    clean = stored_name(name)
    return clean if re.search(r"\.\w+$", clean) else clean + ".bin"


def display_name(name: str) -> str:
    """A File's `filename` (xyOps' cleanFilename): the last path segment, case kept, runs outside letters,
    digits and `_-+.,()[]{}'"!&^%$#@*?~ ` as `_`, at most DISPLAY_LEN characters (keeping the end).
    ⚠ xyOps keeps any whitespace (newlines, tabs); Podium keeps the plain space only, so a name can never
    break a header or a log line."""
    return re.sub(r"[^A-Za-z0-9_\-+., ()\[\]{}'\"!&^%$#@*?~]+", "_", base_name(name))[-DISPLAY_LEN:]


def valid_name(name: str | None) -> bool:
    """xyOps' validateFiles: the base name must be non-empty and not only dots."""
    base = base_name(name or "")
    return bool(base.strip(".").strip())


# -- limits -------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class UploadLimits:
    """The bounds of one upload request: bytes per file, bytes of all files together, number of files, and
    the form fields (`json_bytes` for the `json` field)."""

    file_bytes: int
    request_bytes: int
    files: int
    json_bytes: int = 4 * MiB
    fields: int = MAX_FIELDS
    field_bytes: int = FIELD_BYTES

    @classmethod
    def of(cls, call: Call) -> UploadLimits:
        """The node's limits (--upload-max-file-mb, --upload-max-request-mb, --upload-max-files), the per-file
        one never above what the file store itself takes. A caller lowers them with `lowered`."""
        s = call.settings
        store_max = call.stores.files.max_file_bytes
        return cls(file_bytes=min(s.upload_max_file_mb * MiB, store_max), request_bytes=s.upload_max_request_mb * MiB,
                   files=s.upload_max_files, json_bytes=s.max_json_bytes)  # fmt: skip

    def lowered(self, *, file_bytes: int | None = None, request_bytes: int | None = None,
                files: int | None = None) -> UploadLimits:  # fmt: skip
        """These limits with some lowered (never raised), e.g. a bucket's own per-file limit."""
        return replace(
            self,
            file_bytes=min(self.file_bytes, file_bytes if file_bytes is not None else self.file_bytes),
            request_bytes=min(self.request_bytes, request_bytes if request_bytes is not None else self.request_bytes),
            files=min(self.files, files if files is not None else self.files),
        )

    @property
    def body_bytes(self) -> int:
        """The largest body that can satisfy these limits (files, fields and multipart framing)."""
        return self.request_bytes + self.json_bytes + self.fields * self.field_bytes + (self.files + 1) * _OVERHEAD


def _too_large(text: str) -> ApiError:
    return ApiError("api", text, status=413)


# -- receiving ----------------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Part:
    """One received file part: its field name, client name, and where it waits (a spool file) or went."""

    key: str
    name: str
    size: int = 0
    spool: Path | None = None
    path: str = ""


class _Receiver:
    """The state of one upload: what was stored (deleted again if the request fails) and what was spooled."""

    def __init__(self, call: Call, limits: UploadLimits) -> None:
        self.call = call
        self.limits = limits
        self.random = secrets.token_urlsafe(16).lower()  # the store is case-sensitive; ~110 bits remain
        self.total = 0
        self.stored: list[str] = []
        self.parts: list[_Part] = []
        self.names: set[str] = set()

    def unique(self, name: str) -> str:
        """The key name for a file of this request: two files with one cleaned name get `name-2.ext`, ...
        (⚠ xyOps writes both to one key, the second replacing the first)."""
        stem, dot, ext = name.rpartition(".")
        if not dot:
            stem, ext = name, ""
        candidate, n = name, 1
        while candidate in self.names:
            n += 1
            candidate = f"{stem}-{n}.{ext}" if dot else f"{stem}-{n}"
        self.names.add(candidate)
        return candidate

    async def counted(self, key: str, chunks: AsyncIterator[bytes], size: list[int]) -> AsyncIterator[bytes]:
        """`chunks` with the per-file and per-request limits applied as they arrive; `size[0]` counts them."""
        async for chunk in chunks:
            size[0] += len(chunk)
            self.total += len(chunk)
            if size[0] > self.limits.file_bytes:
                raise _too_large(f"File '{key}' is too large: the limit is {self.limits.file_bytes} bytes per file.")
            if self.total > self.limits.request_bytes:
                raise _too_large(f"Upload too large: the limit is {self.limits.request_bytes} bytes of files per "
                                 "request.")  # fmt: skip
            yield chunk

    async def store(self, path: str, chunks: AsyncIterator[bytes]) -> int:
        self.stored.append(path)  # before the write: a failure midway must delete whatever it left
        return await self.call.stores.files.put_stream(path, chunks)

    async def spool(self, part: _Part, chunks: AsyncIterator[bytes]) -> None:
        spool_dir = self.call.settings.data_dir / "tmp"
        await asyncio.to_thread(spool_dir.mkdir, parents=True, exist_ok=True)
        part.spool = spool_dir / f"upload-{secrets.token_hex(8)}"
        with part.spool.open("xb") as out:
            async for chunk in chunks:
                part.size += len(chunk)
                await asyncio.to_thread(out.write, chunk)

    async def discard(self) -> None:
        """Delete every file this request stored (the request failed)."""
        for path in self.stored:
            try:
                await self.call.stores.files.delete(path)
            except Exception as exc:  # the store is down: the orphan is logged, the original error answers
                log.warning("upload_cleanup_failed", path=path, error=repr(exc))

    def unspool(self) -> None:
        for part in self.parts:
            if part.spool is not None:
                with contextlib.suppress(FileNotFoundError):
                    part.spool.unlink()


async def _part_chunks(part: BodyPartReader) -> AsyncIterator[bytes]:
    while chunk := await part.read_chunk(CHUNK):
        yield chunk


async def _spooled_chunks(path: Path) -> AsyncIterator[bytes]:
    with path.open("rb") as source:
        while chunk := await asyncio.to_thread(source.read, CHUNK):
            yield chunk


async def _nonempty(key: str, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """`chunks`, refused before anything is written when there are none (xyOps refuses zero-byte files)."""
    first = b""
    while not first:
        try:
            first = await anext(chunks)
        except StopAsyncIteration:
            raise ApiError("api", f"File '{key}' is missing required size property, or is zero bytes.") from None
    yield first
    async for chunk in chunks:
        yield chunk


async def _field(part: BodyPartReader, limit: int) -> str:
    name = str(part.name or "")[:64]
    raw = bytearray()
    while chunk := await part.read_chunk(min(limit + 1, CHUNK)):
        raw += chunk
        if len(raw) > limit:
            raise _too_large(f"Form field '{name}' is too large: the limit is {limit} bytes.")
    try:
        text = raw.decode()
    except UnicodeDecodeError:
        raise ApiError("api", f"Form field '{name}' is not valid UTF-8 text.") from None
    if "\x00" in text:
        raise ApiError("api", f"Form field '{name}' holds a NUL character.")
    return text


def _merge_json(fields: Fields, raw: str) -> None:
    """The `json` field carries the payload (as xyOps' UI sends it): parsed and merged over the plain fields."""
    try:
        payload = parse_json(raw.encode(), "form field 'json'")
    except ApiError as exc:
        raise ApiError("api", f"Failed to parse JSON: {exc.description}") from None
    if not isinstance(payload, dict):
        raise ApiError("api", "Failed to parse JSON: form field 'json' must hold a JSON object.")
    fields.update(payload)


def _check_request(request: web.Request, limits: UploadLimits) -> None:
    if request.content_type != "multipart/form-data":
        raise ApiError("api", "Send the files as multipart/form-data.", status=415)
    if request.headers.get("Content-Encoding", "identity").strip().lower() not in ("", "identity"):
        raise ApiError("api", "Compressed request bodies are not accepted; send the body uncompressed.", status=415)
    if request.content_length is not None and request.content_length > limits.body_bytes:
        raise _too_large(f"Upload too large: the limit is {limits.request_bytes} bytes of files per request.")


async def _read_body(rx: _Receiver, prefix: Prefix) -> Fields:
    """Fields and file parts of the body. With a fixed prefix the files go straight to the store; a prefix
    that depends on the fields waits for all of them (a client may send them after the files), so the files
    wait in spool files meanwhile, under the same limits."""
    limits = rx.limits
    reader = await rx.call.request.multipart()
    fields: Fields = {}
    raw_json: str | None = None
    count = 0
    while (part := await reader.next()) is not None:
        if not isinstance(part, BodyPartReader):
            raise ApiError("api", "Nested multipart bodies are not accepted.")
        key = str(part.name or "")[:64]
        if part.filename is None:  # a plain field
            count += 1
            if count > limits.fields:
                raise _too_large(f"Too many form fields: at most {limits.fields} per request.")
            if key == "json":
                raw_json = await _field(part, limits.json_bytes)
            else:
                fields[key] = await _field(part, limits.field_bytes)
            continue
        if not valid_name(part.filename):
            raise ApiError("api", f"File '{key}' is missing required name property, or name is invalid.")
        if len(rx.parts) >= limits.files:
            raise _too_large(f"Too many files: at most {limits.files} per request.")
        item = _Part(key=key, name=part.filename)
        rx.parts.append(item)
        size = [0]
        chunks = rx.counted(key, _nonempty(key, _part_chunks(part)), size)
        if isinstance(prefix, str):
            item.path = f"{prefix}/{rx.random}/{rx.unique(url_name(item.name))}"
            item.size = await rx.store(item.path, chunks)
        else:
            await rx.spool(item, chunks)
    if raw_json is not None:
        _merge_json(fields, raw_json)
    if not isinstance(prefix, str) and rx.parts:
        base = prefix(fields)
        base = await base if inspect.isawaitable(base) else base
        for item in rx.parts:
            assert item.spool is not None
            item.path = f"{base}/{rx.random}/{rx.unique(url_name(item.name))}"
            item.size = await rx.store(item.path, _spooled_chunks(item.spool))
    return fields


async def receive_upload(
    call: Call, *, prefix: Prefix, limits: UploadLimits | None = None, owner: Mapping[str, Any] | None = None
) -> tuple[Fields, list[File]]:
    """Read a multipart upload; answer its form fields (`json` parsed and merged in) and a File per stored file:
    `{id, date, filename, path, size, username}` plus `owner`'s keys (`ticket`, `job`, `server`, ...; `owner`
    may also replace `username`). Files are stored at `<prefix>/<random>/<url name>`; `prefix` is a fixed path
    (`files/users/<username>`) or a function of the fields (sync or async) that may also refuse them with an
    ApiError. `limits` defaults to the node's (UploadLimits.of).

    No file at all is not an error here (the caller decides: xyOps answers `file` "No file upload data found in
    request."). Refusals: nameless or zero-byte files (`api`), limits (`api`, status 413), a full store (`file`,
    507), malformed bodies (`api`). On any failure every file this request stored is deleted again."""
    limits = limits or UploadLimits.of(call)
    _check_request(call.request, limits)
    rx = _Receiver(call, limits)
    try:
        fields = await _read_body(rx, prefix)
    except BaseException as exc:
        await rx.discard()
        if isinstance(exc, FileTooLarge):  # the store's own limit (a store configured lower than the node's)
            raise _too_large(f"Upload too large: the file store takes at most {exc.limit} bytes per file.") from None
        if isinstance(exc, StorageFull):
            raise ApiError("file", f"Failed to store the file: {exc}.", status=507) from None
        if isinstance(exc, BadPath):
            raise ApiError("api", f"The upload cannot be stored there: {exc}.") from None
        if isinstance(exc, ValueError | BadHttpMessage):  # a malformed multipart body
            raise ApiError("api", f"Malformed form body: {str(exc)[:200]}") from None
        raise
    finally:
        rx.unspool()
    return fields, _records(call, rx.parts, owner)


def _records(call: Call, parts: list[_Part], owner: Mapping[str, Any] | None) -> list[File]:
    """A File object per stored part, in xyOps' shape, with `owner`'s keys."""
    now = int(time.time())
    username = call.user.username if call.user is not None else None
    files: list[File] = []
    for item in parts:
        record: File = {"id": "f" + secrets.token_hex(8), "date": now, "filename": display_name(item.name),
                        "path": item.path, "size": item.size}  # fmt: skip
        if username:
            record["username"] = username
        record.update(owner or {})
        files.append(record)
    return files


async def store_spooled(
    call: Call, uploads: Mapping[str, Upload], *, prefix: str, limits: UploadLimits | None = None,
    owner: Mapping[str, Any] | None = None,
) -> list[File]:  # fmt: skip
    """The files a generic multipart body brought (the transport spooled them: create_ticket), stored under
    `<prefix>/<random>/<url name>` with the same name rules and limits as receive_upload, and answered as File
    objects. A refusal or a failure midway deletes every file stored here."""
    limits = limits or UploadLimits.of(call)
    if len(uploads) > limits.files:
        raise _too_large(f"Too many files: at most {limits.files} per request.")
    rx = _Receiver(call, limits)
    try:
        for key, upload in uploads.items():
            if not valid_name(upload.name):
                raise ApiError("api", f"File '{key}' is missing required name property, or name is invalid.")
            item = _Part(key=key, name=upload.name)
            item.path = f"{prefix}/{rx.random}/{rx.unique(url_name(item.name))}"
            chunks = _nonempty(key, _spooled_chunks(Path(upload.path)))
            item.size = await rx.store(item.path, rx.counted(key, chunks, [0]))
            rx.parts.append(item)
    except BaseException:
        await rx.discard()
        raise
    return _records(call, rx.parts, owner)


async def discard_files(call: Call, files: list[File]) -> None:
    """Delete stored files a request made but could not keep (the record they belong to was refused)."""
    for f in files:
        try:
            await call.stores.files.delete(str(f["path"]))
        except Exception as exc:  # the store is down: the orphan is logged, the original error answers
            log.warning("upload_cleanup_failed", path=f.get("path"), error=repr(exc))
