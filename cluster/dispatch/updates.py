"""How an agent's report changes a job (digest 5.1 `jobs`, execution reference 1.5), and the final record.

Pure code: the dispatcher applies these to its view of a job and writes the result.

- The agent may not replace what the conductor owns: identity, targets, the state machine's fields, and
  `actions`, `limits` and `tags` (it can only add to those with `push`, which is appended).
- `markdown` and `text` become sanitized `html`; reported `html` is sanitized too.
- `push`, `table`, `html`, `markdown` and `text` are one-shot: xySat sends them once and drops them, so they are
  applied as events (the value that arrived last is shown), never expected again.
- A `state` of `finishing` is taken (the agent is uploading); `complete` means the job is over (legacy xySat
  without `finish_job`); any other state from an agent is ignored.
- Process figures (`cpu`, `mem`, `disk`, `net`, `procs`, `conns`) are bounded, and each tick's `procs` adds to the
  job's timelines (metrics.py).
"""

from __future__ import annotations

import html as html_lib
import re
from collections.abc import Mapping
from typing import Any

import nh3
from markdown_it import MarkdownIt

from . import metrics

Record = dict[str, Any]

# Fields an agent's report never sets directly.
PROTECTED = frozenset(
    {"id", "event", "type", "category", "plugin", "targets", "algo", "source", "username", "api_key", "server",
     "groups", "state", "started", "now", "until", "updated", "completed", "elapsed", "params", "workflow", "test",
     "actions", "limits", "tags", "tickets", "retry_count", "retry_prev", "retried", "position", "priority",
     "remote", "final", "aborting", "finishing_since", "start_runs", "starting_since", "suspended", "jobs",
     "activity", "log_file", "log_file_size", "event_title",
     "event_revision", "input", "secrets", "command", "script", "uid", "gid", "kill", "runner", "env", "cwd",
     "timelines", "_done_runs", "retry_ok"}
)  # fmt: skip
PUSHABLE = frozenset({"tags", "actions", "limits", "files"})
MAX_PUSH_ITEMS = 100  # per key and report
MAX_PUSHED = 1000  # per key and job, all reports together
MAX_KEYS = 200  # a report cannot grow a job past this many properties
MAX_ACTIVITY = 1000  # meta-log rows kept per job (as xyOps)
_CODE_WORD = re.compile(r"\W+")
_markdown = MarkdownIt("commonmark", {"html": False})


def sanitize_html(value: str) -> str:
    return nh3.clean(value)


def _content(block: Any, render: str) -> Any:
    """A {title, content, caption} block with its content turned into safe html."""
    if not isinstance(block, Mapping):
        return None
    out = dict(block)
    content = str(out.get("content", ""))
    if render == "markdown":
        out["content"] = sanitize_html(_markdown.render(content))
    elif render == "text":
        out["content"] = "<pre>" + html_lib.escape(content) + "</pre>"
    else:
        out["content"] = sanitize_html(content)
    return out


def apply_update(job: Record, update: Mapping[str, Any], now: float) -> bool:
    """Merge one report into `job`. Returns whether anything a page shows changed."""
    changed = False
    for key, value in update.items():
        if key in PROTECTED or key in ("push", "html", "markdown", "text", "state", "procs", "conns"):
            continue
        if key not in job and len(job) >= MAX_KEYS:
            continue
        if key in metrics.FIGURES and (value := metrics.figures(value)) is None:
            continue
        if job.get(key) != value:
            job[key] = value
            changed = True
    for kind in ("html", "markdown", "text"):  # only one kind is kept, shown as html
        if kind in update:
            block = _content(update[kind], kind)
            if block is not None:
                job["html"] = block
                changed = True
    push = update.get("push")
    if isinstance(push, Mapping) and _apply_push(job, push):
        changed = True
    if (conns := metrics.conns(update.get("conns"))) is not None:
        job["conns"] = conns
    if (procs := metrics.procs(update.get("procs"))) is not None:
        job["procs"] = procs
        metrics.add_timelines(job, now)
    if update.get("state") == "finishing" and job.get("state") == "active":
        job["state"] = "finishing"
        job["finishing_since"] = now
        changed = True
    job["updated"] = now
    job["remote"] = True
    return changed


def _apply_push(job: Record, push: Mapping[str, Any]) -> bool:
    """`push` lists are appended to the job's, never replace them (pushed actions are the job's own)."""
    changed = False
    for key, items in push.items():
        if key in PUSHABLE and isinstance(items, list) and items:
            added = [dict(i, source="job") if key == "actions" and isinstance(i, Mapping) else i
                     for i in items[:MAX_PUSH_ITEMS]]  # fmt: skip
            current: list[Any] = job[key] if isinstance(job.get(key), list) else []
            if key == "tags":
                job[key] = sorted({*current, *(str(t)[:64] for t in added)})[:MAX_PUSHED]
            else:
                job[key] = [*current, *added][:MAX_PUSHED]
            changed = True
    return changed


def add_meta(job: Record, msg: str, now: float, server: str, row_id: str) -> None:
    """Append a meta-log row (`activity`), keeping the newest MAX_ACTIVITY."""
    rows: list[Any] = job["activity"] if isinstance(job.get("activity"), list) else []
    rows = [*rows, {"id": row_id, "epoch": now, "server": server, "msg": msg[:500]}]
    job["activity"] = rows[-MAX_ACTIVITY:]


def normal_code(code: Any) -> int | str:
    """xyOps' code normalisation: falsy is 0, numbers stay, strings are lower-cased words, else `unknown`."""
    if not code:
        return 0
    if isinstance(code, bool):
        return 1
    if isinstance(code, int | float):
        return int(code) if float(code).is_integer() else float(code)  # type: ignore[return-value]
    if isinstance(code, str):
        return _CODE_WORD.sub("_", code.strip().lower()) or 0
    return "unknown"


DONE_RUNS = "_done_runs"  # action runs whose results are on the live job, to be cleared with its next write
TRANSIENT = (DONE_RUNS, "remote", "redraw", "status", "finishing_since", "aborting", "procs", "conns", "complete",
             "push", "secrets", "reconnected", "position", "start_runs", "starting_since", "suspended")  # fmt: skip


def final_record(job: Record, update: Mapping[str, Any] | None, now: float, *, log_size: int = 0) -> Record:
    """The completed job: the last report merged, the code normalised, times and system tags set."""
    out = dict(job)
    if update:
        apply_update(out, update, now)
        for key in ("code", "description"):
            if key in update:
                out[key] = update[key]
        for key in ("data", "files", "serverData", "workflowData"):  # held by the agent until the end
            if key in update:
                out[key] = update[key]
    aborting = job.get("aborting")
    if isinstance(aborting, Mapping):  # an abort always wins, even over a job that was just succeeding
        out["code"] = "abort"
        out["description"] = str(aborting.get("reason") or "Aborted")
    code = normal_code(out.get("code"))
    out["code"] = code
    if code != 0 and not out.get("description"):
        out["description"] = "Unknown Error (no description provided)"
    metrics.disk_net(out)
    for key in TRANSIENT:
        out.pop(key, None)
    out.update(state="complete", completed=now, elapsed=max(0.0, now - float(out.get("started") or now)),
               final=True, progress=1.0, log_file_size=log_size)  # fmt: skip
    tags = set(out.get("tags") or [])
    tags.add("_success" if code == 0 else "_error")
    if out.get("test"):
        tags.add("_test")
    input_files = (out.get("input") or {}).get("files") if isinstance(out.get("input"), Mapping) else None
    if out.get("files") or input_files:
        tags.add("_files")
    out["tags"] = sorted(tags)
    return out
