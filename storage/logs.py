"""Job logs: the live output of running jobs in Redis, readable on every node, and the finished log in the file store.

Output is appended as it arrives, by whichever node holds the agent's socket. Podium's agent sends the byte offset
of each chunk in the job's output, so a chunk resent after a reconnect is stored once and a chunk that skips ahead
says how much was lost; xySat sends none, and its chunks are appended as they come. A log stops growing at a cap
with one marker line. When the job finishes the log is gzipped into the file store at `logs/jobs/<id>/log.txt.gz`
and the live keys go, leaving a small marker (an hour) that makes late chunks no-ops.
"""

from __future__ import annotations

import asyncio
import zlib

from .connection import Database
from .fence import Fence
from .files import FileStore, check_path
from .files.base import as_bytes as _bytes
from .scripts import fenced

CHUNK = 1 << 20  # bytes read per GETRANGE while compressing
THREAD_ABOVE = 1 << 20  # logs larger than this are compressed in a thread
LIVE_TTL_S = 30 * 86400  # live keys outlive any job that still sends output; a crash never leaves them forever
DONE_TTL_S = 3600  # how long a finalized log still ignores late chunks
MAX_OFFSET = 1 << 40  # offsets beyond this are nonsense (and would not survive Lua's number formatting)

# Append one chunk of output to a live log.
# KEYS[1] live log, KEYS[2] its meta hash {recv, size, cut, done}
# ARGV[1] chunk (UTF-8 bytes), ARGV[2] its offset in the job's output ('' = none: append as is),
# ARGV[3] cap (bytes kept), ARGV[4] ttl s of the live keys
# return recv: bytes of output received so far (the offset the agent may forget up to)
LOG_APPEND = """
local recv = tonumber(redis.call('HGET', KEYS[2], 'recv') or '0')
if redis.call('HEXISTS', KEYS[2], 'done') == 1 then return recv end
local data = ARGV[1]
local lost = 0
if ARGV[2] ~= '' then
  local off = tonumber(ARGV[2])
  local stop = off + string.len(data)
  if stop <= recv then return recv end
  if off < recv then
    data = string.sub(data, recv - off + 1)
  elseif off > recv then
    lost = off - recv
  end
  recv = stop
else
  recv = recv + string.len(data)
end
redis.call('HSET', KEYS[2], 'recv', recv)
redis.call('EXPIRE', KEYS[2], ARGV[4])
if redis.call('HEXISTS', KEYS[2], 'cut') == 1 then return recv end
local size = redis.call('STRLEN', KEYS[1])
local piece = data
if lost > 0 then
  local marker = '[podium: ' .. lost .. ' bytes of output lost]\\n'
  if size > 0 and redis.call('GETRANGE', KEYS[1], -1, -1) ~= '\\n' then marker = '\\n' .. marker end
  piece = marker .. data
end
local cap = tonumber(ARGV[3])
if size + string.len(piece) > cap then
  local keep = math.max(cap - size, 0)
  while keep > 0 do  -- never cut a UTF-8 character in two
    local b = string.byte(piece, keep + 1)
    if b < 128 or b >= 192 then break end
    keep = keep - 1
  end
  piece = string.sub(piece, 1, keep) .. '\\n[podium: log truncated at ' .. (size + keep) .. ' bytes]\\n'
  redis.call('HSET', KEYS[2], 'cut', 1)
end
if string.len(piece) > 0 then size = redis.call('APPEND', KEYS[1], piece) end
redis.call('HSET', KEYS[2], 'size', size)
redis.call('EXPIRE', KEYS[1], ARGV[4])
return recv
"""

# Mark a live log as being finalized, so chunks arriving from now on are ignored; and hand back its start.
# KEYS[L] live log, KEYS[M] its meta hash (L, M = 1, 2 unfenced; 3, 4 fenced, after the leader and epoch)
# ARGV[H] how many bytes of the log to return (H = 1 unfenced, 3 fenced)
# return {length of the log (0: no live log, marked done for an hour), 1 if it was finalized before, its first bytes}
_SEAL = """
local size = redis.call('STRLEN', KEYS[L])
if size == 0 then
  local before = redis.call('HGET', KEYS[M], 'done') and 1 or 0
  redis.call('HSET', KEYS[M], 'done', 1)  -- a job that wrote nothing is sealed too: late output is ignored
  redis.call('EXPIRE', KEYS[M], 3600)
  return {0, before, ''}
end
redis.call('HSET', KEYS[M], 'done', 1)
return {size, 0, redis.call('GETRANGE', KEYS[L], 0, tonumber(ARGV[H]) - 1)}
"""
LOG_SEAL = _SEAL.replace("KEYS[L]", "KEYS[1]").replace("KEYS[M]", "KEYS[2]").replace("ARGV[H]", "ARGV[1]")
# The same by the primary finishing the job: a deposed primary (paused past its lease, its deadlines overdue)
# must not seal the log of a job that is still running under the new one. ARGV[1..2] node id, epoch.
LOG_SEAL_FENCED = fenced(
    _SEAL.replace("KEYS[L]", "KEYS[3]").replace("KEYS[M]", "KEYS[4]").replace("ARGV[H]", "ARGV[3]")
)


