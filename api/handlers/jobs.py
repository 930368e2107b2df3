"""Jobs read API (digest 3.2, 3.15): active jobs, single and multi get, history search, queue flush, delete."""

from __future__ import annotations

from typing import Any

from cluster.actions.hookdata import download_token
from storage.search.query import QueryError

from ..activity import log_activity, post_commit
from ..call import Call
from ..definitions import loosely_equal
from ..errors import ApiError, bad_param
from ..params import MAX_PAGE, QUERY_LEN, flag, ident, integer, page, strings, text
from ..principal import Principal, can_category, can_targets
from ..registry import AUTH, HANDLERS, Params, Reply

HEAVY = ("actions", "activity", "html", "limits", "procs", "conns", "table", "timelines", "input", "data", "files")
PAGING = frozenset({"offset", "limit", "sort_by", "sort_dir"})
SORTERS = frozenset({"_id", "completed", "elapsed"})
MAX_VERBOSE = 100


def can_see(who: Principal, job: dict[str, Any]) -> bool:
    return can_category(who, str(job.get("category", ""))) and (
        job.get("type") == "workflow" or can_targets(who, job.get("targets") or [])
    )


def _light(job: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in job.items() if k not in HEAVY}


async def _visible_active(call: Call) -> list[dict[str, Any]]:
    return [j for j in await call.stores.jobs.active() if can_see(call.who, j)]


def _sort_key(value: Any) -> tuple[int, float, str]:
    """Numbers before text before anything else, so mixed values never compare unlike types."""
    if isinstance(value, bool) or value is None:
        return (2, 0.0, "")
    if isinstance(value, int | float):
        return (0, float(value), "")
    return (1, 0.0, str(value)) if isinstance(value, str) else (2, 0.0, "")


def _filters(call: Call) -> dict[str, Any]:
    return {k: v for k, v in call.params.items() if k not in PAGING}


SORT_DIR = integer("sort_dir", -1, doc="-1 descending, 1 ascending")
ACTIVE_PAGING = (integer("offset", 0, ge=0, le=MAX_PAGE * 1000), integer("limit", MAX_PAGE, ge=0, le=MAX_PAGE),
                 text("sort_by", max_len=64, default="started"), SORT_DIR)  # fmt: skip


@HANDLERS.add("get_active_jobs", write=False, privilege=AUTH, args=ACTIVE_PAGING)
async def get_active_jobs(call: Call) -> Reply:
    """Active jobs; every other parameter is an exact-match filter on job properties."""
    p = call.params
    wanted = _filters(call)
    rows = [j for j in await _visible_active(call) if all(loosely_equal(j.get(k), v) for k, v in wanted.items())]
    key = p["sort_by"] or "started"
    rows.sort(key=lambda j: _sort_key(j.get(key)), reverse=p["sort_dir"] < 0)
    offset, limit = p["offset"], p["limit"] or MAX_PAGE  # 0 = as many as a page may hold
    return {"rows": rows[offset : offset + limit], "list": {"length": len(rows)}}


@HANDLERS.add("get_active_job_summary", write=False, privilege=AUTH, args=())
async def get_active_job_summary(call: Call) -> Reply:
    wanted = _filters(call)
    events: dict[str, Any] = {}
    for job in await _visible_active(call):
        if job.get("type") == "adhoc" or not all(loosely_equal(job.get(k), v) for k, v in wanted.items()):
            continue
        entry = events.setdefault(str(job.get("event")), {"id": job.get("event"), "states": {}, "sources": {},
                                                          "targets": {}})  # fmt: skip
        for bucket, value in (("states", job.get("state")), ("sources", job.get("source"))):
            entry[bucket][str(value)] = entry[bucket].get(str(value), 0) + 1
        for target in job.get("targets") or []:
            entry["targets"][target] = entry["targets"].get(target, 0) + 1
    return {"events": events}


async def _job(call: Call, job_id: str) -> dict[str, Any]:
    job = await call.stores.jobs.get(job_id)
    if job is None or not can_see(call.who, job):
        raise ApiError("notfound", f"Failed to locate job: {job_id}")  # same answer: no existence leak
    return job


@HANDLERS.add("get_job", write=False, privilege=AUTH,
              args=(ident(), strings("remove", max_items=64, doc="job properties to leave out")))  # fmt: skip
