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
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson
import structlog
from aiohttp import web
from structlog.contextvars import bind_contextvars

from cluster.node import NodeRuntime, NotPrimary
from storage.connection import STORE_DOWN_ERRORS
from storage.errors import Conflict, FencedError, PageTooLarge

from .call import Call, Upload
from .errors import ApiError, master_error
from .logs import REQUEST_ID
from .principal import Principal, require_privilege
from .registry import AUTH as AUTH_ANY
from .registry import SESSION, Handler, Params
from .reply import Reply
from .settings import Settings
from .typedefs import Api

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
    if isinstance(value, set | frozenset):
        return list(value)
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


_COMPACT = orjson.OPT_NON_STR_KEYS
_PRETTY = orjson.OPT_NON_STR_KEYS | orjson.OPT_INDENT_2


def encode(body: dict[str, Any]) -> bytes:
    """Compact JSON bytes of a reply, for handlers that cache an encoded reply."""
    return orjson.dumps(body, default=_json_default, option=_COMPACT)


NODE_HEADER = "X-Podium-Node"  # which node answered: clients and tests see reads spread over the nodes


def bytes_reply(data: bytes, status: int = 200, *, rid: str = "", gzipped: bool = False) -> web.Response:
    headers = {"Content-Type": "application/json"}
    if rid:
        headers["X-Request-ID"] = rid
    if gzipped:
        headers["Content-Encoding"] = "gzip"
        headers["Vary"] = "Accept-Encoding"
    return Reply(body=data, status=status, headers=headers)


def accepts_gzip(request: web.Request) -> bool:
    return "gzip" in request.headers.get("Accept-Encoding", "")


def json_reply(body: dict[str, Any], status: int = 200, *, pretty: bool = False, rid: str = "") -> web.Response:
    data = orjson.dumps(body, default=_json_default, option=_PRETTY if pretty else _COMPACT)
    return bytes_reply(data, status, rid=rid)


def _checked_text(key: str, value: str) -> str:
    """Query strings and form fields may decode to lone surrogates, which nothing downstream can store (JSON
    bodies cannot: orjson refuses them), so this is the one place text is checked for them."""
    if not _encodable(value):
        raise ApiError("api", f"Parameter '{key[:64]}' is not valid UTF-8 text.")
    return value


