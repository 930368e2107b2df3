"""Send one notification email over SMTP (aiosmtplib) from Podium's own templates, and describe what happened.

Templates are the text files in `emails/` (package data): a `Subject: ...` first line, then a markdown body, both
expanded with `cluster.expressions.templates` against the data (xyOps' placeholder names: `{{ job.id }}`,
`{{ links.job_details }}`, `{{ display.elapsed }}` ...; an empty value shows as "n/a"). The message is
multipart/alternative: the rendered markdown as text, and the same rendered to html with raw html disabled and
the result sanitized, so nothing a job printed can become markup.

Safety: the subject is forced to one line and every address is checked (no header injection; `email.message`
refuses line breaks in headers as a second guard); a recipient may carry a display name (`Full Name <addr>`, the
name cleaned of quotes, brackets and separators); recipients are de-duplicated by address and at most `max_recipients`;
the password never appears in an Outcome (scrubbed from server replies too). `send_email()` never raises for a
failing server: that is an Outcome with code "email".
"""

from __future__ import annotations

import asyncio
import functools
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import formatdate, make_msgid, parseaddr
from importlib import resources
from typing import Any

import aiosmtplib
import nh3
from markdown_it import MarkdownIt

from cluster.expressions import templates

from .hookdata import job_context, nice_date_time
from .result import Outcome, clip_bytes, one_line

TLS_MODES = ("none", "starttls", "tls")
MAX_SUBJECT = 200  # characters
MAX_ADDRESS = 254  # RFC 5321 path limit
MAX_EXCERPT = 8 * 1024  # bytes of the end of a job's output quoted in an email
_ADDRESS = re.compile(r"[^@\s,;<>()\[\]\\\"']+@[A-Za-z0-9.\-\[\]:]+")
_NAMED = re.compile(r"(?P<name>[^<>]*)<(?P<addr>[^<>]*)>")  # `Full Name <addr>`
_NAME_JUNK = re.compile(r"[\"<>()\[\]\\,;:@]")
_ATOMS = re.compile(r"[\w\s!#$%&'*+\-/=?^`{|}~]*")  # a name that needs no quotes
MAX_NAME = 80  # characters of a recipient's display name
_SPLIT = re.compile(r"[,;]")
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
_FENCE = re.compile(r"^\s*```", re.MULTILINE)
_markdown = MarkdownIt("commonmark", {"html": False})
_HTML_HEAD = ('<!DOCTYPE html>\n<html><head><meta charset="utf-8"></head>\n'
              '<body style="font-family:sans-serif;font-size:15px;line-height:1.5">\n')  # fmt: skip


@dataclass(frozen=True, slots=True)
class SmtpConfig:
    """Where and how Podium sends email. An empty `host` means email is not configured.
    `tls`: "none" (plain SMTP), "starttls" (upgrade required) or "tls" (TLS from the first byte, as on 465).
    `timeout_s` bounds the whole exchange with the server."""

    host: str = ""
    port: int = 25
    username: str = ""
    password: str = field(default="", repr=False)
    tls: str = "none"
    timeout_s: float = 30.0
    from_address: str = "podium@localhost"
    base_url: str = ""  # links in emails point here
    max_recipients: int = 100

    @property
    def enabled(self) -> bool:
        return bool(self.host)


# -- templates -----------------------------------------------------------------------------------------


def template_names() -> frozenset[str]:
    """The templates shipped in `emails/` (job_start, job_success, job_fail, ...)."""
    return _template_names()


@functools.cache
def _template_names() -> frozenset[str]:
    folder = resources.files(__package__).joinpath("emails")
    return frozenset(p.name[:-4] for p in folder.iterdir() if p.name.endswith(".txt"))


@functools.cache
def load_template(name: str) -> tuple[str, str]:
    """(subject, body) of a template; KeyError when there is no such template."""
    if name not in template_names():
        raise KeyError(name)
    text = resources.files(__package__).joinpath("emails", f"{name}.txt").read_text("utf-8")
    first, _, body = text.partition("\n")
    if not first.startswith("Subject:"):
        raise ValueError(f"email template {name} does not start with a Subject: line")
    return first[len("Subject:") :].strip(), body.lstrip("\n")


