"""What a bucket holds besides its definition: its `data` (a JSON object) and its `files` (File objects).

Both live in one HASH per bucket (`bucket:<id>`: `data`, `files`, `rev`), never in the definition record, so a
job's store action and an API call that change one bucket at once cannot lose each other's update: every change
is a read, then a fenced compare-and-set on `rev` (BUCKET_WRITE), retried on top of the other writer's result.
The same script refuses to write the contents of a bucket whose definition is gone (or, on create, still there),
so a late writer never resurrects a deleted bucket.

A file's bytes are written (streamed through the file store) before the list that names it, and a file the list
no longer names is deleted after; a failure in between leaves an orphan file under `files/bucket/<id>/`, which
deleting the bucket removes, never a list entry without its file.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import re
import secrets
import time
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from redis.exceptions import LockError, ResponseError

from . import codec
from .connection import Database
from .definitions import Family
from .errors import Conflict, StorageError
from .fence import Fence
from .files import FileStore
from .scripts import fenced

Record = dict[str, Any]
BUCKETS = Family("buckets")  # the definition family of bucket records (title, icon, notes, ...)
DEFAULT_MAX_FILES = 100  # xyOps client.bucket_upload_settings.max_files_per_bucket
DEFAULT_MAX_FILE_BYTES = 1024 * 1024 * 1024  # xyOps max_file_size (1 GiB); the file store's own limit applies too
DEFAULT_MAX_DATA_BYTES = 1024 * 1024  # packed bytes of a bucket's data
NAME_LEN = 128  # characters of a file's stored name (the last segment of its path)
DISPLAY_LEN = 255  # characters of its display name (`filename`), as api/uploads.py keeps them
CAS_RETRIES = 50

# Write the contents of one bucket, checked against its definition record and, optionally, its revision.
# KEYS[1] leader, KEYS[2] epoch, KEYS[3] the bucket's definition record, KEYS[4] the bucket's contents hash
# ARGV[1] node id, ARGV[2] epoch,
# ARGV[3] mode: "create" (the record must not exist yet: contents start afresh), "update" (the record must
#         exist) or "drop" (the record must be gone: the contents are deleted),
# ARGV[4] expected `rev` ("" = any; a missing hash is rev 0), ARGV[5] msgpack data ("" = keep),
# ARGV[6] msgpack file list ("" = keep)
# return the new rev (0 for drop); errors "EXISTS", "NOTFOUND", "REVISION <stored rev>"
BUCKET_WRITE = fenced("""
local mode = ARGV[3]
local defined = redis.call('EXISTS', KEYS[3]) == 1
if mode == 'create' or mode == 'drop' then
  if defined then return redis.error_reply('EXISTS') end
  redis.call('DEL', KEYS[4])
  if mode == 'drop' then return 0 end
else
  if not defined then return redis.error_reply('NOTFOUND') end
  if ARGV[4] ~= '' then
    local rev = redis.call('HGET', KEYS[4], 'rev') or '0'
    if rev ~= ARGV[4] then return redis.error_reply('REVISION ' .. rev) end
  end
