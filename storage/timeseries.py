"""Monitor time series (the four xyOps systems) and QuickMon samples, in plain Redis keys.

Layout (storage/keyspace.py, "monitoring time series"):

* `timeline:<server>:<system>`: a LIST per server and system, oldest first, one msgpack item per bucket of
  `SYSTEMS[system]` seconds. Gaps are filled with stubs, so the items are contiguous in `epoch_div`: a date
  maps to an index in O(1) (first item + offset), a merge touches only the last item (LSET -1) and
  retention is an LTRIM. Items are stored compactly and read back in exactly xyOps' shape:
    - a sample bucket  `[epoch_div, count, [col, total, col, total, ...], [alert id, ...]?]`
      -> `{date: epoch_div*div, epoch_div, totals: {monitor id: total}, count, alerts?: {alert id: true}}`
    - a gap stub       `[epoch_div]` -> `{epoch_div}` (xyOps' stubs carry no date either)
  Monitor ids are stored as small column numbers (`col`) from `timeline_columns`, one HASH shared by
  every server, append-only: that halves an item (about 15 ids of ~10 bytes each per item otherwise).
* `timelines`: a ZSET server id -> date of its last sample, so maintenance finds every timeline with a
  ZSCAN of one key (never a scan of the keyspace), and knows how old each one is.
* `quickmon:<server>`: a LIST of the last `QUICK_MAX` QuickMon samples `{date, <id>: value}`, oldest
  first, expiring `QUICK_TTL_S` after the last one, so a server that went away leaves nothing.

One Lua script writes a sample into all four systems, so a refusal (a second sample in the same hourly
bucket, or one older than the last bucket) writes nothing at all. A server back after a long gap gets its
stubs from a few more calls of the same script first (`GAP_STUBS` each), so no call holds the store long.
Values are numbers (Lua doubles: integers are exact up to 2**53), stored as msgpack ints where integral,
else float32 when exact, else float64.

Retention is per system and by age: maintenance keeps the items of the last `retention / div` buckets up
to the current time (xyOps keeps that many rows, whatever their age; for a server still reporting that is
the same, and a server that stopped ages out instead of keeping its last rows for ever).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import msgpack

from . import codec
from .connection import Database
from .fence import Fence
from .scripts import fenced
from .servers import valid_server_id

Item = dict[str, Any]

# Bucket seconds of each system (xyOps lib/monitor.js `systems`); the hourly one takes one sample per bucket.
SYSTEMS: dict[str, int] = {"hourly": 60, "daily": 120, "monthly": 3600, "yearly": 43200}
SINGLE_ONLY = "hourly"
DAY_S = 86400
# ⚠ xyOps keeps 10 years of every system (5.26 M minute rows per server); these are ours.
DEFAULT_RETENTION_S: dict[str, int] = {
    "hourly": 7 * DAY_S,
    "daily": 90 * DAY_S,
    "monthly": 1826 * DAY_S,  # 5 years
    "yearly": 3652 * DAY_S,  # 10 years
}
MAX_ROWS = 50_000  # the most items one read returns (a month of the daily system is 22,320)
MAX_TOTALS = 500  # monitors in one sample
MAX_ALERTS = 100  # alert ids flagged on one item
MAX_ID = 128  # length of a monitor or alert id
GAP_STUBS = 5000  # gap stubs one script call writes (a few ms of the store's time); a longer gap takes more calls

QUICK_MAX = 60  # QuickMon samples kept per server (xyOps `quick_max`)
QUICK_TTL_S = 300  # a server's samples go this long after its last one
QUICK_STEP_S = 1.0  # a sample dated exactly at the last one is moved this much later (xyOps: `stub.date++`)
QUICK_BATCH = 2000  # samples per script call (a larger batch takes several)
QUICK_FIELDS = 64  # keys of one sample
QUICK_SAMPLE_BYTES = 4096  # one packed sample

# Write one sample into every system, or nothing.
# KEYS[1] timelines zset, KEYS[2] columns hash, KEYS[3..] one list per system
# ARGV[1] server id, ARGV[2] date (epoch s), ARGV[3] msgpack {monitor id, value, ...},
# ARGV[4] msgpack {alert id, ...}, ARGV[5] msgpack {{div, kept buckets, single only 0|1}, ...} (KEYS order),
# ARGV[6] most gap stubs one call writes
# return 1 written; 0 refused, a sample is already in a single-only bucket; -1 refused, older than a last bucket;
# 2 more gap stubs written first, call again (the sample itself is not written yet)
# Same bucket: totals summed, count + 1, alerts merged. Newer: gap stubs, then the item; a gap of `kept`
# buckets or more would leave nothing of the old list after trimming, so the list starts afresh instead.
# A long gap is filled over several calls, so no call blocks the store for long; stubs written before a refusal
# or a crash are harmless (a stub is what the gap holds anyway, and a later sample in its bucket replaces it).
TIMELINE_ADD = """
local date = tonumber(ARGV[2])
local specs = cmsgpack.unpack(ARGV[5])
local lasts = {}
local gaps = {}
local budget = tonumber(ARGV[6])
local total = 0
for i, spec in ipairs(specs) do
  local bucket = math.floor(date / spec[1])
  local raw = redis.call('LINDEX', KEYS[i + 2], -1)
  lasts[i] = false
  gaps[i] = 0
  if raw then
    local last = cmsgpack.unpack(raw)
    if last[1] > bucket then return -1 end
    if last[1] == bucket and spec[3] == 1 and #last > 1 then return 0 end
    lasts[i] = last
    if bucket - last[1] < spec[2] then gaps[i] = bucket - last[1] - 1 end
  end
  total = total + gaps[i]