def email_template(job: Mapping[str, Any], condition: str, template: str = "") -> str:
    """The template a job action's email uses (as xyOps chooses): the action's own, else by condition and outcome."""
    if template:
        return template
    if condition == "start":
        return "job_start"
    if not job.get("completed"):
        return "job_progress"
    return "job_fail" if job.get("code") else "job_success"


def log_excerpt(output: str) -> str:
    """The end of a job's output for a fenced block: no terminal escapes, no line that could close the fence."""
    text = _ANSI.sub("", output)
    text = _FENCE.sub("", text)
    raw = text.encode()
    if len(raw) > MAX_EXCERPT:
        text = "…" + raw[-MAX_EXCERPT:].decode(errors="ignore")
    return text.strip()


def job_email_data(job: Mapping[str, Any], event: Mapping[str, Any] | None, *, base_url: str, text: str = "",
                   condition: str = "", secret_key: str = "", action: Mapping[str, Any] | None = None,
                   category: Mapping[str, Any] | None = None, plugin: Mapping[str, Any] | None = None,
                   server: Mapping[str, Any] | None = None, output: str = "") -> dict[str, Any]:  # fmt: skip
    """What a job email's template reads: JobHookData (hookdata.job_context) plus `log_excerpt` (the end of
    `output`) and `display.date_time` (now, the time of sending). `condition` defaults to the action's."""
    cond = condition or str((action or {}).get("condition") or "")
    data = job_context(job, event, condition=cond, base_url=base_url, secret_key=secret_key, action=action,
                       category=category, plugin=plugin, server=server, text=text)  # fmt: skip
    data["display"]["date_time"] = nice_date_time()
    data["log_excerpt"] = log_excerpt(output)
    return data


# -- the message ---------------------------------------------------------------------------------------


def recipients(to: Iterable[str], limit: int) -> tuple[list[str], list[str], int]:
    """(addresses, refused entries, how many were over `limit`): entries may be lists separated by , or ;
    an entry may be `Name <addr>` (kept as a header form with the name cleaned); duplicates of an address
    (ignoring case) are dropped, the first spelling kept."""
    seen: set[str] = set()
    good: list[str] = []
    bad: list[str] = []
    over = 0
    for entry in to:
        for piece in _SPLIT.split(str(entry)):
            item = piece.strip()
            if not item:
                continue
            name = ""
            named = _NAMED.fullmatch(item)
            if named:
                name = display_name(named["name"])
                item = named["addr"].strip()
            if len(item) > MAX_ADDRESS or not _ADDRESS.fullmatch(item):
                bad.append(one_line(item, 80))
                continue
            if item.lower() in seen:
                continue
            seen.add(item.lower())
            if len(good) >= limit:
                over += 1
                continue
            good.append(_named(name, item) if name else item)
    return good, bad, over


def display_name(name: str) -> str:
    """A recipient's name as it may stand before `<addr>`: one line, no quotes, brackets or separators."""
    return one_line(_NAME_JUNK.sub(" ", name), MAX_NAME)


def _named(name: str, address: str) -> str:
    """`Name <addr>`, the name quoted when it holds more than atoms (a dot): display_name() left no quote in it."""
    return f"{name} <{address}>" if _ATOMS.fullmatch(name) else f'"{name}" <{address}>'


def envelope_address(recipient: str) -> str:
    """The bare address of a recipient from recipients() (`Name <addr>` or `addr`)."""
    return parseaddr(recipient)[1] or recipient


def to_html(markdown: str) -> str:
    """The markdown body as a small html page: raw html in it is escaped, the result sanitized."""
    body = nh3.clean(_markdown.render(markdown))
    return f"{_HTML_HEAD}{body}</body></html>\n"


def build_message(config: SmtpConfig, to: Sequence[str], subject: str, body: str) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = config.from_address
    msg["To"] = ", ".join(to)
    msg["Subject"] = subject
    msg["Date"] = formatdate(localtime=True)
    msg["Message-ID"] = make_msgid(domain=config.from_address.rpartition("@")[2] or "localhost")
    msg["Auto-Submitted"] = "auto-generated"  # RFC 3834: vacation responders stay quiet
    msg.set_content(body)
    msg.add_alternative(to_html(body), subtype="html")
    return msg


