"""Reading one page of records by key with a byte budget, so a search reply stays bounded in size.

A page of 1,000 ids can name records of up to a few hundred KiB each (a job copies its event's workflow,
params and overrides): fetching and decoding them all in one MGET would hold the event loop for seconds.
The stored sizes are read first (STRLEN, pipelined), and the page ends, early, where the budget is spent
(always with at least one record); callers report the true total, so a client that pages by the rows it
received misses nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from . import codec
from .connection import Redis

PAGE_BYTES = 8 * 1024 * 1024  # stored (msgpack) bytes per page; the JSON reply is about the same size


async def fetch_page(client: Redis, keys: Sequence[str], budget: int = PAGE_BYTES) -> list[dict[str, Any] | None]:
    """The records at `keys`, in order (None where a key is missing), up to `budget` stored bytes."""
    if not keys:
        return []
    async with client.pipeline(transaction=False) as pipe:
        for key in keys:
            pipe.strlen(key)  # type: ignore[unused-awaitable]  # queued
        sizes: list[int] = await pipe.execute()
    count, spent = 0, 0
    for size in sizes:
        if count and spent + size > budget:
            break
        spent += size
        count += 1
    raws = await client.mget(list(keys[:count]))
    return [None if r is None else dict(codec.unpack(r if isinstance(r, bytes) else str(r).encode())) for r in raws]
