"""How the result of an action run is written onto its job (pure code, shared by live and completed jobs).

The action's own entry in `job.actions` gets `date`, `elapsed_ms`, `code`, `description`, `details` and the
run's id; a meta-log row with the run's id says what happened. The run id makes recording idempotent: a result
recorded twice (a write that may or may not have landed, a new primary recovering a run) changes the job once.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from ..dispatch.updates import add_meta

Record = dict[str, Any]
Change = Callable[[Record], None]  # what an action does to its own job (tags, a label), applied with its result
MAX_DETAILS = 32 * 1024
TITLES = {"email": "Email", "web_hook": "Web hook", "run_event": "Run event", "channel": "Channel",
          "snapshot": "Snapshot", "ticket": "Ticket", "plugin": "Plugin", "suspend": "Suspend",
          "disable": "Disable event", "delete": "Delete event", "tag": "Tag", "label": "Label",
          "store": "Bucket store", "fetch": "Bucket fetch"}  # fmt: skip


def recorded(job: Mapping[str, Any], run_id: str) -> bool:
    """Has this run's result been written onto the job already (on its action, or in the meta log)?"""
    for key in ("actions", "activity"):
        rows = job.get(key)
        if isinstance(rows, list) and any(isinstance(r, Mapping) and run_id in (r.get("run"), r.get("id"))
                                          for r in rows):  # fmt: skip
            return True
    return False


def describe(run: Mapping[str, Any]) -> str:
    action: Mapping[str, Any] = run["action"] if isinstance(run.get("action"), Mapping) else {}
    kind = str(action.get("type", ""))
    title = TITLES.get(kind, kind.lstrip("_").replace("_", " ").capitalize())
    return f"{title} action ({run.get('condition', '')})"


def with_result(job: Record, run: Mapping[str, Any], outcome: Mapping[str, Any], now: float,
                change: Change | None = None, *, server: str = "") -> bool:  # fmt: skip
    """Write `outcome` ({code, description, details, elapsed_ms}) onto `job`. False if it was there already."""
    run_id = str(run["id"])
    if recorded(job, run_id):
        return False
    if change is not None:
        change(job)
    index = run.get("index")
    actions = job.get("actions")
    if isinstance(index, int) and isinstance(actions, list) and 0 <= index < len(actions):
        entry = actions[index]
        if isinstance(entry, dict):
            entry.update(date=now, elapsed_ms=float(outcome.get("elapsed_ms") or 0), code=outcome.get("code", 0),
                         description=str(outcome.get("description", ""))[:1000],
                         details=str(outcome.get("details", ""))[:MAX_DETAILS], run=run_id)  # fmt: skip
    add_meta(job, f"{describe(run)}: {outcome.get('description', '')}", now, server, run_id)
    return True