def _scrub(text: str, config: SmtpConfig) -> str:
    return text.replace(config.password, "(redacted)") if config.password else text


def _details(config: SmtpConfig, to: Sequence[str], subject: str, bad: Sequence[str], over: int, reply: str) -> str:
    lines = [
        f"- **SMTP server:** {config.host}:{config.port} (TLS: {config.tls})",
        f"- **Login:** {'as ' + config.username if config.username else 'none'}",
        f"- **From:** {config.from_address}",
        f"- **To:** {', '.join(to) or '(nobody)'}",
        f"- **Subject:** {subject}",
    ]
    if bad:
        lines.append(f"- **Not addresses (skipped):** {', '.join(bad[:20])}")
    if over:
        lines.append(f"- **Over the limit of {config.max_recipients} recipients (skipped):** {over}")
    if reply:
        lines.append(f"\n**Server reply:**\n\n```text\n{clip_bytes(reply, 4096)}\n```")
    return _scrub("\n".join(lines) + "\n", config)


def _render(subject_tpl: str, body_tpl: str, data: Mapping[str, Any]) -> tuple[str, str]:
    subject = one_line(templates.render(subject_tpl, data, missing="n/a"), MAX_SUBJECT)
    return subject, templates.render(body_tpl, data, missing="n/a")


async def send_email(config: SmtpConfig, *, to: Sequence[str], template: str, data: Mapping[str, Any],
                     body: str = "") -> Outcome:  # fmt: skip
    """Render `template` (or the caller's own `body` under that template's subject) against `data` and send it to
    `to`. Never raises for a failing server or a bad template: the Outcome says what went wrong."""
    started = time.monotonic()

    def done(code: int | str, description: str, details: str = "") -> Outcome:
        return Outcome(code, _scrub(description, config), details, round((time.monotonic() - started) * 1000, 1))

    if not config.enabled:
        return done("email", "SMTP is not configured (set --smtp-host)")
    try:
        subject_tpl, body_tpl = load_template(template)
    except KeyError:
        return done("email", f"Unknown email template: {one_line(template, 64)}")
    rcpts, bad, over = recipients(to, config.max_recipients)
    if not rcpts:
        skipped = f" ({len(bad)} entries are not addresses)" if bad else ""
        return done(0, f"No recipients for email (skipping){skipped}")
    try:
        subject, text = _render(subject_tpl, body or body_tpl, {**data, "email_to": ", ".join(rcpts)})
    except ValueError as exc:
        return done("email", f"The email body has a bad template: {exc}")
    try:
        message = build_message(config, rcpts, subject, text)
        async with asyncio.timeout(config.timeout_s):
            refused, reply = await aiosmtplib.send(
                message, sender=config.from_address, recipients=[envelope_address(r) for r in rcpts],
                hostname=config.host, port=config.port,
                username=config.username or None, password=config.password or None, timeout=config.timeout_s,
                use_tls=config.tls == "tls", start_tls=config.tls == "starttls",
            )  # fmt: skip
    except TimeoutError:
        return done("email", f"Failed to send email to {', '.join(rcpts)}: no answer from "
                    f"{config.host}:{config.port} within {config.timeout_s:g} s",
                    _details(config, rcpts, subject, bad, over, ""))  # fmt: skip
    except (aiosmtplib.SMTPException, OSError, ValueError) as exc:
        error = one_line(str(exc) or type(exc).__name__, 400)
        return done("email", f"Failed to send email to {', '.join(rcpts)}: {error}",
                    _details(config, rcpts, subject, bad, over, str(exc)))  # fmt: skip
    details = _details(config, rcpts, subject, bad, over, reply)
    accepted = [r for r in rcpts if envelope_address(r) not in refused]
    description = f"Email sent to {', '.join(accepted)}"
    if refused:
        description += "; refused: " + ", ".join(f"{r} ({one_line(str(v), 80)})" for r, v in refused.items())
    return done(0, description, details)
