"""Lua scripts of the search indexes, one documented constant each (KEYS / ARGV / return).

Every key reaches a script through KEYS, built in Python by `Keyspace.index`. Vectors (bitmaps split
into per-chunk strings) are passed chunk by chunk: vector v, chunk c is KEYS[2 + v * C + c] in SEARCH.
"""

from __future__ import annotations

from ..scripts import fenced

# Give record ids their slots: an id keeps the slot it has, a new id takes the next one. Slots are
# never reused, so a slot allocated for a write that then failed is only a hole.
# KEYS[1] id -> slot hash, KEYS[2] slot counter
# ARGV the record ids
# return {slot1, had1, slot2, had2, ...}; had = 1 when the id already had its slot
SLOT_ALLOCATE = """
local out = {}
for _, id in ipairs(ARGV) do
  local slot = redis.call('HGET', KEYS[1], id)
  if slot then
    out[#out + 1] = tonumber(slot)
    out[#out + 1] = 1
  else
    slot = redis.call('INCR', KEYS[2]) - 1
    redis.call('HSET', KEYS[1], id, slot)
    out[#out + 1] = slot
    out[#out + 1] = 0
  end
end
return out
"""

# Apply index commands (Indexer.index_ops / remove_ops of one or more records) atomically.
# KEYS the keys the commands touch
# ARGV[1] msgpack list of {command, key position (1 = KEYS[1]), arguments...}: one key per command
# return the number of commands applied
APPLY_OPS = """
local ops = cmsgpack.unpack(ARGV[1])
for _, op in ipairs(ops) do
  op[2] = KEYS[op[2]]
  redis.call(unpack(op))
end
return #ops
"""

# Liveness and order of slots, read in one call before taking records out (Indexer.remove_fenced).
# KEYS for each chunk in play: its `all` bitmap, then its `rows` table
# ARGV[1] row width, then per slot: the position of its chunk's `all` key in KEYS, its bit in the chunk
# return {live1, order1, live2, order2, ...}: live 0 or 1, order the first 8 bytes of the slot's row
SLOT_ROWS = """
local w = tonumber(ARGV[1])
local out = {}
for i = 2, #ARGV, 2 do
  local k, bit = tonumber(ARGV[i]), tonumber(ARGV[i + 1])
  out[#out + 1] = redis.call('GETBIT', KEYS[k], bit)
  out[#out + 1] = redis.call('GETRANGE', KEYS[k + 1], bit * w, bit * w + 7)
end
return out
"""

# APPLY_OPS behind the fence: index changes that go with a primary-only write of the records themselves
# (retention deletes a batch of records and their index entries in one step).
# KEYS[1] leader, KEYS[2] epoch, KEYS[3 ..] the keys the commands touch
# ARGV[1] node id, ARGV[2] epoch, ARGV[3] msgpack list of {command, key position (1 = KEYS[3]), arguments...}
# return the number of commands applied; error "FENCED ..." when the fence refuses
FENCED_APPLY_OPS = fenced("""
local ops = cmsgpack.unpack(ARGV[3])
for _, op in ipairs(ops) do
  op[2] = KEYS[op[2] + 2]
  redis.call(unpack(op))
end
return #ops
""")

