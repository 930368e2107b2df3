"""search_activity (admin): the activity log with the digest's query syntax on action, keywords, date."""

from __future__ import annotations

from storage.search.query import QueryError

from ..call import Call
from ..errors import ApiError
from ..registry import ADMIN, HANDLERS, Reply
from ..validate import integer, text


@HANDLERS.add("search_activity", write=False, privilege=ADMIN)
async def search_activity(call: Call) -> Reply:
    query = text(call.params, "query", required=False) or "*"
    offset = integer(call.params, "offset", 0, minimum=0)
    limit = integer(call.params, "limit", 1, minimum=0)
    sort_dir = -1 if integer(call.params, "sort_dir", -1) < 0 else 1
    try:
        rows, total = await call.stores.activity.search(query, offset, limit, sort_dir)
    except QueryError as exc:
        raise ApiError("api", f"Invalid search query: {exc}") from None
    return {"rows": rows, "list": {"length": total}}
