"""The operator's admin calls (xyOps lib/api/admin.js): stats, daily stats, bulk data deletion, logging a user out
everywhere, a test email. Internal jobs are in internaljobs.py, the run-time config in config.py."""

from __future__ import annotations

import platform
import time
from typing import Any

import psutil

from cluster import __version__
from cluster.actions.email import send_email
from cluster.internaljobs import Progress
from storage.families import SECRETS
from storage.search.query import Everything, Query
from storage.users import normalize

from ..activity import log_activity
from ..call import Call
from ..definitions import FAMILY_SPECS
from ..errors import ApiError, bad_param
from ..params import ID_LEN, QUERY_LEN, TITLE_LEN, array, text
from ..registry import ADMIN, AUTH, HANDLERS, Reply
from .internaljobs import DELETABLE, check_query, delete_matching, internal_jobs
from .secrets import seal
from .users import USERNAME

_PROCESS = psutil.Process()
MAX_ITEMS = 50
DELETE_TYPES = ("list", "index", "users", "bucketData", "bucketFiles", "secretData")
_TEST_EMAIL = r"[^@\s,]+@[^@\s,]+\.[^@\s,]+(\s*,\s*[^@\s,]+@[^@\s,]+\.[^@\s,]+)*"


def _caches(call: Call) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, counts in call.node.metrics.caches.items():
        hits, misses = counts()
        out[name] = {"hits": hits, "misses": misses, "hit_rate": round(hits / (hits + misses), 4) if hits + misses
                     else 0.0}  # fmt: skip
    return out


def _process() -> dict[str, Any]:
    with _PROCESS.oneshot():
        return {"mem": _PROCESS.memory_info().rss, "cpu": _PROCESS.cpu_percent(None)}


@HANDLERS.add("dash_stats", write=False, privilege=AUTH, args=())
async def dash_stats(call: Call) -> Reply:
    """The dashboard's stats: today's counters (`day`), this node's memory and CPU, and its cache counts."""
    proc = _process()
    return {"stats": {"day": await call.stores.stats.today(time.time()), "mem": proc["mem"], "cpu": proc["cpu"],
                      "cache": _caches(call)}}  # fmt: skip


@HANDLERS.add("admin_reset_daily_stats", write=True, privilege=ADMIN, args=())
async def admin_reset_daily_stats(call: Call) -> Reply:
    """Set today's counters aside (kept in a history list) and start counting again from zero."""
    await call.stores.stats.reset(call.node.fence(), time.time())
    return {}


async def _records(call: Call) -> dict[str, int]:
    """Records per search index (the xyOps `db.records` per unbase index), and users."""
    s = call.stores
    out: dict[str, int] = {}
    for name, indexer in (("jobs", s.jobs.index), ("tickets", s.tickets.index), ("alerts", s.alerts.index),
                          ("activity", s.activity.index), ("snapshots", s.snapshots.index),
                          ("servers", s.servers.index)):  # fmt: skip
        out[name] = (await indexer.search(Query(Everything()), limit=0)).total
    out["users"] = await s.users.count()
    return out


@HANDLERS.add("admin_stats", write=False, privilege=ADMIN, args=())
async def admin_stats(call: Call) -> Reply:
    """The status page's stats: version, store record counts, this node's caches and agents, the live nodes."""
    node = call.node
    nodes = [{"id": live.record.id, "url": live.record.url, "role": live.record.role,
              "version": live.record.version, "started": live.record.started, "ping": live.heartbeat_age_ms}
             for live in node.registry.view]  # fmt: skip
    return {"stats": {
        "version": __version__,
        "python": {"version": platform.python_version()},
        "storage_engine": "redis",
        "db": {"records": await _records(call)},
        "cache": _caches(call),
        "process": _process(),
        "agents": {"connected": node.metrics.agents(), "online": len(await call.stores.servers.online_ids())},
        "nodes": nodes,
        "internal_jobs": len(await call.stores.internal.running()),
    }}  # fmt: skip


# -- bulk data deletion -------------------------------------------------------------------------------------------


async def _checked_items(call: Call, items: list[Any]) -> list[dict[str, Any]]:
    """Every item valid before anything starts: a known type, and the key or index it names."""
    if not items:
        raise ApiError("admin", "No data selected for deletion.")
    if len(items) > MAX_ITEMS:
        raise bad_param("items", f"must have at most {MAX_ITEMS} entries")
    out = []
    for n, item in enumerate(items):
        if not isinstance(item, dict):
            raise bad_param(f"items[{n}]", "must be an object")
        kind = item.get("type")
        if kind not in DELETE_TYPES:
            raise bad_param(f"items[{n}].type", f"must be one of {', '.join(DELETE_TYPES)}")
        if kind == "list" and item.get("key") not in FAMILY_SPECS:
            raise bad_param(f"items[{n}].key", f"must be one of {', '.join(sorted(FAMILY_SPECS))}")
        if kind == "index":
            if item.get("index") not in DELETABLE:
                raise bad_param(f"items[{n}].index", f"must be one of {', '.join(DELETABLE)}")
            query = item.get("query") or "*"
            if not isinstance(query, str) or len(query) > QUERY_LEN:
                raise bad_param(f"items[{n}].query", "must be a search query")
            item = {**item, "query": query.strip() or "*"}
            await check_query(call, item["index"], item["query"])
        out.append(dict(item))
    return out


