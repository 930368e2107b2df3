"""`GET /files/...` and `GET /logs/...`: stored files by their key (a File object's `path`, served at `/` + path).

Access: a user or API key that can see the job owning the path (`files/jobs/<job>/...`, `logs/jobs/<job>/...`;
administrators see every file), or an agent with `?server=<id>&auth=<that server's token>`. Unknown files are
404, refused callers 403. Files are streamed in chunks, never read whole. Anything a browser could run (HTML, SVG,
XML) is sent as a download, and every reply is sandboxed, so a stored file cannot act as a page of this site.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from email.utils import formatdate
from typing import Any

import structlog
from aiohttp import web

from storage.connection import STORE_DOWN_ERRORS
from storage.files import BadPath, check_path

from .agentauth import same, server_token
from .errors import ApiError
from .handlers.jobs import can_see
from .principal import Principal
from .registry import AUTH as AUTH_ANY
from .transport import json_reply, split_reserved
from .typedefs import AUTH, NODE

log = structlog.get_logger("podium.files")

ROUTE = r"/{key:(?:files|logs)/.+}"
_ACTIVE_TYPES = ("html", "svg", "xml", "javascript")  # served as downloads only



def owning_job(key: str) -> str:
    """The job a stored path belongs to (`files/jobs/<job>/...`, `logs/jobs/<job>/...`), or ''."""
    parts = key.split("/")
    return parts[2] if len(parts) > 3 and parts[1] == "jobs" else ""


async def stream_out(
    request: web.Request, resp: web.StreamResponse, chunks: AsyncIterator[bytes]
) -> web.StreamResponse:
    """Send `chunks` as the body of a prepared-here reply. Once the headers are out an error can only end the
    connection (the client sees a cut-off body), so a failing store is logged and the connection closed."""
    await resp.prepare(request)
    try:
        async for chunk in chunks:
            await resp.write(chunk)
        await resp.write_eof()
    except ConnectionResetError:
        log.debug("stream_client_left", path=request.path)
    except Exception as exc:
        log.warning("stream_failed", path=request.path, error=repr(exc))
        resp.force_close()
    finally:
        aclose = getattr(chunks, "aclose", None)  # an async generator closes its file at once, not when collected
        if aclose is not None:
            with contextlib.suppress(Exception):
                await aclose()
    return resp


def _refusal(code: str, text: str, status: int) -> web.Response:
    return json_reply({"code": code, "description": text}, status)


async def _caller(request: web.Request) -> Principal | None:
    """The user or API key in the headers or query, None when there is none; ApiError for bad ones."""
    _, reserved = split_reserved(request.query.items())
    return await request.app[AUTH].from_headers(request, reserved, AUTH_ANY, write=False)


async def _allowed(request: web.Request, key: str) -> bool:
    stores = request.app[NODE].stores
    server, auth = request.query.get("server", ""), request.query.get("auth", "")
    if server and auth:
        return same(auth, server_token(server, stores.secret_key))
    who = await _caller(request)
    if who is None:
        return False
    if who.is_admin:
        return True
    job_id = owning_job(key)
    job = await stores.jobs.get(job_id) if job_id else None
    return job is not None and can_see(who, job)


def _headers(key: str, info: dict[str, Any], download: str) -> dict[str, str]:
    ctype = str(info["type"])
    headers = {"Content-Type": ctype, "Last-Modified": formatdate(float(info["modified"]), usegmt=True),
               "X-Content-Type-Options": "nosniff", "Content-Security-Policy": "sandbox",
               "Cache-Control": "private, max-age=0"}  # fmt: skip
    if download or any(kind in ctype for kind in _ACTIVE_TYPES):
        name = key.rsplit("/", 1)[-1]  # a checked path: no quotes or separators to escape
        headers["Content-Disposition"] = f'attachment; filename="{name}"'
    return headers


async def serve_file(request: web.Request) -> web.StreamResponse:
    key = request.match_info["key"]
    try:
        check_path(key)
        if not await _allowed(request, key):
            return _refusal("access", "You are not allowed to read this file.", 403)
        files = request.app[NODE].stores.files
        info = await files.stat(key)
        if info is None:
            return _refusal("notfound", f"File not found: {key}", 404)
        resp = web.StreamResponse(headers=_headers(key, dict(info), request.query.get("download", "")))
        if request.method == "HEAD":
            resp.content_length = int(info["size"])
            await resp.prepare(request)
            return resp
        return await stream_out(request, resp, files.read(key))
    except BadPath:
        return _refusal("notfound", "File not found.", 404)
    except ApiError as exc:
        return json_reply(exc.body(), exc.status)
    except STORE_DOWN_ERRORS:
        return _refusal("db", "The data store is unavailable; try again shortly.", 500)
