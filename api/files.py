"""`GET /files/...` and `GET /logs/...`: stored files by their key (a File object's `path`, served at `/` + path).

Access is decided by one table of owner rules, by the key's second segment (OWNER_RULES):
- `files/jobs/<job>/...`, `logs/jobs/<job>/...`: a user or API key that can see the job;
- `files/users/<username>/<random>/...`: any authenticated caller. As in xyOps, the unguessable random segment
  is what keeps such a file private: its URL is the secret, handed to whoever should read it;
- `files/bucket/<id>/...`: any authenticated caller (buckets have no category restriction in xyOps);
- `files/tickets/<id>/...`: whoever may see the ticket (api/handlers/ticketfiles.py installs that rule).
Administrators read every file, and so does an agent with `?server=<id>&auth=<that server's token>` (its jobs'
input and output files). Unknown files are 404, refused callers 403 (before the store is asked, so a refusal says
nothing about existence). Files are streamed in chunks, never read whole; single byte ranges (206/416) and
ETag / Last-Modified revalidation (304) are answered. Anything a browser could run (HTML, SVG, XML) is sent as a
download, and every reply is sandboxed, so a stored file cannot act as a page of this site.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from email.utils import formatdate, parsedate_to_datetime

import structlog
from aiohttp import web

from storage.connection import STORE_DOWN_ERRORS
from storage.files import BadPath, FileInfo, check_path
from storage.stores import Stores

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
_RANGE = re.compile(r"bytes=(\d*)-(\d*)")
_DOWNLOAD_NAME = re.compile(r"[^A-Za-z0-9_.+-]+")

# May `who` (a user or API key, not an administrator) read the stored file whose key split at `/` is `parts`?
OwnerRule = Callable[[Stores, Principal, list[str]], Awaitable[bool]]
OWNER_RULES: dict[str, OwnerRule] = {}


def owner_rule(segment: str) -> Callable[[OwnerRule], OwnerRule]:
    """Decorator: the rule for `files/<segment>/...`. A module that owns a kind of file (tickets) installs its
    own rule, replacing the default one here."""

    def install(rule: OwnerRule) -> OwnerRule:
        OWNER_RULES[segment] = rule
        return rule

    return install


def owning_job(key: str) -> str:
    """The job a stored path belongs to (`files/jobs/<job>/...`, `logs/jobs/<job>/...`), or ''."""
    parts = key.split("/")
    return parts[2] if len(parts) > 3 and parts[1] == "jobs" else ""


@owner_rule("jobs")
async def job_file_rule(stores: Stores, who: Principal, parts: list[str]) -> bool:
    """Job output files: whoever can see the job (its category and targets)."""
    job_id = parts[2] if len(parts) > 3 else ""
    job = await stores.jobs.get(job_id) if job_id else None
    return job is not None and can_see(who, job)


@owner_rule("users")
async def user_file_rule(stores: Stores, who: Principal, parts: list[str]) -> bool:
    """A user's uploads (`files/users/<username>/<random>/<name>`): any authenticated caller. The random
    segment is the secret, as in xyOps (whose /files has no check at all): the uploader shares the URL."""
    return len(parts) >= 5


@owner_rule("bucket")
async def bucket_file_rule(stores: Stores, who: Principal, parts: list[str]) -> bool:
    """Bucket files: any authenticated caller (xyOps buckets have no category restriction)."""
    return len(parts) >= 4


@owner_rule("tickets")
async def ticket_file_rule(stores: Stores, who: Principal, parts: list[str]) -> bool:
    """Ticket files: administrators only (checked before any rule runs). The tickets module replaces this rule
    with its category check (`@owner_rule("tickets")` in api/handlers/tickets.py)."""
    return False


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
    if server and auth:  # an agent: it reads its jobs' input and output files
        return same(auth, server_token(server, stores.secret_key))
    who = await _caller(request)
    if who is None:
        return False
    if who.is_admin:
        return True
    parts = key.split("/")
    if parts[0] == "logs":
        return parts[1:2] == ["jobs"] and await job_file_rule(stores, who, parts)
    rule = OWNER_RULES.get(parts[1]) if len(parts) > 2 else None
    return rule is not None and await rule(stores, who, parts)


def _download_name(key: str, download: str) -> str:
    """The attachment's file name: the key's last segment, or the one asked for (`download=<name>`), reduced
    to safe characters. ⚠ xyOps puts the asked-for name into the header as given (header injection)."""
    base = key.rsplit("/", 1)[-1]  # a checked path: no quotes or separators to escape
    if download in ("", "1", "true"):
        return base
    return _DOWNLOAD_NAME.sub("_", download.rsplit("/", 1)[-1].rsplit("\\", 1)[-1])[-128:].lstrip(".") or base


def _etag(info: FileInfo) -> str:
    return f'"{int(info["size"])}-{int(float(info["modified"]) * 1000)}"'


def _headers(key: str, info: FileInfo, download: str) -> dict[str, str]:
    ctype = str(info["type"])
    headers = {"Content-Type": ctype, "Last-Modified": formatdate(float(info["modified"]), usegmt=True),
               "ETag": _etag(info), "Accept-Ranges": "bytes", "X-Content-Type-Options": "nosniff",
               "Content-Security-Policy": "sandbox", "Cache-Control": "private, max-age=0"}  # fmt: skip
    if download or any(kind in ctype for kind in _ACTIVE_TYPES):
        headers["Content-Disposition"] = f'attachment; filename="{_download_name(key, download)}"'
    return headers


def _not_modified(request: web.Request, info: FileInfo) -> bool:
    """A conditional GET the client's copy still answers: If-None-Match (wins when present) or
    If-Modified-Since."""
    match = request.headers.get("If-None-Match")
    if match is not None:
        tags = [t.strip().removeprefix("W/") for t in match.split(",")]
        return "*" in tags or _etag(info) in tags
    since = request.headers.get("If-Modified-Since")
    if since:
        try:
            return int(float(info["modified"])) <= int(parsedate_to_datetime(since).timestamp())
        except (TypeError, ValueError, IndexError, OverflowError):
            return False
    return False


def byte_range(header: str, size: int) -> tuple[int, int]:
    """The one range of a `Range: bytes=a-b` header as (start, end exclusive); ValueError when it is malformed
    or cannot be satisfied (416). Several ranges are refused too: a reply of one part keeps this simple."""
    found = _RANGE.fullmatch(header.strip())
    if found is None:
        raise ValueError("malformed range")
    first, last = found.groups()
    if not first and not last:
        raise ValueError("malformed range")
    if not first:  # the last N bytes
        length = int(last)
        if length == 0:
            raise ValueError("empty suffix range")
        return max(size - length, 0), size
    start = int(first)
    end = min(int(last) + 1, size) if last else size
    if start >= size or (last and int(last) < start):
        raise ValueError("range not satisfiable")
    return start, end


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
        headers = _headers(key, info, request.query.get("download", ""))
        if _not_modified(request, info):
            return web.Response(status=304, headers={k: headers[k] for k in ("ETag", "Last-Modified",
                                                                             "Cache-Control")})  # fmt: skip
        size = int(info["size"])
        start, end, status = 0, size, 200
        if "Range" in request.headers:
            try:
                start, end = byte_range(request.headers["Range"], size)
            except ValueError:
                return web.Response(status=416, headers={"Content-Range": f"bytes */{size}"})
            headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
            status = 206
        resp = web.StreamResponse(status=status, headers=headers)
        resp.content_length = end - start
        if request.method == "HEAD":
            await resp.prepare(request)
            return resp
        return await stream_out(request, resp, files.read(key, start=start, end=end))
    except BadPath:
        return _refusal("notfound", "File not found.", 404)
    except ApiError as exc:
        return json_reply(exc.body(), exc.status)
    except STORE_DOWN_ERRORS:
        return _refusal("db", "The data store is unavailable; try again shortly.", 500)
