"""Servers API (digest 3.3, 3.15): online and stored servers, updates pushed to agents, search, summaries,
and agent enrolment (`get_satellite_token`, `satellite/config`).

Every read comes from Redis (storage/servers.py), so every node answers it identically. A group-limited caller
sees a server when it shares a group with it (xyOps' getUserLimitedServers), in lists and single reads alike.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from typing import Any
from urllib.parse import urlsplit

import orjson
from aiohttp import web

from cluster.servers import keywords, regroup, summaries
from storage.families import GROUPS
from storage.ids import generate_id
from storage.search.query import QueryError

from ..activity import log_activity
from ..call import Call
from ..errors import ApiError, bad_param
from ..params import QUERY_LEN, TITLE_LEN, encoded_size, flag, ident, integer, obj, page, strings, text
from ..principal import Principal
from ..registry import ADMIN, AUTH, HANDLERS, Params, Reply

SERVER_ID = ident(doc="server id").with_(max_len=32, pattern="^(?:[a-z0-9_]+)$")
USER_DATA_BYTES = 64 * 1024
SUMMARY_PAGE = 200
SUMMARY_MAX = 20_000  # servers counted by get_server_summaries (xyOps keeps at most 10,000 server records)
SORT_DIR = integer("sort_dir", -1, doc="-1 descending, 1 ascending")
ENROL_TTL = 86400
ENROL_TTL_MAX = 366 * 86400
ACCESS_DENIED = "Access denied."  # deliberately vague, as xyOps: which check failed is not told


def server_visible(who: Principal, server: dict[str, Any]) -> bool:
    """Admins and callers without group limits see every server; others those sharing a group with them."""
    if who.is_admin or not who.groups:
        return True
    return any(g in who.groups for g in server.get("groups") or [])


def _require_visible(who: Principal, server: dict[str, Any], server_id: str) -> None:
    if not server_visible(who, server):
        raise ApiError("access", f"You do not have the required account privileges to access server ID {server_id}.")


def group_restriction(who: Principal) -> list[str]:
    """A group-limited caller's searches are ANDed with its groups (digest section 2)."""
    if who.is_admin or not who.groups:
        return []
    return ["groups:" + "|".join(sorted(who.groups))]


async def _stored(call: Call, server_id: str) -> dict[str, Any]:
    server = await call.stores.servers.get(server_id)
    if server is None:
        raise ApiError("notfound", f"Failed to locate server: {server_id}")
    _require_visible(call.who, server, server_id)
    return server


async def visible_online(call: Call) -> dict[str, dict[str, Any]]:
    """Online servers the caller may see, by id, in join order."""
    return {sid: rec for sid, rec in (await call.stores.servers.online()).items() if server_visible(call.who, rec)}


@HANDLERS.add("get_active_servers", write=False, privilege=AUTH, args=())
async def get_active_servers(call: Call) -> Reply:
    """Online servers (group-limited)."""
    rows = list((await visible_online(call)).values())
    return {"rows": rows, "list": {"length": len(rows)}}


@HANDLERS.add("get_active_server", write=False, privilege=AUTH, args=(SERVER_ID,))
async def get_active_server(call: Call) -> Reply:
    """One online server; `notfound` when it is offline."""
    server_id = call.params["id"]
    if not await call.stores.servers.is_online(server_id):
        raise ApiError("notfound", f"Failed to locate server: {server_id}")
    return {"server": await _stored(call, server_id)}


@HANDLERS.add("get_server", write=False, privilege=AUTH, args=(SERVER_ID,))
async def get_server(call: Call) -> Reply:
    """A stored server, online or not, its last minute sample (`data`: {date, hostname, ip, groups, data:
    ServerMonitorData with its monitors and deltas}) and whether it is online. ⚠ xyOps answers `notfound` until the
    server's first sample; this answers with the record and `data: null`, which is all a caller can use then."""
    server_id = call.params["id"]
    server = await _stored(call, server_id)
    return {"server": server, "data": await call.stores.hosts.get(server_id),
            "online": await call.stores.servers.is_online(server_id)}  # fmt: skip