async def _delete_users(call: Call) -> int:
    """Every user but the caller, with their sessions and security logs (UserStore.delete); returns how many."""
    me, users_store = normalize(call.who.id), call.stores.users
    offset = deleted = 0
    while True:
        users, _ = await users_store.page(offset, 100)
        if not users:
            return deleted
        for user in users:
            if normalize(str(user.get("username", ""))) == me:
                offset += 1
                continue
            await users_store.delete(call.node.fence(), user)
            deleted += 1


async def _delete_item(call: Call, item: dict[str, Any], progress: Progress, stats: dict[str, int]) -> None:
    stores, fence = call.stores, call.node.fence
    kind = item["type"]
    if kind == "list":
        spec = FAMILY_SPECS[item["key"]]
        for record in await stores.defs.all(spec.family):
            await stores.defs.delete(fence(), spec.family, str(record["id"]))
            if spec.plural == "buckets":
                await stores.buckets.drop(fence(), str(record["id"]))
            stats["keys"] += 1
        stats["lists"] += 1
    elif kind == "index":
        done = await delete_matching(call, item["index"], item["query"], progress)
        stats["records"] += done["count"]
    elif kind == "users":
        stats["keys"] += await _delete_users(call)
    elif kind in ("bucketData", "bucketFiles"):
        for bucket in await stores.defs.all(FAMILY_SPECS["buckets"].family):
            await stores.buckets.empty(fence(), str(bucket["id"]), data=kind == "bucketData",
                                       files=kind == "bucketFiles")  # fmt: skip
            stats["keys"] += 1
    elif kind == "secretData":  # the sealed variables; the secrets stay, empty
        for secret in await stores.defs.all(SECRETS):
            emptied = dict(secret)
            seal(call, emptied, [])  # sealed again, with no variables: decrypt_secret answers none
            await stores.defs.replace(fence(), SECRETS, emptied, secret.get("revision", ""))
            stats["keys"] += 1


@HANDLERS.add("admin_delete_data", write=True, service=True, privilege=ADMIN,
              args=(array("items", required=True, doc="[{type, key | index, query}]: " + ", ".join(DELETE_TYPES)),))
async def admin_delete_data(call: Call) -> Reply:
    """Delete the chosen data as an internal job. Pauses the scheduler first (as xyOps does: it stays paused until
    an admin enables it again, and the report says so); answers the job's id."""
    items = await _checked_items(call, call.params["items"])
    jobs = internal_jobs(call)  # refused here (nothing paused yet) when this node cannot run internal jobs

    async def work(progress: Progress) -> dict[str, Any]:
        warnings: list[str] = []
        if ((await call.stores.state.get()).get("scheduler") or {}).get("enabled", True):  # paused by the job
            await call.stores.state.update(call.node.fence(), {"scheduler.enabled": False})  # that then deletes
            await log_activity(call, "state_update", "Global state updated: scheduler.enabled",
                               state={"path": "scheduler.enabled", "value": False})  # fmt: skip
            warnings.append("The job scheduler was paused for the deletion; enable it again when you are ready.")
        stats = {"lists": 0, "records": 0, "keys": 0}
        for n, item in enumerate(items):
            await progress(n / len(items), f"deleting {item['type']}")
            await _delete_item(call, item, progress, stats)
        lines = "\n".join(f"- **{k.title()} deleted:** {v}" for k, v in stats.items())
        notes = "".join(f"- {w}\n" for w in warnings) or "None.\n"
        return {"stats": stats, "warnings": warnings,
                "details": f"### Bulk data deletion\n\n{lines}\n\n#### Warnings\n\n{notes}"}  # fmt: skip

    job = await jobs.start("Custom bulk data deletion", "maint", call.who.username, work, params={"items": items})
    return {"id": job["id"]}


# -- sessions and email -------------------------------------------------------------------------------------------


@HANDLERS.add("admin_logout_all", write=True, service=True, privilege=ADMIN,
              args=(text("username", required=True, max_len=ID_LEN, pattern=USERNAME),))
async def admin_logout_all(call: Call) -> Reply:
    """End every session of a user (the session store's own logout_all path), as an internal job."""
    username = call.params["username"]

    async def work(progress: Progress) -> dict[str, Any]:
        ended = await call.stores.users.drop_sessions(call.node.fence(), normalize(username))
        await log_activity(call, "user_logout_all", f"Admin logged out every session of {username} ({ended})",
                           user={"username": username})  # fmt: skip
        return {"sessions": ended, "details": f"Ended {ended} sessions of {username}."}

    job = await internal_jobs(call).start(f"Logging out user sessions for: {username}", "user", call.who.username,
                                          work, params={"username": username})  # fmt: skip
    return {"id": job["id"]}


@HANDLERS.add("admin_send_test_email", write=True, service=True, privilege=ADMIN,
              args=(text("to", required=True, max_len=TITLE_LEN * 4, pattern=_TEST_EMAIL,
                         doc="one address or several, comma-separated"),))  # fmt: skip
async def admin_send_test_email(call: Call) -> Reply:
    """Send a test message through the action runner's SMTP settings; `err`, `description` and `details` (the
    exchange) say how it went."""
    runner = call.node.actions
    if runner is None:
        raise ApiError("admin", "Email is not available on this node.")
    to = [a.strip() for a in call.params["to"].split(",") if a.strip()]
    now = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    data = {"job": {"id": "test", "title": "Send Test Email", "username": call.who.username,
                    "details": "This is a test."},
            "display": {"started": now, "completed": now, "elapsed": "0 seconds"}}  # fmt: skip
    outcome = await send_email(runner.config.smtp, to=to, template="internal_job", data=data)
    return {"err": not outcome.ok, "description": outcome.description, "details": outcome.details}
