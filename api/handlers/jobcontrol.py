"""Job calls that change jobs (digest 3.2): abort, finish (agents), skip a delay, tags, tickets, update.

Live jobs change only through the primary's dispatcher (cluster/dispatch/machine.py), which owns their state;
completed ones are rewritten here, fenced, with their search entries.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from cluster.dispatch.machine import Dispatcher

from ..activity import log_activity
from ..agentauth import agent_may_act
from ..call import Call
from ..errors import ApiError
from ..params import OBJECT_BYTES, ident, obj, strings, text
from ..registry import ADMIN, AUTH, HANDLERS, NONE, Params, Reply
from .jobs import _job, _light
from .tickets import check_linkable, relink

FINAL_BYTES = 4 * 1024 * 1024  # a final update carries the job's output data


def _dispatcher(call: Call) -> Dispatcher:
    dispatcher = call.node.dispatcher
    if dispatcher is None or not dispatcher.loaded:
        raise ApiError("job", "The job dispatcher is starting; try again in a moment.")
    return dispatcher


@HANDLERS.add("finish_job", write=True, privilege=NONE, csrf=False, anywhere=True,
              args=(ident(), text("auth", required=True, max_len=128), ident("server", required=False),
                    obj("job", required=True, max_bytes=FINAL_BYTES)))  # fmt: skip
async def finish_job(call: Call) -> Reply:
    """An agent's final update. Any node takes it: it goes to the primary's inbox in Redis (so a finish is never
    lost to a failover). Idempotent: a finish of a completed job answers success and changes nothing."""
    p = call.params
    job = await call.stores.jobs.get(p["id"])
    if job is None:
        raise ApiError("job", f"Job not found: {p['id']}")
    if not agent_may_act(job, p["id"], p["auth"], p.get("server") or "", call.stores.secret_key):
        raise ApiError("auth", "Authentication failure", status=403)  # as upload_job_file answers
    if job.get("state") == "complete":
        return {}
    entry = {"server": str(job.get("server") or ""), "cmd": "finish", "data": {"id": p["id"], "job": p["job"]},
             "node": call.node.node_id}  # fmt: skip
    await call.stores.agents.post([entry])
    return {}


def _abort_reason(call: Call) -> str:
    who = call.who
    if who.kind == "key":
        return f"Manually aborted by API Key: {who.record.get('title') or who.id}"
    return f"Manually aborted by user: {who.id}"


@HANDLERS.add("abort_job", write=True, service=True, privilege="abort_jobs", args=(ident(),))
async def abort_job(call: Call) -> Reply:
    job = await _job(call, call.params["id"])
    if job.get("state") == "complete" or not await _dispatcher(call).abort(str(job["id"]), _abort_reason(call)):
        raise ApiError("job", f"Job is not active: {job['id']}")
    await log_activity(call, "job_abort", f"Aborted job {job['id']}", job=_light(job))
    return {}


@HANDLERS.add("job_skip_delay", write=True, service=True, privilege="run_jobs", args=(ident(),))
async def job_skip_delay(call: Call) -> Reply:
    job = await _job(call, call.params["id"])
    if not await _dispatcher(call).skip_delay(str(job["id"])):
        raise ApiError("job", f"Job has no delay to skip: {job['id']}")
    return {}


Changes = dict[str, Any] | Callable[[dict[str, Any]], dict[str, Any]]


async def _rewrite_final(call: Call, job: dict[str, Any], changes: Changes) -> None:
    """Merge `changes` into a completed job, compare-and-swap: an action recording its result on the same job
    meanwhile makes this read again, so neither change is lost. `changes` may be a function of the current
    record (it may raise ApiError to refuse), for a change that depends on what the record holds."""
    jobs = call.stores.jobs
    for _ in range(20):
        got = await jobs.stored(str(job["id"]))
        if got is None:
            raise ApiError("notfound", f"Failed to locate job: {job['id']}")
        current, digest = got
        if current.get("state") != "complete":
            raise ApiError("job", f"Job is still active: {job['id']}")
        found = changes(current) if callable(changes) else changes
        if await jobs.swap(call.node.fence(), digest, current, {**current, **found}):
            return
    raise ApiError("job", f"Job {job['id']} kept changing; try again.")


@HANDLERS.add("manage_job_tags", write=True, privilege="tag_jobs", closed=True,
              args=(ident(), strings("tags", required=True, max_items=100)))  # fmt: skip
async def manage_job_tags(call: Call) -> Reply:
    """Replace the tags of a completed job. (⚠ xyOps refuses any extra body key, before auth, so a body
    `api_key` trips it; here credentials are never counted as parameters.)"""
    job = await _job(call, call.params["id"])
    await _rewrite_final(call, job, {"tags": sorted(set(call.params["tags"]))})
    await log_activity(call, "job_tags", f"Changed the tags of job {job['id']}", job={"id": job["id"]})
    return {}


@HANDLERS.add("manage_job_tickets", write=True, privilege="edit_tickets", closed=True,
              args=(ident(), strings("tickets", required=True, max_items=100)))  # fmt: skip
async def manage_job_tickets(call: Call) -> Reply:
    """Replace the tickets of a completed job; each ticket lists the job in its `jobs` too (so `search_tickets
    jobs:<id>` finds it; ⚠ xyOps never fills `jobs`). An unknown (or hidden) ticket is refused with code `ticket`."""
    job = await _job(call, call.params["id"])
    tickets = list(dict.fromkeys(call.params["tickets"]))
    await check_linkable(call, tickets)
    before = [str(t) for t in job.get("tickets") or []]
    await _rewrite_final(call, job, {"tickets": tickets})
    await relink(call, "jobs", str(job["id"]), before, tickets)
    return {}


# What update_job may never change: identity and the state machine's own fields.
_FIXED = frozenset({"id", "state", "server", "event", "started", "completed", "final", "aborting"})


@HANDLERS.add("update_job", write=True, service=True, privilege=ADMIN, params=Params.WRITE,
              args=(ident(), obj("job", max_bytes=OBJECT_BYTES, doc="fields to merge (or give them at the top)")))
async def update_job(call: Call) -> Reply:
    """Shallow-merge fields into a live job (through the dispatcher) or a completed one."""
    job = await _job(call, call.params["id"])
    fields = dict(call.params.get("job") or {})
    fields.update({k: v for k, v in call.params.items() if k not in ("id", "job")})
    bad = sorted(set(fields) & _FIXED)
    if bad:
        raise ApiError("api", f"Job property may not be changed: {bad[0]}")
    if job.get("state") == "complete":
        await _rewrite_final(call, job, fields)
    elif await _dispatcher(call).patch(str(job["id"]), fields) is None:
        raise ApiError("job", f"Job is not active: {job['id']}")
    return {}


@HANDLERS.add("resume_job", write=True, service=True, privilege="run_jobs",
              args=(ident(), obj("params", doc="merged into the job's params before it launches"),
                    text("redirect", max_len=128, doc="workflow node to jump to (workflows)")))  # fmt: skip
async def resume_job(call: Call) -> Reply:
    """Resume a job a `suspend` action holds before its launch; its server is chosen again."""
    job = await _job(call, call.params["id"])
    problem = await _dispatcher(call).resume(str(job["id"]), call.params.get("params") or {}, call.who.id)
    if problem:
        raise ApiError("job", problem)
    await log_activity(call, "job_resume", f"Resumed job {job['id']}", job=_light(job))
    return {}


@HANDLERS.add("job_toggle_notify_me", write=True, service=True, privilege=AUTH, args=(ident(),))
async def job_toggle_notify_me(call: Call) -> Reply:
    """Add (or remove) an email to the calling user when the job completes."""
    if call.who.kind != "user":
        raise ApiError("api", "Only a signed-in user can ask to be notified.")
    email = str(call.who.record.get("email") or "")
    if not email:
        raise ApiError("api", "User has no email address set.")
    job = await _job(call, call.params["id"])
    enabled = await _dispatcher(call).toggle_notify(str(job["id"]), email, call.who.id)
    if enabled is None:
        raise ApiError("job", f"Job not found: {job['id']}")
    return {"enabled": enabled}
