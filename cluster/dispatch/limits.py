"""The limits of a job (execution reference 1.3, xyOps docs/limits.md). Pure code on job dicts.

Which limit applies and what counts against it at the start (`job`, `queue`); the limits of a running job
(`time`, `log`, `mem`, `cpu`: resource_breaches); and those applied at launch or at the finish (`day`, `tag`,
`file`).

For the single-instance types (`job`, `retry`, `queue`, `file`) the first enabled limit of the job's list wins;
the list is built at launch as event limits, then category limits, then universal ones, so "first" is the
precedence event > category > universal. Jobs count against each other's concurrency when they are "similar":
the same event and type, or, inside a workflow, the same workflow node of the same parent run.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

Record = Mapping[str, Any]
_WORD = re.compile(r"\w+")


def first_limit(job: Record, kind: str) -> Record | None:
    for limit in job.get("limits") or []:
        if isinstance(limit, Mapping) and limit.get("type") == kind and limit.get("enabled", True):
            return limit
    return None


def _positive(value: Any, default: float) -> float:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) and value > 0 else default


def concurrency(job: Record) -> int:
    """How many similar jobs may run at once (0 = no limit)."""
    limit = first_limit(job, "job")
    return int(_positive(limit.get("amount"), 0)) if limit else 0


def weight(job: Record) -> float:
    """The job's weight against a server's job budget (its `job` limit's `weight`, default 1)."""
    limit = first_limit(job, "job")
    return _positive(limit.get("weight"), 1.0) if limit else 1.0


def queue_room(job: Record) -> int:
    """How many jobs may wait in the job's queue (0 = no queue). A queue needs a `job` limit (as xyOps)."""
    limit = first_limit(job, "queue")
    if not limit or first_limit(job, "job") is None:
        return 0
    return int(_positive(limit.get("amount"), 0))


def similar_key(job: Record) -> str:
    """Jobs with the same key share a concurrency limit and a queue (xyOps' queue id)."""
    flow = job.get("workflow")
    if isinstance(flow, Mapping) and flow.get("node"):
        return f"{flow.get('node')}-{flow.get('job', '')}-{job.get('type', '')}"
    return f"{job.get('event', '')}--{job.get('type', '')}"


def queue_order(job: Record) -> tuple[int, float, str]:
    """Priority jobs first, then the oldest."""
    return (0 if job.get("priority") else 1, float(job.get("started") or 0), str(job.get("id")))


# -- resource limits of a running job (execution reference 1.3, xyOps checkJobActiveLimits) --------------------
#
# `time`, `log`, `mem` and `cpu` limits all apply (not only the first of each type). As xyOps:
# - time: the job has run longer than `duration` seconds since it became active (`now - started > duration`);
# - log: the job's live log is larger than `amount` bytes. xyOps reads `job.log_file_size`, the byte count the
#   conductor has appended to the job's log (an agent's report may not set it); the dispatcher keeps that field;
# - mem / cpu: `job.mem.current` (RSS bytes) / `job.cpu.current` (percent, 100 = one core) is over `amount`
#   and has stayed over it for `duration` seconds. The start of the breach is kept in the limit's `when` and
#   cleared when the figure drops back under.
# Each limit fires once per job: it gets `date` (and `msg`) and is never considered again.
# ⚠ xyOps fires at most one limit per tick and a mem/cpu limit without `duration` never fires (NaN compare);
# here every due limit fires in the same check (stopping after the first that aborts: the rest of a job being
# aborted is not worth an email), a mem/cpu limit is due once over for at least `duration` seconds (xyOps:
# strictly more, which with a 1 s tick delays a 0 s sustain to the next tick) and a missing `duration` is 0.

RESOURCE_KINDS = ("time", "log", "mem", "cpu")
# What a limit a job pushes for itself may hold (cluster/dispatch/machine.py checked): no run markers, no users.
PUSHED_LIMIT_FIELDS = frozenset({"type", "enabled", "amount", "duration", "abort", "tags", "text", "web_hook"})
# Tags the conductor adds itself at the finish; they are not the job's own (no tag limit, no tag: condition).
SYSTEM_TAGS = frozenset({"_success", "_error", "_last", "_retried", "_test", "_files"})


@dataclass(frozen=True, slots=True)
class Breach:
    """A resource limit that has just fired: what to log, what to run, whether to abort.

    `limit` is the job's own limit dict (already stamped with `date`); `actions` are the limit's sub-actions in
    the job action shape (condition `limit`); `tags` were added to the job's tags by the check."""

    index: int  # position in job["limits"]
    limit: Mapping[str, Any]
    kind: str
    message: str  # the meta-log line; also the abort reason
    abort: bool  # abort the job (a retryable abort: set `retry_ok`)
    actions: tuple[dict[str, Any], ...] = ()
    tags: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ResourceCheck:
    """The result of one look at a running job: the limits that fired, and whether the job must be written."""

    breaches: tuple[Breach, ...] = ()
    changed: bool = False  # the job was changed in place (a breach started or ended, a limit fired)


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _seconds_text(seconds: float) -> str:
    left, parts = math.ceil(seconds), []
    for name, size in (("day", 86400), ("hour", 3600), ("minute", 60), ("second", 1)):
        count, left = divmod(left, size)
        if count:
            parts.append(f"{count} {name}{'s' if count != 1 else ''}")
    return " ".join(parts) or "0 seconds"


def _bytes_text(amount: float) -> str:
    for unit, size in (("GB", 1024**3), ("MB", 1024**2), ("KB", 1024)):
        if amount >= size:
            return f"{amount / size:.1f}".removesuffix(".0") + f" {unit}"
    return f"{amount:.0f} bytes"


def _over(figure: float, amount: float, text: Callable[[float], str], unit: str) -> str:
    """'A > B' in words; the exact figures when the rounded words would read the same."""
    shown, limit = text(figure), text(amount)
    return f"{shown} > {limit}" if shown != limit else f"{figure:.15g}{unit} > {amount:.15g}{unit}"


def _percent(value: float) -> str:
    return f"{value:.1f}".removesuffix(".0") + "%"


def _measure(job: Mapping[str, Any], limit: Mapping[str, Any], now: float) -> tuple[float, float] | None:
    """(figure, amount) of a time or log limit, or None when it has nothing to measure."""
    if limit["type"] == "time":
        duration, started = _number(limit.get("duration")), _number(job.get("started"))
        return (now - started, duration) if duration and duration > 0 and started is not None else None
    amount, size = _number(limit.get("amount")), _number(job.get("log_file_size"))
    return (size, amount) if amount and amount > 0 and size is not None else None


def _message(kind: str, figure: float, limit: Mapping[str, Any]) -> str:
    amount = _number(limit.get("duration" if kind == "time" else "amount")) or 0.0
    if kind == "time":
        return f"Job run time exceeded limit: {_over(figure, amount, _seconds_text, ' seconds')}."
    if kind == "log":
        return f"Job output size exceeded limit: {_over(figure, amount, _bytes_text, ' bytes')}."
    duration = _number(limit.get("duration")) or 0.0
    sustained = f" for {_seconds_text(duration)}" if duration > 0 else ""
    if kind == "mem":
        return f"Job memory usage exceeded limit: {_over(figure, amount, _bytes_text, ' bytes')}{sustained}."
    return f"Job CPU usage exceeded limit: {_over(figure, amount, _percent, '%')}{sustained}."


LIMIT_TITLES = {"time": "Max Run Time", "log": "Max Output Size", "mem": "Max Memory Limit", "cpu": "Max CPU % Limit"}


def _summary(limit: Mapping[str, Any], abort: bool) -> str:
    """What the limit did, as the `job_limited` email lists it."""
    lines = []
    if limit.get("users") or limit.get("email"):
        lines.append("- **Sent this email.**")
    if isinstance(limit.get("tags"), list) and limit["tags"]:
        lines.append(f"- **Applied tags:** {', '.join(str(t) for t in limit['tags'][:20])}")
    if limit.get("web_hook"):
        lines.append(f"- **Fired web hook:** {limit['web_hook']}")
    if limit.get("snapshot"):
        lines.append("- **Requested a server snapshot.**")
    if abort:
        lines.append("- **Aborted the job.**")
    return "\n".join(lines)


def _sub_actions(limit: Mapping[str, Any], message: str, abort: bool) -> tuple[dict[str, Any], ...]:
    """The limit's email, web hook and snapshot, as job actions (xyOps triggerActiveJobLimit)."""
    source = str(limit.get("source") or "event")
    base = {"enabled": True, "condition": "limit", "source": source,
            "title": LIMIT_TITLES.get(str(limit.get("type")), "Limit"), "summary": _summary(limit, abort)}  # fmt: skip
    out: list[dict[str, Any]] = []
    users = [u for u in limit.get("users") or [] if isinstance(u, str)] if isinstance(limit.get("users"), list) else []
    email = str(limit["email"]) if isinstance(limit.get("email"), str) else ""
    if users or email.strip():
        out.append({**base, "type": "email", "template": "job_limited", "users": users, "email": email,
                    "msg": message})  # fmt: skip
    if isinstance(limit.get("web_hook"), str) and limit["web_hook"]:
        text = limit.get("text") if isinstance(limit.get("text"), str) else ""
        hook_msg = message.rstrip(".") + (" (Job aborted)" if abort else "")
        out.append({**base, "type": "web_hook", "template": "job_limited", "web_hook": limit["web_hook"],
                    "text": text, "msg": hook_msg})  # fmt: skip
    if limit.get("snapshot"):
        out.append({**base, "type": "snapshot"})
    return tuple(out)


def _fire(job: dict[str, Any], index: int, limit: dict[str, Any], message: str, now: float) -> Breach:
    limit["date"] = now
    limit["msg"] = message
    raw = limit.get("tags")
    tags = tuple(str(t)[:64] for t in raw if isinstance(t, str) and t) if isinstance(raw, list) else ()
    if tags:
        job["tags"] = sorted({*(job.get("tags") or []), *tags})
    abort = bool(limit.get("abort"))
    return Breach(index=index, limit=limit, kind=str(limit["type"]), message=message, abort=abort,
                  actions=_sub_actions(limit, message, abort), tags=tags)  # fmt: skip


def _sustained(limit: dict[str, Any], job: Mapping[str, Any], now: float) -> tuple[float | None, bool]:
    """For mem/cpu: (the figure when the limit is due, whether `when` changed)."""
    amount = _number(limit.get("amount"))
    figures = job.get(limit["type"])
    current = _number(figures.get("current")) if isinstance(figures, Mapping) else None
    if not amount or amount <= 0 or current is None:
        return None, False
    if current <= amount:
        if "when" not in limit:
            return None, False
        del limit["when"]
        return None, True
    changed = _number(limit.get("when")) is None
    if changed:
        limit["when"] = now
    duration = max(0.0, _number(limit.get("duration")) or 0.0)
    return (current if now - float(limit["when"]) >= duration else None), changed


def watched(job: Mapping[str, Any]) -> bool:
    """Has the job a resource limit that may still fire (enabled, not fired yet)?"""
    return any(isinstance(lim, Mapping) and lim.get("type") in RESOURCE_KINDS and lim.get("enabled", True)
               and not lim.get("date") for lim in job.get("limits") or [])  # fmt: skip


def watches_log(job: Mapping[str, Any]) -> bool:
    """Does a `log` limit still watch the job's output size (so its size must be read)?"""
    return any(isinstance(lim, Mapping) and lim.get("type") == "log" and lim.get("enabled", True)
               and not lim.get("date") for lim in job.get("limits") or [])  # fmt: skip


def resource_breaches(job: dict[str, Any], now: float) -> ResourceCheck:
    """Check a running job's time, log, mem and cpu limits (changes `job` in place; see the section comment).

    Only an `active` job that is not being aborted is checked. Breaches come in xyOps' order (time, log, mem,
    cpu; list order within a type)."""
    rows = job.get("limits")
    if job.get("state") != "active" or job.get("aborting") or not isinstance(rows, list):
        return ResourceCheck()
    breaches: list[Breach] = []
    changed = False
    for kind in RESOURCE_KINDS:
        for index, limit in enumerate(rows):
            if not isinstance(limit, dict) or limit.get("type") != kind or not limit.get("enabled", True):
                continue
            if limit.get("date"):
                continue  # fired already
            if kind in ("time", "log"):
                pair = _measure(job, limit, now)
                figure = pair[0] if pair and pair[0] > pair[1] else None
            else:
                figure, moved = _sustained(limit, job, now)
                changed = changed or moved
            if figure is None:
                continue
            breach = _fire(job, index, limit, _message(kind, figure, limit), now)
            breaches.append(breach)
            changed = True
            if breach.abort:
                return ResourceCheck(tuple(breaches), changed)
    return ResourceCheck(tuple(breaches), changed)


# -- launch-time limits: day, tag, file ------------------------------------------------------------------------


def day_counted(conditions: Sequence[str]) -> list[str]:
    """The conditions that count towards `day` limits when they fire: the plain words (`start`, `complete`,
    `success`, `error`, `warning`, ...), not `tag:<id>` (xyOps runJobActions: only `^\\w+$` conditions)."""
    return [c for c in conditions if _WORD.fullmatch(c)]


def day_limit(job: Mapping[str, Any], counts: Mapping[str, int]) -> str | None:
    """The refusal message when a `day` limit is reached, else None. Checked at launch, before the job exists.

    `counts` holds today's counts for the job's event, per condition: how many times each condition fired
    today for jobs of this event (xyOps' daily stat `events.<event>.job_<condition>`, bumped by every run of the
    job actions for a condition in `day_counted`, whether or not an action matched: `start` once per started
    job, `complete` and its outcome once per completion that was not retried; a deleted job of today is taken
    back off; the day is the conductor's local day). Every enabled `day` limit applies; an `amount` of 0 is no
    limit. Manual runs by a user or an API key (`source` user / key) are never refused (xyOps)."""
    if job.get("source") in ("user", "key"):
        return None
    for limit in job.get("limits") or []:
        if not isinstance(limit, Mapping) or limit.get("type") != "day" or not limit.get("enabled", True):
            continue
        amount, condition = _positive(limit.get("amount"), 0), limit.get("condition")
        if not amount or not isinstance(condition, str) or not condition:
            continue
        count = int(counts.get(condition, 0))
        if count >= amount:
            return (f"Daily limit of {amount:g} '{condition}' reached for event {job.get('event', '')} "
                    f"({count} today).")  # fmt: skip
    return None


def tag_limit(job: dict[str, Any]) -> list[str]:
    """Apply the `tag` limit (first enabled): keep the first `amount` of the job's own tags, drop the rest.

    xyOps chops the tag list at the finish (after unknown tags are dropped, before system tags are added) and
    logs a warning; system tags are neither counted nor dropped here. 0 allows no tags; no `amount`, no limit.
    Changes `job["tags"]` in place; returns the meta-log lines."""
    limit = first_limit(job, "tag")
    amount = _number(limit.get("amount")) if limit else None
    tags = job.get("tags")
    if amount is None or amount < 0 or not isinstance(tags, list):
        return []
    own = [t for t in tags if t not in SYSTEM_TAGS]
    dropped = own[int(amount) :]
    if not dropped:
        return []
    gone = set(dropped)
    job["tags"] = [t for t in tags if t not in gone]
    names = ", ".join(str(t) for t in dropped[:10]) + (", ..." if len(dropped) > 10 else "")
    return [f"WARNING: Dropped {len(dropped)} tags over the limit of {int(amount)}: {names}"]  # as unknown tags


def _extensions(accept: Any) -> list[str]:
    items = accept.split(",") if isinstance(accept, str) else accept if isinstance(accept, list) else []
    return [e.strip().lower() for e in items if isinstance(e, str) and e.strip()]


def file_limit(job: dict[str, Any]) -> list[str]:
    """Apply the `file` limit (first enabled) to `job["input"]["files"]`, in xyOps' order: the count (`amount`;
    0 allows none, no `amount` no cap), the running total size (`size` bytes: the files from the first that
    takes the total over are dropped), then the accepted extensions (`accept`, ".json, .csv", any case).

    Never aborts. Changes the input in place; returns the meta-log lines. ⚠ xyOps treats an empty entry in
    `accept` (".a,,.b") as matching everything and a file without `size` as ending the size check; here an
    empty entry is ignored and a missing size counts as 0."""
    limit = first_limit(job, "file")
    given = job.get("input")
    files = given.get("files") if isinstance(given, dict) else None
    if not limit or not isinstance(given, dict) or not isinstance(files, list) or not files:
        return []
    notes = []
    amount = _number(limit.get("amount"))
    if amount is not None and len(files) > max(0, int(amount)):
        notes.append(f"Pruned {len(files) - max(0, int(amount))} files from input (file count limit exceeded)")
        files = files[: max(0, int(amount))]
    size = _positive(limit.get("size"), 0)
    if size:
        total = 0.0
        for i, file in enumerate(files):
            total += (_number(file.get("size")) or 0.0) if isinstance(file, Mapping) else 0.0
            if total > size:
                notes.append(f"Pruned {len(files) - i} files from input (file size limit exceeded)")
                files = files[:i]
                break
    exts = tuple(_extensions(limit.get("accept")))
    if exts:
        kept = [f for f in files if isinstance(f, Mapping) and str(f.get("filename") or "").lower().endswith(exts)]
        if len(kept) < len(files):
            notes.append(f"Pruned {len(files) - len(kept)} files from input (file extension not accepted)")
        files = kept
    given["files"] = files
    return notes