UPDATE_ARGS = (
    SERVER_ID,
    text("title", max_len=TITLE_LEN, pattern="[^<>]*"),
    flag("enabled"),
    text("icon", max_len=64, pattern=r"[\w-]*"),
    strings("groups", max_items=100, doc="manual groups (with autoGroup false)"),
    flag("autoGroup", doc="true: groups follow the host name again"),
    integer("maxJobs", ge=0, le=1_000_000, doc="most jobs at once on this server; 0 = no limit"),
)


@HANDLERS.add("update_server", write=True, privilege="update_servers", params=Params.READ,  # query too, as xyOps
              args=UPDATE_ARGS, closed=True)  # fmt: skip
async def update_server(call: Call) -> Reply:
    """Change a stored server (online or not); the agent is told its groups. Group scope is checked before
    and after: a group-limited caller can neither touch a server outside its groups nor move one out of them."""
    p = call.params
    server_id = p["id"]
    defs = await call.stores.defs.all(GROUPS)
    known = {str(g.get("id")) for g in defs}
    unknown = [g for g in p.get("groups") or [] if g not in known]
    if unknown:
        raise bad_param("groups", f"names unknown group(s): {', '.join(unknown[:5])[:200]}")

    async def change(server: dict[str, Any]) -> dict[str, Any]:
        _require_visible(call.who, server, server_id)
        hostname = str(server.get("hostname") or "")
        auto, groups = bool(server.get("autoGroup", True)), list(server.get("groups") or [])
        if p.get("autoGroup") is True:
            auto, groups = regroup(hostname, True, [], defs)  # groups sent along are ignored (the UI sends both)
        elif p.get("autoGroup") is False:
            auto, groups = regroup(hostname, False, p.get("groups", groups), defs)
        elif "groups" in p:
            if auto:  # xyOps stores them and overwrites them at the next join; say so instead
                raise bad_param("groups", "has no effect while the server's groups follow its host name; "
                                          "send autoGroup: false with it")  # fmt: skip
            auto, groups = regroup(hostname, False, p["groups"], defs)
        if not server_visible(call.who, {"groups": groups}):
            raise ApiError("access", "You do not have the required account privileges to assign the requested "
                                     "server groups.")  # fmt: skip
        updated = {**server, "autoGroup": auto, "groups": groups}
        updated.update({k: p[k] for k in ("title", "enabled", "icon", "maxJobs") if k in p})
        updated["modified"] = int(time.time())
        updated["keywords"] = keywords(updated)
        return updated

    found = await call.stores.servers.modify(server_id, change)
    if found is None:
        raise ApiError("notfound", f"Failed to locate server: {server_id}")
    if await call.stores.servers.is_online(server_id):
        await call.stores.agents.send(server_id, "update", {"groups": found["groups"]})
    changes = {k: v for k, v in p.items() if k != "id"}
    await log_activity(call, "server_update", f"Server updated: {found.get('hostname', server_id)}",
                       server={"id": server_id, "hostname": found.get("hostname"), "updates": changes})  # fmt: skip
    return {}


@HANDLERS.add("update_server_data", write=True, privilege="update_servers",
              args=(SERVER_ID, obj("data", max_bytes=USER_DATA_BYTES), obj("userData", max_bytes=USER_DATA_BYTES),
                    flag("replace", False, doc="replace the user data rather than merge into it")))  # fmt: skip
async def update_server_data(call: Call) -> Reply:
    """Merge (or replace) a server's user data, handed to its jobs as `serverData`; answers the result."""
    p = call.params
    server_id = p["id"]
    data = p.get("data") if p.get("data") is not None else p.get("userData")
    if data is None:
        raise ApiError("api", "Missing parameter: data")

    async def change(server: dict[str, Any]) -> dict[str, Any]:
        _require_visible(call.who, server, server_id)
        current = server.get("userData")
        merged = dict(data) if p["replace"] or not isinstance(current, dict) else {**current, **data}
        if encoded_size(merged) > USER_DATA_BYTES:
            raise bad_param("data", f"would make the server's user data larger than {USER_DATA_BYTES} bytes")
        return {**server, "userData": merged}

    found = await call.stores.servers.modify(server_id, change)
    if found is None:
        raise ApiError("notfound", f"Failed to locate server: {server_id}")
    return {"data": found["userData"]}


