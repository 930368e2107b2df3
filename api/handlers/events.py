"""Events (digest 3.1): what runs, where, when and with which limits and actions."""

from __future__ import annotations

import hashlib
import re
from typing import Any

from cluster.expressions import ExpressionError
from cluster.expressions import check as check_expression
from cluster.launcher import LAUNCH_FIELDS, reserved_override
from cluster.patterns import MAX_TEXT_BYTES, PatternError, TextTooLong, compile_user
from cluster.triggers import TriggerError, validate_triggers
from storage.families import CATEGORIES, EVENTS, PLUGINS, TAGS

from ..actions import validate_actions, validate_limits
from ..activity import in_background
from ..call import Call
from ..definitions import FamilySpec, Field, register_family
from ..errors import ApiError, bad_param
from ..params import flag, ident, obj
from ..principal import can_category, can_targets, require_category, require_unrestricted
from ..registry import AUTH, HANDLERS, Reply
from ..validate import integer
from .activity import PAGING, activity_page, without_request_info
from .plugins import check_params

ALGOS = frozenset({"random", "round_robin", "prefer_first_natural", "prefer_last_natural", "prefer_first",
                   "prefer_last", "least_cpu", "least_mem", "fewest_jobs"})  # fmt: skip
_BOOLISH = re.compile(r"\d+|true|false")
_WORD = re.compile(r"\w+", re.ASCII)


def magic_token(key: str, event_id: str) -> str:
    return hashlib.sha256((key + event_id).encode()).hexdigest()


async def _matches(regex: str, value: str, pid: str, where: str) -> bool:
    try:
        return await compile_user(regex, f"{pid}.regex").search_async(value)
    except PatternError as exc:  # stored before patterns were checked with today's rules
        raise ApiError("api", f"{where}: parameter '{pid}' has a pattern that cannot be used: it {exc.problem}."
                       ) from None  # fmt: skip
    except TextTooLong:
        raise ApiError("api", f"{where}: parameter '{pid}' value is too long to check against its pattern "
                              f"(at most {MAX_TEXT_BYTES} bytes).") from None  # fmt: skip


async def check_param_values(values: dict[str, Any], fields: list[dict[str, Any]], where: str) -> None:
    """Required / regex / range rules of a parameter schema (xyOps validateParamValues). Patterns run in
    bounded time (cluster/patterns.py)."""
    for field in fields:
        pid = str(field.get("id"))
        raw = values.get(pid)
        value = "" if raw is None else str(raw)
        if field.get("required") and not value:
            raise ApiError("api", f"{where}: parameter '{pid}' is required.")
        if value and field.get("regex") and not await _matches(str(field["regex"]), value, pid, where):
            raise ApiError("api", f"{where}: parameter '{pid}' value is invalid.")
        rng = field.get("range")
        if value and isinstance(rng, list) and len(rng) == 2:
            try:
                number = float(value)
            except ValueError:
                raise ApiError("api", f"{where}: parameter '{pid}' must be a number.") from None
            if not rng[0] <= number <= rng[1]:
                raise ApiError("api", f"{where}: parameter '{pid}' must be within {rng[0]}..{rng[1]}.")


def check_overrides(params: Any, where: str) -> None:
    """No `_xy_override_<prop>` of a reserved job property (xyOps requireValidJobOverrides, same wording)."""
    for key in params if isinstance(params, dict) else ():
        if reserved_override(str(key)):
            raise ApiError("api", f"{where}: Invalid parameter ID: {key} (reserved)")


def _unique_id(item: Any, where: str, seen: set[str], what: str) -> str:
    if not isinstance(item, dict):
        raise bad_param(where, "must be an object")
    item_id = item.get("id")
    if not isinstance(item_id, str) or not _WORD.fullmatch(item_id):
        raise bad_param(f"{where}.id", "must be a non-empty string of letters, digits and underscores")
    if item_id in seen:
        raise bad_param(f"{where}.id", f"duplicates the {what} id '{item_id}'")
    seen.add(item_id)
    return item_id


