"""Servers (agents): their records, who is online, which socket holds each, and the `servers` search index.

- A record (msgpack, xyOps server fields) lives at `server(id)` and is kept after the agent disconnects.
- Online is `servers_online`, a ZSET id -> expiry (ms on the Redis clock, so node clocks may drift), renewed
  by the node holding the agent's socket; `servers_owner` names that socket ("<node id>|<conn id>"). A newer
  join always takes the owner over, and renewals and leaves only act while the owner still matches, so a node
  that lost a server to a newer socket (the agent reconnected elsewhere) learns it at its next renew.
- The index is kept exactly in step with the record: every re-index reads the record and `server_indexed(id)`
  (what the index holds now) under WATCH and writes the index commands and the new view in one MULTI. Writers
  on several nodes (joins through any gateway, updates on the primary) therefore never leave stale entries:
  whichever re-index commits last indexes the record as it then is.
- Enrolment grants of `get_satellite_token` live under the sha256 of their token, expiring with it.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from redis.exceptions import WatchError

from . import codec
from .connection import Database
from .pages import fetch_page
from .search.index import Column, Indexer, IndexSpec
from .search.query import parse, restrict

Record = dict[str, Any]
SERVER_ID = re.compile(r"^[a-z0-9_]{1,32}$")  # xyOps: ^[a-z0-9_]+$; the index row reserves 32 bytes
MGET_BATCH = 200
WATCH_RETRIES = 20

# Facet columns (`get_server_summaries`, search): column -> path in the record. Values are indexed in
# xyOps' `alphanum` form (lower case, runs of other characters -> "_"), so a summary key is a search value.
FACETS: dict[str, tuple[str, ...]] = {
    "os_platform": ("info", "os", "platform"),
    "os_distro": ("info", "os", "distro"),
    "os_release": ("info", "os", "release"),
    "os_arch": ("info", "os", "arch"),
    "cpu_virt": ("info", "virt", "vendor"),
    "cpu_brand": ("info", "cpu", "combo"),
    "cpu_cores": ("info", "cpu", "cores"),
}
_NOT_ALNUM = re.compile(r"[^a-z0-9]+")
FACET_LEN = 64

SERVERS_INDEX = IndexSpec(
    name="servers",
    columns=(
        Column("id", "word", sparse=True),
        Column("hostname", "word", sparse=True),
        Column("ip", "word", sparse=True),
        Column("groups", "word"),
        Column("autoGroup", "word"),
        Column("created", "date"),
        Column("modified", "date"),
        Column("keywords", "text"),
        *(Column(name, "word") for name in FACETS),
    ),
    default_column="keywords",
    sorters=("created", "modified"),
)

# Store a server's record and mark it online, owned by the socket that joined (a newer join always wins);
# expired online entries are trimmed on the way.
# KEYS[1] record, KEYS[2] online zset, KEYS[3] owner hash
# ARGV[1] server id, ARGV[2] msgpack record, ARGV[3] owner, ARGV[4] ttl ms
# return the Redis time in ms
SERVER_JOIN = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('SET', KEYS[1], ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. now)
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[4]), ARGV[1])
redis.call('HSET', KEYS[3], ARGV[1], ARGV[3])
return now
"""

# Renew the liveness of servers whose sockets a node holds, where it still owns them.
# KEYS[1] online zset, KEYS[2] owner hash
# ARGV[1] ttl ms, ARGV[2..] pairs of server id, owner
# return the ids whose owner is no longer the one given (nothing renewed for those)
SERVER_TOUCH = """
local t = redis.call('TIME')
local expiry = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + tonumber(ARGV[1])
local lost = {}
for i = 2, #ARGV, 2 do
  if redis.call('HGET', KEYS[2], ARGV[i]) == ARGV[i + 1] then
    redis.call('ZADD', KEYS[1], expiry, ARGV[i])
  else
    lost[#lost + 1] = ARGV[i]
  end
end
return lost
"""

