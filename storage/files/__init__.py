"""The file store: one small interface (FileStore) with a Redis, a shared-directory and an S3 backend.

The S3 backend (storage/files/s3.py) is imported only when a node uses it: botocore takes a while to load.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ..connection import Database
from .base import (
    CHUNK,
    DEFAULT_MAX_FILE,
    DEFAULT_MAX_TOTAL,
    BadPath,
    FileInfo,
    FileStore,
    FileTooLarge,
    StorageFull,
    check_path,
    check_prefix,
    guess_type,
)
from .directory import DirectoryFileStore
from .redisstore import RedisFileStore

if TYPE_CHECKING:
    from .s3 import S3Config

__all__ = [
    "CHUNK",
    "DEFAULT_MAX_FILE",
    "DEFAULT_MAX_TOTAL",
    "BadPath",
    "DirectoryFileStore",
    "FileInfo",
    "FileStore",
    "FileTooLarge",
    "RedisFileStore",
    "StorageFull",
    "check_file_store",
    "check_path",
    "check_prefix",
    "close_file_store",
    "guess_type",
    "open_file_store",
]


def open_file_store(spec: str, db: Database, *, max_file_bytes: int = DEFAULT_MAX_FILE,
                    max_bytes_total: int = DEFAULT_MAX_TOTAL, s3: S3Config | None = None) -> FileStore:  # fmt: skip
    """`--file-store`: "redis" for the Redis backend, "s3" for the bucket `s3` describes, anything else is the
    directory of a shared filesystem. Builds the backend without any I/O (the S3 client opens on first use)."""
    if spec == "redis":
        return RedisFileStore(db, max_bytes_total, max_file_bytes)
    if spec == "s3":
        if s3 is None:
            raise ValueError("the s3 file store needs its S3Config")
        from .s3 import S3FileStore

        return S3FileStore(s3, max_file_bytes)
    return DirectoryFileStore(Path(spec), max_file_bytes)


async def check_file_store(store: FileStore) -> None:
    """Raise a StorageError (S3Unavailable) when a backend that lives elsewhere cannot be reached; run once as a
    node starts, so a wrong bucket or missing credentials stop it with one line rather than fail every upload."""
    check = getattr(store, "check", None)
    if check is not None:
        await check()


async def close_file_store(store: FileStore) -> None:
    """Release what a backend holds open (the S3 client's connections); the Redis and directory ones hold none."""
    aclose = getattr(store, "aclose", None)
    if aclose is not None:
        await aclose()
