"""Reading one page of records by key with a byte budget, so a search reply stays bounded in size.

A page of 1,000 ids can name records of up to a few hundred KiB each (a job copies its event's workflow,
params and overrides): fetching and decoding them all in one MGET would hold the event loop for seconds.
The stored sizes are read first (STRLEN, pipelined); a page that would pass the budget is refused
(PageTooLarge, saying how many rows fit) rather than cut short, because xyOps clients page with
`offset += limit` and would silently skip the rows left out. One record alone is always served.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from . import codec
from .connection import Redis
from .errors import PageTooLarge

PAGE_BYTES = 8 * 1024 * 1024  # stored (msgpack) bytes per page; the JSON reply is about the same size


async def fetch_page(client: Redis, keys: Sequence[str], budget: int = PAGE_BYTES) -> list[dict[str, Any] | None]:
    """The records at `keys`, in order (None where a key is missing); PageTooLarge if they hold more than
    `budget` stored bytes (and there is more than one)."""
    if not keys:
        return []
    async with client.pipeline(transaction=False) as pipe:
        for key in keys:
            pipe.strlen(key)  # type: ignore[unused-awaitable]  # queued
        sizes: list[int] = await pipe.execute()
    spent = 0
    for count, size in enumerate(sizes):
        if count and spent + size > budget:
            raise PageTooLarge(count, budget)
        spent += size
    raws = await client.mget(list(keys))
    return [None if r is None else dict(codec.unpack(r if isinstance(r, bytes) else str(r).encode())) for r in raws]