# A socket closed: the server goes offline, unless a newer socket owns it by now.
# KEYS[1] online zset, KEYS[2] owner hash
# ARGV[1] server id, ARGV[2] owner
# return 1 left, 0 not the owner (nothing changed)
SERVER_LEAVE = """
if redis.call('HGET', KEYS[2], ARGV[1]) ~= ARGV[2] then return 0 end
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
return 1
"""

# Ids of the servers online now, earliest expiry first.
# KEYS[1] online zset
# return {id, ...}
SERVERS_ONLINE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
return redis.call('ZRANGEBYSCORE', KEYS[1], now, '+inf')
"""

# Is one server online now?
# KEYS[1] online zset; ARGV[1] server id
# return 1 online, 0 not
SERVER_IS_ONLINE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local expiry = redis.call('ZSCORE', KEYS[1], ARGV[1])
if expiry and tonumber(expiry) >= now then return 1 end
return 0
"""

# Trim online entries whose expiry has passed.
# KEYS[1] online zset
# return how many were removed
SERVERS_PRUNE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
return redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. now)
"""


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _record(raw: Any) -> Record | None:
    if raw is None:
        return None
    return dict(codec.unpack(raw if isinstance(raw, bytes) else str(raw).encode()))


def valid_server_id(server_id: Any) -> bool:
    return isinstance(server_id, str) and bool(SERVER_ID.fullmatch(server_id))


def _check_id(server_id: str) -> str:
    if not valid_server_id(server_id):
        raise ValueError(f"invalid server id {server_id!r} (1-32 of a-z 0-9 _)")
    return server_id


def _path(record: Mapping[str, Any], path: Sequence[str]) -> Any:
    found: Any = record
    for step in path:
        if not isinstance(found, Mapping):
            return None
        found = found.get(step)
    return found


def facet_value(value: Any) -> str:
    """A facet in xyOps' `alphanum` index form: "Ubuntu 22.04" -> "ubuntu_22_04"; "" when there is none."""
    if value is None or isinstance(value, dict | list):
        return ""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return _NOT_ALNUM.sub("_", str(value)[: FACET_LEN * 4].lower()).strip("_")[:FACET_LEN]


def facets(record: Mapping[str, Any]) -> dict[str, str]:
    """Every facet column of a record (empty when the agent did not report it)."""
    return {name: facet_value(_path(record, path)) for name, path in FACETS.items()}


def index_fields(record: Mapping[str, Any]) -> Record:
    """The searchable view of a server record."""
    return {
        "id": record.get("id", ""),
        "hostname": record.get("hostname", ""),
        "ip": record.get("ip", ""),
        "groups": list(record.get("groups") or []),
        "autoGroup": bool(record.get("autoGroup")),
        "created": record.get("created", 0),
        "modified": record.get("modified", 0),
        "keywords": record.get("keywords", ""),
        **facets(record),
    }


