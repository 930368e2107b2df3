"""What a finish calls for besides the final record (digest 3.2 finishJob), decided in one place, pure code.

`completion()` takes the final record and returns it with its tags settled, the retry it spawns (if any), the
action runs it queues and the event state it changes; `ops()` turns that into the ops of the finish's own fenced
write, so the finish, its retry, its actions and the event's counters are written together or not at all.

Order, as xyOps: retry first (a retried job fires no completion actions and does not count in the event state),
then the completion conditions (from the tags as they are before validation, so a pushed or limit tag fires its
`tag:<id>` actions), then tags validated, the tag limit applied and the system tags added.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from storage import dailystats
from storage.actions import DAY_TTL_S, day_of
from storage.jobs import JobWrite
from storage.keyspace import Keyspace

from ..actions import plan
from . import limits, retry

Record = dict[str, Any]
SYSTEM_TAGS = frozenset({"_success", "_error", "_retried", "_last", "_test", "_files"})
# Internal runs a finish queues: done by the action runner like any action, so a crash cannot lose them.
SERVER_DATA, EVENT_CHANGE, CLEAR_ALERT = "_server_data", "_event_change", "_clear_alert"
# Fields a job may change on its own event with `update_event` (⚠ xyOps lets a job change any event property,
# with no check; a job's output is not an administrator, so only these, and `enabled`).
# Not `params`: they hold the event's script, and a job echoing untrusted data could then change what runs next.
JOB_EVENT_FIELDS = frozenset({"enabled", "title", "notes", "icon", "tags"})


@dataclass(slots=True)
class Completion:
    final: Record
    retry: Record | None = None
    runs: list[Record] = field(default_factory=list)
    conditions: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # meta-log lines the finish adds


def new_run(job: Mapping[str, Any], index: int, condition: str, action: Mapping[str, Any], run_id: str,
            kind: str = "action") -> Record:  # fmt: skip
    """One action of one job for one condition; `index` is its position in job.actions (-1: not in the list)."""
    return {"id": run_id, "job": str(job["id"]), "event": str(job.get("event") or ""), "index": index,
            "condition": condition, "action": dict(action), "kind": kind}  # fmt: skip


def holds(job: Mapping[str, Any], action: Mapping[str, Any]) -> bool:
    """Does this start action suspend the job (a `suspend`, for the job's source if it names sources)?"""
    sources = action.get("sources")
    return action.get("type") == "suspend" and (not isinstance(sources, list) or not sources
                                                or job.get("source") in sources)  # fmt: skip


def index_of(job: Mapping[str, Any], action: Mapping[str, Any]) -> int:
    actions: list[Any] = job["actions"] if isinstance(job.get("actions"), list) else []
    for i, item in enumerate(actions):
        if item is action:
            return i
    for i, item in enumerate(actions):
        if item == action:
            return i
    return -1


def runs_for(job: Record, conditions: list[str], new_id: Callable[[], str]) -> list[Record]:
    """The runs of the job's actions matching `conditions`, de-duplicated, none that ran already."""
    return [new_run(job, index_of(job, action), str(action.get("condition")), action, new_id())
            for action in plan.matching_actions(job, conditions)]  # fmt: skip


def settle_tags(final: Record, known: Collection[str] | None) -> list[str]:
    """Drop unknown tags (known: tag ids and titles), apply the tag limit, add the system tags."""
    notes: list[str] = []
    tags = [t for t in final.get("tags") or [] if isinstance(t, str) and t not in SYSTEM_TAGS]
    if known is not None:
        for tag in tags:
            if tag not in known:
                notes.append(f"WARNING: Ignoring unknown tag: {tag}")
        tags = [t for t in tags if t in known]
    tags = list(dict.fromkeys(tags))
    final["tags"] = tags
    notes += limits.tag_limit(final)
    system = {"_success" if final.get("code") == 0 else "_error", "_retried" if final.get("retried") else "_last"}
    if final.get("test"):
        system.add("_test")
    given: Mapping[str, Any] = final["input"] if isinstance(final.get("input"), Mapping) else {}
    if final.get("files") or given.get("files"):
        system.add("_files")
    final["tags"] = sorted({*final["tags"], *system})
    return notes


def completion(final: Record, now: float, new_id: Callable[[str], str], *,
               known_tags: Collection[str] | None = None) -> Completion:  # fmt: skip
    """Everything the finish of `final` calls for. Changes `final` in place (tags, retry links)."""
    done = Completion(final)
    clone = retry.retry_job(final, now, new_id("j"))
    if clone is not None:
        done.retry = clone
        done.notes.append(retry.mark_retried(final, str(clone["id"])))
    elif (note := retry.retry_note(final)) is not None:
        done.notes.append(note)
    if not final.get("retried"):
        done.conditions = plan.completion_conditions(final)
        done.runs = runs_for(final, done.conditions, lambda: new_id("r"))
    done.notes += settle_tags(final, known_tags)
    if isinstance(final.get("serverData"), Mapping) and final["serverData"] and final.get("server"):
        done.runs.append(new_run(final, -1, "complete", {"type": SERVER_DATA}, new_id("r"), kind="internal"))
    if final.get("clear_alert"):  # launched by an alert's run_event with clear_alert: its end clears the alert
        done.runs.append(new_run(final, -1, "complete", {"type": CLEAR_ALERT, "invocation": str(final["clear_alert"])},
                                 new_id("r"), kind="internal"))  # fmt: skip
    change = event_change(final)
    if change:
        done.runs.append(new_run(final, -1, "complete", {"type": EVENT_CHANGE, **change}, new_id("r"),
                                 kind="internal"))  # fmt: skip
    return done


def event_change(final: Mapping[str, Any]) -> Record:
    """What the job asked of its own event: {delete: True} or {update: {...allowed fields}} (or nothing)."""
    if final.get("delete_event"):
        return {"delete": True}
    wanted = final.get("update_event")
    if isinstance(wanted, Mapping):
        update = {k: v for k, v in wanted.items() if k in JOB_EVENT_FIELDS and _sound(k, v)}
        if update:
            return {"update": update}
    return {}


def _sound(key: str, value: Any) -> bool:
    """Is `value` what the event field holds, and small (a job's output is not trusted)?"""
    if key == "enabled":
        return isinstance(value, bool)
    if key in ("title", "notes", "icon"):
        return isinstance(value, str) and len(value) <= (64 * 1024 if key == "notes" else 256)
    if key == "tags":
        return isinstance(value, list) and len(value) <= 100 and all(isinstance(t, str) and len(t) <= 64
                                                                    for t in value)  # fmt: skip
    if key == "params":
        return isinstance(value, Mapping) and len(repr(value)) <= 64 * 1024
    return False


def ops(batch: JobWrite, keys: Keyspace, done: Completion, now: float) -> None:
    """Add the finish's ops to `batch`: the retry job, the runs, the daily stats, the event state and today's counts."""
    final = done.final
    if done.retry is not None:
        batch.new_job(done.retry)
    for run in done.runs:
        batch.run(run, now)
    stats = keys.stats_day(dailystats.stats_day(now))
    for name in dailystats.job_fields(final, done.conditions):
        batch.hincr(stats, name, 1, dailystats.DAY_TTL_S)
    event_id = str(final.get("event") or "")
    if not event_id or final.get("type") == "adhoc" or final.get("retried"):
        return
    state = keys.event_state(event_id)
    batch.hset(state, "last_job", str(final["id"]))
    batch.hset(state, "last_code", str(final.get("code", 0)))
    batch.hset(state, "last_completed", str(int(float(final.get("completed") or now))))
    batch.hincr(state, "total_elapsed", round(float(final.get("elapsed") or 0), 2))
    batch.hincr(state, "total_count", 1)
    day = keys.event_day(event_id, day_of(now))
    for condition in limits.day_counted(done.conditions):
        batch.hincr(day, condition, 1, DAY_TTL_S)
