"""A ticket's change history (xyOps detectTicketChanges / pruneRedundantChanges, facts §5).

- `detect`: one change entry per tracked key the update gives whose value differs from the stored one
  (`body` changes carry no value; lists compare as sets, so a reordering is no change).
- Drafts stay quiet: no entries while the ticket is a draft after the update. ⚠ xyOps looks only at the status the
  update sends, so a sparse update of a stored draft records changes (and queues mail); here the stored status
  counts when the update sends none. draft -> open records the `status` change.
- `collapse`: of the entries with a `key` in one local calendar minute ("12:00:59" and "12:01:00" are two minutes),
  only the last survives (comments have no key and never collapse). ⚠ xyOps also folds several `delete` audit
  entries of one minute into one; here every `delete` entry (and the `created` one) stays, since they are an audit
  trail. The mail helper applies the same `collapse` to the changes it sends.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, tzinfo
from typing import Any

TRACKED = ("subject", "body", "type", "category", "server", "status", "assignees", "due", "cc", "notify", "tags")
LISTS = frozenset({"assignees", "cc", "notify", "tags"})
KEEP_ALL = frozenset({"created", "delete"})  # audit entries never collapse

Change = dict[str, Any]


def _same(key: str, old: Any, new: Any) -> bool:
    if key in LISTS:
        return sorted({str(v) for v in old or []}) == sorted({str(v) for v in new or []})
    if isinstance(old, int | float) and isinstance(new, int | float):
        return bool(old == new)
    blank = ("", None, 0)
    if old in blank and new in blank:
        return True
    return str(old) == str(new)


def is_quiet(stored: Mapping[str, Any], update: Mapping[str, Any]) -> bool:
    """True when the ticket is a draft after this update: such an update records no changes and sends no mail."""
    return str(update.get("status", stored.get("status")) or "") == "draft"


def detect(stored: Mapping[str, Any], update: Mapping[str, Any], *, username: str, date: int) -> list[Change]:
    """The change entries an update of `stored` with `update` records (none for a draft)."""
    if is_quiet(stored, update):
        return []
    out: list[Change] = []
    for key in TRACKED:
        if key not in update or _same(key, stored.get(key), update[key]):
            continue
        change: Change = {"type": "change", "username": username, "date": date, "key": key}
        if key != "body":
            change["value"] = list(update[key]) if key in LISTS else update[key]
        out.append(change)
    return out


def _minute(date: Any, tz: tzinfo | None) -> str:
    try:
        when = datetime.fromtimestamp(float(date), tz) if tz is not None else datetime.fromtimestamp(float(date))
    except (TypeError, ValueError, OverflowError, OSError):
        return ""
    return when.strftime("%Y/%m/%d %H:%M")


def collapse(changes: Sequence[Mapping[str, Any]], tz: tzinfo | None = None) -> list[Change]:
    """`changes` with only the last entry per key and local calendar minute kept, in their order. `tz`: the zone
    of the minutes (None: the server's local zone, as xyOps)."""
    last: dict[tuple[str, str], int] = {}
    for i, change in enumerate(changes):
        key = change.get("key")
        if key and key not in KEEP_ALL:
            last[(str(key), _minute(change.get("date"), tz))] = i
    keep = set(last.values())
    return [dict(c) for i, c in enumerate(changes)
            if not c.get("key") or c.get("key") in KEEP_ALL or i in keep]  # fmt: skip
