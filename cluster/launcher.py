"""The one launch path: scheduler, run_event, magic links and run_event actions all come through here.

A job record is built from a copy of the event (digest 3.2 step 1), placed by the dispatcher
(cluster/dispatch/machine.py: on a server, in its queue, or aborted when neither is possible), then stored by
one fenced script together with its scheduler claim and the agent's frame.
"""

from __future__ import annotations

import copy
import re
import time
from dataclasses import dataclass, field
from typing import Any

from storage.families import CATEGORIES, PLUGINS
from storage.ids import generate_id
from storage.jobs import JobWrite
from storage.stores import Stores

from .dispatch import limits
from .dispatch.updates import PROTECTED
from .node import NodeRuntime

Record = dict[str, Any]
# Event properties a job never inherits.
_DROPPED = ("id", "title", "enabled", "triggers", "modified", "created", "revision", "username")
_PLUGIN_COPIED = ("command", "script", "uid", "gid", "kill", "runner")
# The default universal job action (xyOps config `job_universal_actions.default`).
UNIVERSAL_ACTIONS: tuple[Record, ...] = (
    {"enabled": True, "condition": "error", "type": "snapshot", "source": "universal"},
)
# What a plugin decides at launch time; never taken from an event or a run.
LAUNCH_FIELDS = ("command", "script", "uid", "gid", "cwd", "env", "kill", "runner")
# Job properties an `_xy_override_<prop>` param may never replace: xyOps' reserved ones (isReservedJobOverrideKey)
# and those the job state machine owns.
CORE_FIELDS = frozenset(
    {"id", "event", "type", "category", "plugin", "targets", "source", "username", "state", "started", "completed",
     "code", "server", "groups", "api_key", "test", "params", "enabled", "fields", "actions", "limits", "triggers",
     "workflow", *LAUNCH_FIELDS, *PROTECTED, "retry_ok", "update_event", "delete_event"}
)  # fmt: skip
OVERRIDE_PREFIX = "_xy_override_"


def reserved_override(key: str) -> bool:
    """Is `key` an `_xy_override_<prop>` param naming a property it may not replace?"""
    return key.startswith(OVERRIDE_PREFIX) and key[len(OVERRIDE_PREFIX) :] in CORE_FIELDS


_TEMPLATE = re.compile(r"\{\{\s*([\w.\-]+)\s*\}\}")


class LaunchError(Exception):
    """A launch refused for a business reason (disabled category, missing plugin, ...)."""


@dataclass(slots=True)
class Launch:
    """What to launch and why."""

    event: Record
    source: str  # scheduler | user | key | magic | action | startup | ...
    username: str = ""
    now: float | None = None  # the scheduled second, when the scheduler launches
    params: Record = field(default_factory=dict)  # sparse overrides merged over the event's params
    input: Record = field(default_factory=dict)
    tags: list[str] = field(default_factory=list)
    test: bool = False
    start_delay: int = 0
    extra: Record = field(default_factory=dict)  # other event props overridden for this run
    claim: tuple[str, int] | None = None  # (event id, scheduled second) for exactly-once launches
    cursor: tuple[str, int] | None = None  # (event id, second) to move the scheduler's cursor to


def _lookup(data: Any, path: str) -> Any:
    for part in path.split("."):
        if isinstance(data, dict) and part in data:
            data = data[part]
        else:
            return ""
    return data


def expand(value: Any, context: Record) -> Any:
    """`{{ path }}` in string params, against the job (plus input data/files)."""
    if isinstance(value, str) and "{{" in value:
        return _TEMPLATE.sub(lambda m: str(_lookup(context, m.group(1))), value)
    return value


def _with_sources(items: Any, source: str) -> list[Record]:
    return [{**copy.deepcopy(i), "source": source} for i in items or [] if isinstance(i, dict) and i.get("enabled")]


