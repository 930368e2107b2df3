"""Per-API-key request rate, counted in Redis so the limit holds for the whole cluster."""

from __future__ import annotations

from .connection import Database

# Count one request in the current second of the Redis clock (one clock for every node).
# KEYS[1] rate hash of one key
# ARGV none
# return the number of requests counted in this second, this one included
RATE_HIT = """
local sec = redis.call('TIME')[1]
if redis.call('HGET', KEYS[1], 'sec') ~= sec then
  redis.call('HSET', KEYS[1], 'sec', sec, 'count', 0)
end
local n = redis.call('HINCRBY', KEYS[1], 'count', 1)
redis.call('PEXPIRE', KEYS[1], 2000)
return n
"""


class RateLimiter:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def hit(self, key_id: str) -> int:
        """Count a request; returns this second's count so far."""
        return int(await self.db.script(RATE_HIT)(keys=[self.db.keys.rate(key_id)]))
