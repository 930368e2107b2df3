"""The data a job's action templates read (xyOps' JobHookData): web hook bodies, emails and action plugins.

`job_context()` gathers, under xyOps' keys, the job, its event, category, plugin and server, the action, the
`nice_server` / `nice_hostname` names, `links` (job page, log download, files) and `display` (human-formatted
elapsed time, log size, perf, memory and cpu), plus `text`: a one-line summary chosen by condition (the wording is
Podium's; it carries the same facts as xyOps' `hook_text_templates`), with the action's own text appended.

⚠ xyOps also puts the conductor's environment under `env`, where any template (a web hook body, a label) can read
it; Podium leaves it out, since that environment holds the node's credentials.

Pure code: the caller looks the records up and passes them in.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from cluster.expressions import templates

# Summary lines, by template name; `hook_text()` picks one the way xyOps does.
TEXT_TEMPLATES: dict[str, str] = {
    "job_start": "Podium: job {{ job.id }} of {{ event.title }} started on {{ nice_server }}. "
                 "Details: {{ links.job_details }}",
    "job_success": "Podium: job {{ job.id }} of {{ event.title }} succeeded on {{ nice_server }}. "
                   "Details: {{ links.job_details }}",
    "job_error": "Podium: job {{ job.id }} of {{ event.title }} failed on {{ nice_server }} with code "
                 "{{ job.code }} ({{ job.description }}). Details: {{ links.job_details }}",
    "job_progress": "Podium: job {{ job.id }} of {{ event.title }} is running on {{ nice_server }}. "
                    "Details: {{ links.job_details }}",
    "job_suspended": "Podium: job {{ job.id }} of {{ event.title }} is suspended until someone resumes it. "
                     "Resume: {{ links.job_details }}&resume=1",
    "job_limited": "Podium: {{ action.msg }}. Details: {{ links.job_details }}",
    "alert_new": "Podium alert on {{ nice_server }}: {{ def.title }}: {{ alert.message }}. "
                 "Details: {{ links.alert_url }}",
    "alert_cleared": "Podium alert cleared on {{ nice_server }}: {{ def.title }}",
}  # fmt: skip
MAX_TEXT = 4096  # characters of an action's own text appended to the summary


def download_token(job_id: str, secret_key: str) -> str:
    """The token of a job's log download link (`download_job_log?id=..&t=..`)."""
    digest = hashlib.sha256(("download" + job_id + secret_key).encode()).digest()
    return base64.urlsafe_b64encode(digest[:16]).decode().rstrip("=")


def _plural(n: int, unit: str) -> str:
    return f"{n} {unit}{'' if n == 1 else 's'}"


def nice_duration(seconds: Any) -> str:
    """A duration in its two largest units: `0 seconds`, `45 seconds`, `3 minutes 20 seconds`, `2 days 1 hour`."""
    try:
        total = max(0, int(float(seconds)))
    except (TypeError, ValueError, OverflowError):
        total = 0
    counts = []
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60), ("second", 1)):
        count, total = divmod(total, size)
        counts.append((count, unit))
    first = next((i for i, (count, _) in enumerate(counts) if count), len(counts))
    return " ".join(_plural(count, unit) for count, unit in counts[first : first + 2] if count) or "0 seconds"


def nice_bytes(value: Any) -> str:
    """A size with a binary unit: `23 bytes`, `1.5 KB`, `47.4 MB`."""
    try:
        size = max(0.0, float(value))
    except (TypeError, ValueError, OverflowError):
        size = 0.0
    if size < 1024:
        return _plural(int(size), "byte")
    for unit in ("KB", "MB", "GB", "TB"):
        size /= 1024
        if size < 1024 or unit == "TB":
            break
    return f"{size:.1f}".rstrip("0").rstrip(".") + f" {unit}"


def _short(value: float) -> str:
    return f"{value:.1f}".rstrip("0").rstrip(".")


def nice_date_time(epoch: Any = None) -> str:
    """A local date and time with its zone (`Tue 14 Jan 2025 10:32:05 CET`); now when `epoch` is not a number."""
    try:
        when = float(epoch)
    except (TypeError, ValueError):
        when = time.time()
    return time.strftime("%a %d %b %Y %H:%M:%S %Z", time.localtime(when))


