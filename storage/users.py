"""Users, sessions, security logs and login-failure counters."""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
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

# Whether the address ARGV[1] has logged in as this name (KEYS[n]) within KNOWN_MS: the name-wide lock does
# not apply there, so strangers elsewhere cannot lock the owner out of the places the owner logs in from
# (the per-address limits still hold there). Sets `known`; needs `now`.
_KNOWN = """
local seen = tonumber(redis.call('HGET', KEYS[{n}], ARGV[1]) or '0')
local known = seen > 0 and now - seen < {known_ms}
"""
KNOWN_MS = 30 * 86400 * 1000
KNOWN_MAX = 50  # addresses remembered per name; past it the oldest is forgotten
_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

# Where a login for one name from one address stands, on the Redis clock.
# KEYS[1] login guard hash of the name, KEYS[2] failed-login counter of the address, KEYS[3] users zset,
# KEYS[4] known addresses of the name; ARGV[1] address
# return {name lock ms left, lock ms left for this address, address failures, address counter ms left,
#         number of users}
LOGIN_STATE = _NOW + _KNOWN.format(n=4, known_ms=KNOWN_MS) + """
local g = redis.call('HMGET', KEYS[1], 'until', 'until:' .. ARGV[1])
if known then g[1] = '0' end
local name = math.max(tonumber(g[1] or '0') - now, 0)
local pair = math.max(tonumber(g[2] or '0') - now, 0)
return {name, pair, tonumber(redis.call('GET', KEYS[2]) or '0'), math.max(redis.call('PTTL', KEYS[2]), 0),
        redis.call('ZCARD', KEYS[3])}
"""

# Charge one login attempt before its password is checked, so a burst sent in parallel runs no more checks
# than the limits allow: each scope (the (name, address) pair, the name over all addresses, the address)
# counts the attempt, and an attempt is refused while a scope is locked or already holds its limit of
# attempts in its window. LOGIN_FAILED confirms a charge that failed; LOGIN_REFUND gives back one whose
# password was right.
# KEYS[1] login guard hash of the name, KEYS[2] failed-login counter of the address, KEYS[3] known addresses
# ARGV[1] address, ARGV[2] pair limit, ARGV[3] name limit, ARGV[4] window ms, ARGV[5] address limit,
# ARGV[6] address window s, ARGV[7] longest lock ms (a limit of 0 counts nothing)
# return 0 charged, -1 refused by a lock or a full scope, -2 refused by the address limit
LOGIN_CHARGE = _NOW + _KNOWN.format(n=3, known_ms=KNOWN_MS) + """
local window = tonumber(ARGV[4])
local g = redis.call('HMGET', KEYS[1], 'until', 'until:' .. ARGV[1])
if known then g[1] = '0' end
if tonumber(g[1] or '0') > now or tonumber(g[2] or '0') > now then return -1 end
local ip_limit = tonumber(ARGV[5])
if ip_limit > 0 and tonumber(redis.call('GET', KEYS[2]) or '0') >= ip_limit then return -2 end
-- Many addresses against one name: forget the per-address state (the name-wide limit still holds).
if redis.call('HLEN', KEYS[1]) > 4000 then
  for _, f in ipairs(redis.call('HKEYS', KEYS[1])) do
    if string.find(f, ':', 1, true) then redis.call('HDEL', KEYS[1], f) end
  end
end
local scopes = {{':' .. ARGV[1], tonumber(ARGV[2])}}
if not known then scopes[2] = {'', tonumber(ARGV[3])} end
for _, s in ipairs(scopes) do
  if s[2] > 0 then
    local w = tonumber(redis.call('HGET', KEYS[1], 'w' .. s[1]) or '0')
    if now - w >= window then redis.call('HSET', KEYS[1], 'w' .. s[1], now, 'n' .. s[1], 0) end
    if tonumber(redis.call('HGET', KEYS[1], 'n' .. s[1]) or '0') >= s[2] then return -1 end
  end
end
for _, s in ipairs(scopes) do
  if s[2] > 0 then redis.call('HINCRBY', KEYS[1], 'n' .. s[1], 1) end
end
redis.call('PEXPIRE', KEYS[1], window + tonumber(ARGV[7]))
if ip_limit > 0 then
  redis.call('INCR', KEYS[2])
  redis.call('EXPIRE', KEYS[2], ARGV[6], 'NX')
end
return 0
"""

