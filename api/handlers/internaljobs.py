"""Internal jobs (cluster/internaljobs.py) and the admin calls that start one: test, maintenance, bulk job delete."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, Protocol

from cluster.internaljobs import InternalJobs, Progress
from storage.fence import Fence
from storage.search.index import Indexer
from storage.search.query import QueryError

from ..call import Call
from ..errors import ApiError
from ..params import QUERY_LEN, flag, integer, text
from ..principal import require_unrestricted
from ..registry import ADMIN, HANDLERS, Reply

MAX_TEST_S = 3600  # test_internal_job's longest run
MAX_LISTED = 1000  # finished jobs listed with `all`
BULK_STEP = 100  # jobs deleted per fenced step
MAX_RUNNING = 8  # internal jobs at once on the primary: each holds a task and writes progress
MAINTENANCE_TITLE = "Daily maintenance manual run"


def internal_jobs(call: Call) -> InternalJobs:
    jobs = call.node.internal
    if jobs is None:
        raise ApiError("admin", "Internal jobs do not run on this node.")
    if jobs.active >= MAX_RUNNING:
        raise ApiError("admin", f"{jobs.active} internal jobs are running already; wait for one to finish.")
    return jobs


@HANDLERS.add("get_internal_jobs", write=False, privilege=ADMIN,
              args=(flag("all", False, doc="also the finished ones kept (the last day), newest first"),
                    integer("limit", 100, ge=1, le=MAX_LISTED, doc="with all: at most this many")))  # fmt: skip
async def get_internal_jobs(call: Call) -> Reply:
    """The internal jobs running now (from any node: they live in the store), with their progress."""
    if call.params["all"]:
        rows = await call.stores.internal.recent(call.params["limit"])
    else:
        rows = await call.stores.internal.running()
    return {"rows": rows, "list": {"length": len(rows)}}


@HANDLERS.add("test_internal_job", write=True, service=True, privilege=ADMIN,
              args=(integer("duration", 60, ge=1, le=MAX_TEST_S, doc="seconds the job runs (xyOps default 60)"),))
async def test_internal_job(call: Call) -> Reply:
    """Start an internal job that does nothing for `duration` seconds, advancing once a second."""
    duration = call.params["duration"]

    async def work(progress: Progress) -> dict[str, Any]:
        for second in range(1, duration + 1):
            await asyncio.sleep(1)
            await progress(second / duration, f"{second} of {duration} seconds")
        return {"details": f"Did nothing for {duration} seconds."}

    job = await internal_jobs(call).start("Test job that does nothing", "maint", call.who.username, work)
    return {"id": job["id"]}


@HANDLERS.add("admin_run_maintenance", write=True, service=True, privilege=ADMIN, args=())
async def admin_run_maintenance(call: Call) -> Reply:
    """Run the retention pass (cluster/maintenance.py) now, as an internal job; answers its id."""
    maintenance = call.node.maintenance
    if maintenance is None:
        raise ApiError("admin", "Maintenance does not run on this node.")
    if any(job.get("title") == MAINTENANCE_TITLE for job in await call.stores.internal.running()):
        raise ApiError("admin", "A manual maintenance run is under way already.")

    async def work(progress: Progress) -> dict[str, Any]:
        await progress(0.0, "trimming")
        removed = await maintenance.run_once()
        counts = {name: getattr(removed, name) for name in ("jobs", "activity", "snapshots", "sessions",
                                                             "timeline_rows")}  # fmt: skip
        lines = "\n".join(f"- **{name.replace('_', ' ').title()} removed:** {n}" for name, n in counts.items())
        return {"removed": counts, "details": f"### Maintenance report\n\n{lines}\n"}

    job = await internal_jobs(call).start(MAINTENANCE_TITLE, "maint", call.who.username, work)
    return {"id": job["id"]}


DELETABLE = ("jobs", "activity", "snapshots")  # the search indexes whose records a bulk delete may remove


class Deletable(Protocol):
    """A record family with a search index and the retention path's delete (JobStore, ActivityStore, SnapshotStore)."""

    index: Indexer

    async def delete_many(self, fence: Fence, ids: Sequence[str]) -> tuple[int, list[str]]: ...


async def check_query(call: Call, index: str, query: str) -> None:
    """Refuse a bad query now, not in the background job."""
    try:
        await getattr(call.stores, index).index.search(query, limit=0)
    except QueryError as exc:
        raise ApiError("api", f"Invalid search query: {exc}") from None


async def delete_matching(call: Call, index: str, query: str, progress: Progress) -> dict[str, Any]:
    """Delete every record of `index` (DELETABLE) matching `query`, oldest first, by the retention path (the store's
    delete_many; for jobs then Stores.drop_job_output: record, index entries, log and files). Returns {count, total}."""
    stores = call.stores
    families: dict[str, Deletable] = {"jobs": stores.jobs, "activity": stores.activity, "snapshots": stores.snapshots}
    store = families[index]
    deleted = skipped = total = 0
    while True:
        found = await store.index.search(query, offset=skipped, limit=BULK_STEP, sort_dir=1)
        total = max(total, found.total)
        ids = found.ids
        if not ids:
            break
        if index == "jobs":
            records = await stores.jobs.get_many(ids)
            done, gone = await stores.jobs.delete_many(call.node.fence(), ids)
            await stores.drop_job_output([rec or job_id for job_id, rec in zip(ids, records, strict=True)])
        else:
            done, gone = await store.delete_many(call.node.fence(), ids)
        deleted += done
        skipped += len(gone)
        await progress(deleted / max(total, 1), f"{deleted} of {total} {index} records deleted")
    return {"count": deleted, "total": total}


@HANDLERS.add("bulk_search_delete_jobs", write=True, service=True, privilege="delete_jobs",
              args=(text("query", max_len=QUERY_LEN, doc="job search query; default * (every completed job)"),))
async def bulk_search_delete_jobs(call: Call) -> Reply:
    """Delete every completed job a search matches, as an internal job (category- or group-limited callers are
    refused, as in xyOps); answers its id."""
    require_unrestricted(call.who)
    query = (call.params.get("query") or "*").strip() or "*"
    await check_query(call, "jobs", query)

    async def work(progress: Progress) -> dict[str, Any]:
        result = await delete_matching(call, "jobs", query, progress)
        return {**result, "details": f"### Bulk job deletion\n\n- **Query:** `{query}`\n"
                                     f"- **Jobs deleted:** {result['count']}\n"}  # fmt: skip

    job = await internal_jobs(call).start("Custom bulk job deletion", "db", call.who.username, work,
                                          params={"index": "jobs", "query": query})  # fmt: skip
    return {"id": job["id"]}
