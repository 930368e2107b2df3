"""admin_import_data, reading the file: its lines grouped by kind (api/xyformat.py), and the import's report."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any

from . import xyformat

Record = dict[str, Any]
MAX_MESSAGES = 100  # errors (and warnings) listed in a report, as xyOps caps its own
MAX_CHANGES = 5000  # {kind, id, action} entries listed
MAX_ROWS = 1_000_000  # data lines read from one file; the rest is reported, not read


@dataclass(slots=True)
class Report:
    """What an import did (or, dry, would do)."""

    dry_run: bool = False
    lines: int = 0
    records: int = 0
    keys: int = 0
    commands: int = 0
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    deleted: int = 0
    skipped: int = 0
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    changes: list[Record] = field(default_factory=list)

    def error(self, number: int, message: str) -> None:
        self.skipped += 1
        if len(self.errors) < MAX_MESSAGES:
            self.errors.append(f"line {number}: {message}")
        elif len(self.errors) == MAX_MESSAGES:
            self.errors.append("Too many errors to list.")

    def warn(self, message: str) -> None:
        if message not in self.warnings and len(self.warnings) < MAX_MESSAGES:
            self.warnings.append(message)

    def change(self, kind: str, obj_id: str, action: str) -> None:
        setattr(self, action, getattr(self, action) + 1)
        if action != "unchanged" and len(self.changes) < MAX_CHANGES:
            self.changes.append({"kind": kind, "id": obj_id, "action": action})

    def as_dict(self) -> Record:
        return dataclasses.asdict(self)


@dataclass(slots=True)
class Parsed:
    lists: dict[str, dict[int, tuple[int, list[Any]]]] = field(default_factory=dict)  # name -> page -> (line, items)
    headers: dict[str, Any] = field(default_factory=dict)  # list name -> its header's value
    users: list[tuple[int, Any]] = field(default_factory=list)
    secrets: dict[str, tuple[int, Any]] = field(default_factory=dict)
    buckets: dict[str, tuple[int, Any]] = field(default_factory=dict)  # bucket id -> (line, its data)
    replaced: dict[str, int] = field(default_factory=dict)  # list name -> line of its listDelete
    records: dict[str, list[tuple[int, str, Any]]] = field(default_factory=dict)  # index -> [(line, id, record)]


_LIST_KEY = re.compile(r"global/(\w+)")
_PAGE_KEY = re.compile(r"global/(\w+)/(\d+)")
_SECRET_KEY = re.compile(r"secrets/(\w+)")
_BUCKET_DATA = re.compile(r"buckets/(\w+)/data")
_USER_KEY = re.compile(r"users/(\w+)")


def parse_file(text: str, report: Report) -> Parsed:
    out = Parsed()
    for row in xyformat.rows(text, report_error=report.error):
        if report.lines >= MAX_ROWS:
            report.error(row.number, f"more than {MAX_ROWS} data lines: this one and those after it are not read")
            break
        report.lines += 1
        try:
            _parse_row(out, report, row.number, row.obj)
        except (ValueError, TypeError, RecursionError):  # e.g. an unhashable `cmd`, a 5000-digit id
            report.error(row.number, "cannot be read (a field of an unexpected type or size)")
    return out


def _parse_row(out: Parsed, report: Report, number: int, obj: Record) -> None:
    if "index" in obj and "record" in obj:
        if not isinstance(obj["index"], str) or not isinstance(obj.get("id"), str | int):
            report.error(number, "a record line needs a string `index` and an `id`")
            return
        rec_id = str(obj["id"])
        report.records += 1
        out.records.setdefault(obj["index"], []).append((number, rec_id, obj["record"]))
    elif "key" in obj and "value" in obj:
        _parse_key(out, report, number, obj["key"], obj["value"])
    elif "cmd" in obj:
        cmd, args = obj["cmd"], obj.get("args")
        if cmd not in xyformat.COMMANDS or not isinstance(args, list):
            report.error(number, f"unsupported storage command {str(cmd)[:40]!r}")
            return
        report.commands += 1
        if cmd != "listDelete":
            report.warn(f"Storage command {cmd} is not applied (only lists and records are imported).")
        elif args and isinstance(args[0], str) and (whole := _LIST_KEY.fullmatch(args[0])):
            out.replaced[whole[1]] = number
    else:
        report.error(number, "unknown line format (expected index/id/record, key/value or cmd/args)")


def _parse_key(out: Parsed, report: Report, number: int, key: Any, value: Any) -> None:
    if not isinstance(key, str):
        report.error(number, "`key` must be a string")
        return
    report.keys += 1
    if page := _PAGE_KEY.fullmatch(key):
        items = value.get("items") if isinstance(value, dict) else None
        if not isinstance(items, list):
            report.error(number, f"list page {key} has no `items` array")
            return
        out.lists.setdefault(page[1], {})[int(page[2])] = (number, items)
    elif whole := _LIST_KEY.fullmatch(key):
        out.headers[whole[1]] = value  # a list header: its pages carry the items, it says how many
    elif _USER_KEY.fullmatch(key):
        out.users.append((number, value))
    elif secret := _SECRET_KEY.fullmatch(key):
        out.secrets[secret[1]] = (number, value)
    elif bucket := _BUCKET_DATA.fullmatch(key):
        if not isinstance(value, dict):
            report.error(number, f"bucket data {key} must be an object")
            return
        out.buckets[bucket[1]] = (number, value)
    else:
        report.skipped += 1
        report.warn(f"Storage keys like {key.split('/')[0]}/... are not imported (bucket data and files, "
                    "job logs, avatars and monitor history are outside what Podium imports).")  # fmt: skip


def list_incomplete(parsed: Parsed, name: str) -> str | None:
    """Why the file's list `name` is not whole (so it must not replace the stored one), or None if it is: its
    header's `length` and `last_page` must match the pages the file holds (none missing or unreadable)."""
    head = parsed.headers.get(name)
    if not isinstance(head, dict):
        return "the file has no header for it"
    length, last, first = head.get("length"), head.get("last_page"), head.get("first_page", 0)
    if not (type(length) is int and type(last) is int and type(first) is int and first >= 0 and length >= 0):
        return "its header has no valid length, first_page and last_page"
    pages = parsed.lists.get(name, {})
    if sorted(pages) != list(range(first, last + 1)) and not (length == 0 and not pages):
        return f"pages {first}..{last} expected, {len(pages)} readable"
    count = sum(len(items) for _, items in pages.values())
    if count != length:
        return f"{length} items expected, {count} readable"
    return None