# A charged login failed its password check. A scope (the (name, address) pair, or the name over all
# addresses) whose count has reached its limit is locked for a backoff that starts at the first lock time
# and doubles with each further lock, up to the longest; its count starts again. Only a failed check
# starts a lock: a right password never does.
# KEYS[1] login guard hash of the name, KEYS[2] known addresses of the name
# ARGV[1] address, ARGV[2] pair limit, ARGV[3] name limit, ARGV[4] window ms, ARGV[5] first lock ms,
# ARGV[6] longest lock ms
# return {name lock ms, pair lock ms} started by this failure (0 = none)
LOGIN_FAILED = _NOW + _KNOWN.format(n=2, known_ms=KNOWN_MS) + """
local first, longest = tonumber(ARGV[5]), tonumber(ARGV[6])
local function lock(suffix, limit)
  if limit <= 0 or tonumber(redis.call('HGET', KEYS[1], 'n' .. suffix) or '0') < limit then return 0 end
  local locks = redis.call('HINCRBY', KEYS[1], 'locks' .. suffix, 1)
  local ms = longest
  if locks <= 30 then ms = math.min(first * 2 ^ (locks - 1), longest) end
  redis.call('HSET', KEYS[1], 'until' .. suffix, now + ms, 'n' .. suffix, 0, 'w' .. suffix, now)
  return ms
end
local pair = lock(':' .. ARGV[1], tonumber(ARGV[2]))
local name = 0
if not known then name = lock('', tonumber(ARGV[3])) end
if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[4]) + longest) end
return {name, pair}
"""

# A charged login had the right password: forget the pair's failures and backoff, take the charge back
# from the name-wide and address counts, and (ARGV[2] = 1: the account may log in) remember the address
# as one this name logs in from; at most KNOWN_MAX addresses, the oldest forgotten first.
# KEYS[1] login guard hash of the name, KEYS[2] failed-login counter of the address, KEYS[3] known
# addresses of the name; ARGV[1] address, ARGV[2] 1 = remember the address
# return 1
LOGIN_REFUND = _NOW + f"""
redis.call('HDEL', KEYS[1], 'w:' .. ARGV[1], 'n:' .. ARGV[1], 'locks:' .. ARGV[1], 'until:' .. ARGV[1])
if tonumber(redis.call('HGET', KEYS[1], 'n') or '0') > 0 then redis.call('HINCRBY', KEYS[1], 'n', -1) end
if tonumber(redis.call('GET', KEYS[2]) or '0') > 0 then redis.call('DECR', KEYS[2]) end
if ARGV[2] ~= '1' then return 1 end
if redis.call('HEXISTS', KEYS[3], ARGV[1]) == 0 and redis.call('HLEN', KEYS[3]) >= {KNOWN_MAX} then
  local all = redis.call('HGETALL', KEYS[3])
  local oldest, at = nil, nil
  for i = 1, #all, 2 do
    local ts = tonumber(all[i + 1]) or 0
    if at == nil or ts < at then oldest, at = all[i], ts end
  end
  if oldest then redis.call('HDEL', KEYS[3], oldest) end
end
redis.call('HSET', KEYS[3], ARGV[1], now)
redis.call('PEXPIRE', KEYS[3], {KNOWN_MS})
return 1
"""


@dataclass(frozen=True, slots=True)
class LoginPolicy:
    """When failed logins lock a name for a while (a limit of 0 is off). Locks are temporary and
    apply to names whether or not a user has them, so they say nothing about which users exist."""

    pair_limit: int = 5  # failures of one name from one address per window
    name_limit: int = 50  # failures of one name from all addresses per window
    ip_limit: int = 20  # failures from one address for all names per ip window (answered `rate`)
    window_s: int = 3600
    ip_window_s: int = 600
    lock_s: int = 60  # the first lock; each further lock of the same scope doubles it
    lock_max_s: int = 3600


