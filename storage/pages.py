"""Reading one page of records by key with a byte budget, so a search reply stays bounded in size.

A page of 1,000 ids can name records of up to a few hundred KiB each (a job copies its event's workflow,
params and overrides): fetching and decoding them all would hold the event loop for seconds. One script
reads the records and adds up their sizes as it goes; a page that would pass the budget is refused
(PageTooLarge, saying how many rows fit) rather than cut short, because xyOps clients page with
`offset += limit` and would silently skip the rows left out. One record alone is always served.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from . import codec
from .connection import Database
from .errors import PageTooLarge

PAGE_BYTES = 8 * 1024 * 1024  # stored (msgpack) bytes per page; the JSON reply is about the same size

# The values at KEYS, in order, while their sizes add up to at most the budget.
# KEYS the record keys; ARGV[1] budget in bytes
# return {0, value or false, ...} for the whole page, or {1, n}: only the first n records fit
FETCH_PAGE = """
local budget, spent, out = tonumber(ARGV[1]), 0, {0}
for i, key in ipairs(KEYS) do
  local value = redis.call('GET', key)
  if value then
    spent = spent + #value
    if i > 1 and spent > budget then return {1, i - 1} end
  end
  out[i + 1] = value
end
return out
"""


async def fetch_page(db: Database, keys: Sequence[str], budget: int = PAGE_BYTES) -> list[dict[str, Any] | None]:
    """The records at `keys`, in order (None where a key is missing); PageTooLarge if they hold more than
    `budget` stored bytes (and there is more than one)."""
    if not keys:
        return []
    reply = await db.script(FETCH_PAGE)(keys=list(keys), args=[budget])
    if int(reply[0]) == 1:
        raise PageTooLarge(int(reply[1]), budget)
    values = list(reply[1:]) + [None] * (len(keys) + 1 - len(reply))  # trailing misses are not sent back
    return [None if v is None else dict(codec.unpack(v if isinstance(v, bytes) else str(v).encode())) for v in values]