end
if ARGV[5] ~= '' then redis.call('HSET', KEYS[4], 'data', ARGV[5]) end
if ARGV[6] ~= '' then redis.call('HSET', KEYS[4], 'files', ARGV[6]) end
return redis.call('HINCRBY', KEYS[4], 'rev', 1)
""")

_UNSAFE_DISPLAY = re.compile(r"""[^A-Za-z0-9_\-+., ()\[\]{}'"!&^%$#@*?~]+""")
_UNSAFE_KEY = re.compile(r"[^A-Za-z0-9_.-]+")


class BucketError(StorageError):
    """A bucket change that cannot be made; the message says why in xyOps' words where it has them."""


class BucketNotFound(BucketError):
    def __init__(self, bucket_id: str) -> None:
        super().__init__(f"Bucket not found: {bucket_id}")
        self.bucket_id = bucket_id


def display_name(name: str) -> str:
    """A file's `filename` (xyOps cleanFilename): its last path segment, runs of characters outside letters,
    digits and `_ - + . , ( ) [ ] { } ' " ! & ^ % $ # @ * ? ~` and the plain space as one `_`, case kept (the rule
    of api/uploads.py, so an uploaded file keeps the name the receiver gave it)."""
    base = re.split(r"[\\/]", name)[-1]
    clean = _UNSAFE_DISPLAY.sub("_", base).strip()[-DISPLAY_LEN:]
    return clean if clean.strip(".") else ""


def key_name(filename: str) -> str:
    """The last segment of a file's stored path (xyOps cleanURLFilename): runs outside [A-Za-z0-9_.-] as `_`,
    lower-cased, no leading dot (the file store keeps dot names for its own temporary files)."""
    clean = re.sub(r"^\.+", "_", _UNSAFE_KEY.sub("_", filename).lower())[-NAME_LEN:]
    return clean or "file"


def files_prefix(bucket_id: str) -> str:
    """Where a bucket's files live in the file store (`files/bucket/<id>/<random>/<name>`)."""
    return f"files/bucket/{bucket_id}/"


@dataclass(slots=True)
class Contents:
    """A bucket's data and files as read, with the revision a change must start from."""

    data: Record = field(default_factory=dict)
    files: list[Record] = field(default_factory=list)
    rev: int = 0


@dataclass(frozen=True, slots=True)
class Incoming:
    """A file to put into a bucket: its given name, where its bytes come from (read once, when it is written)
    and the fields its File object carries besides id/date/filename/path/size (`username`, or `job` and
    `server`)."""

    name: str
    chunks: Callable[[], AsyncIterable[bytes]]
    extra: Mapping[str, Any] = field(default_factory=dict)
    # A file already in the store under this bucket's prefix (an upload that just arrived), `size` bytes: a new
    # name takes it as it is (no copy); a listed name gets its bytes copied in place, and it is deleted after.
    stored: str = ""
    size: int = 0


# Fields a File object loses when it is replaced in place by another kind of writer (xyOps: an upload drops
# `job`/`server`, a store action drops `username`).
_WRITER_FIELDS = ("username", "job", "server")


def _decoded(raw: Any, default: Any) -> Any:
    if raw is None:
        return default
    return codec.unpack(raw if isinstance(raw, bytes) else str(raw).encode())


class BucketStore:
    """Bucket contents (data and files) and the bucket files in the file store."""

    def __init__(self, db: Database, files: FileStore) -> None:
        self.db = db
        self.files = files
        # Limits (api/server.py sets them from --bucket-max-files and --bucket-max-file-mb).
        self.max_files = DEFAULT_MAX_FILES
        self.max_file_bytes = DEFAULT_MAX_FILE_BYTES
        self.max_data_bytes = DEFAULT_MAX_DATA_BYTES

    def _keys(self, bucket_id: str) -> list[str]:
        k = self.db.keys
        return [k.definition(BUCKETS.name, bucket_id), k.bucket(bucket_id)]

    async def get(self, bucket_id: str) -> Contents:
        """The bucket's contents (empty when nothing was ever written)."""
        raw = await self.db.client.hmget(self.db.keys.bucket(bucket_id), ["data", "files", "rev"])
        data, files, rev = raw
        found = _decoded(data, {})
        listed = _decoded(files, [])
        return Contents(found if isinstance(found, dict) else {}, [f for f in listed if isinstance(f, dict)]
                        if isinstance(listed, list) else [], int(rev or 0))  # fmt: skip

    def packed_data(self, data: Mapping[str, Any]) -> bytes:
        packed = codec.pack(dict(data))
        if len(packed) > self.max_data_bytes:
            raise BucketError(f"Bucket data may hold at most {self.max_data_bytes} bytes "
                              f"(this would be {len(packed)}).")  # fmt: skip
        return packed

    async def _write(self, fence: Fence, bucket_id: str, mode: str, expected: str = "",
                     data: bytes = b"", files: list[Record] | None = None) -> int:  # fmt: skip
        try:
            return int(await fence.run(BUCKET_WRITE, self._keys(bucket_id),
                                       [mode, expected, data, codec.pack(files) if files is not None else b""]))
        except ResponseError as exc:
            text = str(exc)
            if text.startswith("NOTFOUND"):
                raise BucketNotFound(bucket_id) from None
            for reason in ("EXISTS", "REVISION"):
                if text.startswith(reason):
                    raise Conflict(reason.lower(), text) from None
            raise

    async def create(self, fence: Fence, bucket_id: str, data: Mapping[str, Any]) -> None:
        """Start a new bucket's contents (before its definition is written): Conflict("exists") if it is defined."""
        await self._write(fence, bucket_id, "create", data=self.packed_data(data), files=[])

    async def replace_data(self, fence: Fence, bucket_id: str, data: Mapping[str, Any]) -> None:
        """Set the data, whatever it held (update_bucket; xyOps replaces, never merges)."""
        await self._write(fence, bucket_id, "update", data=self.packed_data(data))

    async def _change(
        self, fence: Fence, bucket_id: str, change: Callable[[Contents], tuple[Record | None, list[Record] | None]]
    ) -> Contents:
        """Read, apply `change` (new data and/or files, None = keep; it may raise BucketError), compare-and-set;
        again on top of a concurrent writer's result. The contents as written."""
        for attempt in range(CAS_RETRIES):
            current = await self.get(bucket_id)
            data, files = change(current)
            packed = self.packed_data(data) if data is not None else b""
            try:
                rev = await self._write(fence, bucket_id, "update", str(current.rev), packed, files)
            except Conflict as exc:
                if exc.reason == "revision":
                    # Many writers of one bucket: a random pause (up to 1 ms per lost round, at most 50 ms) spreads
                    # them out, so none keeps losing to the others until its retries run out.
                    await asyncio.sleep(random.random() * min(attempt + 1, 50) / 1000)
                    continue
                raise
            return Contents(data if data is not None else current.data,
                            files if files is not None else current.files, rev)  # fmt: skip
        raise BucketError(f"Bucket {bucket_id} kept changing; try again.")

    async def merge_data(self, fence: Fence, bucket_id: str, data: Mapping[str, Any]) -> Record:
        """Shallow-merge `data` into the bucket's data (its keys win); the merged data."""
        done = await self._change(fence, bucket_id, lambda cur: ({**cur.data, **data}, None))
        return done.data

    async def empty(self, fence: Fence, bucket_id: str, *, data: bool, files: bool) -> None:
        """Clear the data and/or the files (deleting their bytes once the list no longer names them)."""
        gone: list[Record] = []

        def change(cur: Contents) -> tuple[Record | None, list[Record] | None]:
            gone[:] = cur.files if files else []
            return ({} if data else None), ([] if files else None)

        await self._change(fence, bucket_id, change)
        await self._delete_paths((f.get("path") for f in gone), bucket_id)

    async def remove_file(self, fence: Fence, bucket_id: str, match: Callable[[Record], bool]) -> Record | None:
        """Take the first file `match` accepts off the list and delete its bytes; None when none matches."""
        found: list[Record] = []

        def change(cur: Contents) -> tuple[Record | None, list[Record] | None]:
            found[:] = [f for f in cur.files if match(f)][:1]
            return None, ([f for f in cur.files if f is not found[0]] if found else None)

        await self._change(fence, bucket_id, change)
        if found:
            await self._delete_paths([found[0].get("path")], bucket_id)
        return found[0] if found else None

    async def put_files(self, fence: Fence, bucket_id: str, incoming: Sequence[Incoming]) -> list[Record]:
        """Write files into a bucket: one with the filename of a listed file replaces it in place (same path, so
        its link stays), the others get a new `files/bucket/<id>/<random>/<name>` (or keep the path they were
        uploaded to). The count limit is checked before any byte is written and again when the list is saved; the
        per-file size limit while bytes arrive. On any failure the new files (uploads included) are deleted and
        the list is unchanged. The full list."""
        by_name: dict[str, Incoming] = {}
        uploads = [item.stored for item in incoming if item.stored]
        try:
            for item in incoming:
                name = display_name(item.name)
                if not name:
                    raise BucketError(f"File '{item.name[:64]}' has no usable name.")
                by_name[name] = item  # the last of a name wins, as a later upload would
            current = await self.get(bucket_id)
            listed = {str(f.get("filename")): f for f in current.files}
            self._check_count(len(current.files) + sum(1 for n in by_name if n not in listed))
        except BaseException:
            await self._delete_paths(uploads, bucket_id)
            raise
        written: list[Record] = []
        fresh: list[str] = list(uploads)  # deleted if this fails: what this call added to the store
        displaced: list[str] = []
        # A replacement in place is staged at a path of its own and copied over the listed one only once the list
        # is saved: a refused or failed write leaves the old bytes, and a bucket deleted meanwhile no file.
        staged: dict[str, str] = {}  # listed path -> staged copy
        try:
            for name, item in by_name.items():
                old = listed.get(name)
                if item.stored:
                    stage, size = item.stored, item.size
                    if size > self.max_file_bytes:
                        raise self._too_large()
                else:
                    stage = f"{files_prefix(bucket_id)}{secrets.token_urlsafe(16).lower()}/{key_name(name)}"
                    fresh.append(stage)
                    size = await self.files.put_stream(stage, self._limited(item.chunks()))
                path = stage
                if old and old.get("path"):
                    path = str(old["path"])
                    staged[path] = stage
                entry: Record = {"id": str(old.get("id")) if old and old.get("id") else "f" + secrets.token_hex(8),
                                 "date": int(time.time()), "filename": name, "path": path, "size": size,
                                 **dict(item.extra)}  # fmt: skip
                written.append(entry)

            def change(cur: Contents) -> tuple[Record | None, list[Record] | None]:
                files = [dict(f) for f in cur.files]
                displaced.clear()
                for entry in written:
                    at = next((i for i, f in enumerate(files) if f.get("filename") == entry["filename"]), None)
                    if at is None:
                        files.append(entry)
                        continue
                    if files[at].get("path") != entry["path"]:  # another writer added this name meanwhile
                        displaced.append(str(files[at].get("path") or ""))
                    kept = {k: v for k, v in files[at].items() if k not in _WRITER_FIELDS}
                    files[at] = {**kept, **entry, "id": kept.get("id", entry["id"])}
                self._check_count(len(files))
                return None, files

            done = await self._save(fence, bucket_id, change, staged)
        except BaseException:
            await self._delete_paths([*fresh, *staged.values()], bucket_id)
            raise
        kept_paths = {str(f.get("path")) for f in done.files}
        # Replaced files, staged copies, and uploads superseded by a later file of the same name.
        await self._delete_paths((p for p in [*displaced, *uploads, *staged.values()] if p not in kept_paths),
                                 bucket_id)  # fmt: skip
        return done.files

    async def _save(self, fence: Fence, bucket_id: str,
                    change: Callable[[Contents], tuple[Record | None, list[Record] | None]],
                    staged: Mapping[str, str]) -> Contents:  # fmt: skip
        """Save the list (`change`); with replacements in place, also copy their staged bytes over the listed
        paths, one writer of this bucket's replacements at a time."""
        if not staged:
            return await self._change(fence, bucket_id, change)
        async with self._replace_lock(bucket_id):
            done = await self._change(fence, bucket_id, change)
            kept_paths = {str(f.get("path")) for f in done.files}
            await self._copy_staged(bucket_id, {p: s for p, s in staged.items() if p in kept_paths})
            return done

    @contextlib.asynccontextmanager
    async def _replace_lock(self, bucket_id: str) -> AsyncIterator[None]:
        """The bucket's replacement lock (redis-py Lock, 120 s: a holder that died lets go by then). Without it, two
        writers replacing one file could save their lists in one order and copy their bytes in the other: the list
        would describe one file and hold the other's bytes."""
        lock = self.db.client.lock(self.db.keys.bucket_replace_lock(bucket_id), timeout=120, blocking_timeout=120)
        if not await lock.acquire():
            raise BucketError(f"Bucket {bucket_id} is busy; try again.")
        try:
            yield
        finally:
            with contextlib.suppress(LockError):  # expired meanwhile: nothing of ours to release
                await lock.release()

    async def _copy_staged(self, bucket_id: str, staged: Mapping[str, str]) -> None:
        """Copy each staged replacement over the listed path it replaces (after the list was saved); a path the
        list stopped naming meanwhile (removed, emptied, bucket deleted) is deleted again, so no copy outlives its
        entry."""
        for path, stage in staged.items():
            await self.files.put_stream(path, self.files.read(stage))
        if staged:
            listed_now = {str(f.get("path")) for f in (await self.get(bucket_id)).files}
            await self._delete_paths((p for p in staged if p not in listed_now), bucket_id)

    def _too_large(self) -> BucketError:
        return BucketError("One or more of the files exceed the maximum allowed bucket file size "
                           f"({self.max_file_bytes} bytes).")  # fmt: skip

    def _check_count(self, count: int) -> None:
        if count > self.max_files:
            raise BucketError(f"The bucket has reached its maximum number of allowed files ({self.max_files}).")

    async def _limited(self, chunks: AsyncIterable[bytes]) -> AsyncIterator[bytes]:
        size = 0
        async for chunk in chunks:
            size += len(chunk)
            if size > self.max_file_bytes:
                raise self._too_large()
            yield chunk

    async def _delete_paths(self, paths: Iterable[Any], bucket_id: str) -> None:
        """Delete files of this bucket (only paths under its prefix: a list never names anything else)."""
        for path in paths:
            if isinstance(path, str) and path.startswith(files_prefix(bucket_id)):
                await self.files.delete(path)

    async def drop(self, fence: Fence, bucket_id: str) -> int:
        """Delete what a deleted bucket left: its contents, then every file under its prefix (called once its
        definition is gone; refused, Conflict("exists"), if a bucket of that id exists again). Files deleted."""
        await self._write(fence, bucket_id, "drop")
        return await self.files.delete_prefix(files_prefix(bucket_id))