async def _delete_history(call: Call, server_id: str) -> None:
    """What is kept about a server besides its record and command stream (each step safe to repeat)."""
    await call.stores.hosts.delete(server_id)
    await call.stores.timelines.delete(server_id)
    await call.stores.quickmon.delete(server_id)
    await call.stores.snapshots.delete_for_server(call.node.fence(), server_id)


@HANDLERS.add("delete_server", write=True, privilege=ADMIN, params=Params.READ,  # query too, as xyOps
              args=(SERVER_ID, flag("history", False, doc="also delete what is kept about an offline server")))
async def delete_server(call: Call) -> Reply:
    """Delete a server. Online: the agent is told to uninstall itself and the record goes (the socket stays
    until the agent leaves); with `history` its last sample, time series, QuickMon samples and snapshots go at
    once too (samples arriving before the socket closes may re-create a little of them). Offline: only with
    `history` (else code `server`), which drops all that and its command stream.

    What depends on the server goes first and its record last, so a step that fails leaves the server in place
    and the call can be repeated until it succeeds."""
    server_id = call.params["id"]
    server = await call.stores.servers.get(server_id)
    if server is None:
        raise ApiError("notfound", f"Failed to locate server: {server_id}")
    if await call.stores.servers.is_online(server_id):
        await call.stores.agents.send(server_id, "uninstall", {})
        if call.params["history"]:
            await _delete_history(call, server_id)  # not its command stream: the uninstall is still in it
        await call.stores.servers.delete(server_id, keep_online=True)
    elif call.params["history"]:
        await _delete_history(call, server_id)
        await call.stores.agents.drop(server_id)
        await call.stores.servers.delete(server_id)
    else:
        raise ApiError("server", f"Server has gone offline: {server_id}")
    await log_activity(call, "server_delete", f"Server deleted: {server.get('hostname', server_id)}",
                       server={"id": server_id, "hostname": server.get("hostname")})  # fmt: skip
    return {}


@HANDLERS.add("search_servers", write=False, privilege=AUTH,
              args=(text("query", max_len=QUERY_LEN, doc="search query; empty or * = every server"), *page(limit=1),
                    text("sort_by", choices=("_id", "created", "modified"), default="_id"), SORT_DIR))  # fmt: skip
async def search_servers(call: Call) -> Reply:
    """Search stored servers (online or not) with the digest's query syntax; bare words search keywords."""
    p = call.params
    try:
        rows, total = await call.stores.servers.search(
            (p.get("query") or "*").strip() or "*", p["offset"], p["limit"], p["sort_by"],
            -1 if p["sort_dir"] < 0 else 1, also=group_restriction(call.who),
        )  # fmt: skip
    except QueryError as exc:
        raise ApiError("api", f"Invalid search query: {exc}") from None
    return {"rows": rows, "list": {"length": total}}


@HANDLERS.add("get_server_summaries", write=False, privilege=AUTH, args=())
async def get_server_summaries(call: Call) -> Reply:
    """How many stored servers (that the caller may see) have each OS, architecture, CPU and virtualisation."""
    records: list[dict[str, Any]] = []
    also = group_restriction(call.who)
    while len(records) < SUMMARY_MAX:
        rows, total = await call.stores.servers.search("*", len(records), SUMMARY_PAGE, also=also)
        records += rows
        if not rows or len(records) >= total:
            break
    return {"summaries": summaries(records)}


# -- enrolment -----------------------------------------------------------------------------------------------