# Run a compiled search: load sparse sets into temp vectors, run the BITOP program on every chunk,
# count, select the requested page with a bit-sliced top-K over the sort keys, and read its ids.
# Temp vectors are written with replication off and deleted before returning, so a search leaves
# nothing behind and sends nothing to the AOF or to replicas.
# KEYS[1] slot counter, KEYS[2 ..] vector v chunk c at 2 + v * C + c (v from 0), then the sparse sets
# ARGV[1] msgpack plan: c chunks, cw chunk width, w row width, nv vectors, t temp vectors,
#   sp {{set position, vector}}, ops {{op, dst, src...}}, r result vector, rows vector,
#   sk sort keys (each a list of plane vectors, most significant first), sv sorter planes or {},
#   tk six temp vectors for top-K, off, lim, desc
# return {total, id1, id2, ...} (the page in order), or {-1, chunks} when the plan has too few chunks
SEARCH = """
redis.set_repl(redis.REPL_NONE)
local p = cmsgpack.unpack(ARGV[1])
local C, CW, W = p.c, p.cw, p.w
local used = math.ceil(tonumber(redis.call('GET', KEYS[1]) or '0') / CW)
if used > C then return {-1, used} end
local function K(v, c) return KEYS[2 + v * C + c] end

local function drop()
  local batch = {}
  for _, v in ipairs(p.t) do
    for c = 0, C - 1 do
      batch[#batch + 1] = K(v, c)
      if #batch == 500 then redis.call('DEL', unpack(batch)); batch = {} end
    end
  end
  if #batch > 0 then redis.call('DEL', unpack(batch)) end
end

local function bitop(op, c)
  local args = {'BITOP', op[1], K(op[2], c)}
  for i = 3, #op do args[#args + 1] = K(op[i], c) end
  redis.call(unpack(args))
end

local function live(cs, per)
  local out = {}
  for _, c in ipairs(cs) do if per[c] > 0 then out[#out + 1] = c end end
  return out
end

-- slots set in vector v, ascending; string.find skips runs of zero bytes at C speed
local function members(v, cs)
  local out = {}
  for _, c in ipairs(cs) do
    local s = redis.call('GET', K(v, c))
    local i = s and string.find(s, '[^%z]')
    while i do
      local byte = string.byte(s, i)
      for j = 0, 7 do
        if bit.band(byte, bit.rshift(128, j)) ~= 0 then out[#out + 1] = c * CW + (i - 1) * 8 + j end
      end
      i = string.find(s, '[^%z]', i + 1)
    end
  end
  return out
end

local function row(slot)
  local o = (slot % CW) * W
  local r = redis.call('GETRANGE', K(p.rows, math.floor(slot / CW)), o, o + W - 1)
  if #r < W then r = r .. string.rep('\\0', W - #r) end
  return struct.unpack('>d', r), (string.gsub(string.sub(r, 9), '%z+$', ''))
end

-- planes with no key in any chunk (e.g. the high bits of small numbers) hold no 1 bit: skip them
local present = {}
local function exists(v)
  if present[v] == nil then
    local ks = {}
    for c = 0, C - 1 do ks[#ks + 1] = K(v, c) end
    present[v] = redis.call('EXISTS', unpack(ks)) > 0
  end
  return present[v]
end

-- G := the k members of cand that sort first: each plane keeps the preferred bit while more than
-- k - |G| candidates have it, else moves them all to G; exact ties left at the end go by id.
local function top(cand, k, desc, G, E, X, cs)
  for _, c in ipairs(cs) do
    redis.call('DEL', K(G, c))
    bitop({'OR', E, cand}, c)
  end
  local need = k
  for _, key in ipairs(p.sk) do
    for _, plane in ipairs(key) do
      if exists(plane) then
        local per, n = {}, 0
        for _, c in ipairs(cs) do
          bitop({'AND', X, E, plane}, c)
          if not desc then bitop({'XOR', X, E, X}, c) end
          per[c] = redis.call('BITCOUNT', K(X, c))
          n = n + per[c]
        end
        if n > need then
          E, X = X, E
          cs = live(cs, per)
        elseif n > 0 then
          for _, c in ipairs(cs) do
            bitop({'OR', G, G, X}, c)
            bitop({'XOR', E, E, X}, c)
          end
          need = need - n
          if need == 0 then return end
        end
      end
    end
  end
  local tied = {}
  for _, s in ipairs(members(E, cs)) do
    local _, id = row(s)
    tied[#tied + 1] = {s, id}
  end
  table.sort(tied, function(a, b) if desc then return a[2] > b[2] end return a[2] < b[2] end)
  for i = 1, need do
    redis.call('SETBIT', K(G, math.floor(tied[i][1] / CW)), tied[i][1] % CW, 1)
  end
end

drop()
for _, load in ipairs(p.sp) do
  for _, s in ipairs(redis.call('SMEMBERS', KEYS[1 + p.nv * C + load[1]])) do
    local slot = tonumber(s)
    if slot < C * CW then redis.call('SETBIT', K(load[2], math.floor(slot / CW)), slot % CW, 1) end
  end
end
local all, per, total = {}, {}, 0
for c = 0, C - 1 do
  for _, op in ipairs(p.ops) do bitop(op, c) end
  per[c] = redis.call('BITCOUNT', K(p.r, c))
  total = total + per[c]
  all[#all + 1] = c
end
local out = {total}
local want = math.min(p.off + p.lim, total)
if want > p.off then
  local cs, sel = live(all, per), p.r
  if want < total then
    top(sel, want, p.desc, p.tk[1], p.tk[2], p.tk[3], cs)
    sel = p.tk[1]
  end
  if p.off > 0 then
    top(sel, want - p.off, not p.desc, p.tk[4], p.tk[5], p.tk[6], cs)
    sel = p.tk[4]
  end
  local items = {}
  for _, s in ipairs(members(sel, cs)) do
    local order, id = row(s)
    local value, c, o = 0, math.floor(s / CW), s % CW
    for _, plane in ipairs(p.sv) do
      value = value * 2 + (exists(plane) and redis.call('GETBIT', K(plane, c), o) or 0)
    end
    items[#items + 1] = {value, order, id}
  end
  table.sort(items, function(a, b)
    for i = 1, 3 do
      if a[i] ~= b[i] then
        if p.desc then return a[i] > b[i] end
        return a[i] < b[i]
      end
    end
    return false
  end)
  for _, item in ipairs(items) do out[#out + 1] = item[3] end
end
drop()
return out
"""

# Drop the keys of one chunk once none of its slots holds a record: removal only zeroes bits, so
# without this a chunk whose records all expired would keep its strings.
# KEYS[1] the chunk's live-slot bitmap, KEYS[2 ..] every other key of that chunk
# return the number of keys deleted (0 when the chunk is in use or was already dropped)
VACUUM_CHUNK = """
if redis.call('BITCOUNT', KEYS[1]) > 0 then return 0 end
local deleted = 0
for i = 1, #KEYS, 500 do deleted = deleted + redis.call('DEL', unpack(KEYS, i, math.min(i + 499, #KEYS))) end
return deleted
"""