def log_path(job_id: str) -> str:
    """Where a finished job's log lives in the file store."""
    return check_path(f"logs/jobs/{job_id}/log.txt.gz")


def _text_size(gz: bytes) -> int:
    """The uncompressed size a gzip member records in its trailer (ISIZE, modulo 2^32)."""
    return int.from_bytes(gz[-4:], "little") if len(gz) >= 18 else 0


class LogStore:
    """Live logs in Redis (keys.job_log / keys.job_log_meta) and finished ones in `files`."""

    def __init__(self, db: Database, files: FileStore) -> None:
        self.db = db
        self.files = files

    def _keys(self, job_id: str) -> list[str]:
        return [self.db.keys.job_log(job_id), self.db.keys.job_log_meta(job_id)]

    async def append(self, job_id: str, text: str, offset: int | None, cap: int) -> int:
        """Append a chunk (see LOG_APPEND); `offset` counts UTF-8 bytes of the job's output. Returns recv."""
        if offset is not None and not 0 <= offset <= MAX_OFFSET:
            raise ValueError(f"log offset {offset} is out of range")
        data = text.encode("utf-8", "replace")  # a lone surrogate (JSON can carry one) becomes "?"
        recv = await self.db.script(LOG_APPEND)(
            keys=self._keys(job_id), args=[data, "" if offset is None else offset, max(cap, 0), LIVE_TTL_S]
        )
        return int(recv)

    async def received(self, job_id: str) -> int:
        """Bytes of output received so far (what `append` last answered)."""
        return int(await self.db.client.hget(self.db.keys.job_log_meta(job_id), "recv") or 0)

    async def size(self, job_id: str) -> int:
        """Bytes in the live log (0 once finalized)."""
        return int(await self.db.client.strlen(self.db.keys.job_log(job_id)))

    async def read(self, job_id: str, start: int, end: int) -> bytes:
        """Bytes [start, end) of the live log."""
        if end <= start:
            return b""
        return _bytes(await self.db.client.getrange(self.db.keys.job_log(job_id), start, end - 1))

    async def tail(self, job_id: str, nbytes: int) -> bytes:
        """The last `nbytes` bytes of the live log (all of it when shorter)."""
        if nbytes <= 0:
            return b""
        return _bytes(await self.db.client.getrange(self.db.keys.job_log(job_id), -nbytes, -1))

    async def finalize(self, job_id: str, fence: Fence | None = None) -> tuple[str, int] | None:
        """Gzip the live log into the file store, then drop the live log. Returns (path, bytes of text), or None
        when the job wrote nothing. Idempotent: once done it answers from the stored log. Chunks arriving while
        (or after) it runs are ignored, so the stored log is exactly what was live. With `fence` the seal is a
        fenced write (FencedError when the caller is no longer primary)."""
        path = log_path(job_id)
        log_key, meta_key = self._keys(job_id)
        if fence is not None:
            sealed = await fence.run(LOG_SEAL_FENCED, [log_key, meta_key], [CHUNK])
        else:
            sealed = await self.db.script(LOG_SEAL)(keys=[log_key, meta_key], args=[CHUNK])
        size, before, head = int(sealed[0]), int(sealed[1]), _bytes(sealed[2])
        if size == 0:
            if not before:
                return None  # the job wrote nothing
            gz = await self.files.get(path)
            return None if gz is None else (path, _text_size(gz))
        compressor = zlib.compressobj(6, zlib.DEFLATED, 31)  # wbits 31: a gzip member
        parts: list[bytes] = []
        for start in range(0, size, CHUNK):
            want = min(CHUNK, size - start)
            chunk = head if start == 0 else await self.read(job_id, start, start + want)
            if len(chunk) != want:  # a finalize running alongside got there first
                return await self.finalize(job_id)
            parts.append(await asyncio.to_thread(compressor.compress, chunk) if size > THREAD_ABOVE
                         else compressor.compress(chunk))  # fmt: skip
        parts.append(compressor.flush())
        await self.files.put(path, b"".join(parts), content_type="application/gzip")
        async with self.db.client.pipeline(transaction=True) as pipe:
            pipe.delete(log_key)  # type: ignore[unused-awaitable]  # queued, not awaited
            pipe.expire(meta_key, DONE_TTL_S)  # type: ignore[unused-awaitable]
            await pipe.execute()
        return path, size

    async def stored(self, job_id: str) -> bytes | None:
        """The finished log's gzip bytes, if it has been stored."""
        return await self.files.get(log_path(job_id))

    async def drop(self, job_id: str) -> None:
        """Forget a job's log, live and stored (delete_job)."""
        await self.db.client.delete(*self._keys(job_id))
        await self.files.delete(log_path(job_id))
