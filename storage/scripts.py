"""Lua scripts, one documented constant each (KEYS / ARGV / return).

Convention for every fenced script: KEYS[1] is the leader key, KEYS[2] the epoch key,
ARGV[1] the caller's node id and ARGV[2] the caller's epoch. `fenced()` prepends the
check, so a deposed primary (paused, partitioned, or simply late) changes nothing.
"""

from __future__ import annotations

FENCE_ERROR = "FENCED"

# Prefix of every fenced script. Refuses unless the caller still holds the lease at its epoch.
# Checking the holder as well as the epoch keeps a stale primary out even in the window where
# its lease expired and nobody has been elected yet.
FENCE_CHECK = f"""
if redis.call('GET', KEYS[1]) ~= ARGV[1] or redis.call('GET', KEYS[2]) ~= ARGV[2] then
  return redis.error_reply('{FENCE_ERROR} lease not held at epoch ' .. ARGV[2])
end
"""


def fenced(body: str) -> str:
    """A fenced script: the fence check, then `body` (which may use KEYS[3..], ARGV[3..])."""
    return FENCE_CHECK + body


# Take the lease if nobody holds it, and draw a new fencing epoch: one above both the stored epoch and the
# caller's floor (the highest epoch it knows any node used). On a store that lost no write the stored
# epoch is the highest ever drawn and the floor changes nothing; after a failover to a replica that missed
# the last INCRs it is lower than epochs already used, and the floor keeps epochs rising (cluster/election.py).
# KEYS[1] leader, KEYS[2] epoch
# ARGV[1] node id, ARGV[2] lease ms, ARGV[3] floor epoch (optional, default 0)
# return {1, epoch} when acquired, else {0, holder, pttl_ms, epoch}
LEASE_ACQUIRE = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  local epoch = redis.call('INCR', KEYS[2])
  local floor = tonumber(ARGV[3] or '0') or 0
  if epoch <= floor then
    epoch = floor + 1
    redis.call('SET', KEYS[2], string.format('%d', epoch))
  end
  return {1, epoch}
end
return {0, redis.call('GET', KEYS[1]) or '', redis.call('PTTL', KEYS[1]), tonumber(redis.call('GET', KEYS[2]) or '0')}
"""

# Extend the lease, only if the caller still holds it at its epoch.
# KEYS[1] leader, KEYS[2] epoch
# ARGV[1] node id, ARGV[2] epoch, ARGV[3] lease ms
# return 1 renewed, 0 lease lost
LEASE_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] and redis.call('GET', KEYS[2]) == ARGV[2] then
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  return 1
end
return 0
"""

# Give the lease up on a clean shutdown (compare-and-delete).
# KEYS[1] leader, KEYS[2] epoch
# ARGV[1] node id, ARGV[2] epoch
# return 1 released, 0 not held
LEASE_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] and redis.call('GET', KEYS[2]) == ARGV[2] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
"""

# Run a batch of commands as the primary, atomically, behind the fence.
# KEYS[1] leader, KEYS[2] epoch, KEYS[3..] the keys the operations touch
# ARGV[1] node id, ARGV[2] epoch,
# ARGV[3] msgpack list of operations {command, {key positions (1 = KEYS[3])}, {arguments}}
# return a list with each operation's reply; error "FENCED ..." when the fence refuses
FENCED_EXEC = fenced("""
local ops = cmsgpack.unpack(ARGV[3])
local out = {}
for i, op in ipairs(ops) do
  local argv = {op[1]}
  for _, k in ipairs(op[2]) do argv[#argv + 1] = KEYS[k + 2] end
  for _, a in ipairs(op[3]) do argv[#argv + 1] = a end
  out[i] = redis.call(unpack(argv))
end
return out
""")

# Heartbeat one node into the registry, on the Redis clock so node clocks may drift.
# KEYS[1] nodes zset, KEYS[2] this node's record
# ARGV[1] node id, ARGV[2] ttl ms, ARGV[3] msgpack node record
# return Redis time in ms
NODE_HEARTBEAT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('SET', KEYS[2], ARGV[3], 'PX', ARGV[2])
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
return now
"""

# Live nodes: those whose expiry is still ahead on the Redis clock.
# KEYS[1] nodes zset
# return {now_ms, id1, expiry1, id2, expiry2, ...}
NODE_LIVE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], now, '+inf', 'WITHSCORES')
local out = {now}
for i = 1, #ids, 2 do
  out[#out + 1] = ids[i]
  out[#out + 1] = tonumber(ids[i + 1])
end
return out
"""
