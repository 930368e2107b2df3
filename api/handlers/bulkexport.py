"""bulk_search_export: the records a search matches, streamed as a CSV, TSV or NDJSON download (xyOps
lib/api/search.js). As in xyOps the file is the reply itself (`Content-Disposition: attachment`, a UTF-8 BOM, a
header row of the columns, optionally gzip); it is not an internal job. Cell values that a spreadsheet would run as
a formula (`= + - @` first) get a leading quote, as xyOps does. Bounded: at most `max_rows` rows (MAX_ROWS)."""

from __future__ import annotations

import datetime as dt
import json
import secrets
import zlib
from collections.abc import AsyncIterator, Callable
from typing import Any

from aiohttp import web

from storage.errors import PageTooLarge
from storage.search.query import QueryError

from ..call import Call
from ..errors import ApiError
from ..files import stream_out
from ..params import QUERY_LEN, flag, integer, strings, text
from ..principal import require_unrestricted
from ..registry import AUTH, HANDLERS
from ..transport import stream_headers
from .jobs import SORT_DIR

MAX_ROWS = 100_000
PAGE = 100
FORMATS = {"csv": ("text/csv; charset=utf-8", ".csv"), "tsv": ("text/tab-separated-values; charset=utf-8", ".tsv"),
           "ndjson": ("application/x-ndjson; charset=utf-8", ".ndjson")}  # fmt: skip
INDEXES = ("jobs", "tickets", "alerts")
Search = Callable[[int, int], Any]


def _cell(value: Any) -> str:
    if value is None or value is False:
        return ""
    text = value if isinstance(value, str) else json.dumps(value) if isinstance(value, dict | list) else str(value)
    return ("'" + text if text[:1] in ("=", "+", "-", "@") else text).replace("\n", " ").replace("\r", " ")


def _row(fmt: str, columns: list[str], record: dict[str, Any]) -> str:
    if fmt == "ndjson":
        return json.dumps({c: record.get(c) for c in columns}, default=str) + "\n"
    if fmt == "tsv":
        return "\t".join(_cell(record.get(c)).replace("\t", " ") for c in columns) + "\n"
    return ",".join('"' + _cell(record.get(c)).replace('"', '""') + '"' for c in columns) + "\n"


def _searcher(call: Call, index: str, query: str, sort_dir: int) -> Search:
    s = call.stores
    if index == "jobs":
        return lambda offset, limit: s.jobs.search(query, offset=offset, limit=limit, sort_dir=sort_dir)
    if index == "tickets":
        return lambda offset, limit: s.tickets.search(query, offset, limit, sort_dir)
    return lambda offset, limit: s.alerts.search(query, offset, limit, sort_dir)


async def _lines(search: Search, fmt: str, columns: list[str], limit: int) -> AsyncIterator[str]:
    yield "\ufeff"
    if fmt == "csv":
        yield ",".join('"' + c.replace('"', '""') + '"' for c in columns) + "\n"
    elif fmt == "tsv":
        yield "\t".join(columns) + "\n"
    sent, size = 0, PAGE
    while sent < limit:
        try:
            rows, _ = await search(sent, min(size, limit - sent))
        except PageTooLarge as exc:  # big records: fewer per page
            if size == 1:
                raise
            size = max(min(exc.fits, size - 1), 1)
            continue
        if not rows:
            return
        yield "".join(_row(fmt, columns, r) for r in rows)
        sent += len(rows)


async def _encoded(lines: AsyncIterator[str], compress: bool) -> AsyncIterator[bytes]:
    gz = zlib.compressobj(wbits=31) if compress else None
    async for line in lines:
        data = line.encode()
        yield gz.compress(data) if gz is not None else data
    if gz is not None:
        yield gz.flush()


@HANDLERS.add("bulk_search_export", write=False, privilege=AUTH,
              args=(text("index", required=True, choices=INDEXES),
                    text("format", required=True, choices=sorted(FORMATS)),
                    strings("columns", required=True, max_items=100, doc="record fields, in order (array or a,b,c)"),
                    text("query", max_len=QUERY_LEN), SORT_DIR, flag("compress", False),
                    integer("max_rows", 10_000, ge=1, le=MAX_ROWS, doc="rows at most")))  # fmt: skip
async def bulk_search_export(call: Call) -> web.StreamResponse:
    """Download every record of `index` a search matches (category- or group-limited callers are refused)."""
    require_unrestricted(call.who)
    p = call.params
    query = (p.get("query") or "*").strip() or "*"
    search = _searcher(call, p["index"], query, -1 if p["sort_dir"] < 0 else 1)
    try:  # a bad query is an error reply, before the download starts
        await search(0, 0)
    except QueryError as exc:
        raise ApiError("api", f"Invalid search query: {exc}") from None
    content_type, ext = FORMATS[p["format"]]
    name = f"podium-{p['index']}-export-{dt.date.today().isoformat()}-{secrets.token_hex(4)}{ext}"
    headers = {"Content-Type": "application/gzip" if p["compress"] else content_type,
               "Content-Disposition": f'attachment; filename="{name}{".gz" if p["compress"] else ""}"',
               "Cache-Control": "no-cache, no-store, must-revalidate"}  # fmt: skip
    lines = _lines(search, p["format"], list(p["columns"]), p["max_rows"])
    resp = web.StreamResponse(headers=stream_headers(call, headers))
    return await stream_out(call.request, resp, _encoded(lines, p["compress"]))
