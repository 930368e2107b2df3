"""What a ticket may hold and how client values are cleaned (xyOps requireValidTicketParams, facts §2.3).

Only the keys in EDITABLE come from a client: the server owns `num`, `username`, `created`, `modified`,
`changes`, `files`, `jobs` and `alerts` (⚠ xyOps stores any key a client sends, so a client could forge the
author, the history or a file path that delete_ticket_file would then delete). Every value is bounded.
Errors carry xyOps' code `ticket` and name the field.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable, Mapping
from typing import Any

import nh3

from .due import DueError, normalize_due

TYPES = ("issue", "feature", "release", "change", "maintenance", "question", "other")
STATUSES = ("open", "closed", "draft")
EDITABLE = ("subject", "body", "type", "status", "category", "server", "assignees", "cc", "notify", "due", "tags",
            "events")  # fmt: skip
LIST_FIELDS = ("assignees", "cc", "notify", "tags", "events")
SUBJECT_LEN = 1024
BODY_LEN = 256 * 1024  # characters of Markdown (a ticket body or one comment)
NAME_LEN = 128  # a username, tag, category or server id
EMAIL_LEN = 254
MAX_ITEMS = 100  # assignees, cc, notify, tags, events
MAX_CHANGES = 1000  # history entries per ticket (collapsing keeps field changes few; comments count)
MAX_FILES = 100  # files per ticket (xyOps' client.ticket_upload_settings.max_files_per_ticket)

# Elements whose content goes with them (not just the tags), as xyOps' sanitizeMarkdown removes whole blocks.
_DROP_WITH_CONTENT = {"script", "style", "template", "iframe", "object", "embed", "noscript", "textarea", "title"}
_TAG = re.compile(r"<[^>]*>")
_SANITIZE_PASSES = 8


class TicketError(Exception):
    """A ticket request that cannot be carried out: `code` (`ticket`, `access`, `notfound`) and a message."""

    def __init__(self, message: str, code: str = "ticket") -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def strip_html(text: str) -> str:
    """A subject without anything between `<` and `>` (xyOps), one line, trimmed."""
    return " ".join(_TAG.sub("", text).split())


def sanitize_markdown(text: str) -> str:
    """Markdown as given, without HTML: every tag goes (the content of scripts, styles, frames and the like with
    it), comments too, text stays. nh3 parses HTML as browsers do; its entity-escaped text is unescaped again and
    cleaned until nothing changes, so `&lt;script&gt;` cannot turn into a tag once a renderer decodes it. Markdown
    renders the result safely with HTML off or on."""
    current = text
    for _ in range(_SANITIZE_PASSES):
        cleaned = html.unescape(nh3.clean(current, tags=set(), clean_content_tags=_DROP_WITH_CONTENT,
                                          strip_comments=True))  # fmt: skip
        if cleaned == current:
            return cleaned
        current = cleaned
    return current.replace("<", "&lt;")  # still changing: a pathological nest; no `<` survives at all


def _malformed(name: str) -> TicketError:
    return TicketError(f"Malformed ticket parameter: {name}")


def _names(name: str, value: Any, item_len: int = NAME_LEN) -> list[str]:
    if not isinstance(value, list) or len(value) > MAX_ITEMS:
        raise _malformed(name)
    out: list[str] = []
    for item in value:
        if not isinstance(item, str) or not item.strip() or len(item) > item_len:
            raise _malformed(name)
        out.append(item.strip())
    return list(dict.fromkeys(out))


def _events(value: Any) -> list[dict[str, Any]]:
    if not isinstance(value, list) or len(value) > MAX_ITEMS:
        raise _malformed("events")
    out: list[dict[str, Any]] = []
    for stub in value:
        if not isinstance(stub, Mapping) or not isinstance(stub.get("id"), str) or not stub["id"]:
            raise _malformed("events")
        keep = {k: stub[k] for k in ("id", "targets", "algo", "tags", "params") if k in stub}
        if "params" in keep and not isinstance(keep["params"], Mapping):
            raise _malformed("events")
        out.append(keep)
    return out


def _word(name: str, value: Any) -> str:
    if value is None:
        return ""
    if not isinstance(value, str) or len(value) > NAME_LEN:
        raise _malformed(name)
    return value.strip()


def _subject(value: Any, now: float) -> str:
    if not isinstance(value, str | int | float) or isinstance(value, bool) or len(str(value)) > SUBJECT_LEN:
        raise _malformed("subject")
    return strip_html(str(value))


def _body(value: Any, now: float) -> str:
    if value is None:
        return ""
    if not isinstance(value, str) or len(value) > BODY_LEN:
        raise _malformed("body")
    return sanitize_markdown(value)


def _choice(name: str, choices: tuple[str, ...]) -> Callable[[Any, float], str]:
    def check(value: Any, now: float) -> str:
        if not isinstance(value, str) or value not in choices:
            raise TicketError(f"Unknown ticket {name}: {str(value)[:64]}")
        return value

    return check


def _due(value: Any, now: float) -> int:
    try:
        return normalize_due(value, now)
    except DueError:
        raise _malformed("due") from None


_CLEANERS: dict[str, Callable[[Any, float], Any]] = {
    "subject": _subject, "body": _body, "type": _choice("type", TYPES), "status": _choice("status", STATUSES),
    "category": lambda v, _: _word("category", v), "server": lambda v, _: _word("server", v),
    "assignees": lambda v, _: _names("assignees", v), "cc": lambda v, _: _names("cc", v),
    "notify": lambda v, _: _names("notify", v, EMAIL_LEN), "tags": lambda v, _: _names("tags", v),
    "events": lambda v, _: _events(v), "due": _due,
}  # fmt: skip


def clean(params: Mapping[str, Any], now: float) -> dict[str, Any]:
    """The EDITABLE fields of `params` that are present, checked and normalised (types, bounds, choices, subject
    without HTML, body sanitized, `due` as an epoch). Keys outside EDITABLE are ignored. TicketError otherwise."""
    return {name: _CLEANERS[name](params[name], now) for name in EDITABLE if name in params}


def defaults(fields: Mapping[str, Any]) -> dict[str, Any]:
    """A new ticket's fields with xyOps' defaults for what was not given."""
    base: dict[str, Any] = {"subject": "", "body": "", "type": "issue", "status": "open", "category": "",
                            "server": "", "assignees": [], "cc": [], "notify": [], "due": 0, "tags": []}  # fmt: skip
    return {**base, **fields}


def safe_body(ticket: Mapping[str, Any]) -> dict[str, Any]:
    """A ticket as a reply carries it: the body and every comment body sanitized again (records written by
    older code, or generated bodies, are answered safe too)."""
    out = dict(ticket)
    if isinstance(out.get("body"), str):
        out["body"] = sanitize_markdown(out["body"])
    if isinstance(out.get("changes"), list):
        out["changes"] = [{**c, "body": sanitize_markdown(c["body"])}
                          if isinstance(c, Mapping) and isinstance(c.get("body"), str) else c
                          for c in out["changes"]]  # fmt: skip
    return out
