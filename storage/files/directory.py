"""The directory file store: files under one root, meant to be a filesystem every node mounts.

A file is written to a temporary name in its own directory and renamed into place, so readers on any node see
the old file or the new one, never half of one. Blocking file I/O runs in a thread. Paths are checked
(storage/files/base.py) and resolved against the root, and a path whose real location is outside it (a symlink
planted under the root) is refused, so nothing outside the root is ever read or written.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
from collections.abc import AsyncIterable, AsyncIterator
from pathlib import Path
from typing import IO

from .base import CHUNK, DEFAULT_MAX_FILE, BadPath, FileInfo, FileTooLarge, check_path, check_prefix, guess_type


class DirectoryFileStore:
    """Files under `root`, at most `max_file_bytes` each (the filesystem's own size is the total cap)."""

    def __init__(self, root: Path | str, max_file_bytes: int = DEFAULT_MAX_FILE) -> None:
        self.root = Path(root).resolve()
        self.max_file_bytes = max_file_bytes

    def _target(self, path: str) -> Path:
        target = self.root / check_path(path)
        real = Path(os.path.realpath(target))
        if real != target and not real.is_relative_to(self.root):
            raise BadPath("a stored path may not lead outside the store's directory")
        return target

    # -- writing ----------------------------------------------------------------------------------------------
    def _open_temp(self, target: Path) -> tuple[Path, IO[bytes]]:
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError):
            raise BadPath("a stored path may not continue below an existing file") from None
        if not Path(os.path.realpath(target.parent)).is_relative_to(self.root):
            raise BadPath("a stored path may not lead outside the store's directory")
        temp = target.parent / f".{target.name}.{secrets.token_hex(6)}.tmp"
        return temp, temp.open("xb")

    def _commit(self, temp: Path, target: Path) -> None:
        if target.is_dir():
            raise BadPath("a stored path may not name a directory of other files")
        os.replace(temp, target)

    def _write(self, target: Path, data: bytes) -> None:
        temp, out = self._open_temp(target)
        try:
            with out:
                out.write(data)
            self._commit(temp, target)
        finally:
            _unlink(temp)

    async def put(self, path: str, data: bytes, *, content_type: str = "") -> int:
        target = self._target(path)
        if len(data) > self.max_file_bytes:
            raise FileTooLarge(self.max_file_bytes)
        await asyncio.to_thread(self._write, target, data)
        return len(data)

    async def put_stream(self, path: str, chunks: AsyncIterable[bytes], *, content_type: str = "") -> int:
        target = self._target(path)
        temp, out = await asyncio.to_thread(self._open_temp, target)
        size = 0
        try:
            try:
                async for chunk in chunks:
                    size += len(chunk)
                    if size > self.max_file_bytes:
                        raise FileTooLarge(self.max_file_bytes)
                    await asyncio.to_thread(out.write, chunk)
            finally:
                out.close()
            await asyncio.to_thread(self._commit, temp, target)
        finally:
            await asyncio.to_thread(_unlink, temp)
        return size

    # -- reading ----------------------------------------------------------------------------------------------
    def _read_all(self, target: Path) -> bytes | None:
        try:
            return target.read_bytes()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return None

    async def get(self, path: str) -> bytes | None:
        return await asyncio.to_thread(self._read_all, self._target(path))

    async def read(self, path: str, chunk: int = CHUNK, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        target = self._target(path)
        try:
            source = await asyncio.to_thread(target.open, "rb")
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return
        try:
            if start:
                await asyncio.to_thread(source.seek, start)
            left = None if end is None else max(end - start, 0)
            while left is None or left > 0:
                piece = await asyncio.to_thread(source.read, chunk if left is None else min(chunk, left))
                if not piece:
                    return
                if left is not None:
                    left -= len(piece)
                yield piece
        finally:
            source.close()

    def _stat(self, target: Path) -> FileInfo | None:
        try:
            st = target.stat()
        except (FileNotFoundError, NotADirectoryError):
            return None
        if not target.is_file():
            return None
        return {"size": st.st_size, "modified": st.st_mtime, "type": guess_type(target.name)}

    async def stat(self, path: str) -> FileInfo | None:
        return await asyncio.to_thread(self._stat, self._target(path))

    # -- deleting ---------------------------------------------------------------------------------------------
    def _delete(self, target: Path) -> bool:
        try:
            target.unlink()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return False
        self._prune(target.parent)
        return True

    def _prune(self, directory: Path) -> None:
        """Remove directories left empty, up to the root."""
        while directory != self.root and directory.is_relative_to(self.root):
            try:
                directory.rmdir()
            except OSError:
                return
            directory = directory.parent

    async def delete(self, path: str) -> bool:
        return await asyncio.to_thread(self._delete, self._target(path))

    def _delete_prefix(self, prefix: str) -> int:
        head, _, _ = prefix.rpartition("/")
        base = self._target(head) if head else self.root
        if not base.is_dir():
            return 0
        deleted = 0
        for dirpath, _dirs, names in os.walk(base, topdown=False):
            directory = Path(dirpath)
            for name in names:
                rel = (directory / name).relative_to(self.root).as_posix()
                if rel.startswith(prefix) and not name.startswith("."):
                    with contextlib.suppress(FileNotFoundError):
                        (directory / name).unlink()
                        deleted += 1
            if directory != self.root and directory.relative_to(self.root).as_posix().startswith(prefix):
                with contextlib.suppress(OSError):
                    directory.rmdir()  # only succeeds when empty
        self._prune(base)
        return deleted

    async def delete_prefix(self, prefix: str) -> int:
        return await asyncio.to_thread(self._delete_prefix, check_prefix(prefix))


def _unlink(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
