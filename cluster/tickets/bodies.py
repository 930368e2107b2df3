"""The bodies and subjects of tickets made from a job or an alert invocation (xyOps generateTicketBody_job /
generateTicketBody_alert, facts §6).

They come from Podium's own email templates (cluster/actions/emails: `job_fail` for a job with a non-zero code,
`job_success` otherwise, `alert_new`), rendered with the same data the email actions render (hookdata), with the
template's markup tags stripped and its Subject line left out. Every value missing or empty shows as "n/a".
The log excerpt is the job's output with terminal escapes and fence lines removed, its first and last 10 lines
when it has more than 20. The result goes through the same Markdown sanitizer as every body (⚠ xyOps stores the
generated body unsanitized, so a job printing HTML put it into the ticket).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from cluster.actions.email import load_template
from cluster.actions.email import log_excerpt as clean_output
from cluster.expressions import templates

from .fields import SUBJECT_LEN, sanitize_markdown, strip_html

EXCERPT_LINES = 20
SNIP = "~~~Snip~~~"
_TAG = re.compile(r"<[^>]*>")


def log_excerpt(output: str) -> str:
    """The job output a ticket quotes: cleaned, and cut to its first and last 10 lines past 20."""
    text = clean_output(output)
    if not text:
        return ""
    lines = text.split("\n")
    if len(lines) > EXCERPT_LINES:
        half = EXCERPT_LINES // 2
        lines = [*lines[:half], SNIP, *lines[-half:]]
    return "\n".join(lines)


def _render(template: str, data: Mapping[str, Any]) -> str:
    _, body = load_template(template)
    text = _TAG.sub("", templates.render(body, data, missing="n/a")).strip()
    return sanitize_markdown(text) + "\n"


def job_template(job: Mapping[str, Any]) -> str:
    return "job_fail" if job.get("code") else "job_success"


def job_body(job: Mapping[str, Any], data: Mapping[str, Any]) -> str:
    """The body of a ticket about `job`; `data` is what its email would render (email.job_email_data) with the
    ticket's `log_excerpt`."""
    return _render(job_template(job), data)


def job_subject(job: Mapping[str, Any], event: Mapping[str, Any] | None) -> str:
    title = str((event or {}).get("title") or job.get("event_title") or "") or "n/a"
    if job.get("code"):
        text = f"Job #{job.get('id')} failed with code: {job.get('code')} ({title})"
    else:
        text = f"Job #{job.get('id')} succeeded ({title})"
    return strip_html(text)[:SUBJECT_LEN]


def alert_body(data: Mapping[str, Any]) -> str:
    """The body of a ticket about an alert invocation; `data` is AlertHookData (hookdata.alert_context)."""
    return _render("alert_new", data)


def alert_subject(data: Mapping[str, Any]) -> str:
    found = data.get("def")
    definition: Mapping[str, Any] = found if isinstance(found, Mapping) else {}
    title = str(definition.get("title") or definition.get("id") or "") or "n/a"
    return strip_html(f"Alert: {title} on {data.get('nice_server') or 'n/a'}")[:SUBJECT_LEN]
