"""Web hooks (digest 3.11): outbound HTTP request definitions, and `test_web_hook` which really sends one."""

from __future__ import annotations

import copy
import re
import time
from collections.abc import Mapping
from typing import Any

from cluster.actions.webhook import prepare, send
from cluster.expressions import templates
from storage.families import WEB_HOOKS

from .. import params as P
from ..call import Call
from ..definitions import FamilySpec, Field, Record, clean_fields, register_family
from ..errors import ApiError, bad_param
from ..registry import HANDLERS, Reply

MAX_TIMEOUT_S = 3600
MAX_RETRIES = 32
TEST_MESSAGE = "This is a test message from Podium."
_URL_START = re.compile(r"^(?:https?://|\{\{)", re.IGNORECASE)
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # an RFC 9110 token
# What test_web_hook may override on a stored hook (xyOps merges the whole request over it).
TEST_OVERRIDES = ("title", "method", "url", "headers", "body", "timeout", "retries", "follow", "ssl_cert_bypass")


def _template(name: str, value: str) -> None:
    try:
        templates.check(value)
    except ValueError as exc:
        raise bad_param(name, f"has a bad template: {exc}") from None


def _headers(value: Any) -> list[dict[str, str]]:
    """[{name, value}] with token names and template values; other keys in an item are dropped."""
    if not isinstance(value, list):
        raise bad_param("headers", "must be an array of {name, value} objects")
    out = []
    for n, item in enumerate(value):
        if not isinstance(item, Mapping) or not isinstance(item.get("name"), str):
            raise bad_param("headers", f"item {n} must be an object with a string 'name' and 'value'")
        name, val = item["name"].strip(), item.get("value", "")
        if not _HEADER_NAME.fullmatch(name):
            raise bad_param("headers", f"item {n} has an invalid header name '{name[:60]}'")
        if isinstance(val, bool) or not isinstance(val, str | int | float):
            raise bad_param("headers", f"item {n} ('{name}') must have a string 'value'")
        _template(f"headers[{n}].value", str(val))
        out.append({"name": name, "value": str(val)})
    return out


def validate_hook(record: Record) -> None:
    """Check (and normalise) a whole hook; every error names its field (code `api`)."""
    url = str(record.get("url") or "")
    if not _URL_START.match(url):
        raise bad_param("url", "must start with http://, https:// or a {{ }} placeholder")
    _template("url", url)
    record["method"] = str(record.get("method") or "").upper()
    if not re.fullmatch(r"\w+", record["method"]):
        raise bad_param("method", "has an invalid format")
    record["headers"] = _headers(record.get("headers") or [])
    _template("body", str(record.get("body") or ""))
    timeout = record.get("timeout")
    if not isinstance(timeout, int | float) or not 0 < timeout <= MAX_TIMEOUT_S:
        raise bad_param("timeout", f"must be a number of seconds above 0 and at most {MAX_TIMEOUT_S}")
    record["timeout"] = int(timeout) if float(timeout).is_integer() else timeout
    if int(record.get("retries") or 0) > MAX_RETRIES:
        raise bad_param("retries", f"must be at most {MAX_RETRIES}")


async def _check(call: Call, record: Record, current: Record | None) -> None:
    validate_hook(record)


WEB_HOOK_SPEC = FamilySpec(
    family=WEB_HOOKS,
    singular="web_hook",
    plural="web_hooks",
    prefix="w",
    create="create_web_hooks",
    edit="edit_web_hooks",
    delete="delete_web_hooks",
    fields=(
        Field("title", "title", required=True),
        Field("enabled", "bool", default=True),
        Field("url", "text", required=True),
        Field("method", "text", required=True, pattern=r"\w+", max_len=16),
        Field("headers", "any", default=[]),
        Field("body", "text", default="", max_len=256 * 1024),
        Field("timeout", "number", default=30),
        Field("retries", "int", default=0),
        Field("follow", "bool", default=False),
        Field("ssl_cert_bypass", "bool", default=False),
        Field("max_per_day", "int", default=0),
        Field("icon", "icon", default=""),
        Field("notes", "text", default=""),
    ),
    before_create=_check,
    before_update=_check,
)

web_hooks = register_family(WEB_HOOK_SPEC)


def sample_data(hook: Record) -> dict[str, Any]:
    """What a test request's templates expand against (jobs and alerts pass their own hook data)."""
    return {"text": TEST_MESSAGE, "content": TEST_MESSAGE, "message": TEST_MESSAGE, "hook": hook,
            "now": int(time.time())}  # fmt: skip


TEST_ARGS = (
    P.text("id", required=True, max_len=128, pattern=r"[a-z0-9_]+", doc="a stored hook, or the id of a new one"),
    *(f.param().with_(required=f.name == "title") for f in WEB_HOOK_SPEC.fields if f.name in TEST_OVERRIDES),
)


@HANDLERS.add("test_web_hook", write=True, privilege="edit_web_hooks", args=TEST_ARGS)
async def test_web_hook(call: Call) -> Reply:
    """Send the hook (stored, with overrides merged on top, or given whole) and report what came back.
    Like xyOps, the request must carry the hook's `title`, also for a stored hook."""
    hook_id = call.params["id"]  # declared: required, [a-z0-9_]+; `title` required too
    overrides = {k: call.params[k] for k in TEST_OVERRIDES if k in call.params}
    stored = await call.stores.defs.get(WEB_HOOK_SPEC.family, hook_id)
    if stored is not None:
        hook = {**copy.deepcopy(stored), **clean_fields(WEB_HOOK_SPEC, overrides, creating=False)}
    else:
        hook = {"id": hook_id, **clean_fields(WEB_HOOK_SPEC, overrides, creating=True)}
    validate_hook(hook)
    try:
        request = prepare(hook, sample_data(hook))
    except ValueError as exc:  # a template over the evaluation or output bounds
        raise ApiError("webhook", f"Web Hook {hook_id} cannot be prepared: {exc}") from None
    result = await send(request)
    return {"result": result}
