"""Users, sessions and security logs (failed logins and their locks: storage/logins.py)."""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Callable
from typing import Any

import structlog
from redis.exceptions import ResponseError

from . import codec
from .bus import InvalidationBus
from .cache import KeyedCache
from .connection import UNAVAILABLE_ERRORS, Database
from .errors import Conflict, FencedError
from .fence import Fence, FencedBatch
from .scripts import fenced

log = structlog.get_logger("podium.users")
CLEANUP_ERRORS: tuple[type[BaseException], ...] = (*UNAVAILABLE_ERRORS, FencedError)

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
# USER_WRITE is this body behind the fence; `UserStore.operator_update` runs the body alone (it never
# reads KEYS[1], KEYS[2], ARGV[1] or ARGV[2]).
USER_WRITE_BODY = """
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
"""
USER_WRITE = fenced(USER_WRITE_BODY)

def normalize(username: str) -> str:
    """xyOps storage key form: lower-cased, non-word characters removed."""
    return re.sub(r"\W", "", username.lower())


def session_digest(session_id: str) -> str:
    """Sessions are stored under a hash of their id, so a copy of Redis holds no usable session."""
    return hashlib.sha256(session_id.encode()).hexdigest()



class UserStore:
    def __init__(self, db: Database, bus: InvalidationBus) -> None:
        self.db = db
        self.users: KeyedCache[Record] = KeyedCache(bus, USER_KIND, self._load_user)
        self.sessions: KeyedCache[Record] = KeyedCache(bus, SESSION_KIND, self._load_session)

    # -- users ------------------------------------------------------------------
    async def _load_user(self, norm: str) -> Record | None:
        raw = await self.db.client.get(self.db.keys.user(norm))
        return None if raw is None else dict(codec.unpack(codec.as_bytes(raw)))

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

    async def replace(self, fence: Fence, user: Record, expected_revision: Any) -> None:
        """Store `user` exactly as given (an import keeps its revision) in place of the version whose revision was
        `expected_revision` (Conflict "revision" otherwise)."""
        await self._write_user(fence, "update", user, str(expected_revision or 0))

    async def delete(self, fence: Fence, user: Record) -> None:
        norm = normalize(str(user["username"]))
        await self._write_user(fence, "delete", user)
        # The user is gone, and with it every session's standing (a session of a missing user is refused):
        # what is left is cleanup, which must not turn the committed delete into an error.
        try:
            await self.drop_sessions(fence, norm)
            await self.db.client.delete(self.db.keys.security_log(norm), self.db.keys.login_guard(norm),
                                         self.db.keys.login_known(norm))
        except CLEANUP_ERRORS as exc:
            log.warning("user_cleanup_failed", username=norm, error=repr(exc))

    async def page(self, offset: int, limit: int) -> tuple[list[Record], int]:
        """Users in creation order, one page, plus the total."""
        k = self.db.keys
        total = int(await self.db.client.zcard(k.users))
        names = await self.db.client.zrange(k.users, offset, offset + max(limit, 0) - 1) if limit > 0 else []
        if not names:
            return [], total
        raws = await self.db.client.mget([k.user(codec.as_bytes(n).decode()) for n in names])
        return [dict(codec.unpack(codec.as_bytes(r))) for r in raws if r is not None], total

    async def count(self) -> int:
        return int(await self.db.client.zcard(self.db.keys.users))

    # -- sessions ---------------------------------------------------------------
    async def _load_session(self, digest: str) -> Record | None:
        raw = await self.db.client.get(self.db.keys.session(digest))
        return None if raw is None else dict(codec.unpack(codec.as_bytes(raw)))

    async def session(self, session_id: str) -> Record | None:
        """A live session, or None (missing or past its expiry)."""
        found = await self.sessions.get(session_digest(session_id))
        if found is None or float(found.get("expires", 0)) <= time.time():
            return None
        return found

    async def create_session(self, fence: Fence, session_id: str, session: Record, max_sessions: int = 0) -> None:
        """Store a session; with `max_sessions`, the user's oldest sessions beyond it end."""
        digest = session_digest(session_id)
        norm = normalize(str(session["username"]))
        ttl_ms = max(1000, int((float(session["expires"]) - time.time()) * 1000))
        k = self.db.keys
        batch = FencedBatch()
        batch.add("SET", [k.session(digest)], codec.pack(session), "PX", ttl_ms)
        batch.add("SADD", [k.user_sessions(norm)], digest)
        batch.add("SCARD", [k.user_sessions(norm)])
        batch.add("PUBLISH", [], k.invalidate_channel, f"{SESSION_KIND}|{digest}")
        reply = await fence.execute(batch)
        self.sessions.invalidate(digest)
        if max_sessions and int(reply[2]) > max_sessions:
            await self.trim_sessions(fence, norm, max_sessions)

    async def trim_sessions(self, fence: Fence, norm: str, keep: int) -> int:
        """End a user's oldest sessions (by `created`) beyond `keep`, and forget ids of sessions that
        expired by themselves. Returns how many live sessions were ended."""
        members = await self.db.client.smembers(self.db.keys.user_sessions(norm))
        digests = sorted(codec.as_bytes(m).decode() for m in members)
        if len(digests) <= keep:
            return 0
        raws = await self.db.client.mget([self.db.keys.session(d) for d in digests])
        gone = [d for d, raw in zip(digests, raws, strict=True) if raw is None]
        live = sorted((float(codec.unpack(codec.as_bytes(raw)).get("created") or 0), d)
                      for d, raw in zip(digests, raws, strict=True) if raw is not None)  # fmt: skip
        ended = [d for _, d in live[: max(len(live) - keep, 0)]]
        await self._drop_digests(fence, norm, gone + ended)
        return len(ended)

    async def session_counts(self, offset: int, limit: int) -> list[tuple[str, int]]:
        """(normalised name, number of session ids held) for one page of users in creation order."""
        k = self.db.keys
        names = [codec.as_bytes(n).decode() for n in await self.db.client.zrange(k.users, offset, offset + limit - 1)]
        if not names:
            return []
        async with self.db.client.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.scard(k.user_sessions(name))  # type: ignore[unused-awaitable]  # queued
            counts = await pipe.execute()
        return [(name, int(count)) for name, count in zip(names, counts, strict=True)]

    async def delete_session(self, fence: Fence, session_id: str, username: str) -> None:
        await self._drop_digests(fence, normalize(username), [session_digest(session_id)])

    async def drop_sessions(self, fence: Fence, norm: str, keep: str | None = None) -> int:
        """Delete every session of a user (but `keep`, a session id); returns how many went."""
        members = await self.db.client.smembers(self.db.keys.user_sessions(norm))
        digests = [codec.as_bytes(m).decode() for m in members]
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

    # -- security log -------------------------------------------------------------
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
        return [dict(codec.unpack(codec.as_bytes(r))) for r in raws], int(total)

    # -- operator writes (`podium user ...`, no fence) ---------------------------
    # The CLI is not a node and holds no lease. Its writes are safe unfenced because the user write is
    # a compare-and-set on the record's revision: it never overwrites a change it has not read, and
    # any save the primary prepared from an older copy is refused in turn (Conflict "revision"). Only
    # the CLI calls these.
    async def operator_update(self, username: str, change: Callable[[Record], bool]) -> Record | None:
        """Apply `change` to a copy of the stored user and save it if `change` says it changed something;
        None if there is no such user."""
        k = self.db.keys
        norm = normalize(username)
        for _ in range(10):
            user = await self._load_user(norm)
            if user is None:
                return None
            read = int(user.get("revision") or 0)
            if not change(user):
                return user
            user["revision"] = read + 1
            args = ["", "", "update", norm, codec.pack(user), int(time.time() * 1000), k.invalidate_channel, str(read)]
            try:
                await self.db.script(USER_WRITE_BODY)(keys=[k.leader, k.epoch, k.user(norm), k.users], args=args)
            except ResponseError as exc:
                if str(exc).startswith(("REVISION", "NOTFOUND")):
                    continue  # changed or deleted meanwhile: read again
                raise
            self.users.invalidate(norm)
            return user
        raise Conflict("revision", f"user {username} keeps changing; try again")

    async def operator_drop_sessions(self, norm: str) -> int:
        """End every session of a user (deleting needs no fence: nothing stale can be written back)."""
        k = self.db.keys
        digests = [codec.as_bytes(m).decode() for m in await self.db.client.smembers(k.user_sessions(norm))]
        async with self.db.client.pipeline(transaction=True) as pipe:
            for digest in digests:
                pipe.delete(k.session(digest))  # type: ignore[unused-awaitable]  # queued
                pipe.srem(k.user_sessions(norm), digest)  # type: ignore[unused-awaitable]
                pipe.publish(k.invalidate_channel, f"{SESSION_KIND}|{digest}")  # type: ignore[unused-awaitable]
            await pipe.execute()
        return len(digests)
