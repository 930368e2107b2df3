"""Users, sessions, security logs and login-failure counters."""

from __future__ import annotations

import hashlib
import re
import time
from typing import Any

from redis.exceptions import ResponseError

from . import codec
from .bus import InvalidationBus
from .cache import KeyedCache
from .connection import Database
from .errors import Conflict
from .fence import Fence, FencedBatch
from .scripts import fenced

Record = dict[str, Any]

SECURITY_LOG_MAX = 1000
USER_KIND = "user"
SESSION_KIND = "session"

# Create, replace or delete one user record and announce it.
# KEYS[1] leader, KEYS[2] epoch, KEYS[3] user record, KEYS[4] users zset
# ARGV[1] node id, ARGV[2] epoch, ARGV[3] "create" | "update" | "delete", ARGV[4] normalised name,
# ARGV[5] msgpack record, ARGV[6] created ms, ARGV[7] channel,
# ARGV[8] for update: the stored record's expected `revision` ('' = any; a missing one counts as 0)
# return 1; errors "EXISTS", "NOTFOUND", "REVISION"
USER_WRITE = fenced("""
local cur = redis.call('EXISTS', KEYS[3])
if ARGV[3] == 'create' then
  if cur == 1 then return redis.error_reply('EXISTS') end
  redis.call('ZADD', KEYS[4], ARGV[6], ARGV[4])
elseif cur == 0 then
  return redis.error_reply('NOTFOUND')
elseif ARGV[3] == 'update' and ARGV[8] ~= '' then
  local rev = cmsgpack.unpack(redis.call('GET', KEYS[3]))['revision'] or 0
  if tostring(rev) ~= ARGV[8] then return redis.error_reply('REVISION') end
end
if ARGV[3] == 'delete' then
  redis.call('DEL', KEYS[3])
  redis.call('ZREM', KEYS[4], ARGV[4])
else
  redis.call('SET', KEYS[3], ARGV[5])
end
redis.call('PUBLISH', ARGV[7], 'user|' .. ARGV[4])
return 1
""")


def normalize(username: str) -> str:
    """xyOps storage key form: lower-cased, non-word characters removed."""
    return re.sub(r"\W", "", username.lower())


def session_digest(session_id: str) -> str:
    """Sessions are stored under a hash of their id, so a copy of Redis holds no usable session."""
    return hashlib.sha256(session_id.encode()).hexdigest()


def _raw(value: Any) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode()