def _token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class ServerStore:
    """Server records, the online set with its socket owners, the `servers` index, and enrolment grants."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.index = Indexer(db, SERVERS_INDEX)

    # -- reads --------------------------------------------------------------------------
    async def get(self, server_id: str) -> Record | None:
        if not valid_server_id(server_id):
            return None
        return _record(await self.db.client.get(self.db.keys.server(server_id)))

    async def get_many(self, ids: Sequence[str]) -> list[Record | None]:
        out: list[Record | None] = [None] * len(ids)
        wanted = [(i, sid) for i, sid in enumerate(ids) if valid_server_id(sid)]
        for start in range(0, len(wanted), MGET_BATCH):
            part = wanted[start : start + MGET_BATCH]
            raws = await self.db.client.mget([self.db.keys.server(sid) for _, sid in part])
            for (i, _), raw in zip(part, raws, strict=True):
                out[i] = _record(raw)
        return out

    async def online_ids(self) -> list[str]:
        reply = await self.db.script(SERVERS_ONLINE)(keys=[self.db.keys.servers_online], args=[])
        return [_text(i) for i in reply]

    async def online(self) -> dict[str, Record]:
        """Records of the servers online now, in join order (earliest first). A server whose record was just
        deleted (delete_server while its socket is still open) is left out."""
        ids = await self.online_ids()
        found = [(sid, rec) for sid, rec in zip(ids, await self.get_many(ids), strict=True) if rec is not None]
        found.sort(key=lambda item: (float(item[1].get("joined") or 0), item[0]))
        return dict(found)

    async def is_online(self, server_id: str) -> bool:
        reply = await self.db.script(SERVER_IS_ONLINE)(keys=[self.db.keys.servers_online], args=[server_id])
        return int(reply) == 1

    async def owner(self, server_id: str) -> str | None:
        raw = await self.db.client.hget(self.db.keys.servers_owner, server_id)
        return None if raw is None else _text(raw)

    async def search(
        self, query: str, offset: int = 0, limit: int = 1, sort_by: str = "_id", sort_dir: int = -1,
        *, also: Sequence[str] = (),
    ) -> tuple[list[Record], int]:  # fmt: skip
        """Server records matching `query` and every query in `also` (each parsed on its own, then ANDed);
        QueryError for a bad query."""
        parsed = restrict(parse(query, SERVERS_INDEX), *(parse(q, SERVERS_INDEX) for q in also))
        found = await self.index.search(parsed, offset=offset, limit=limit, sort_by=sort_by, sort_dir=sort_dir)
        rows = await fetch_page(self.db, [self.db.keys.server(i) for i in found.ids])
        return [r for r in rows if r is not None], found.total

    # -- liveness -------------------------------------------------------------------------
    async def join(self, record: Record, owner: str, ttl_ms: int) -> None:
        """Store the record of an agent that joined (built by cluster.servers.merge_join), mark it online for
        `ttl_ms`, owned by `owner` ("<node id>|<conn id>"; a newer join always wins), and index it."""
        server_id = _check_id(str(record.get("id", "")))
        record["joined"] = round(time.time(), 3)  # join order of `online()`
        k = self.db.keys
        await self.db.script(SERVER_JOIN)(
            keys=[k.server(server_id), k.servers_online, k.servers_owner],
            args=[server_id, codec.pack(record), owner, int(ttl_ms)],
        )
        await self.reindex(server_id)

    async def touch(self, ids_to_owner: Mapping[str, str], ttl_ms: int) -> list[str]:
        """Renew the servers a node holds sockets for, only where it still owns them; returns the ids it no
        longer owns (a newer socket took over, or the server was deleted), whose sockets the caller closes."""
        if not ids_to_owner:
            return []
        args: list[Any] = [int(ttl_ms)]
        for server_id, owner in ids_to_owner.items():
            args += [server_id, owner]
        k = self.db.keys
        reply = await self.db.script(SERVER_TOUCH)(keys=[k.servers_online, k.servers_owner], args=args)
        return [_text(i) for i in reply]

    async def leave(self, server_id: str, owner: str) -> bool:
        """The socket `owner` closed: offline now, unless a newer socket owns the server. True if it left."""
        k = self.db.keys
        reply = await self.db.script(SERVER_LEAVE)(keys=[k.servers_online, k.servers_owner], args=[server_id, owner])
        return int(reply) == 1

    async def prune(self) -> int:
        """Trim expired online entries (reads already ignore them); returns how many went."""
        return int(await self.db.script(SERVERS_PRUNE)(keys=[self.db.keys.servers_online], args=[]))

    # -- writes ------------------------------------------------------------------------------
    async def save(self, record: Record) -> None:
        """Store a whole record (it need not be online) and re-index it."""
        server_id = _check_id(str(record.get("id", "")))
        await self.db.client.set(self.db.keys.server(server_id), codec.pack(record))
        await self.reindex(server_id)

    async def modify(
        self, server_id: str, change: Callable[[Record], Awaitable[Record | None]], *, reindex: bool = True
    ) -> Record | None:
        """Read-modify-write one record under WATCH (a join or another update meanwhile makes it start
        over with the fresh record). `change` returns the new record, or None to write nothing; None is also
        the answer when there is no such server. Re-indexes after, unless `reindex` is False (a change to no
        indexed field: the monitoring figures in `info`)."""
        if not valid_server_id(server_id):
            return None
        key = self.db.keys.server(server_id)
        for _ in range(WATCH_RETRIES):
            async with self.db.client.pipeline(transaction=True) as pipe:
                try:
                    await pipe.watch(key)
                    current = _record(await pipe.get(key))
                    if current is None:
                        return None
                    updated = await change(current)
                    if updated is None:
                        return current
                    pipe.multi()  # type: ignore[no-untyped-call]
                    pipe.set(key, codec.pack(updated))  # type: ignore[unused-awaitable]  # queued
                    await pipe.execute()
                except WatchError:
                    continue
            if reindex:
                await self.reindex(server_id)
            return updated
        raise WatchError(f"server {server_id} kept changing during an update")

    async def delete(self, server_id: str, *, keep_online: bool = False) -> bool:
        """Remove a server's record and index entries, and (unless `keep_online`: its socket is still open and
        has an `uninstall` to deliver) its online entry and owner. False if there was no record."""
        if not valid_server_id(server_id):
            return False
        k = self.db.keys
        async with self.db.client.pipeline(transaction=True) as pipe:
            pipe.delete(k.server(server_id))  # type: ignore[unused-awaitable]  # queued
            if not keep_online:
                pipe.zrem(k.servers_online, server_id)  # type: ignore[unused-awaitable]
                pipe.hdel(k.servers_owner, server_id)  # type: ignore[unused-awaitable]
            gone = (await pipe.execute())[0]
        await self.reindex(server_id)
        return int(gone) == 1

    async def reindex(self, server_id: str) -> None:
        """Bring the index entries of one server in line with its record as it is now (none if it is gone)."""
        k = self.db.keys
        rec_key, view_key = k.server(server_id), k.server_indexed(server_id)
        for _ in range(WATCH_RETRIES):
            async with self.db.client.pipeline(transaction=True) as pipe:
                try:
                    await pipe.watch(rec_key, view_key)
                    record = _record(await pipe.get(rec_key))
                    view = _record(await pipe.get(view_key))
                    if record is None and view is None:
                        return
                    if view is None:
                        assert record is not None
                        ((slot, _),) = await self.index.allocate([server_id])
                        order = float(record.get("created") or time.time()) * 1000
                        ops = self.index.index_ops(server_id, index_fields(record), slot=slot, order=order)
                    elif record is None:
                        slot, order = int(view["s"]), float(view["o"])
                        ops = self.index.remove_ops(server_id, view["f"], slot=slot, order=order)
                    else:
                        slot, order = int(view["s"]), float(view["o"])
                        ops = self.index.index_ops(server_id, index_fields(record), slot=slot, order=order,
                                                   old=view["f"])  # fmt: skip
                    pipe.multi()  # type: ignore[no-untyped-call]
                    for command, keys, args in ops:
                        pipe.execute_command(command, *keys, *args)
                    if record is None:
                        pipe.delete(view_key)  # type: ignore[unused-awaitable]
                    else:
                        view = {"s": slot, "o": order, "f": index_fields(record)}
                        pipe.set(view_key, codec.pack(view))  # type: ignore[unused-awaitable]
                    await pipe.execute()
                    return
                except WatchError:
                    continue
        raise WatchError(f"server {server_id} kept changing while it was indexed")

    # -- enrolment grants ---------------------------------------------------------------------
    async def grant_enrolment(self, token: str, grant: Record, ttl_s: int) -> None:
        """Keep what `get_satellite_token` granted (initial params) under the hash of its token, for `ttl_s`."""
        await self.db.client.set(self.db.keys.enrol_token(_token_digest(token)), codec.pack(grant), ex=int(ttl_s))

    async def enrolment(self, token: str) -> Record | None:
        """The grant of a live enrolment token, or None."""
        return _record(await self.db.client.get(self.db.keys.enrol_token(_token_digest(token))))