def _check_workflow(workflow: Any) -> None:
    """Node and connection ids unique, connections between existing nodes and at most one per pair of nodes
    (xyOps requireValidEventData); no reserved overrides in node params."""
    if workflow is None:
        return
    if not isinstance(workflow, dict):
        raise bad_param("workflow", "must be an object")
    for key in ("nodes", "connections"):
        if not isinstance(workflow.get(key, []), list):
            raise bad_param(f"workflow.{key}", "must be an array")
    nodes: set[str] = set()
    for i, node in enumerate(workflow.get("nodes", [])):
        node_id = _unique_id(node, f"workflow.nodes[{i}]", nodes, "node")
        data = node.get("data")
        if isinstance(data, dict):
            check_overrides(data.get("params"), f"Malformed workflow node #{node_id} params")
    connections: set[str] = set()
    pairs: set[tuple[str, str]] = set()
    for i, conn in enumerate(workflow.get("connections", [])):
        where = f"workflow.connections[{i}]"
        conn_id = _unique_id(conn, where, connections, "connection")
        for end in ("source", "dest"):
            if conn.get(end) not in nodes:
                raise bad_param(f"{where}.{end}", f"is not a node of the workflow (connection '{conn_id}')")
        pair = (str(conn["source"]), str(conn["dest"]))
        if pair in pairs:
            raise bad_param(where, f"connects '{pair[0]}' to '{pair[1]}' a second time (connection '{conn_id}')")
        pairs.add(pair)


