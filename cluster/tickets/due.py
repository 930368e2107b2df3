"""A ticket's `due` date from what a client or an action gives (xyOps requireValidTicketParams, facts §2.2).

- Nothing, "", 0 or "0": no due date (0).
- A string of digits is a number; other text is a sum of `<number> <unit>` pieces ("7 days", "1d 12h",
  "2 weeks, 3 days"). ⚠ xyOps reads only a unit's first letter, so "1 month" is 60 seconds (m = minute) and text
  it cannot read (a date like "2026-01-01", "soon") silently means no due date. Here "mo"/"mon"/"month(s)" are
  months of 30 days, every unit must be known, and text that is not such a sum is refused (DueError).
- A number below ten years (315,360,000 s) is an offset from now, moved to the local midnight that starts the
  day it falls on, as xyOps does ("1 day" is tomorrow 00:00 in the server's time zone). Larger numbers are an
  absolute epoch, kept as given.
"""

from __future__ import annotations

import math
import re
from datetime import datetime, tzinfo
from typing import Any

OFFSET_LIMIT = 315_360_000  # ten years of 365 days: smaller numbers are offsets
MAX_EPOCH = 2**41  # about the year 71,000: beyond this a number is not a date
MONTH_S = 30 * 86400
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604_800, "y": 31_536_000}
_DIGITS = re.compile(r"\d{1,15}")
_PIECE = re.compile(r"\s*(\d{1,9}(?:\.\d{1,6})?)\s*([a-z]{1,16})\s*(?:,|\band\b)?", re.IGNORECASE)
MAX_TEXT = 200


class DueError(ValueError):
    """`due` is neither a date, an offset, nor readable text."""


def _unit(word: str) -> int | None:
    word = word.lower()
    if word.startswith("mo"):  # mo, mon, month, months (before "m", which is minutes)
        return MONTH_S if "month".startswith(word) or word in ("mos", "mons", "months") else None
    if word in ("ms", "msec"):
        return None  # milliseconds would be a typo for a due date: refuse rather than guess
    return _UNITS.get(word[0])


def seconds_from_text(text: str) -> int | None:
    """Seconds in `text` ("7 days", "1h 30m", "1767225600"), None when it is not readable."""
    value = text.strip()
    if len(value) > MAX_TEXT:
        return None
    if _DIGITS.fullmatch(value):
        return int(value)
    total = 0.0
    pos = 0
    while pos < len(value):
        m = _PIECE.match(value, pos)
        if m is None or m.end() == pos:
            return None
        unit = _unit(m.group(2))
        if unit is None:
            return None
        total += float(m.group(1)) * unit
        pos = m.end()
    return int(total) if pos else None


def normalize_due(value: Any, now: float, tz: tzinfo | None = None) -> int:
    """The epoch (s) to store for `value`, 0 for none; DueError when it cannot be one. `tz` is the time zone
    whose midnight an offset moves to (None: the server's local zone, as xyOps)."""
    if value is None or value == "" or value == 0:
        return 0
    if isinstance(value, bool):
        raise DueError("due")
    if isinstance(value, str):
        seconds = seconds_from_text(value)
        if seconds is None:
            raise DueError("due")
        number: float = seconds
    elif isinstance(value, int | float) and math.isfinite(value):
        number = value
    else:
        raise DueError("due")
    if number < 0 or number > MAX_EPOCH:
        raise DueError("due")
    if number == 0:
        return 0
    if number >= OFFSET_LIMIT:
        return int(number)
    when = datetime.fromtimestamp(now + number, tz) if tz is not None else datetime.fromtimestamp(now + number)
    midnight = when.replace(hour=0, minute=0, second=0, microsecond=0)
    return int(midnight.timestamp())
