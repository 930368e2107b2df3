"""Launching jobs by hand: run_event (session or key) and magic links (token in the URL)."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
from typing import Any

from cluster.launcher import LAUNCH_FIELDS, Launch, LaunchError, launch_job
from storage.families import EVENTS, PLUGINS

from ..actions import validate_actions, validate_limits
from ..call import Call
from ..errors import ApiError
from ..params import TITLE_LEN, flag, ident, obj, strings, text
from ..principal import can_targets
from ..registry import HANDLERS, NONE, Params, Reply
from ..validate import boolean, string_list
from .events import check_overrides, check_param_values, events, magic_token
from .uploads import checked_input_files

WAIT_POLL_S = 0.25
WAIT_MAX_S = 3600
# Event props a run may not override (digest 3.1 run_event).
FIXED = frozenset({"id", "type", "category", "triggers", "created", "modified", "revision", "username",
                   *LAUNCH_FIELDS})  # fmt: skip
RUN_KEYS = frozenset({"params", "input", "tags", "test", "test_actions", "test_limits", "test_conditions", "title",
                      "post_data"})  # fmt: skip


def _nest_flat_params(params: dict[str, Any]) -> dict[str, Any]:
    """`params/foo=bar` query keys become params.foo (xyOps accepts both shapes)."""
    nested = dict(params.get("params") or {}) if isinstance(params.get("params"), dict) else {}
    for key in [k for k in params if k.startswith("params/")]:
        nested[key[len("params/") :]] = params.pop(key)
    params["params"] = nested
    return params


async def _wait(call: Call, job_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + WAIT_MAX_S
    while time.monotonic() < deadline:
        job = await call.stores.jobs.get(job_id)
        if job is not None and job.get("state") == "complete":
            return job
        await asyncio.sleep(WAIT_POLL_S)
    raise ApiError("job", f"Job {job_id} did not complete within {WAIT_MAX_S} s.")


async def _launch(call: Call, launch: Launch) -> Reply:
    try:
        job = await launch_job(call.node, launch)
    except LaunchError as exc:
        raise ApiError("event", f"Failed to launch job: {exc}") from None
    assert job is not None  # only scheduler claims can collide
    if call.tail.rstrip("/").endswith("/wait"):
        return {"job": await _wait(call, str(job["id"]))}
    return {"id": job["id"]}


def _fill_field_defaults(params: dict[str, Any], event: dict[str, Any]) -> None:
    """Gaps in a run's params are filled from the event's field defaults (after the event's own params)."""
    for field in event.get("fields") or []:
        if isinstance(field, dict) and field.get("id") not in params and "value" in field:
            params[str(field["id"])] = field["value"]


async def _keep_locked(call: Call, event: dict[str, Any], params: dict[str, Any], plugin_id: str) -> None:
    """Locked plugin params keep the event's values (the plugin's defaults when a run switches plugins)."""
    if event.get("type") == "workflow":
        return
    plugin = await call.stores.defs.get(PLUGINS, plugin_id)
    same = plugin_id == event.get("plugin")
    stored = event.get("params") or {}
    for param in (plugin or {}).get("params") or []:
        pid = param.get("id")
        if not param.get("locked"):
            continue
        if not same:
            params[pid] = param.get("value")
        elif pid in stored:
            params[pid] = stored[pid]
        else:
            params.pop(pid, None)


async def _check_overrides(call: Call, overrides: dict[str, Any]) -> None:
    """Run-time overrides get the same checks as the event's own fields."""
    if "actions" in overrides:
        overrides["actions"] = await validate_actions(call.stores, overrides["actions"])
    if "limits" in overrides:
        overrides["limits"] = validate_limits(overrides["limits"])
    for key in ("targets", "tags"):
        if key in overrides:
            overrides[key] = string_list(overrides, key) or []
    if "params" in overrides and not isinstance(overrides["params"], dict):
        raise ApiError("api", "Parameter 'params' must be an object.")


def _has_enabled(event: dict[str, Any], kind: str) -> bool:
    return any(t.get("type") == kind and t.get("enabled") for t in event.get("triggers") or [])


RUN_ARGS = (
    ident(required=False, doc="event id (or give its title)"),
    text("title", max_len=TITLE_LEN, doc="event title, when no id is given"),
    obj("params", doc="plugin parameters for this run"),
    obj("input", doc="input data for the job"),
    strings("tags"),
    flag("test", False, doc="test run: allowed for disabled events and events without a manual trigger"),
)


@HANDLERS.add("run_event", write=True, service=True, privilege="run_jobs", params=Params.RUN, args=RUN_ARGS)
async def run_event(call: Call) -> Reply:
    """Launch a job of an event now; other parameters override event properties for this run."""
    params = _nest_flat_params(dict(call.params))
    if params.get("id"):
        event = await events.lookup(call, str(params["id"]))
    elif params.get("title"):
        found = [e for e in await call.stores.defs.all(EVENTS) if e.get("title") == params["title"]]
        if not found:
            raise ApiError("event", f"Event not found: {params['title']}")
        event = found[0]
        events.check_access(call, event)
    else:
        raise ApiError("event", "No criteria specified to find event.")
    test = boolean(params, "test", False)
    if not test:
        if not event.get("enabled"):
            raise ApiError("event", "Event is disabled.")
        if not _has_enabled(event, "manual"):
            raise ApiError("event", "Event does not allow manual job runs.")
    check_overrides(params["params"], "Job params")
    run_params = {**(event.get("params") or {}), **params["params"]}
    _fill_field_defaults(run_params, event)
    overrides = {k: v for k, v in params.items() if k not in FIXED and k not in RUN_KEYS and k in event}
    if not call.who.is_admin:
        await _keep_locked(call, event, run_params, str(overrides.get("plugin", event.get("plugin"))))
    await _check_overrides(call, overrides)
    job_input = params.get("input") or {}
    if not isinstance(job_input, dict):
        raise ApiError("api", "Parameter 'input' must be an object.")
    if job_input.get("files") is not None:  # never trusted as given (api/handlers/uploads.py)
        job_input = {**job_input, "files": await checked_input_files(call, job_input["files"])}
    if "targets" in overrides and not can_targets(call.who, string_list(overrides, "targets") or []):
        raise ApiError("access", "You do not have access to any of the overridden target groups.")
    await check_param_values(run_params, list(event.get("fields") or []), "Event fields")
    if call.query.get("post_data") and call.request.method == "POST":
        run_params["post_data"] = dict(call.params)
    who = call.who
    launch = Launch(event=event, source="key" if who.kind == "key" else "user", username=who.username,
                    params=run_params, input=dict(job_input), tags=string_list(params, "tags") or [],
                    test=test, extra=overrides)  # fmt: skip
    return await _launch(call, launch)


@HANDLERS.add("magic", write=True, service=True, privilege=NONE, params=Params.READ, csrf=False,
              args=(obj("input", doc="input data for the job"),))
async def magic(call: Call) -> Reply:
    """`/api/app/magic/v1/<KEY>[/wait]`: the token in the URL is the credential."""
    parts = [p for p in call.tail.split("/") if p]  # tail is "/v1/<KEY>[/wait]"
    key = parts[1] if len(parts) >= 2 and parts[0] == "v1" else ""
    if not key:
        raise ApiError("api", "Authentication failed.")
    event = None
    for candidate in await call.stores.defs.all(EVENTS):
        token = magic_token(key, str(candidate["id"]))
        for trigger in candidate.get("triggers") or []:
            if trigger.get("type") == "magic" and trigger.get("enabled") and hmac.compare_digest(
                str(trigger.get("token", "")), token
            ):
                event = candidate
    if event is None:
        raise ApiError("api", "Authentication failed.")
    if not event.get("enabled"):
        raise ApiError("event", "Event is disabled.")
    params = dict(call.params)
    job_input = params.pop("input", None)
    if isinstance(job_input, dict) and job_input.get("files") is not None:
        job_input = {**job_input, "files": await checked_input_files(call, job_input["files"])}
    check_overrides(params, "Magic trigger params")
    run_params = {**(event.get("params") or {}), **params}
    _fill_field_defaults(run_params, event)
    await _keep_locked(call, event, run_params, str(event.get("plugin")))  # whoever holds the link
    await check_param_values(run_params, list(event.get("fields") or []), "Event fields")
    launch = Launch(event=event, source="magic", params=run_params,
                    input=dict(job_input) if isinstance(job_input, dict) else {})  # fmt: skip
    reply = await _launch(call, launch)
    if "id" in reply:
        secret = call.stores.secret_key
        reply["stream"] = hashlib.sha256(("stream" + str(reply["id"]) + secret).encode()).hexdigest()
        reply["description"] = f"Job launched for event {event.get('title')}."
    return reply