class UserStore:
    def __init__(self, db: Database, bus: InvalidationBus) -> None:
        self.db = db
        self.users: KeyedCache[Record] = KeyedCache(bus, USER_KIND, self._load_user)
        self.sessions: KeyedCache[Record] = KeyedCache(bus, SESSION_KIND, self._load_session)

    # -- users ------------------------------------------------------------------
    async def _load_user(self, norm: str) -> Record | None:
        raw = await self.db.client.get(self.db.keys.user(norm))
        return None if raw is None else dict(codec.unpack(_raw(raw)))

    async def get(self, username: str) -> Record | None:
        """The stored user (with hash and salt). Callers must copy before changing it."""
        return await self.users.get(normalize(username))

    async def _write_user(self, fence: Fence, mode: str, user: Record, expected: str = "") -> None:
        norm = normalize(str(user["username"]))
        k = self.db.keys
        try:
            await fence.run(
                USER_WRITE,
                [k.user(norm), k.users],
                [mode, norm, codec.pack(user), int(time.time() * 1000), k.invalidate_channel, expected],
            )
        except ResponseError as exc:
            text = str(exc)
            if text.startswith(("EXISTS", "NOTFOUND", "REVISION")):
                raise Conflict(text.lower(), text) from None
            raise
        self.users.invalidate(norm)

    async def create(self, fence: Fence, user: Record) -> None:
        await self._write_user(fence, "create", user)

    async def save(self, fence: Fence, user: Record) -> None:
        """Store a changed copy of a user read earlier: refused (Conflict "revision") if the user was
        saved by somebody else in between, so a slow write (bcrypt) cannot undo an admin's change."""
        read = int(user.get("revision") or 0)
        await self._write_user(fence, "update", {**user, "revision": read + 1}, str(read))

    async def delete(self, fence: Fence, user: Record) -> None:
        norm = normalize(str(user["username"]))
        await self._write_user(fence, "delete", user)
        await self.drop_sessions(fence, norm)
        await self.db.client.delete(self.db.keys.security_log(norm), self.db.keys.login_failures(norm))

    async def page(self, offset: int, limit: int) -> tuple[list[Record], int]:
        """Users in creation order, one page, plus the total."""
        k = self.db.keys
        total = int(await self.db.client.zcard(k.users))
        names = await self.db.client.zrange(k.users, offset, offset + max(limit, 0) - 1) if limit > 0 else []
        if not names:
            return [], total
        raws = await self.db.client.mget([k.user(_raw(n).decode()) for n in names])
        return [dict(codec.unpack(_raw(r))) for r in raws if r is not None], total

    async def count(self) -> int:
        return int(await self.db.client.zcard(self.db.keys.users))

    # -- sessions ---------------------------------------------------------------
    async def _load_session(self, digest: str) -> Record | None:
        raw = await self.db.client.get(self.db.keys.session(digest))
        return None if raw is None else dict(codec.unpack(_raw(raw)))

    async def session(self, session_id: str) -> Record | None:
        """A live session, or None (missing or past its expiry)."""
        found = await self.sessions.get(session_digest(session_id))
        if found is None or float(found.get("expires", 0)) <= time.time():
            return None
        return found

    async def create_session(self, fence: Fence, session_id: str, session: Record) -> None:
        digest = session_digest(session_id)
        norm = normalize(str(session["username"]))
        ttl_ms = max(1000, int((float(session["expires"]) - time.time()) * 1000))
        k = self.db.keys
        batch = FencedBatch()
        batch.add("SET", [k.session(digest)], codec.pack(session), "PX", ttl_ms)
        batch.add("SADD", [k.user_sessions(norm)], digest)
        batch.add("PUBLISH", [], k.invalidate_channel, f"{SESSION_KIND}|{digest}")
        await fence.execute(batch)
        self.sessions.invalidate(digest)

    async def delete_session(self, fence: Fence, session_id: str, username: str) -> None:
        await self._drop_digests(fence, normalize(username), [session_digest(session_id)])

    async def drop_sessions(self, fence: Fence, norm: str, keep: str | None = None) -> int:
        """Delete every session of a user (but `keep`, a session id); returns how many went."""
        members = await self.db.client.smembers(self.db.keys.user_sessions(norm))
        digests = [_raw(m).decode() for m in members]
        if keep is not None:
            digests = [d for d in digests if d != session_digest(keep)]
        await self._drop_digests(fence, norm, digests)
        return len(digests)

    async def _drop_digests(self, fence: Fence, norm: str, digests: list[str]) -> None:
        if not digests:
            return
        k = self.db.keys
        batch = FencedBatch()
        for digest in digests:
            batch.add("DEL", [k.session(digest)])
            batch.add("SREM", [k.user_sessions(norm)], digest)
            batch.add("PUBLISH", [], k.invalidate_channel, f"{SESSION_KIND}|{digest}")
        await fence.execute(batch)
        for digest in digests:
            self.sessions.invalidate(digest)

    # -- security log and login failures ---------------------------------------
    async def log_security(self, username: str, entry: Record) -> None:
        key = self.db.keys.security_log(normalize(username))
        async with self.db.client.pipeline(transaction=True) as pipe:
            pipe.lpush(key, codec.pack(entry))  # type: ignore[unused-awaitable]  # queued
            pipe.ltrim(key, 0, SECURITY_LOG_MAX - 1)  # type: ignore[unused-awaitable]
            await pipe.execute()

    async def security_page(self, username: str, offset: int, limit: int) -> tuple[list[Record], int]:
        key = self.db.keys.security_log(normalize(username))
        async with self.db.client.pipeline(transaction=True) as pipe:
            pipe.llen(key)  # type: ignore[unused-awaitable]
            pipe.lrange(key, offset, offset + max(limit, 1) - 1)  # type: ignore[unused-awaitable]
            total, raws = await pipe.execute()
        return [dict(codec.unpack(_raw(r))) for r in raws], int(total)

    async def count_failure(self, key: str, window_s: int) -> int:
        """INCR a failure counter whose window starts at the first failure."""
        async with self.db.client.pipeline(transaction=True) as pipe:
            pipe.incr(key)  # type: ignore[unused-awaitable]
            pipe.expire(key, window_s, nx=True)  # type: ignore[unused-awaitable]
            count, _ = await pipe.execute()
        return int(count)

    async def failures(self, key: str) -> int:
        return int(await self.db.client.get(key) or 0)

    async def clear_failures(self, key: str) -> None:
        await self.db.client.delete(key)