def job_links(job: Mapping[str, Any], *, base_url: str, secret_key: str = "") -> dict[str, str]:
    """The job's page, its log download (with its token when `secret_key` is given) and a markdown list of files."""
    base = base_url.rstrip("/")
    job_id = str(job.get("id", ""))
    log = f"{base}/api/app/download_job_log?id={quote(job_id)}"
    if secret_key:
        log += f"&t={download_token(job_id, secret_key)}"
    files = [f for f in job.get("files") or [] if isinstance(f, Mapping) and f.get("path")]
    return {
        "job_details": f"{base}/#Job?id={quote(job_id)}",
        "job_log": log,
        "job_files": "\n".join(f"- {base}/{quote(str(f['path']))}" for f in files) or "(None)",
    }


def job_display(job: Mapping[str, Any]) -> dict[str, str]:
    """Human-formatted figures of the job (xyOps' `display`)."""
    perf = job.get("perf")
    display = {
        # a running job has no `elapsed` yet: how long it has run so far
        "elapsed": nice_duration(job.get("elapsed") or (time.time() - float(job.get("started") or time.time())
                                                        if job.get("state") != "complete" else 0)),
        "log_size": nice_bytes(job.get("log_file_size") or 0),
        "perf": json.dumps(perf, separators=(",", ":"), default=str) if isinstance(perf, Mapping)
        else str(perf) if perf else "(No metrics provided)",
        "mem": "(Unknown)",
        "cpu": "(Unknown)",
        "date_time": nice_date_time(job.get("completed") or job.get("started")),
    }  # fmt: skip
    mem, cpu = job.get("mem"), job.get("cpu")
    try:
        if isinstance(mem, Mapping) and mem.get("count"):
            display["mem"] = f"{nice_bytes(mem['total'] / mem['count'])} (peak {nice_bytes(mem.get('max', 0))})"
        if isinstance(cpu, Mapping) and cpu.get("count"):
            display["cpu"] = f"{_short(cpu['total'] / cpu['count'])}% (peak {_short(float(cpu.get('max', 0)))}%)"
    except (TypeError, ValueError, ZeroDivisionError, KeyError):  # figures an agent reported badly
        display["mem"] = display["cpu"] = "(Unknown)"
    return display


def server_names(job: Mapping[str, Any], server: Mapping[str, Any] | None) -> tuple[str, str]:
    """(nice_server, nice_hostname): "Title (hostname)" or the hostname; the job's server id when unknown."""
    hostname = str((server or {}).get("hostname") or job.get("hostname") or "")
    title = str((server or {}).get("title") or "")
    if title and hostname and title != hostname:
        return f"{title} ({hostname})", hostname
    return title or hostname or str(job.get("server") or "conductor"), hostname


def text_template(job: Mapping[str, Any], condition: str, template: str = "") -> str:
    """The summary's template name, chosen as xyOps does: the action's own, then by condition, then by outcome."""
    for name in (template, f"job_{condition}"):
        if name in TEXT_TEMPLATES:
            return name
    if not job.get("completed"):
        return "job_progress"
    return "job_error" if job.get("code") else "job_success"


