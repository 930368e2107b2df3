"""Which of a job's actions run, and when (xyOps getCompletedJobConditions, runJobActions). Pure code.

A job's `actions` list is built at launch as the event's actions, then the category's (`source: category`),
then the universal ones (`source: universal`); actions the job pushes while it runs are appended
(`source: job`). For a set of conditions (`start`, the completion conditions, or `instant` for a pushed action)
the enabled actions whose condition is in the set run, once per type and target (`action_key`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from cluster.dispatch.limits import SYSTEM_TAGS
from cluster.dispatch.updates import normal_code

Record = dict[str, Any]

# The conditions of a job action (digest 3.1); `tag:<id>` besides. `instant` only for pushed actions.
JOB_CONDITIONS = ("start", "complete", "success", "error", "warning", "critical", "abort", "user")
PUSH_CONDITIONS = frozenset({*JOB_CONDITIONS, "instant"})
JOB_ACTION_TYPES = frozenset({"email", "web_hook", "run_event", "channel", "snapshot", "ticket", "plugin",
                              "suspend", "disable", "delete", "store", "fetch", "tag", "label"})  # fmt: skip
_TAG_CONDITION = re.compile(r"tag:[\w.\-]{1,64}")
# What running an action writes into it (xyOps): an action that has a `code` ran already.
RESULT_KEYS = ("date", "elapsed_ms", "code", "description", "details", "active", "loc")


def completion_conditions(final: Mapping[str, Any]) -> list[str]:
    """The conditions a finished job fires: none when it was retried; else `complete`, then `success` or
    `error` followed by `warning`, `critical` or `abort` for those codes and `user` for any other (a custom
    error code: an exit code such as 1, or a word the job chose; not "a user did it": a user's abort is
    `abort`), then `tag:<id>` for each of the job's own tags (system tags such as `_error` are not the job's)."""
    if final.get("retried"):
        return []
    code = normal_code(final.get("code"))
    out = ["complete"]
    if code == 0:
        out.append("success")
    else:
        out += ["error", str(code) if code in ("warning", "critical", "abort") else "user"]
    tags = final.get("tags") if isinstance(final.get("tags"), list) else []
    for tag in tags or []:
        cond = f"tag:{tag}"
        if isinstance(tag, str) and tag not in SYSTEM_TAGS and cond not in out:
            out.append(cond)
    return out


def _recipients(action: Mapping[str, Any]) -> list[str]:
    users = action.get("users") if isinstance(action.get("users"), list) else []
    email = action.get("email") if isinstance(action.get("email"), str) else ""
    found = {str(u).strip().lower() for u in users or []} | {e.strip().lower() for e in str(email).split(",")}
    return sorted(found - {""})


_TARGETS: dict[str, Callable[[Mapping[str, Any]], str]] = {
    "email": lambda a: ",".join(_recipients(a)),
    "web_hook": lambda a: str(a.get("web_hook") or ""),
    "run_event": lambda a: str(a.get("event_id") or ""),
    "channel": lambda a: str(a.get("channel_id") or ""),
    "plugin": lambda a: str(a.get("plugin_id") or ""),
    "store": lambda a: str(a.get("bucket_id") or ""),
    "fetch": lambda a: str(a.get("bucket_id") or ""),
    "tag": lambda a: ",".join(sorted({str(t) for t in a.get("tags") or []})) if isinstance(a.get("tags"), list) else "",
    "label": lambda a: str(a.get("label") or ""),
}


def action_key(action: Mapping[str, Any]) -> str:
    """What makes two actions the same, for de-duplication: the type and its target ("email:a@b.c,ops",
    "web_hook:<hook id>", "run_event:<event id>", "channel:<id>", "plugin:<id>", "store:<bucket id>",
    "tag:<sorted tags>", "label:<label>"); `suspend`, `disable`, `delete`, `snapshot` and `ticket` have none (one of
    each per job). Email recipients are the users and the addresses of the CSV, lower-cased and sorted.
    ⚠ xyOps keys emails by the raw strings (so "a@b.c, x" and "x, a@b.c" both send) and `tag` and `label` by the
    type alone (so a second tag action with other tags never runs); here they are keyed by what they do."""
    kind = str(action.get("type") or "")
    target = _TARGETS[kind](action) if kind in _TARGETS else ""
    return f"{kind}:{target}" if target else kind


def matching_actions(job: Mapping[str, Any], conditions: Sequence[str]) -> list[Record]:
    """The job's enabled actions for `conditions`, once per `action_key`, skipping those that ran already.

    As xyOps: conditions in the order given, and for each its actions in list order (event, category,
    universal, then the job's own), the first of a key wins; de-duplication comes before the skip, so a
    duplicate of an action that ran does not run either. A test run with `test_conditions` fires only those.
    The returned dicts are the job's own (not copies): record each result into its action."""
    wanted = list(conditions)
    only = job.get("test_conditions")
    if job.get("test") and isinstance(only, list):
        wanted = [c for c in wanted if c in only]
    actions = [a for a in job.get("actions") or [] if isinstance(a, dict) and a.get("enabled")]
    seen: set[str] = set()
    out: list[Record] = []
    for condition in dict.fromkeys(wanted):
        for action in actions:
            if action.get("condition") != condition:
                continue
            key = action_key(action)
            if key in seen:
                continue
            seen.add(key)
            if "code" not in action:
                out.append(action)
    return out


# -- pushed actions ---------------------------------------------------------------------------------------------
# A job may push anything: only the job action types and conditions pass, each with the fields its type reads,
# checked and bounded. Fields only the conductor sets (results, `template`, workflow `id`/`conn`, `overrides`)
# never pass.

MAX_PUSHED_ACTIONS = 100  # per push
MAX_TEXT = 8192  # a web hook's text, a label, an email CSV
MAX_BODY = 65536  # a custom email body
MAX_LIST = 100  # users, tags, assignees, sources
MAX_PARAMS = 16384  # params, as JSON
MAX_DELAY = 30 * 86400  # a run_event start delay, seconds
_ID = re.compile(r"[\w.\-]{1,100}")
_NAME = re.compile(r"[^\x00-\x1f]{1,200}")


class _Bad(ValueError):
    """A pushed field that is not what its type reads."""


def _ident(value: Any) -> str:
    if isinstance(value, str) and _ID.fullmatch(value):
        return value
    raise _Bad


def _text(size: int) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        if isinstance(value, str) and len(value) <= size:
            return value
        raise _Bad

    return check


def _names(value: Any) -> list[str]:
    if not isinstance(value, list) or len(value) > MAX_LIST:
        raise _Bad
    if not all(isinstance(v, str) and _NAME.fullmatch(v) for v in value):
        raise _Bad
    return list(value)


def _params(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _Bad
    try:
        text = json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise _Bad from exc
    if len(text) > MAX_PARAMS:
        raise _Bad
    out: dict[str, Any] = json.loads(text)  # a detached copy
    return out


def _delay(value: Any) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value <= MAX_DELAY:
        return float(value)
    raise _Bad


def _sync(value: Any) -> str:
    if value in ("data", "files", "data_and_files"):
        return str(value)
    raise _Bad


def _due(value: Any) -> float | str:
    if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
        return float(value)
    return _text(100)(value)


_NOTIFY = {"users": _names, "email": _text(MAX_TEXT), "web_hook": _ident}
# Type -> field -> check (returns the value to keep, raises _Bad).
_FIELDS: dict[str, dict[str, Callable[[Any], Any]]] = {
    "email": {"users": _names, "email": _text(MAX_TEXT), "body": _text(MAX_BODY)},
    "web_hook": {"web_hook": _ident, "text": _text(MAX_TEXT)},
    "run_event": {"event_id": _ident, "params": _params, "start_delay": _delay},
    "channel": {"channel_id": _ident},
    "plugin": {"plugin_id": _ident, "params": _params},
    "store": {"bucket_id": _ident, "bucket_sync": _sync, "bucket_glob": _text(1000)},
    "fetch": {"bucket_id": _ident, "bucket_sync": _sync, "bucket_glob": _text(1000)},
    "ticket": {"ticket_type": _ident, "ticket_assignees": _names, "ticket_tags": _names, "ticket_due": _due},
    "tag": {"tags": _names},
    "label": {"label": _text(MAX_TEXT)},
    "suspend": {**_NOTIFY, "sources": _names},
    "snapshot": {}, "disable": {}, "delete": {},
}  # fmt: skip
_REQUIRED = {"web_hook": "web_hook", "run_event": "event_id", "channel": "channel_id", "plugin": "plugin_id",
             "store": "bucket_id", "fetch": "bucket_id", "tag": "tags", "label": "label"}  # fmt: skip


def _pushed(item: Any) -> Record | None:
    if not isinstance(item, Mapping):
        return None
    kind, condition = item.get("type"), item.get("condition")
    if kind not in JOB_ACTION_TYPES or not isinstance(condition, str):
        return None
    if condition not in PUSH_CONDITIONS and not _TAG_CONDITION.fullmatch(condition):
        return None
    if not item.get("enabled", True):
        return None  # would never run
    out: Record = {"enabled": True, "condition": condition, "type": kind}
    try:
        for field, check in _FIELDS[str(kind)].items():
            if item.get(field) is not None:
                out[field] = check(item[field])
    except _Bad:
        return None
    needed = _REQUIRED.get(str(kind))
    if needed and out.get(needed) in (None, "", []):
        return None
    if kind == "email" and not (out.get("users") or str(out.get("email") or "").strip()):
        return None
    out["source"] = "job"
    return out


def validate_pushed(actions: Any) -> list[Record]:
    """The well-formed actions of a job's `push.actions`, bounded, each marked `source: job`; the rest dropped.

    Allowed: the job action types, the job conditions plus `tag:<id>` and `instant`, and per type only the
    fields it reads (ids match `[\\w.-]{1,100}`, texts and lists bounded, params at most 16 KB of JSON). A
    missing `enabled` counts as true (⚠ xyOps' own documented push example omits it, and then never runs it);
    a disabled one is dropped. References are not checked here (no store access): the runner records an
    unknown web hook or event as that action's failure."""
    if not isinstance(actions, list):
        return []
    out = []
    for item in actions[:MAX_PUSHED_ACTIONS]:
        action = _pushed(item)
        if action is not None:
            out.append(action)
    return out
