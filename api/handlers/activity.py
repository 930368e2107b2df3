"""search_activity (admin): the activity log with the digest's query syntax on action, keywords, date."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from storage.search.query import QueryError

from ..call import Call
from ..errors import ApiError
from ..registry import ADMIN, HANDLERS, Reply
from ..validate import integer, text


async def activity_page(call: Call, query: str, also: Sequence[str] = ()) -> tuple[list[dict[str, Any]], int]:
    """One page of activity records for `query` (and every query in `also`), with the caller's
    offset/limit/sort_dir; a bad query is an `api` error."""
    offset = integer(call.params, "offset", 0, minimum=0)
    limit = integer(call.params, "limit", 1, minimum=0)
    sort_dir = -1 if integer(call.params, "sort_dir", -1) < 0 else 1
    try:
        return await call.stores.activity.search(query, offset, limit, sort_dir, also=also)
    except QueryError as exc:
        raise ApiError("api", f"Invalid search query: {exc}") from None


def without_request_info(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """History rows as non-admins see them: no addresses or headers of whoever made the change."""
    return [{k: v for k, v in row.items() if k not in ("ip", "ips", "headers")} for row in rows]


@HANDLERS.add("search_activity", write=False, privilege=ADMIN)
async def search_activity(call: Call) -> Reply:
    rows, total = await activity_page(call, text(call.params, "query", required=False) or "*")
    return {"rows": rows, "list": {"length": total}}