def job_context(job: Mapping[str, Any], event: Mapping[str, Any] | None, *, condition: str, base_url: str,
                secret_key: str = "", action: Mapping[str, Any] | None = None,
                category: Mapping[str, Any] | None = None, plugin: Mapping[str, Any] | None = None,
                server: Mapping[str, Any] | None = None, text: str = "") -> dict[str, Any]:  # fmt: skip
    """JobHookData for one action of `job` on `condition`; `text` (the action's own) is appended to the summary."""
    action_data = dict(action or {})
    action_data.setdefault("condition", condition)
    nice_server, nice_hostname = server_names(job, server)
    data: dict[str, Any] = {
        "job": dict(job),
        "action": action_data,
        # a deleted event still has a title to show: the one the job recorded
        "event": dict(event) if event is not None
        else {"id": job.get("event", ""), "title": job.get("event_title") or job.get("event", "")},
        "category": dict(category or {"id": job.get("category", ""), "title": job.get("category", "")}),
        "plugin": dict(plugin or {"id": job.get("plugin", ""), "title": job.get("plugin", "")}),
        "server": dict(server or {}),
        "nice_server": nice_server,
        "nice_hostname": nice_hostname,
        "links": job_links(job, base_url=base_url, secret_key=secret_key),
        "display": job_display(job),
    }  # fmt: skip
    name = text_template(job, condition, str(action_data.get("template") or ""))
    summary = templates.render(TEXT_TEMPLATES[name], data, missing="n/a")
    extra = str(text or "").strip()[:MAX_TEXT]
    data["text"] = f"{summary} {extra}" if extra else summary
    return data


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def alert_context(invocation: Mapping[str, Any], alert: Mapping[str, Any] | None, host: Mapping[str, Any] | None,
                  server: Mapping[str, Any] | None, *, condition: str, base_url: str, group_titles: Mapping[str, str],
                  elapsed: float | None = None, text: str = "") -> dict[str, Any]:  # fmt: skip
    """AlertHookData (xyOps getAlertHookArgs) for one action of an invocation on `condition`: the invocation under
    `alert`, its definition under `def`, the server's last sample under `params`, the `nice_*` figures and `links`,
    and `text` (the summary, with the action's own text appended; also under `content` and `message`)."""
    params = dict(host or {})
    data = _mapping(params.get("data"))
    memory = _mapping(data.get("memory"))
    info = _mapping((server or {}).get("info"))
    os_info = _mapping(data.get("os"))
    load: list[Any] = data["load"] if isinstance(data.get("load"), list) and data["load"] else [0]
    definition = dict(alert or {"id": invocation.get("alert"), "title": invocation.get("alert")})
    nice_server, nice_hostname = server_names({"server": invocation.get("server"),
                                               "hostname": params.get("hostname")}, server)  # fmt: skip
    when = invocation.get("modified") if condition == "alert_cleared" else invocation.get("date")
    cpu = _mapping(info.get("cpu"))
    jobs = [str(j) for j in invocation.get("jobs") or []]
    out: dict[str, Any] = {
        "template": condition, "alert": dict(invocation), "def": definition, "params": params,
        "server": dict(server or {}), "date_time": nice_date_time(when),
        "nice_groups": ", ".join(group_titles.get(g, f"({g})") for g in invocation.get("groups") or []) or "(None)",
        "nice_load_avg": _short(float(load[0]) if isinstance(load[0], int | float) else 0.0),
        "nice_mem_total": nice_bytes(memory.get("total")), "nice_mem_avail": nice_bytes(memory.get("available")),
        "nice_uptime": nice_duration(data.get("uptime_sec")),
        "nice_cpu": " ".join(str(cpu.get(k)) for k in ("manufacturer", "brand") if cpu.get(k)) or "(Unknown)",
        "nice_os": " ".join(str(os_info.get(k)) for k in ("distro", "release") if os_info.get(k)) or "(Unknown)",
        "nice_notes": str(definition.get("notes") or "(None)"), "nice_hostname": nice_hostname,
        "nice_ip": str(params.get("ip") or ""), "nice_server": nice_server,
        "nice_active_jobs": "".join(f"- [Job #{j}]({base_url}/#Job?id={quote(j)})\n" for j in jobs) or "(None)",
        "links": {"server_url": f"{base_url}/#Server?id={quote(str(invocation.get('server') or ''))}",
                  "alert_url": f"{base_url}/#Alerts?id={quote(str(invocation.get('id') or ''))}"},
    }  # fmt: skip
    if elapsed is not None:
        out["elapsed"] = elapsed
        out["nice_elapsed"] = nice_duration(elapsed)
    summary = templates.render(TEXT_TEMPLATES[condition if condition in TEXT_TEMPLATES else "alert_new"], out,
                               missing="n/a")  # fmt: skip
    extra = str(text or "").strip()[:MAX_TEXT]
    out["text"] = out["content"] = out["message"] = f"{summary} {extra}" if extra else summary
    return out