@dataclass(frozen=True, slots=True)
class LoginState:
    name_lock_ms: int
    pair_lock_ms: int
    ip_failures: int
    ip_reset_ms: int
    users: int  # none yet: the first start has not created the admin

    @property
    def lock_ms(self) -> int:
        return max(self.name_lock_ms, self.pair_lock_ms)


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
        digests = sorted(_raw(m).decode() for m in members)
        if len(digests) <= keep:
            return 0
        raws = await self.db.client.mget([self.db.keys.session(d) for d in digests])
        gone = [d for d, raw in zip(digests, raws, strict=True) if raw is None]
        live = sorted((float(codec.unpack(_raw(raw)).get("created") or 0), d)
                      for d, raw in zip(digests, raws, strict=True) if raw is not None)  # fmt: skip
        ended = [d for _, d in live[: max(len(live) - keep, 0)]]
        await self._drop_digests(fence, norm, gone + ended)
        return len(ended)

    async def session_counts(self, offset: int, limit: int) -> list[tuple[str, int]]:
        """(normalised name, number of session ids held) for one page of users in creation order."""
        k = self.db.keys
        names = [_raw(n).decode() for n in await self.db.client.zrange(k.users, offset, offset + limit - 1)]
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

    async def login_state(self, norm: str, ip: str) -> LoginState:
        k = self.db.keys
        keys = [k.login_guard(norm), k.ip_login_failures(ip), k.users, k.login_known(norm)]
        reply = await self.db.script(LOGIN_STATE)(keys=keys, args=[ip])
        return LoginState(*(int(v) for v in reply))

    async def login_charge(self, norm: str, ip: str, policy: LoginPolicy) -> int:
        """Count a login attempt before its password is checked: 0 charged, -1 refused by a lock or a scope
        already at its limit (a burst in flight), -2 refused by the address limit."""
        k, p = self.db.keys, policy
        reply = await self.db.script(LOGIN_CHARGE)(
            keys=[k.login_guard(norm), k.ip_login_failures(ip), k.login_known(norm)],
            args=[ip, p.pair_limit, p.name_limit, p.window_s * 1000, p.ip_limit, p.ip_window_s, p.lock_max_s * 1000],
        )  # fmt: skip
        return int(reply)

    async def login_failed(self, norm: str, ip: str, policy: LoginPolicy) -> tuple[int, int]:
        """A charged attempt failed its check; returns the (name, pair) lock in ms that it started (0 = none)."""
        k, p = self.db.keys, policy
        reply = await self.db.script(LOGIN_FAILED)(
            keys=[k.login_guard(norm), k.login_known(norm)],
            args=[ip, p.pair_limit, p.name_limit, p.window_s * 1000, p.lock_s * 1000, p.lock_max_s * 1000],
        )  # fmt: skip
        return int(reply[0]), int(reply[1])

    async def login_succeeded(self, norm: str, ip: str, *, remember: bool = True) -> None:
        """A charged attempt had the right password: the pair's failures and backoff are forgotten and the
        charge is given back (the name-wide count of other failures is kept: an attacker elsewhere keeps
        counting towards it); with `remember`, the address joins those this name logs in from."""
        k = self.db.keys
        keys = [k.login_guard(norm), k.ip_login_failures(ip), k.login_known(norm)]
        await self.db.script(LOGIN_REFUND)(keys=keys, args=[ip, 1 if remember else 0])

    async def forget_known_addresses(self, norm: str) -> None:
        """After a password change, reset or lock: an address that logged in with the old password (perhaps a
        thief's) must not stay exempt from the name-wide lock."""
        await self.db.client.delete(self.db.keys.login_known(norm))

    async def clear_login_guard(self, norm: str) -> None:
        """Forget every failure and temporary lock of a name (an administrator's unlock)."""
        await self.db.client.delete(self.db.keys.login_guard(norm))

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
        digests = [_raw(m).decode() for m in await self.db.client.smembers(k.user_sessions(norm))]
        async with self.db.client.pipeline(transaction=True) as pipe:
            for digest in digests:
                pipe.delete(k.session(digest))  # type: ignore[unused-awaitable]  # queued
                pipe.srem(k.user_sessions(norm), digest)  # type: ignore[unused-awaitable]
                pipe.publish(k.invalidate_channel, f"{SESSION_KIND}|{digest}")  # type: ignore[unused-awaitable]
            await pipe.execute()
        return len(digests)