end
local function stubs(key, from, count)
  local n = from
  while n < from + count do
    local chunk = {}
    while n < from + count and #chunk < 1000 do
      chunk[#chunk + 1] = cmsgpack.pack({n})
      n = n + 1
    end
    redis.call('RPUSH', key, unpack(chunk))
  end
end
if total > budget then
  for i, gap in ipairs(gaps) do
    local count = math.min(gap, budget)
    if count > 0 then
      stubs(KEYS[i + 2], lasts[i][1] + 1, count)
      budget = budget - count
    end
  end
  return 2
end
local given = cmsgpack.unpack(ARGV[3])
local cols = {}
for j = 1, #given, 2 do
  local col = redis.call('HGET', KEYS[2], given[j])
  if not col then
    col = redis.call('HLEN', KEYS[2])
    redis.call('HSET', KEYS[2], given[j], col)
  end
  cols[#cols + 1] = tonumber(col)
  cols[#cols + 1] = given[j + 1]
end
local alerts = cmsgpack.unpack(ARGV[4])
local function merge_alerts(item)
  if #alerts == 0 then return end
  local have = item[4] or {}
  local seen = {}
  for _, a in ipairs(have) do seen[a] = true end
  for _, a in ipairs(alerts) do
    if not seen[a] and #have < 100 then have[#have + 1] = a; seen[a] = true end
  end
  item[4] = have
end
for i, spec in ipairs(specs) do
  local key, div, kept = KEYS[i + 2], spec[1], spec[2]
  local bucket = math.floor(date / div)
  local last = lasts[i]
  if last and last[1] == bucket then
    local totals = last[3] or {}
    local at = {}
    for j = 1, #totals, 2 do at[totals[j]] = j + 1 end
    for j = 1, #cols, 2 do
      local p = at[cols[j]]
      if p then
        totals[p] = totals[p] + cols[j + 1]
      else
        totals[#totals + 1] = cols[j]
        totals[#totals + 1] = cols[j + 1]
      end
    end
    last[2] = (last[2] or 0) + 1
    last[3] = totals
    merge_alerts(last)
    redis.call('LSET', key, -1, cmsgpack.pack(last))
  else
    if last and bucket - last[1] >= kept then
      redis.call('DEL', key)
    elseif gaps[i] > 0 then
      stubs(key, last[1] + 1, gaps[i])
    end
    local item = {bucket, 1, cols}
    merge_alerts(item)
    redis.call('RPUSH', key, cmsgpack.pack(item))
  end
end
redis.call('ZADD', KEYS[1], date, ARGV[1])
return 1
"""

# Flag alerts on the item covering a date in each system (an alert that fired after the sample was written).
# KEYS[1..] one list per system; ARGV[1] date, ARGV[2] msgpack {div, ...} (KEYS order), ARGV[3] msgpack {id, ...}
# return the number of items flagged (a bucket with no sample, a stub, is left alone)
TIMELINE_FLAG = """
local date = tonumber(ARGV[1])
local divs = cmsgpack.unpack(ARGV[2])
local ids = cmsgpack.unpack(ARGV[3])
local flagged = 0
for i, div in ipairs(divs) do
  local bucket = math.floor(date / div)
  local raw = redis.call('LINDEX', KEYS[i], -1)
  if raw then
    local back = cmsgpack.unpack(raw)[1] - bucket
    if back >= 0 then
      raw = redis.call('LINDEX', KEYS[i], -1 - back)
      local item = raw and cmsgpack.unpack(raw)
      if item and item[1] == bucket and #item > 1 then
        local have = item[4] or {}
        local seen = {}
        for _, a in ipairs(have) do seen[a] = true end
        for _, a in ipairs(ids) do
          if not seen[a] and #have < 100 then have[#have + 1] = a; seen[a] = true end
        end
        item[4] = have
        redis.call('LSET', KEYS[i], -1 - back, cmsgpack.pack(item))
        flagged = flagged + 1
      end
    end
  end
end
return flagged
"""

# Items from a date on: xyOps' offset `floor(date / div) - first.epoch_div`, a negative one shrinking the limit.
# KEYS[1] list, KEYS[2] columns hash; ARGV[1] bucket, ARGV[2] limit
# return {columns hash flat, {raw item, ...}}
TIMELINE_FROM = """
local cols = redis.call('HGETALL', KEYS[2])
local first = redis.call('LINDEX', KEYS[1], 0)
if not first then return {cols, {}} end
local offset = tonumber(ARGV[1]) - cmsgpack.unpack(first)[1]
local limit = tonumber(ARGV[2])
if offset < 0 then
  limit = limit + offset
  offset = 0
end
if limit <= 0 then return {cols, {}} end
return {cols, redis.call('LRANGE', KEYS[1], offset, offset + limit - 1)}
"""

# Trim timelines to their retention, by age, behind the fence (maintenance on the primary).
# KEYS[1] leader, KEYS[2] epoch, KEYS[3] timelines zset, KEYS[4..] the lists, one per system for each server
# ARGV[1] node id, ARGV[2] epoch, ARGV[3] now (epoch s), ARGV[4] msgpack {{div, kept buckets}, ...},
# ARGV[5..] server ids (server n owns KEYS[4 + (n-1)*#systems ..])
# return the number of items removed. A list keeps the items of the last `kept` buckets up to now; a server
# with nothing left leaves the zset. One not in the zset (deleted meanwhile) is skipped.
TIMELINE_TRIM = fenced("""
local now = tonumber(ARGV[3])
local specs = cmsgpack.unpack(ARGV[4])
local removed = 0
for s = 5, #ARGV do
  local base = 3 + (s - 5) * #specs
  local last = redis.call('ZSCORE', KEYS[3], ARGV[s])
  if last then
    last = tonumber(last)
    local left = 0
    for i, spec in ipairs(specs) do
      local key = KEYS[base + i]
      local len = redis.call('LLEN', key)
      local keep = spec[2] - (math.floor(now / spec[1]) - math.floor(last / spec[1]))
      if keep > spec[2] then keep = spec[2] end
      if keep < 0 then keep = 0 end
      if len > keep then
        if keep == 0 then redis.call('DEL', key) else redis.call('LTRIM', key, -keep, -1) end
        removed = removed + len - keep
        len = keep
      end
      left = left + len
    end
    if left == 0 then redis.call('ZREM', KEYS[3], ARGV[s]) end
  end
end
return removed
""")

# Append QuickMon samples, dates strictly increasing per server, keeping the last few, with an expiry.
# KEYS[n] the list of sample n; ARGV[1] kept, ARGV[2] ttl s, ARGV[3] step s,
# ARGV[2n + 2] date of sample n, ARGV[2n + 3] msgpack sample n (a map with `date`)
# return the number of samples kept. As xyOps: a sample dated exactly at the last one is moved `step` later,
# an older one is dropped (a stored date is never more than `step` ahead of its sample's own).
QUICKMON_ADD = """
local kept, ttl, step = tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3])
local added = 0
for n = 1, #KEYS do
  local key = KEYS[n]
  local date = tonumber(ARGV[2 * n + 2])
  local raw = ARGV[2 * n + 3]
  local last = redis.call('LINDEX', key, -1)
  if last then
    local prev = tonumber(cmsgpack.unpack(last)['date']) or 0
    if date == prev then
      local sample = cmsgpack.unpack(raw)
      sample['date'] = prev + step
      raw = cmsgpack.pack(sample)
    elseif date < prev then
      raw = false
    end
  end
  if raw then
    redis.call('RPUSH', key, raw)
    redis.call('LTRIM', key, -kept, -1)
    redis.call('EXPIRE', key, ttl)
    added = added + 1
  end
end
return added
"""


def _system(system: str) -> int:
    div = SYSTEMS.get(system)
    if div is None:
        raise ValueError(f"sys: unknown system {system!r} (use {', '.join(SYSTEMS)})")
    return div


def _server(server: Any) -> str:
    if not valid_server_id(server):
        raise ValueError(f"server: invalid server id {str(server)[:40]!r}")
    return str(server)


def _date(date: Any) -> float:
    if isinstance(date, bool) or not isinstance(date, int | float) or not math.isfinite(date) or date < 0:
        raise ValueError(f"date: must be a positive number of seconds (got {date!r})")
    return float(date)


def _limit(limit: Any) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or limit > MAX_ROWS:
        raise ValueError(f"limit: must be an integer up to {MAX_ROWS} (got {limit!r})")
    return limit


def _ids(ids: Iterable[Any], what: str, most: int) -> list[str]:
    out: list[Any] = list(dict.fromkeys(ids))
    if len(out) > most:
        raise ValueError(f"{what}: at most {most} ids (got {len(out)})")
    for one in out:
        if not isinstance(one, str) or not 0 < len(one) <= MAX_ID:
            raise ValueError(f"{what}: ids are strings of 1 to {MAX_ID} characters (got {str(one)[:40]!r})")
    return out


def _number(value: Any, what: str) -> int | float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{what}: must be a finite number (got {str(value)[:40]!r})")
    return value


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _columns(flat: Sequence[Any]) -> dict[int, str]:
    """Column number -> monitor id, from HGETALL's flat reply (or redis-py's dict of it)."""
    pairs = flat.items() if isinstance(flat, dict) else zip(flat[::2], flat[1::2], strict=True)
    return {int(num): _text(mid) for mid, num in pairs}


def decode_item(raw: bytes, div: int, columns: Mapping[int, str]) -> Item:
    """One stored item in xyOps' shape (a column no longer in `columns` is left out)."""
    packed = msgpack.unpackb(raw, use_list=False)  # tuples: cheaper, and slices alike (reads of 720 items)
    bucket = int(packed[0])
    if len(packed) == 1:
        return {"epoch_div": bucket}
    flat = packed[2]
    try:
        totals = dict(zip(map(columns.__getitem__, flat[::2]), flat[1::2], strict=True))
    except KeyError:
        totals = {columns[c]: v for c, v in zip(flat[::2], flat[1::2], strict=True) if c in columns}
    item: Item = {"date": bucket * div, "epoch_div": bucket, "totals": totals, "count": packed[1]}
    if len(packed) > 3 and packed[3]:
        item["alerts"] = {_text(a): True for a in packed[3]}
    return item


class TimelineStore:
    """Per-server monitor time series in the four xyOps systems, with per-system retention in seconds."""

    def __init__(self, db: Database, retention_s: Mapping[str, int] = DEFAULT_RETENTION_S) -> None:
        unknown = set(retention_s) ^ set(SYSTEMS)
        if unknown:
            raise ValueError(f"retention: give exactly the systems {', '.join(SYSTEMS)} (not {sorted(unknown)})")
        self.db = db
        self.retention_s = dict(retention_s)
        # Buckets each system keeps (at least one: the current bucket).
        self.kept = {sys: max(int(self.retention_s[sys] // div), 1) for sys, div in SYSTEMS.items()}

    def _keys(self, server: str) -> list[str]:
        return [self.db.keys.timeline(server, sys) for sys in SYSTEMS]

    async def add(
        self, server: str, date: float, totals: Mapping[str, float], alerts: Iterable[str] = ()
    ) -> bool:
        """Write one sample (monitor id -> value) dated `date` into every system; `alerts`: ids that fired with
        it. False, and nothing written, when the hourly bucket already has a sample (a resent or duplicated
        minute) or the sample is older than the last one."""
        server, date = _server(server), _date(date)
        ids = _ids(totals, "totals", MAX_TOTALS)
        flat: list[Any] = []
        for mid in ids:
            flat += [mid, _number(totals[mid], f"totals.{mid}")]
        specs = [[div, self.kept[sys], int(sys == SINGLE_ONLY)] for sys, div in SYSTEMS.items()]
        k = self.db.keys
        keys = [k.timelines, k.timeline_columns, *self._keys(server)]
        args = [server, repr(date), codec.pack_for_lua(flat), codec.pack_for_lua(_ids(alerts, "alerts", MAX_ALERTS)),
                codec.pack_for_lua(specs), GAP_STUBS]  # fmt: skip
        for _ in range(sum(self.kept.values()) // GAP_STUBS + 2):  # each call writes stubs or finishes
            written = int(await self.db.script(TIMELINE_ADD)(keys=keys, args=args))
            if written != 2:
                return written == 1
        raise RuntimeError(f"timeline of {server}: the gap was not filled")  # the store changed under us

    async def flag_alerts(self, server: str, date: float, alert_ids: Iterable[str]) -> None:
        """Set alerts[id] = true on the item covering `date` in each system (where that bucket has a sample)."""
        ids = _ids(alert_ids, "alerts", MAX_ALERTS)
        if not ids:
            return
        await self.db.script(TIMELINE_FLAG)(
            keys=self._keys(_server(server)),
            args=[repr(_date(date)), codec.pack_for_lua(list(SYSTEMS.values())), codec.pack_for_lua(ids)],
        )

    async def latest(self, server: str, system: str, limit: int) -> list[Item]:
        """The last `limit` items, oldest first."""
        div, limit = _system(system), _limit(limit)
        if limit <= 0:
            return []
        async with self.db.client.pipeline(transaction=False) as pipe:
            pipe.hgetall(self.db.keys.timeline_columns)  # type: ignore[unused-awaitable]  # queued
            pipe.lrange(self.db.keys.timeline(_server(server), system), -limit, -1)  # type: ignore[unused-awaitable]
            flat, raws = await pipe.execute()
        columns = _columns(flat)
        return [decode_item(raw, div, columns) for raw in raws]

    async def historical(self, server: str, system: str, date: float, limit: int) -> list[Item]:
        """Up to `limit` items from the bucket of `date` on. ⚠ xyOps adds the negative offset to `limit` as a
        string when the query string carried it; here it is arithmetic."""
        div, limit = _system(system), _limit(limit)
        if limit <= 0:
            return []
        bucket = math.floor(_date(date) / div)
        k = self.db.keys
        flat, raws = await self.db.script(TIMELINE_FROM)(
            keys=[k.timeline(_server(server), system), k.timeline_columns], args=[bucket, limit]
        )
        columns = _columns(flat)
        return [decode_item(raw, div, columns) for raw in raws]

    async def servers(self, cursor: int = 0, count: int = 100) -> tuple[int, list[str]]:
        """One ZSCAN page of the servers that have timelines: (next cursor, 0 when done; ids). Every server
        there for the whole scan is returned at least once."""
        cursor, found = await self.db.client.zscan(self.db.keys.timelines, cursor, count=count)
        return int(cursor), [_text(member) for member, _ in found]

    async def trim(self, servers: Iterable[str], *, fence: Fence, now: float | None = None) -> int:
        """Cut each server's lists to the buckets of their retention up to `now`, in one fenced script;
        returns the items removed. Callers pass a bounded batch (maintenance: a few dozen servers)."""
        ids = [s for s in dict.fromkeys(servers) if valid_server_id(s)]
        if not ids:
            return 0
        keys = [key for server in ids for key in self._keys(server)]
        specs = [[div, self.kept[sys]] for sys, div in SYSTEMS.items()]
        at = time.time() if now is None else _date(now)
        removed = await fence.run(
            TIMELINE_TRIM, [self.db.keys.timelines, *keys], [repr(at), codec.pack_for_lua(specs), *ids]
        )
        return int(removed)

    async def delete(self, server: str) -> None:
        """Every timeline of a server (delete_server with history)."""
        server = _server(server)
        async with self.db.client.pipeline(transaction=True) as pipe:
            pipe.delete(*self._keys(server))  # type: ignore[unused-awaitable]  # queued
            pipe.zrem(self.db.keys.timelines, server)  # type: ignore[unused-awaitable]
            await pipe.execute()


class QuickmonStore:
    """The last `QUICK_MAX` QuickMon samples of each server, readable from every node."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def add_many(self, samples: Sequence[tuple[str, Mapping[str, Any]]]) -> int:
        """Append samples (server, {"date": epoch s, "<quickmon id>": value, ...}) in one script call per
        `QUICK_BATCH`; returns how many were kept (see QUICKMON_ADD for the order rule)."""
        keys: list[str] = []
        args: list[Any] = []
        for server, sample in samples:
            date = _date(sample.get("date"))
            if len(sample) > QUICK_FIELDS:
                raise ValueError(f"quickmon: at most {QUICK_FIELDS} fields in a sample (got {len(sample)})")
            packed = codec.pack_for_lua(dict(sample))
            if len(packed) > QUICK_SAMPLE_BYTES:
                raise ValueError(f"quickmon: a sample packs to at most {QUICK_SAMPLE_BYTES} bytes")
            keys.append(self.db.keys.quickmon(_server(server)))
            args += [repr(date), packed]
        kept = 0
        for at in range(0, len(keys), QUICK_BATCH):
            kept += int(await self.db.script(QUICKMON_ADD)(
                keys=keys[at : at + QUICK_BATCH],
                args=[QUICK_MAX, QUICK_TTL_S, repr(QUICK_STEP_S), *args[2 * at : 2 * (at + QUICK_BATCH)]],
            ))  # fmt: skip
        return kept

    async def get(self, servers: Sequence[str]) -> dict[str, list[dict[str, Any]]]:
        """Each server's samples, oldest first ([] for one with none), in one round trip."""
        ids = list(dict.fromkeys(_server(s) for s in servers))
        if not ids:
            return {}
        async with self.db.client.pipeline(transaction=False) as pipe:
            for server in ids:
                pipe.lrange(self.db.keys.quickmon(server), 0, -1)  # type: ignore[unused-awaitable]  # queued
            lists = await pipe.execute()
        return {server: [codec.unpack(raw) for raw in raws] for server, raws in zip(ids, lists, strict=True)}

    async def delete(self, server: str) -> None:
        await self.db.client.delete(self.db.keys.quickmon(_server(server)))