def split_reserved(source: Iterable[tuple[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    params: dict[str, Any] = {}
    reserved: dict[str, Any] = {}
    for key, value in source:
        (reserved if key in RESERVED else params)[key] = value
    return params, reserved


def _query(request: web.Request) -> tuple[dict[str, Any], dict[str, Any]]:
    if not request.query_string:  # most calls: no query to parse
        return {}, {}
    query = request.query
    for key, value in query.items():
        _checked_text(key, key)
        _checked_text(key, value)
    return split_reserved(query.items())


class BodyTooLarge(ApiError):
    def __init__(self, limit: int, anonymous: bool) -> None:
        hint = (" for a request without credentials in its headers; send X-API-Key or X-Session-ID to send more"
                if anonymous else "")  # fmt: skip
        super().__init__("api", f"Request body too large: the limit is {limit} bytes{hint}.", status=413)


# What building the parsed body may cost, counted on the raw bytes before parsing (a count is a memchr scan:
# milliseconds for 32 MiB): 10 M empty arrays take seconds to build and free, far longer than the bytes suggest.
MAX_JSON_CONTAINERS = 100_000
MAX_JSON_ITEMS = 1_000_000


def parse_json(raw: bytes, where: str = "request body") -> Any:
    """orjson: refuses NaN, lone surrogates, invalid UTF-8 and nesting deeper than 1024; integers beyond
    64 bits become floats, which the declared parameters then refuse where an integer is expected. Bodies
    with more objects/arrays or items than any real request carries are refused before they are parsed."""
    if len(raw) > 65536 and (raw.count(b"[") + raw.count(b"{") > MAX_JSON_CONTAINERS
                             or raw.count(b",") > MAX_JSON_ITEMS):  # fmt: skip
        raise ApiError("api", f"The {where} holds too many JSON values (at most {MAX_JSON_CONTAINERS} objects and "
                              f"arrays and {MAX_JSON_ITEMS} items).")  # fmt: skip
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        path = _surrogate_path(raw) if "surrogate" in exc.msg else ""
        if path:
            raise ApiError("api", f"Parameter '{path}' is not valid UTF-8 text (it holds a lone surrogate).") from None
        raise ApiError("api", f"Malformed JSON in {where}: {exc.msg} at position {exc.pos}.") from None


def _surrogate_path(raw: bytes) -> str:
    """Where a lone surrogate sits, to name the field (error path only; the body is already size-bounded)."""
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):
        return ""
    stack: list[tuple[str, Any]] = [("", data)]
    while stack:
        path, value = stack.pop()
        items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
        for key, item in items:
            sub = f"{path}[{key}]" if isinstance(key, int) else f"{path}.{key}" if path else str(key)
            if (isinstance(item, str) and not _encodable(item)) or (isinstance(key, str) and not _encodable(key)):
                return sub[:200].encode("utf-8", "backslashreplace").decode()  # the name may hold it too
            stack.append((sub, item))
    return ""


def _encodable(text: str) -> bool:
    if text.isascii():
        return True
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


async def read_body(
    request: web.Request, spool_dir: Path, limit: int, *, anonymous: bool = False, json_limit: int | None = None
) -> tuple[dict[str, Any], dict[str, Upload]]:
    """The body as params (+ uploads), at most `limit` bytes (`json_limit` for JSON, which is parsed on the
    loop). Raises ApiError for bad JSON, a body over the limit (before reading it when its length is declared)
    or an unsupported type."""
    if not request.body_exists:
        return {}, {}
    # Bodies are never decompressed (the runner is built with auto_decompress off): a few KiB of gzip can
    # expand to gigabytes inside the parser, before any limit here could apply.
    if request.headers.get("Content-Encoding", "identity").strip().lower() not in ("", "identity"):
        raise ApiError("api", "Compressed request bodies are not accepted; send the body uncompressed.", status=415)
    ctype = request.content_type
    if json_limit is not None and ctype != "multipart/form-data":  # JSON and urlencoded are parsed on the loop
        limit = min(limit, json_limit)
    length = request.content_length
    if length is not None and length > limit:
        raise BodyTooLarge(limit, anonymous)
    bounded = request.clone(client_max_size=limit) if limit != request.client_max_size else request
    try:
        if ctype in _FORM_TYPES:
            return await _read_form(bounded, spool_dir, json_limit or limit)
        if _JSON_TYPES.search(ctype):
            raw = await bounded.read()
            if not raw.strip():
                return {}, {}
            data = parse_json(raw)
            if not isinstance(data, dict):
                raise ApiError("api", "Request body must be a JSON object.")
            return data, {}
    except web.HTTPRequestEntityTooLarge as exc:
        if "form fields" in (exc.text or ""):
            raise ApiError("api", f"Too many form fields: {exc.text}", status=413) from None
        raise BodyTooLarge(limit, anonymous) from None
    raise ApiError(
        "api", f"Unsupported Content-Type '{ctype}': send application/json or multipart/form-data.", status=415
    )


async def _read_form(
    request: web.Request, spool_dir: Path, json_limit: int
) -> tuple[dict[str, Any], dict[str, Upload]]:
    try:
        form = await request.post()  # enforces client_max_size across the whole body
    except ValueError as exc:  # e.g. a multipart part without a name
        raise ApiError("api", f"Malformed form body: {exc}") from None
    uploads = {k: v for k, v in form.items() if isinstance(v, web.FileField)}
    try:
        return _form_params(form, uploads, spool_dir, json_limit)
    finally:
        for field in uploads.values():  # the parser's temporary files (a bounded clone's are not closed for us)
            field.file.close()


def _form_params(
    form: Mapping[str, Any], uploads: Mapping[str, web.FileField], spool_dir: Path, json_limit: int
) -> tuple[dict[str, Any], dict[str, Upload]]:
    fields = {_checked_text(k, k): _checked_text(k, str(v)) for k, v in form.items() if k not in uploads}
    # A `json` field may carry the whole payload (xyOps accepts this for uploads and launches).
    if isinstance(fields.get("json"), str):
        raw = fields.pop("json").encode()
        if len(raw) > json_limit:
            raise ApiError("api", f"Form field 'json' is too large: the limit is {json_limit} bytes.", status=413)
        payload = parse_json(raw, "form field 'json'")
        if not isinstance(payload, dict):
            raise ApiError("api", "Form field 'json' must hold a JSON object.")
        fields.update(payload)
    # Spool only once the fields are known good, and leave nothing behind if spooling fails midway.
    files: dict[str, Upload] = {}
    try:
        for key, field in uploads.items():
            files[_checked_text(key, key)] = _spool(field, spool_dir)
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


def assemble(style: Params, body: dict[str, Any], query: dict[str, Any]) -> dict[str, Any]:
    if style is Params.WRITE:
        return body
    if style is Params.RUN:
        return {**query, **body}
    return {**body, **query}


async def _body(request: web.Request, settings: Settings, *, known: bool) -> tuple[dict[str, Any], dict[str, Upload]]:
    """read_body with the limit for this caller: the full one once known, a small one before."""
    if not request.body_exists:
        return {}, {}
    limit = settings.max_body_bytes if known else min(settings.anon_body_bytes, settings.max_body_bytes)
    return await read_body(request, settings.data_dir / "tmp", limit, anonymous=not known,
                           json_limit=settings.max_json_bytes)  # fmt: skip


async def redirect(node: NodeRuntime) -> ApiError:
    """The `master` error naming the primary (host[:port] and base URL), or empty when none is known."""
    rec = await node.locate_primary()
    if rec is None:
        return master_error("", "")
    return master_error(urlsplit(rec.url).netloc, rec.url)


async def _not_here(request: web.Request, node: NodeRuntime, settings: Settings) -> web.Response:
    """A write on a satellite: 307 to the same path on the primary when the node is told to (307 keeps the method
    and body, so `curl -L` repeats the call there), else the `master` error."""
    rec = await node.locate_primary() if settings.redirect_writes else None
    if rec is None:
        raise await redirect(node)
    resp = web.Response(status=307, headers={"Location": rec.url.rstrip("/") + request.path_qs})
    resp.force_close()  # the body is not read here: do not drain it
    return resp


async def dispatch(request: web.Request) -> web.StreamResponse:
    """The router's handler for API paths; the front (api/front.py) sends most calls to `answer` directly."""
    info = request.match_info
    return await answer(request, Api.of(request.app), info["ns"], info["name"], info.get("tail", ""))


async def answer(request: web.Request, api: Api, ns: str, name: str, tail: str) -> web.StreamResponse:
    """The call's reply, named with the node (X-Podium-Node) unless its handler sent it itself (those name the
    node with `stream_headers`); the app's response hook names the replies of every other route."""
    resp = await _answer(request, api, ns, name, tail)
    if not resp.prepared:
        resp.headers[NODE_HEADER] = api.node.node_id
    return resp


async def _answer(request: web.Request, api: Api, ns: str, name: str, tail: str) -> web.StreamResponse:
    """Authenticate from the headers where the credential is there, then read the body (small when nobody is
    authenticated yet), authenticate from the body otherwise, validate the declared parameters and run the
    handler; the reply carries the request's id (X-Request-ID)."""
    began = time.perf_counter()
    rid = next_request_id()
    bind_contextvars(request_id=rid)
    request[REQUEST_ID] = (rid, began)  # for the access line
    node = api.node
    pretty = bool(request.query_string) and request.query.get("pretty") in ("1", "true")
    files: dict[str, Upload] = {}
    handler = api.registry.get(ns, name)
    code = "0"
    try:
        if handler is None:
            raise ApiError("api", f"Unsupported API: {ns}/{name}")
        if request.method not in _METHODS:
            raise ApiError("api", f"Method {request.method} is not allowed; use GET or POST.", status=405)
        settings = api.settings
        if handler.write and not handler.anywhere and not node.is_primary:
            code = "redirect"  # counted apart: a 307 is neither a success nor a failure (a `master` error replaces it)
            return await _not_here(request, node, settings)
        if handler.service and api.forward is not None:  # a worker: the node process holds the service
            return await api.forward(request)
        auth = api.auth
        query, q_reserved = _query(request)
        who = None
        if handler.privilege is not None:
            who = await auth.from_headers(request, q_reserved, handler.privilege, write=handler.write)
        body_raw, files = ({}, {}) if handler.own_body else await _body(request, settings, known=who is not None)
        body, reserved = split_reserved(body_raw.items()) if body_raw else (body_raw, {})
        call = Call(
            request=request,
            node=node,
            settings=settings,
            request_id=rid,
            params=assemble(handler.params, body, query),
            query=query,
            tail=tail,
            files=files,
            body_reserved=reserved,
            query_reserved=q_reserved,
            auth=auth,
        )
        await _admit(call, handler, who)
        if handler.args is not None:
            call.params = handler.args(call.params)
        reply = await handler.func(call)
        if isinstance(reply, web.StreamResponse):
            return reply
        return json_reply({"code": 0, **reply}, pretty=pretty, rid=rid)
    except Exception as exc:  # every failure becomes a JSON reply; see _failure
        code, resp = await _failure(exc, node, f"{ns}/{name}", rid, pretty)
        return resp
    finally:
        for upload in files.values():
            _unlink(upload.path)
        node.metrics.request(ns, name, handler is not None, code, time.perf_counter() - began)


async def _admit(call: Call, handler: Handler, who: Principal | None) -> None:
    """The caller, authenticated from the body where the headers did not say (`who`), with the privilege the
    call needs; or, for a call that needs none, a cookie session's CSRF token on a write (logout)."""
    auth = call.authenticator
    if handler.privilege is not None:
        if who is None:
            who = await auth.authenticate(call, handler.privilege, write=handler.write)
        if handler.privilege not in (AUTH_ANY, SESSION):
            require_privilege(who, handler.privilege)
        call.user = who
    elif handler.write and handler.csrf:
        await auth.check_cookie_csrf(call)


def stream_headers(call: Call, headers: dict[str, str]) -> dict[str, str]:
    """The headers of a reply a handler prepares itself: with the node's name, as every API reply."""
    return {**headers, NODE_HEADER: call.node.node_id}


async def _failure(
    exc: Exception, node: NodeRuntime, api: str, rid: str, pretty: bool
) -> tuple[str, web.Response]:
    """The reply for a failed call (and its code): its own error, a redirect to the primary, or a logged crash."""
    if isinstance(exc, BodyTooLarge):
        resp = json_reply(exc.body(), exc.status, pretty=pretty, rid=rid)
        resp.force_close()  # the rest of the body is never read: drop the connection rather than drain it
        return exc.code, resp
    if isinstance(exc, ApiError):
        return exc.code, json_reply(exc.body(), exc.status, pretty=pretty, rid=rid)
    if isinstance(exc, Conflict):
        body = {"code": "conflict", "description": "This was changed by another request meanwhile; reload it and "
                                                   "try again."}  # fmt: skip
        return "conflict", json_reply(body, 409, rid=rid)
    if isinstance(exc, PageTooLarge):  # a search page over its byte budget: the caller asks for fewer rows
        body = {"code": "api", "description": f"Parameter 'limit' is too large here: {exc}."}
        return "api", json_reply(body, 400, rid=rid)
    if isinstance(exc, NotPrimary | FencedError):
        err = await redirect(node)
        return err.code, json_reply(err.body(), err.status, pretty=pretty, rid=rid)
    if isinstance(exc, STORE_DOWN_ERRORS):
        log.warning("store_unavailable", api=api, error=repr(exc))
        body = {"code": "db", "description": "The data store is unavailable; try again shortly."}
        return "db", json_reply(body, 500, rid=rid)
    log.error("handler_failed", api=api, exc_info=exc)
    body = {"code": "internal", "description": f"Internal error (request {rid}); see the server log."}
    return "internal", json_reply(body, 500, rid=rid)


def _unlink(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


async def not_found(request: web.Request) -> web.StreamResponse:
    return json_reply({"code": "notfound", "description": f"No such resource: {request.path}"}, 404)
