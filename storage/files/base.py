"""The file store interface: what every backend offers, its errors, and the one check of a stored path."""

from __future__ import annotations

import mimetypes
import re
from collections.abc import AsyncIterable, AsyncIterator
from typing import Protocol, TypedDict

from ..codec import as_bytes as as_bytes  # re-exported: the file stores' one reply-to-bytes rule
from ..errors import StorageError

MAX_PATH = 512  # characters of a stored path
CHUNK = 1 << 16  # bytes per read of a streamed file
DEFAULT_MAX_FILE = 256 * 1024 * 1024
DEFAULT_MAX_TOTAL = 2 * 1024 * 1024 * 1024
_PATH_CHARS = re.compile(r"^[A-Za-z0-9_./+-]+$")


class FileInfo(TypedDict):
    size: int  # bytes
    modified: float  # epoch s
    type: str  # content type


class BadPath(StorageError):
    """A stored path that is not a relative key of safe characters."""


class FileTooLarge(StorageError):
    """One file is over the store's per-file limit."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"the file is larger than the limit of {limit} bytes")
        self.limit = limit


class StorageFull(StorageError):
    """Storing the file would take the store past its total cap."""

    def __init__(self, cap: int) -> None:
        super().__init__(f"the file store is full (its cap is {cap} bytes)")
        self.cap = cap


def check_path(path: str) -> str:
    """`path` if it is a relative key (`files/jobs/<job>/<random>/<name>`): at most MAX_PATH characters of
    [A-Za-z0-9_./+-], no leading or trailing `/`, no empty segment and no segment starting with `.` (which
    also rules out `.` and `..`, and leaves dot names free for a backend's temporary files). BadPath otherwise."""
    if not path or len(path) > MAX_PATH:
        raise BadPath(f"a stored path must have 1 to {MAX_PATH} characters")
    if not _PATH_CHARS.match(path):
        raise BadPath("a stored path may only hold letters, digits and _ . / + -")
    for segment in path.split("/"):
        if not segment:
            raise BadPath("a stored path may not start or end with '/' or hold '//'")
        if segment.startswith("."):
            raise BadPath("a segment of a stored path may not start with '.'")
    return path


def check_prefix(prefix: str) -> str:
    """A prefix of stored paths (`files/jobs/<job>/`): a path, optionally ending with `/`."""
    check_path(prefix[:-1] if prefix.endswith("/") else prefix)
    return prefix




def guess_type(path: str) -> str:
    """Content type from the name (`.gz` logs are served as their gzip bytes)."""
    found, _ = mimetypes.guess_type(path, strict=False)
    return found or "application/octet-stream"


class FileStore(Protocol):
    """Bytes under relative paths. Every method checks the path (BadPath) before touching anything."""

    max_file_bytes: int

    async def put(self, path: str, data: bytes, *, content_type: str = "") -> int:
        """Store (or replace) a file; returns its size. FileTooLarge / StorageFull leave nothing written."""
        ...

    async def put_stream(self, path: str, chunks: AsyncIterable[bytes], *, content_type: str = "") -> int:
        """Store a file from chunks without holding it in memory; the per-file limit applies as they arrive and
        nothing is left behind when it (or the source) fails."""
        ...

    async def get(self, path: str) -> bytes | None: ...

    def read(self, path: str, chunk: int = CHUNK, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        """The file in chunks (nothing when it does not exist); for replies that must stay bounded in memory.
        `start`/`end`: only the bytes from offset `start` up to (not including) `end` (None: the end of the file),
        for HTTP range requests."""
        ...

    async def stat(self, path: str) -> FileInfo | None: ...

    async def delete(self, path: str) -> bool: ...

    async def delete_prefix(self, prefix: str) -> int:
        """Delete every file whose path starts with `prefix`; returns how many went."""
        ...
