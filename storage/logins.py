"""Failed logins: counters and temporary locks per user name, per (name, address) and per address, on the
Redis clock, and the addresses each name logs in from. Locks apply to names whether or not a user has
them, so they say nothing about which users exist; they never touch the user record or its sessions."""

from __future__ import annotations

from dataclasses import dataclass

from .connection import Database

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



class LoginGuard:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def state(self, norm: str, ip: str) -> LoginState:
        k = self.db.keys
        keys = [k.login_guard(norm), k.ip_login_failures(ip), k.users, k.login_known(norm)]
        reply = await self.db.script(LOGIN_STATE)(keys=keys, args=[ip])
        return LoginState(*(int(v) for v in reply))

    async def charge(self, norm: str, ip: str, policy: LoginPolicy) -> int:
        """Count a login attempt before its password is checked: 0 charged, -1 refused by a lock or a scope
        already at its limit (a burst in flight), -2 refused by the address limit."""
        k, p = self.db.keys, policy
        reply = await self.db.script(LOGIN_CHARGE)(
            keys=[k.login_guard(norm), k.ip_login_failures(ip), k.login_known(norm)],
            args=[ip, p.pair_limit, p.name_limit, p.window_s * 1000, p.ip_limit, p.ip_window_s, p.lock_max_s * 1000],
        )  # fmt: skip
        return int(reply)

    async def failed(self, norm: str, ip: str, policy: LoginPolicy) -> tuple[int, int]:
        """A charged attempt failed its check; returns the (name, pair) lock in ms that it started (0 = none)."""
        k, p = self.db.keys, policy
        reply = await self.db.script(LOGIN_FAILED)(
            keys=[k.login_guard(norm), k.login_known(norm)],
            args=[ip, p.pair_limit, p.name_limit, p.window_s * 1000, p.lock_s * 1000, p.lock_max_s * 1000],
        )  # fmt: skip
        return int(reply[0]), int(reply[1])

    async def succeeded(self, norm: str, ip: str, *, remember: bool = True) -> None:
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

    async def clear(self, norm: str) -> None:
        """Forget every failure and temporary lock of a name (an administrator's unlock)."""
        await self.db.client.delete(self.db.keys.login_guard(norm))
