"""search_activity (admin): the activity log with the digest's query syntax on action, keywords, date."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from storage.search.query import QueryError

from ..call import Call
from ..errors import ApiError
from ..params import QUERY_LEN, integer, page, text
from ..registry import ADMIN, HANDLERS, Reply


async def activity_page(call: Call, query: str, also: Sequence[str] = ()) -> tuple[list[dict[str, Any]], int]:
    """One page of activity records for `query` (and every query in `also`), with the caller's
    offset/limit/sort_dir; a bad query is an `api` error."""
    p = call.params
    sort_dir = -1 if p["sort_dir"] < 0 else 1
    try:
        return await call.stores.activity.search(query, p["offset"], p["limit"], sort_dir, also=also)
    except QueryError as exc:
        raise ApiError("api", f"Invalid search query: {exc}") from None


def without_request_info(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """History rows as non-admins see them: no addresses or headers of whoever made the change."""
    return [{k: v for k, v in row.items() if k not in ("ip", "ips", "headers")} for row in rows]


# What activity_page reads: the caller's paging (xyOps' default `limit` for these searches is 1).
PAGING = (*page(limit=1), integer("sort_dir", -1, doc="-1 newest first, 1 oldest first"))
QUERY = text("query", max_len=QUERY_LEN, doc="search query (digest syntax); empty or * = everything")


@HANDLERS.add("search_activity", write=False, privilege=ADMIN, args=(QUERY, *PAGING))
async def search_activity(call: Call) -> Reply:
    """Search the activity log (action, keywords, date)."""
    rows, total = await activity_page(call, call.params.get("query") or "*")
    return {"rows": rows, "list": {"length": total}}