def auth_token(server_id: str, secret_key: str) -> str:
    """The per-server agent token xyOps uses: sha256 hex of the server id and the cluster secret."""
    return hashlib.sha256((server_id + secret_key).encode()).hexdigest()


@HANDLERS.add("get_satellite_token", write=True, privilege="add_servers", closed=True,
              args=(integer("expires", ENROL_TTL, ge=60, le=ENROL_TTL_MAX, doc="seconds the token is good for"),
                    strings("groups", max_items=100, doc="groups of the servers enrolled with it"),
                    text("title", max_len=TITLE_LEN, pattern="[^<>]*"), text("icon", max_len=64, pattern=r"[\w-]*"),
                    flag("enabled")))  # fmt: skip
async def get_satellite_token(call: Call) -> Reply:
    """A token an agent installer enrols with (`satellite/config?t=...`), carrying initial server settings."""
    p = call.params
    initial = {k: p[k] for k in ("groups", "title", "icon", "enabled") if p.get(k) not in (None, "", [])}
    token = secrets.token_urlsafe(24)
    grant = {"type": "satellite", "params": initial, "username": call.who.username, "created": int(time.time())}
    await call.stores.servers.grant_enrolment(token, grant, p["expires"])
    return {"token": token, "base_url": call.node.url}


async def _enrol_grant(call: Call, token: str, server: str) -> dict[str, Any]:
    """Who may enrol: an API key with `add_servers`, a live enrolment token (its initial settings come along),
    or a stored server's own auth token (xyOps' re-install path). Else `satellite` "Access denied."."""
    auth = call.authenticator
    key = await auth.lookup_key(token)
    if key is not None:
        expires = float(key.get("expires") or 0)
        if key.get("active", 1) in (0, False, "0", "false") or (expires and expires <= time.time()):
            raise ApiError("satellite", ACCESS_DENIED, status=403)
        who = await auth.principal("key", str(key["id"]), key)
        if not (who.is_admin or "add_servers" in who.privileges):
            raise ApiError("access", f'API Key "{key.get("title", key["id"])}" does not have the "Add Servers" '
                                     f"privilege required to perform this action.")  # fmt: skip
        return {}
    grant = await call.stores.servers.enrolment(token)
    if grant is not None:
        return dict(grant)
    own = bool(server) and hmac.compare_digest(token, auth_token(server, call.stores.secret_key))
    if own and await call.stores.servers.get(server) is not None:
        return {}
    raise ApiError("satellite", ACCESS_DENIED, status=403)


@HANDLERS.add("satellite", write=True, privilege=None, params=Params.READ, csrf=False, anywhere=True,
              args=(text("t", required=True, max_len=256, pattern=r"[\w-]+", doc="API key or enrolment token"),
                    text("s", max_len=32, pattern="[a-z0-9_]+", doc="server id, with its own auth token as t")))
async def satellite(call: Call) -> web.StreamResponse:
    """Agent enrolment: `satellite/config?t=T` answers the agent's config file (a new server id, its auth
    token, this node as the conductor, and the enrolment token's initial settings). Any node answers: it only
    reads the grant and mints an id, which the agent brings along when it joins."""
    method = call.tail.removeprefix("/v1").strip("/")
    grant = await _enrol_grant(call, call.params["t"], call.params.get("s") or "")
    if method != "config":  # install scripts and agent downloads are not served here
        raise ApiError("satellite", "Invalid satellite API method.", status=404)
    server_id = generate_id("s")
    url = urlsplit(call.node.url)
    secure = url.scheme == "https"
    config: dict[str, Any] = {
        "hosts": [url.hostname or ""],
        "port": url.port or (443 if secure else 80),
        "secure": secure,
        "server_id": server_id,
        "auth_token": auth_token(server_id, call.stores.secret_key),
    }
    if grant.get("params"):
        config["initial"] = grant["params"]
    body = orjson.dumps(config, option=orjson.OPT_INDENT_2) + b"\n"
    return web.Response(body=body, content_type="application/json",
                        headers={"Content-Disposition": 'attachment; filename="config.json"'})  # fmt: skip