async def build_job(stores: Stores, launch: Launch) -> Record:
    """The new job record (not stored). Raises LaunchError when the event cannot run."""
    event = launch.event
    category = await stores.defs.get(CATEGORIES, str(event.get("category")))
    plugin = await stores.defs.get(PLUGINS, str(event.get("plugin"))) if event.get("plugin") != "_workflow" else {}
    if not launch.test:
        if not event.get("enabled"):
            raise LaunchError("Event is disabled.")
        if category is None or not category.get("enabled", True):
            raise LaunchError(f"Category is disabled or missing: {event.get('category')}")
        if plugin is None or not plugin.get("enabled", True):
            raise LaunchError(f"Plugin is disabled or missing: {event.get('plugin')}")
    job: Record = {k: copy.deepcopy(v) for k, v in event.items() if k not in _DROPPED}
    job.update(copy.deepcopy(launch.extra))
    started = time.time()
    job.update(
        id=generate_id("j"),
        event=event["id"],
        source=launch.source,
        username=launch.username,
        started=started,
        updated=started,
        now=float(launch.now) if launch.now is not None else started,
        params={**(event.get("params") or {}), **launch.params},
        input=launch.input,
        tags=sorted({*(event.get("tags") or []), *launch.tags}),
        event_title=event.get("title", ""),
        event_revision=event.get("revision", 0),
    )
    if launch.test:
        job["test"] = True
    else:
        job["actions"] = [*job.get("actions", []), *_with_sources((category or {}).get("actions"), "category"),
                          *(dict(a) for a in UNIVERSAL_ACTIONS)]  # fmt: skip
        job["limits"] = [*job.get("limits", []), *_with_sources((category or {}).get("limits"), "category")]
    for key in _PLUGIN_COPIED:
        if plugin and key in plugin:
            job[key] = copy.deepcopy(plugin[key])
    if launch.start_delay > 0:
        job.update(state="start_delay", until=job["now"] + launch.start_delay)
    else:
        job["state"] = "ready"
    context = {**job, "data": launch.input.get("data", {}), "files": launch.input.get("files", [])}
    job["params"] = {k: expand(v, context) for k, v in job["params"].items()}
    for key, value in job["params"].items():  # `_xy_override_<prop>` params set job props (not core ones)
        prop = key[len(OVERRIDE_PREFIX) :]
        if key.startswith(OVERRIDE_PREFIX) and prop and prop not in CORE_FIELDS:
            job[prop] = copy.deepcopy(value)
    return job


async def launch_job(node: NodeRuntime, launch: Launch) -> Record | None:
    """Build, place and store a job through the fence. None when its scheduled slot was already taken.

    With the dispatcher running (the primary), a `ready` job is placed before it is stored: on a server (and
    the agent's `launch_job` frame is queued in the same fenced write), in its queue, or aborted."""
    stores = node.stores
    job = await build_job(stores, launch)
    if any(isinstance(lim, dict) and lim.get("type") == "day" for lim in job.get("limits") or []):
        refused = limits.day_limit(job, await stores.actions.day_counts(str(job["event"]), time.time()))
        if refused:
            raise LaunchError(refused)
    dispatcher = node.dispatcher
    if dispatcher is not None:
        # Placed now when the dispatcher's view is loaded; else stored `ready` and placed once it is.
        extra = JobWrite(node.db.keys)
        if dispatcher.loaded and job["state"] == "ready":
            await dispatcher.refresh_tags()  # an abort at once settles its tags against the tags there are now
            dispatcher.place(job, time.time(), extra)
        dispatcher.reserve(job)
        stored: bool | None = None  # unknown until the write answers
        try:
            stored = await stores.jobs.launch(node.fence(), job, claim=launch.claim, cursor=launch.cursor,
                                              extra=extra)  # fmt: skip
        finally:
            dispatcher.settled(job, stored, extra)
        return job if stored else None
    # No dispatcher on this node: stored `ready`, for the dispatcher of whichever node is primary to place.
    stored = await stores.jobs.launch(node.fence(), job, claim=launch.claim, cursor=launch.cursor)
    return job if stored else None
