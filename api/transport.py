"""The /api/<ns>/<name> transport: parameter assembly, dispatch, and JSON replies with the seed's statuses.

Deliberate differences from xyOps (digest 1.5, 1.6): HTTP statuses follow the seed on every path, not
only on `/vN` paths; an unknown API name is an `api` error (400) rather than code 1 with HTTP 200; and
transport-level refusals keep code `api` with the precise HTTP status (405, 413, 415).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import secrets
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import structlog
from aiohttp import web
from structlog.contextvars import bind_contextvars

from cluster.node import NodeRuntime, NotPrimary
from storage.connection import STORE_DOWN_ERRORS
from storage.errors import Conflict, FencedError

from .call import Call, Upload
from .errors import ApiError, master_error
from .principal import require_privilege
from .registry import AUTH as AUTH_ANY
from .registry import SESSION, Params
from .settings import Settings
from .typedefs import AUTH, NODE, REGISTRY, SETTINGS

log = structlog.get_logger("podium.api")

# Keys that carry credentials or transport flags; they never reach a handler's params (digest 1.2 quirk).
RESERVED = frozenset({"api_key", "session_id", "csrf_token", "cachebust", "pretty"})
_JSON_TYPES = re.compile(r"text|javascript|js|json")
_FORM_TYPES = frozenset({"multipart/form-data", "application/x-www-form-urlencoded"})
_METHODS = frozenset({"GET", "HEAD", "POST"})

_ids = itertools.count(1)
_id_prefix = secrets.token_hex(3)


def next_request_id() -> str:
    return f"{_id_prefix}-{next(_ids):x}"


def _json_default(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


# Built once: json.dumps with non-default options would construct a new encoder on every reply.
_COMPACT = json.JSONEncoder(separators=(",", ":"), default=_json_default)
_PRETTY = json.JSONEncoder(indent=2, default=_json_default)


def encode(body: dict[str, Any]) -> bytes:
    """Compact JSON bytes of a reply, for handlers that cache an encoded reply."""
    return _COMPACT.encode(body).encode()


def bytes_reply(data: bytes, status: int = 200, *, rid: str = "", gzipped: bool = False) -> web.Response:
    headers = {"X-Request-ID": rid} if rid else {}
    if gzipped:
        headers["Content-Encoding"] = "gzip"
        headers["Vary"] = "Accept-Encoding"
    return web.Response(body=data, status=status, content_type="application/json", headers=headers or None)


def accepts_gzip(request: web.Request) -> bool:
    return "gzip" in request.headers.get("Accept-Encoding", "")


def json_reply(body: dict[str, Any], status: int = 200, *, pretty: bool = False, rid: str = "") -> web.Response:
    text = (_PRETTY if pretty else _COMPACT).encode(body)
    return bytes_reply(text.encode(), status, rid=rid)


def split_reserved(source: Iterable[tuple[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    params: dict[str, Any] = {}
    reserved: dict[str, Any] = {}
    for key, value in source:
        (reserved if key in RESERVED else params)[key] = value
    return params, reserved


def _bounded_int(text: str) -> int:
    """JSON integers must fit in 64 bits: everything stored goes through msgpack."""
    value = int(text)
    if not -(2**63) <= value < 2**64:
        raise OverflowError(text)
    return value


async def read_body(request: web.Request, spool_dir: Path) -> tuple[dict[str, Any], dict[str, Upload]]:
    """The body as params (+ uploads). Raises ApiError for bad JSON or an unsupported type."""
    if not request.body_exists:
        return {}, {}
    ctype = request.content_type
    if ctype in _FORM_TYPES:
        return await _read_form(request, spool_dir)
    if _JSON_TYPES.search(ctype):
        raw = await request.read()
        if not raw.strip():
            return {}, {}
        try:
            data = json.loads(raw, parse_int=_bounded_int)
        except OverflowError:
            raise ApiError("api", "Malformed JSON in request body: a number is out of range.") from None
        except UnicodeDecodeError:
            raise ApiError("api", "Malformed JSON in request body: not UTF-8.") from None
        except json.JSONDecodeError as exc:
            raise ApiError("api", f"Malformed JSON in request body: {exc.msg} at position {exc.pos}.") from None
        if not isinstance(data, dict):
            raise ApiError("api", "Request body must be a JSON object.")
        return data, {}
    raise ApiError(
        "api", f"Unsupported Content-Type '{ctype}': send application/json or multipart/form-data.", status=415
    )


async def _read_form(request: web.Request, spool_dir: Path) -> tuple[dict[str, Any], dict[str, Upload]]:
    form = await request.post()  # enforces client_max_size across the whole body
    fields: dict[str, Any] = {}
    uploads: dict[str, web.FileField] = {}
    for key, value in form.items():
        if isinstance(value, web.FileField):
            uploads[key] = value
        else:
            fields[key] = value
    # A `json` field may carry the whole payload (xyOps accepts this for uploads and launches).
    if isinstance(fields.get("json"), str):
        try:
            payload = json.loads(fields.pop("json"), parse_int=_bounded_int)
        except json.JSONDecodeError as exc:
            raise ApiError("api", f"Malformed JSON in form field 'json': {exc.msg}.") from None
        except OverflowError:
            raise ApiError("api", "Malformed JSON in form field 'json': a number is out of range.") from None
        if not isinstance(payload, dict):
            raise ApiError("api", "Form field 'json' must hold a JSON object.")
        fields.update(payload)
    # Spool only once the fields are known good, and leave nothing behind if spooling fails midway.
    files: dict[str, Upload] = {}
    try:
        for key, field in uploads.items():
            files[key] = _spool(field, spool_dir)
    except BaseException:
        for upload in files.values():
            _unlink(upload.path)
        raise
    return fields, files


def _spool(field: web.FileField, spool_dir: Path) -> Upload:
    spool_dir.mkdir(parents=True, exist_ok=True)
    fd, path = tempfile.mkstemp(prefix="upload-", dir=spool_dir)
    size = 0
    with os.fdopen(fd, "wb") as out:
        while chunk := field.file.read(1 << 16):
            out.write(chunk)
            size += len(chunk)
    return Upload(path=path, type=field.content_type, name=field.filename, size=size)


async def _body_if_any(request: web.Request, settings: Settings) -> tuple[dict[str, Any], dict[str, Upload]]:
    """read_body, without building the spool path for the many requests that carry no body."""
    if not request.body_exists:
        return {}, {}
    return await read_body(request, settings.data_dir / "tmp")


def assemble(style: Params, body: dict[str, Any], query: dict[str, Any]) -> dict[str, Any]:
    if style is Params.WRITE:
        return body
    if style is Params.RUN:
        return {**query, **body}
    return {**body, **query}


async def redirect(node: NodeRuntime) -> ApiError:
    """The `master` error naming the primary (host[:port] and base URL), or empty when none is known."""
    rec = await node.locate_primary()
    if rec is None:
        return master_error("", "")
    return master_error(urlsplit(rec.url).netloc, rec.url)


async def dispatch(request: web.Request) -> web.StreamResponse:
    rid = next_request_id()
    bind_contextvars(request_id=rid)
    app = request.app
    info = request.match_info
    ns, name = info["ns"], info["name"]
    pretty = request.query.get("pretty") in ("1", "true")
    files: dict[str, Upload] = {}
    try:
        handler = app[REGISTRY].get(ns, name)
        if handler is None:
            raise ApiError("api", f"Unsupported API: {ns}/{name}")
        if request.method not in _METHODS:
            raise ApiError("api", f"Method {request.method} is not allowed; use GET or POST.", status=405)
        node = app[NODE]
        if handler.write and not node.is_primary:
            raise await redirect(node)
        settings = app[SETTINGS]
        body_raw, files = await _body_if_any(request, settings)
        body, reserved = split_reserved(body_raw.items())
        query, q_reserved = split_reserved(request.query.items())
        call = Call(
            request=request,
            node=node,
            settings=settings,
            request_id=rid,
            params=assemble(handler.params, body, query),
            query=query,
            tail=info.get("tail", ""),
            files=files,
            body_reserved=reserved,
            query_reserved=q_reserved,
        )
        if handler.privilege is not None:
            who = await app[AUTH].authenticate(call, handler.privilege, write=handler.write)
            if handler.privilege not in (AUTH_ANY, SESSION):
                require_privilege(who, handler.privilege)
            call.user = who
        reply = await handler.func(call)
        if isinstance(reply, web.StreamResponse):
            return reply
        return json_reply({"code": 0, **reply}, pretty=pretty, rid=rid)
    except Exception as exc:  # every failure becomes a JSON reply; see _failure
        return await _failure(exc, request, f"{ns}/{name}", rid, pretty)
    finally:
        for upload in files.values():
            _unlink(upload.path)


async def _failure(exc: Exception, request: web.Request, api: str, rid: str, pretty: bool) -> web.Response:
    """The reply for a failed call: its own error, a redirect to the primary, or a logged crash."""
    if isinstance(exc, ApiError):
        return json_reply(exc.body(), exc.status, pretty=pretty, rid=rid)
    if isinstance(exc, web.HTTPRequestEntityTooLarge):
        return json_reply({"code": "api", "description": f"Request body too large: {exc.text}"}, 413, rid=rid)
    if isinstance(exc, Conflict):
        body = {"code": "conflict", "description": "This was changed by another request meanwhile; reload it and "
                                                   "try again."}  # fmt: skip
        return json_reply(body, 409, rid=rid)
    if isinstance(exc, NotPrimary | FencedError):
        err = await redirect(request.app[NODE])
        return json_reply(err.body(), err.status, pretty=pretty, rid=rid)
    if isinstance(exc, STORE_DOWN_ERRORS):
        log.warning("store_unavailable", api=api, error=repr(exc))
        body = {"code": "db", "description": "The data store is unavailable; try again shortly."}
        return json_reply(body, 500, rid=rid)
    log.error("handler_failed", api=api, exc_info=exc)
    body = {"code": "internal", "description": f"Internal error (request {rid}); see the server log."}
    return json_reply(body, 500, rid=rid)


def _unlink(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


async def not_found(request: web.Request) -> web.StreamResponse:
    return json_reply({"code": "notfound", "description": f"No such resource: {request.path}"}, 404)
