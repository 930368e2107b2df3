"""The file store: one small interface (FileStore) with a Redis and a shared-directory backend."""

from __future__ import annotations

from pathlib import Path

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
    "check_path",
    "check_prefix",
    "guess_type",
    "open_file_store",
]


def open_file_store(spec: str, db: Database, *, max_file_bytes: int = DEFAULT_MAX_FILE,
                    max_bytes_total: int = DEFAULT_MAX_TOTAL) -> FileStore:  # fmt: skip
    """`--file-store`: "redis" for the Redis backend, anything else is the directory of a shared filesystem."""
    if spec == "redis":
        return RedisFileStore(db, max_bytes_total, max_file_bytes)
    return DirectoryFileStore(Path(spec), max_file_bytes)