def _enabled(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if not _BOOLISH.fullmatch(str(value)):
        raise bad_param("enabled", "must be true, false or a number")
    return str(value) not in ("0", "false")


async def _plugin_params(call: Call, record: dict[str, Any], current: dict[str, Any] | None) -> None:
    plugin = await call.stores.defs.get(PLUGINS, str(record.get("plugin")))
    if plugin is None:
        raise ApiError("api", f"Plugin not found: {record.get('plugin')}" if record.get("plugin")
                       else "Missing parameter: plugin")  # fmt: skip
    params = record.get("params")
    if not isinstance(params, dict):
        raise bad_param("params", "must be an object")
    if not call.who.is_admin:  # locked params: defaults for new events, unchanged for edits of the same plugin
        same = current is not None and current.get("plugin") == record.get("plugin")
        for p in plugin.get("params") or []:
            if p.get("locked"):
                params[p["id"]] = (current or {}).get("params", {}).get(p["id"]) if same else p.get("value")
    await check_param_values(params, list(plugin.get("params") or []), "Event Plugin")


async def _check(call: Call, record: dict[str, Any], current: dict[str, Any] | None) -> None:
    if current is not None:  # an absent and an empty type are the same (plain event): echoing "" back is no change
        if (record.get("type") or "") != (current.get("type") or ""):
            raise bad_param("type", "cannot change")
        record.pop("type", None)
        if "type" in current:
            record["type"] = current["type"]
    workflow = record.get("type") == "workflow"
    record["enabled"] = _enabled(record.get("enabled", True))
    category = str(record.get("category", ""))
    if await call.stores.defs.get(CATEGORIES, category) is None:
        raise ApiError("api", f"Category not found: {category}")
    require_category(call.who, category)
    record.setdefault("params", {})
    check_overrides(record["params"], "Event params")
    if workflow:
        record["plugin"] = "_workflow"
        _check_workflow(record.get("workflow"))
    else:
        await _plugin_params(call, record, current)
        algo = str(record.get("algo") or "")
        if algo not in ALGOS and not re.fullmatch(r"monitor:\w+", algo):
            raise bad_param("algo", "must be a known algorithm or monitor:<id>")
    await _check_refs(call, record, workflow)
    if record.get("expression"):
        try:
            check_expression(str(record["expression"]))
        except ExpressionError as exc:
            raise bad_param("expression", f"does not compile ({exc})") from None
    record["fields"] = check_params(record.get("fields"), "fields")
    record["actions"] = await validate_actions(call.stores, record.get("actions"))
    record["limits"] = validate_limits(record.get("limits"))
    _check_triggers(record, workflow)
    for field in LAUNCH_FIELDS:  # launch context comes from the plugin at run time, never from the event
        record.pop(field, None)
    state = call.params.get("update_state")
    if isinstance(state, dict) and "cursor" in state:
        await call.stores.jobs.advance_cursor(call.node.fence(), str(record["id"]), integer(state, "cursor", 0))


async def _check_refs(call: Call, record: dict[str, Any], workflow: bool) -> None:
    targets = record.get("targets") or []
    if not workflow and not targets:
        raise ApiError("api", "Event has no targets specified.")
    if not can_targets(call.who, targets):
        raise ApiError("access", "You do not have access to any of the event's target groups.")
    for tag in record.get("tags") or []:
        if await call.stores.defs.get(TAGS, tag) is None:
            raise ApiError("api", f"Unknown tag: {tag}")


def _check_triggers(record: dict[str, Any], workflow: bool) -> None:
    try:
        record["triggers"] = validate_triggers(record.get("triggers") or [], workflow=workflow)
    except TriggerError as exc:
        raise ApiError("api", str(exc)) from None
    for trigger in record["triggers"]:
        if trigger.get("type") == "magic" and trigger.get("key"):
            trigger["token"] = magic_token(str(trigger.pop("key")), str(record["id"]))


async def _running(call: Call, event: dict[str, Any]) -> Reply:
    active = [j for j in await call.stores.jobs.active() if j.get("event") == event["id"]]
    return {"jobs": [j for j in active if j.get("state") == "active"],
            "queued": sum(1 for j in active if j.get("state") == "queued")}  # fmt: skip


async def _idle(call: Call, record: dict[str, Any], current: dict[str, Any] | None) -> None:
    if any(j.get("event") == record["id"] for j in await call.stores.jobs.active()):
        raise ApiError("event", "Event has active jobs; abort them before deleting the event.")


async def _drop_history(call: Call, record: dict[str, Any], current: dict[str, Any] | None) -> None:
    """`delete_jobs`: remove the event's job history too, in the background (it may be long)."""
    if not call.params.get("delete_jobs"):
        return
    node, event_id = call.node, str(record["id"])

    async def sweep() -> None:
        jobs = node.stores.jobs
        while True:
            found, _ = await jobs.search(f"event:{event_id}", offset=0, limit=500)
            if not found:
                return
            fence = node.fence()
            for job in found:
                await jobs.delete(fence, job)
            await node.stores.drop_job_output(found)  # records: their input uploads go too

    in_background("event_history", sweep())

EVENT_SPEC = FamilySpec(
    family=EVENTS,
    singular="event",
    plural="events",
    prefix="e",
    create="create_events",
    edit="edit_events",
    delete="delete_events",
    access=lambda who, rec: can_category(who, str(rec.get("category")))
    and (rec.get("type") == "workflow" or can_targets(who, rec.get("targets") or [])),
    filters=True,
    update_returns=True,
    describe=_running,
    fields=(
        Field("title", "title", required=True),
        Field("enabled", "any", required=True),
        Field("icon", "icon", default=""),
        Field("type", "text", max_len=32),
        Field("category", "text", required=True, max_len=128),
        Field("plugin", "text", max_len=128),
        Field("params", "any", default={}),
        Field("fields", "any", default=[]),
        Field("tags", "strings", default=[]),
        Field("targets", "strings", default=[]),
        Field("expression", "text", max_len=4096),
        Field("algo", "text", default="random", max_len=128),
        Field("notes", "text"),
        Field("actions", "any", default=[]),
        Field("limits", "any", default=[]),
        Field("triggers", "any", default=[]),
        Field("workflow", "object", max_bytes=1024 * 1024),
    ),
    before_create=_check,
    before_update=_check,
    before_delete=_idle,
    after_delete=_drop_history,
    write_args=(obj("update_state", max_bytes=1024, doc="{cursor}: move the scheduler cursor"),),
    delete_args=(flag("delete_jobs", False, doc="also delete the event's job history"),),
)

events = register_family(EVENT_SPEC)


@HANDLERS.add("get_event_history", write=False, privilege=AUTH, args=(ident(), *PAGING))
async def get_event_history(call: Call) -> Reply:
    """Revisions of one event: its create/update/delete activity records, newest first."""
    event_id = call.params["id"]
    if not re.fullmatch(r"\w+", event_id):
        raise bad_param("id", "has an invalid format")
    found = await call.stores.defs.get(EVENTS, event_id)
    if found is not None:
        events.check_access(call, found)
    else:
        require_unrestricted(call.who)  # a deleted event's access can no longer be checked
    rows, total = await activity_page(call, f"action:event_create|event_update|event_delete keywords:{event_id}")
    if found is None and total == 0:
        raise ApiError("event", f"Event not found: {event_id}")
    return {"rows": without_request_info(rows), "list": {"length": total}}
