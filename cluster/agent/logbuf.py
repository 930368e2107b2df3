"""A job's output on its way to the conductor: chunks by byte offset, kept until acknowledged.

The job's whole output is one UTF-8 byte stream. Every chunk sent as `job_log` carries the offset of its first
byte, and the conductor answers `log_ack` with the offset it has stored up to; bytes below that are dropped here.
After a reconnect the agent rewinds to the last acknowledged offset and sends the rest again, in order (the
conductor skips what it already has).

Memory is bounded: the unacknowledged bytes stay in memory up to `mem_limit`, then go on to a spool file in the
data dir. All jobs' spool files share one `Spool` budget; output past it is dropped and replaced by one marker
line that says how much was lost, so offsets always count exactly the bytes that are sent.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

MEM_LIMIT = 4 * 1024 * 1024
SPOOL_LIMIT = 1024 * 1024 * 1024
CHUNK = 1024 * 1024


class Spool:
    """The bytes every job's spool file may hold together."""

    def __init__(self, directory: Path, limit: int = SPOOL_LIMIT) -> None:
        self.directory = directory
        self.limit = limit
        self.used = 0

    def take(self, size: int) -> bool:
        if self.used + size > self.limit:
            return False
        self.used += size
        return True

    def give_back(self, size: int) -> None:
        self.used = max(0, self.used - size)


def _whole(data: bytes, limit: int) -> int:
    """The longest prefix of data, at most `limit` bytes, that ends on a UTF-8 character boundary."""
    if limit >= len(data):
        return len(data)
    cut = max(0, limit)
    while cut > 0 and (data[cut] & 0xC0) == 0x80:  # data[cut] continues a character: cut before it
        cut -= 1
    return cut


class LogBuffer:
    """One job's output: `write` text, `next_chunk` to send, `ack` what the conductor stored, `rewind` on reconnect.

    Bytes [acked, size) are held: the oldest in the spool file ([acked.., file_end)), the newest in memory
    ([file_end, size)). `sent` is how far chunks have gone out on the current connection.
    """

    def __init__(self, spool: Spool, name: str, mem_limit: int = MEM_LIMIT) -> None:
        self.spool = spool
        self.path = spool.directory / f"{name}.log"
        self.mem_limit = mem_limit
        self.size = 0
        self.acked = 0
        self.sent = 0
        self.dropped = 0  # bytes lost to the spool budget and not yet reported by a marker line
        self._mem = bytearray()
        self._file_start = 0  # offset of the spool file's first byte
        self._file_end = 0  # offset just past the spool file's last byte = offset of _mem[0]
        self._spooled = 0  # bytes of the budget this job holds

    @property
    def unsent(self) -> int:
        return self.size - self.sent

    @property
    def complete(self) -> bool:
        """Every byte written so far has been acknowledged."""
        return self.acked >= self.size and not self.dropped

    def write(self, text: str) -> None:
        data = text.encode("utf-8", errors="replace")
        if data and self.dropped and not self._room(len(data)):
            self.dropped += len(data)  # still no room: one marker will cover it all
            return
        self._note_dropped()
        while data:
            room = self.mem_limit - len(self._mem)
            piece = data[: _whole(data, room)] if room < len(data) else data
            if not piece:
                if not self._spill():
                    self.dropped += len(data)
                    return
                continue
            self._mem += piece
            self.size += len(piece)
            data = data[len(piece) :]

    def _room(self, size: int) -> bool:
        return len(self._mem) + size <= self.mem_limit or self.spool.used + len(self._mem) <= self.spool.limit

    def close(self) -> None:
        """The output has ended: report any drop still pending."""
        self._note_dropped()

    def _note_dropped(self) -> None:
        if self.dropped:
            marker = f"\n[podium-agent: {self.dropped} bytes of output dropped]\n".encode()
            self.dropped = 0
            self._mem += marker
            self.size += len(marker)

    def _spill(self) -> bool:
        """Move memory to the spool file; False when the budget cannot take it."""
        if not self._mem or not self.spool.take(len(self._mem)):
            return False
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "ab") as handle:
            handle.write(self._mem)
        self._spooled += len(self._mem)
        self._file_end += len(self._mem)
        self._mem.clear()
        return True

    def next_chunk(self, limit: int = CHUNK) -> tuple[int, str] | None:
        """(offset, text) of the next bytes to send, at most `limit` bytes, cut on a character boundary."""
        if self.sent >= self.size:
            return None
        start = self.sent
        data = self._read(start, min(self.size, start + limit + 1))  # one byte more: is the cut inside a character?
        if len(data) > limit:
            data = data[: _whole(data, limit) or limit]
        self.sent = start + len(data)
        return start, data.decode("utf-8", errors="replace")

    def _read(self, start: int, end: int) -> bytes:
        out = bytearray()
        if start < self._file_end:
            with open(self.path, "rb") as handle:
                handle.seek(start - self._file_start)
                out += handle.read(min(end, self._file_end) - start)
            start = self._file_end
        if end > start:
            out += self._mem[start - self._file_end : end - self._file_end]
        return bytes(out)

    def ack(self, offset: int) -> None:
        """The conductor has stored the output up to `offset`: drop it here."""
        offset = min(offset, self.size)
        if offset <= self.acked:
            return
        self.acked = offset
        self.sent = max(self.sent, offset)
        if offset >= self._file_end:
            del self._mem[: offset - self._file_end]
            self._drop_file()
            self._file_start = self._file_end = offset

    def _drop_file(self) -> None:
        if self._spooled:
            self.spool.give_back(self._spooled)
            self._spooled = 0
        if self._file_end > self._file_start:
            self.path.unlink(missing_ok=True)

    def rewind(self) -> None:
        """A new connection: everything not acknowledged goes out again."""
        self.sent = self.acked

    def discard(self) -> None:
        """The job is gone: free the spool."""
        self._mem.clear()
        self._drop_file()
        self.path.unlink(missing_ok=True)
        self._file_start = self._file_end = self.size


def remove_stale(data_dir: Path) -> None:
    """What an earlier run of the agent left: spool files, job directories, scripts (those jobs cannot be resumed;
    their conductor times them out)."""
    for sub in ("spool", "jobs", "scripts"):
        directory = data_dir / sub
        if directory.is_dir():
            for name in os.listdir(directory):
                path = directory / name
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    path.unlink(missing_ok=True)
