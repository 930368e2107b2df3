"""Retries of a finished job (execution reference 1.1, xyOps checkRetryJob). Pure code.

A finished job is retried when its code is not 0, it was not retried already, and its `retry` limit (the first
enabled one: event > category > universal) allows more: `retry_count < amount`. An abort (`code == "abort"`)
is retried only when the abort was of a retryable kind, marked by `retry_ok` on the job where it was decided
(RETRY_RULES says which). The retry is a new job: a clone of a whitelist of the old one's properties with
`retry_count + 1` and `retry_prev`, waiting `duration` seconds in `retry_delay` when the limit has one. The old
job gets `jobs: [{id, reason: "retry"}]` and `retried: true`, and then runs no completion actions.
"""

from __future__ import annotations

import copy
from typing import Any

from .limits import SYSTEM_TAGS, first_limit
from .updates import normal_code

Record = dict[str, Any]

# xyOps' whitelist: what a retry inherits from the job it retries.
RETRY_COPIED = (
    "type", "event", "category", "plugin", "targets", "algo", "workflow", "input", "params", "parent", "source",
    "username", "api_key", "actions", "limits", "icon", "label", "test", "retry_count", "tags", "invisible",
    "ephemeral",
)  # fmt: skip
# Also carried, so the clone can be placed as it is without going back to the launcher: what the launcher
# copied from the plugin and the event. ⚠ xyOps drops `expression` and `test_conditions` on a retry (its
# retry may then run on a server the event's filter excludes, or fire every action of a test run); kept here.
RETRY_CARRIED = ("command", "script", "uid", "gid", "kill", "runner", "event_title", "event_revision",
                 "expression", "test_conditions")  # fmt: skip
# What running an action or firing a limit wrote into it: a retry starts with clean ones. ⚠ xyOps copies them,
# so a limit that fired (say a time limit that aborted) never fires on the retry, and actions that already ran
# (their `code` is set) are skipped on it.
_ACTION_RUN = ("date", "elapsed_ms", "code", "description", "details", "active", "loc")
_LIMIT_RUN = ("date", "when", "msg", "code", "description", "details", "elapsed_ms")

# The rule per way a job can end, for the README: (how it ended, retried when a retry limit allows?, why).
# An abort is retried only when the code that decided it set `retry_ok` on the job.
RETRY_RULES: tuple[tuple[str, bool, str], ...] = (
    ("Code 0 (success)", False, "Nothing to retry."),
    ('Any other number or word (e.g. exit code 1, "timeout")', True, "A failure of the job itself."),
    ("warning", True, "Not 0, so a failure in xyOps' rule, however mild."),
    ("critical", True, "Not 0: a failure."),
    ("Aborted by a user or API key (abort_job)", False, "An explicit request to stop the job."),
    ("Aborted: no updates for the dead-job timeout (server or agent lost)", True,
     "The job may not have failed; its server went away."),
    ("Aborted: a time, log, mem or cpu limit with abort", True, "The limit stops this run; another may fit."),
    ("Aborted by the agent: its own log size limit", False,
     "⚠ A report cannot mark its own abort retryable (a job could make a user's abort retry); the conductor's log "
     "limit is."),
    ("Aborted: no server available (queue full or no queue)", True, "Servers may be back by the next try."),
    ("Aborted: the chosen server left during the start actions", True,
     "Like no server available. ⚠ xyOps does not retry this one."),
    ("Aborted: concurrency limit reached (queue full or no queue)", False,
     "A retry would meet the same limit (xyOps #417)."),
    ("Aborted: an alert with abort_jobs fired on the server", False, "The operator asked to stop jobs there."),
    ("Aborted: the event was deleted or disabled before the start", False, "The event is not meant to run."),
    ("Aborted: unknown server selection algorithm or monitor", False, "A configuration error; a retry fails too."),
    ("Process ended but the job never finished uploading (finishing timeout): completed as warning", True,
     "Code warning, so the warning rule."),
)  # fmt: skip


def _count(value: Any) -> int:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) and value > 0 else 0


def retry_limit(final: Record) -> dict[str, Any] | None:
    """The job's `retry` limit when it allows retries at all (an `amount` above 0)."""
    limit = first_limit(final, "retry")
    amount = limit.get("amount") if limit else None
    ok = isinstance(amount, int | float) and not isinstance(amount, bool) and amount > 0
    return dict(limit) if limit and ok else None


def should_retry(final: Record) -> bool:
    """Is this finished job to be retried (see the module docstring)?"""
    code = normal_code(final.get("code"))
    if code == 0 or final.get("retried") or (code == "abort" and not final.get("retry_ok")):
        return False
    limit = retry_limit(final)
    return limit is not None and _count(final.get("retry_count")) < float(limit["amount"])


def _clean(items: Any, run_keys: tuple[str, ...]) -> list[Any]:
    if not isinstance(items, list):
        return []
    return [{k: v for k, v in i.items() if k not in run_keys} if isinstance(i, dict) else i for i in items]


def retry_job(final: Record, now: float, new_id: str) -> Record | None:
    """The retry of a finished job (not stored), or None when it is not to be retried.

    The clone is a fresh job: `state` is `retry_delay` with `until = now + duration` when the retry limit has
    a duration, else `ready`; `started`, `updated` and `now` are `now`. System tags and the per-run fields of its
    actions and limits are dropped; a workflow's running state too. `final` is not changed (mark_retried)."""
    if not should_retry(final):
        return None
    limit = retry_limit(final)
    assert limit is not None  # should_retry checked it
    clone: Record = {k: copy.deepcopy(final[k]) for k in (*RETRY_COPIED, *RETRY_CARRIED) if k in final}
    if isinstance(clone.get("workflow"), dict):
        for key in ("state", "jobs"):
            clone["workflow"].pop(key, None)
    # The sub-actions of limits that fired (condition `limit`) belong to the old run; its limits fire anew here.
    actions = [a for a in clone.get("actions") or [] if not (isinstance(a, dict) and a.get("condition") == "limit")]
    clone["actions"] = _clean(actions, _ACTION_RUN)
    clone["limits"] = _clean(clone.get("limits"), _LIMIT_RUN)
    clone["tags"] = [t for t in clone.get("tags") or [] if t not in SYSTEM_TAGS]
    clone["retry_count"] = _count(final.get("retry_count")) + 1
    clone.update(id=new_id, retry_prev=final.get("id"), started=now, updated=now, now=now)
    delay = limit.get("duration")
    if isinstance(delay, int | float) and not isinstance(delay, bool) and delay > 0:
        clone.update(state="retry_delay", until=now + float(delay))
    else:
        clone["state"] = "ready"
    return clone


def mark_retried(final: Record, new_id: str) -> str:
    """Link the finished job to its retry (`jobs` + `retried`, and no more `retry_ok`); the meta-log line."""
    jobs = final["jobs"] if isinstance(final.get("jobs"), list) else []
    final["jobs"] = [*jobs, {"id": new_id, "reason": "retry"}]
    final["retried"] = True
    final.pop("retry_ok", None)
    limit = retry_limit(final) or {}
    number = _count(final.get("retry_count")) + 1
    return f"Launched retry #{number} of {int(float(limit.get('amount') or 0))}: #{new_id}"


def retry_note(final: Record) -> str | None:
    """The meta-log line when a failed job is not retried because its retries are used up, else None."""
    code = normal_code(final.get("code"))
    limit = retry_limit(final)
    if code == 0 or final.get("retried") or limit is None or should_retry(final):
        return None
    if code == "abort" and not final.get("retry_ok"):
        return None
    return f"Reached the retry limit ({int(float(limit['amount']))}), the job is not retried."