async def get_job(call: Call) -> Reply:
    job_id = call.params["id"]
    job = await _job(call, job_id)
    for prop in call.params.get("remove") or []:
        job.pop(prop, None)
    return {"job": job, "token": download_token(job_id, call.stores.secret_key)}


@HANDLERS.add("get_jobs", write=False, privilege=AUTH,
              args=(strings("ids", required=True, max_items=MAX_PAGE), flag("verbose", False)))  # fmt: skip
async def get_jobs(call: Call) -> Reply:
    ids = call.params["ids"]
    if not ids:
        raise ApiError("api", "Missing parameter: ids")
    verbose = call.params["verbose"]
    out: list[dict[str, Any]] = []
    for job_id, job in zip(ids, await call.stores.jobs.get_many(ids), strict=True):
        if job is None or not can_see(call.who, job):
            out.append({"err": f"Failed to locate job: {job_id}"})
        else:
            out.append(job if verbose else _light(job))
    return {"jobs": out}


def restrictions(who: Principal) -> list[str]:
    """Category/group-limited users only search their own jobs (digest section 2)."""
    if who.is_admin:
        return []
    out = []
    if who.categories:
        out.append("category:" + "|".join(sorted(who.categories)))
    if who.groups:
        out.append("groups:" + "|".join(sorted(who.groups)))
    return out


@HANDLERS.add("search_jobs", write=False, privilege=AUTH,
              args=(text("query", max_len=QUERY_LEN, doc="search query; empty or * = every job"), *page(limit=1),
                    text("sort_by", choices=sorted(SORTERS), default="_id"), SORT_DIR,
                    strings("select", max_items=64, doc="only these job properties"), flag("verbose", False)))
async def search_jobs(call: Call) -> Reply:
    """Search completed jobs (digest search syntax or PxQL)."""
    p = call.params
    if p["verbose"] and p["limit"] > MAX_VERBOSE:  # whole job records can be large: keep one reply bounded
        raise bad_param("limit", f"must be at most {MAX_VERBOSE} with verbose")
    try:
        rows, total = await call.stores.jobs.search(
            (p.get("query") or "*").strip() or "*",
            offset=p["offset"],
            limit=p["limit"],
            sort_by=p["sort_by"],
            sort_dir=-1 if p["sort_dir"] < 0 else 1,
            also=restrictions(call.who),
        )
    except QueryError as exc:
        raise ApiError("api", f"Invalid search query: {exc}") from None
    select = p.get("select")
    if select:
        rows = [{k: r[k] for k in select if k in r} for r in rows]
    elif not p["verbose"]:
        rows = [_light(r) for r in rows]
    return {"rows": rows, "list": {"length": total}}


@HANDLERS.add("flush_event_queue", write=True, service=True, privilege="abort_jobs",
              params=Params.READ, args=(ident(doc="event id"),))  # query and body, as xyOps
async def flush_event_queue(call: Call) -> Reply:
    """Drop every queued job of an event (silently, as xyOps does); answers how many."""
    event_id = call.params["id"]
    queued = [j for j in await call.stores.jobs.active() if j.get("event") == event_id and j.get("state") == "queued"]
    for job in queued:
        if not can_see(call.who, job):
            raise ApiError("access", f"You do not have access to the jobs of event {event_id}.")
    dispatcher = call.node.dispatcher
    if dispatcher is not None and dispatcher.loaded:
        queued = await dispatcher.flush_queue(event_id)
    else:
        fence = call.node.fence()
        for job in queued:
            await call.stores.jobs.delete(fence, job)
    if queued:
        await log_activity(call, "queue_flush", f"Flushed {len(queued)} queued job(s) of event {event_id}",
                           event={"id": event_id})  # fmt: skip
    return {"count": len(queued)}


@HANDLERS.add("delete_job", write=True, privilege="delete_jobs", params=Params.READ,  # query and body, as xyOps
              args=(ident(),))
async def delete_job(call: Call) -> Reply:
    """Delete a completed job, its search entries, its log and its files."""
    job_id = call.params["id"]
    job = await _job(call, job_id)
    if job.get("state") != "complete":
        raise ApiError("job", f"Job is still active: {job_id}")
    await call.stores.jobs.delete(call.node.fence(), job)
    async with post_commit("job_output"):  # the job is gone: a file store failure leaves orphans, not an error
        await call.stores.drop_job_output([job])  # the record: its input uploads go too
    await log_activity(call, "job_delete", f"Deleted job {job_id}", job=_light(job))
    return {}
