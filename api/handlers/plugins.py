"""Plugins (digest 3.8): event, monitor, action and scheduler plugins with a typed parameter schema."""

from __future__ import annotations

import re
from typing import Any

from cluster.launcher import reserved_override
from cluster.patterns import PatternError, compile_user
from storage.families import PLUGINS

from ..call import Call
from ..definitions import FamilySpec, Field, register_family
from ..errors import ApiError, bad_param

TYPES = frozenset({"event", "monitor", "action", "scheduler"})
KILL = frozenset({"none", "parent", "all"})
FORMATS = frozenset({"text", "json", "xml"})
PARAM_TYPES = frozenset({"text", "textarea", "code", "json", "checkbox", "select", "bucket", "system", "hidden",
                         "toolset", "group"})  # fmt: skip
MAX_PARAMS = 100
MAX_PATTERNS = 50
PARAM_ID = re.compile(r"[A-Za-z_][\w\-\.]*")


def check_params(params: Any, where: str = "params") -> list[dict[str, Any]]:
    """A parameter schema (a plugin's `params`, an event's `fields`): ids unique, well-formed and not reserved
    overrides, known types, regexes that our bounded engine accepts (cluster/patterns.py). Errors name `where`."""
    if params is None:
        return []
    if not isinstance(params, list) or not all(isinstance(p, dict) for p in params):
        raise bad_param(where, "must be an array of objects")
    # Each regex is compiled here, on the event loop (up to about 1 ms each at the pattern limits).
    if len(params) > MAX_PARAMS:
        raise bad_param(where, f"may hold at most {MAX_PARAMS} parameters")
    if sum(1 for p in params if p.get("regex")) > MAX_PATTERNS:
        raise bad_param(where, f"may hold at most {MAX_PATTERNS} parameters with a regex")
    seen: set[str] = set()
    for i, param in enumerate(params):
        pid = param.get("id")
        if not isinstance(pid, str) or len(pid) > 128 or not PARAM_ID.fullmatch(pid):
            raise ApiError("api", f"{where}[{i}]: 'id' must start with a letter or _ and use word characters "
                                  "(at most 128)")
        if pid in seen:
            raise ApiError("api", f"{where}[{i}]: duplicate id '{pid}'")
        seen.add(pid)
        if param.get("type") not in PARAM_TYPES:
            raise ApiError("api", f"{where}[{i}] ({pid}): unknown type '{str(param.get('type'))[:40]}'")
        if param.get("type") not in ("hidden", "system") and not param.get("title"):
            raise ApiError("api", f"{where}[{i}] ({pid}): missing 'title'")
        if reserved_override(pid):
            raise ApiError("api", f"{where}[{i}] ({pid}): Invalid parameter ID: {pid} (reserved)")
        regex = param.get("regex")
        if regex:
            try:
                compile_user(str(regex), f"{where}[{i}].regex")
            except PatternError as exc:
                raise bad_param(exc.field, exc.problem) from None
    return list(params)


async def _check(call: Call, record: dict[str, Any], current: dict[str, Any] | None) -> None:
    if record.get("type") not in TYPES:
        raise bad_param("type", "must be one of event, monitor, action, scheduler")
    if not record.get("command"):
        raise ApiError("api", "Missing parameter: command")
    if record.get("kill", "parent") not in KILL:
        raise bad_param("kill", "must be none, parent or all")
    if record.get("format") not in (None, "", *FORMATS):
        raise bad_param("format", "must be text, json or xml")
    record["params"] = check_params(record.get("params"))
    if record.get("marketplace"):  # marketplace plugins never run as another user
        record.pop("uid", None)
        record.pop("gid", None)


async def _commands_changed(call: Call, record: dict[str, Any], current: dict[str, Any] | None) -> None:
    """A monitor plugin was created, changed or deleted: every online agent gets the new list (`update`)."""
    if "monitor" in (record.get("type"), (current or {}).get("type")):
        from ..gateway import send_commands  # the gateway imports the handlers' registry

        await send_commands(call.stores)


PLUGIN_SPEC = FamilySpec(
    family=PLUGINS,
    singular="plugin",
    plural="plugins",
    prefix="p",
    create="create_plugins",
    edit="edit_plugins",
    delete="delete_plugins",
    update_returns=True,
    fields=(
        Field("title", "title", required=True),
        Field("enabled", "bool", default=True),
        Field("icon", "icon", default=""),
        Field("type", "text", required=True, max_len=32),
        Field("command", "text", required=True),
        Field("script", "text", max_len=1024 * 1024),
        Field("params", "any", default=[]),
        Field("groups", "strings"),
        Field("format", "text", max_len=16),
        Field("quick", "bool"),
        Field("uid", "text", max_len=64),
        Field("gid", "text", max_len=64),
        Field("kill", "text", default="parent", max_len=16),
        Field("runner", "bool"),
        Field("marketplace", "any"),
        Field("notes", "text"),
    ),
    before_create=_check,
    before_update=_check,
    after_write=_commands_changed,
    after_delete=_commands_changed,
)

plugins = register_family(PLUGIN_SPEC)
