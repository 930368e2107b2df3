"""The OpenAPI 3.1 document of every /api/app and /api/user call, generated from the handler registry.

Each call is one path, `/api/<ns>/<name>/v1`, answering POST (a JSON body; a multipart/form-data one for the
uploads that read their body themselves) and, for reads and the few write calls that take query parameters as
xyOps does (run_event, delete_job, ...), GET. Extensions carry what the registry declares: `x-privilege`,
`x-write`, `x-anywhere` (a write any node answers), `x-params` (how query and body combine).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from cluster import __version__

from .errors import STATUS
from .registry import ADMIN, AUTH, NONE, SESSION, Handler, Params, Registry
from .transport import bytes_reply, encode
from .typedefs import REGISTRY

_ERROR = {
    "type": "object",
    "required": ["code", "description"],
    "properties": {"code": {"type": "string"}, "description": {"type": "string"}},
}
_OK = {"type": "object", "required": ["code"], "properties": {"code": {"const": 0}}}
_STATUS_TEXT = {
    400: "Bad parameters (code `api`)",
    401: "No valid session or key (`session`, `login`)",
    403: "Missing privilege (`access`)",
    404: "Not found (`notfound`)",
    409: "Concurrent change (`conflict`)",
    413: "Body too large (`api`)",
    415: "Unsupported content type (`api`)",
    429: "Rate limit (`rate`)",
    500: "Not the primary (`master`, with `host` and `url`), store unavailable (`db`) or another error code",
}


def _security(handler: Handler) -> list[dict[str, list[str]]]:
    if handler.privilege is NONE:
        return []
    if handler.privilege == SESSION:
        return [{"session": []}]
    return [{"apiKey": []}, {"session": []}]


def _privilege_text(handler: Handler) -> str:
    if handler.privilege is NONE:
        return "no authentication"
    if handler.privilege == AUTH:
        return "any valid session or API key"
    if handler.privilege == SESSION:
        return "a user session (API keys are refused)"
    if handler.privilege == ADMIN:
        return "the `admin` privilege"
    return f"the `{handler.privilege}` privilege"


def _kind_text(handler: Handler) -> str:
    if not handler.write:
        return "Read."
    if handler.anywhere:
        return "Write call: any node answers it."
    return "Write call: primary only."


def _form_schema(handler: Handler) -> dict[str, Any]:
    """The multipart body an own_body handler reads: its checked fields and its file parts (as binary strings)."""
    schema: dict[str, Any] = handler.form.json_schema() if handler.form is not None else {"type": "object"}
    files = {name: {"type": "string", "format": "binary", "contentMediaType": "application/octet-stream"}
             for name in handler.form_files}  # fmt: skip
    schema["properties"] = {**files, **schema.get("properties", {})}
    schema["required"] = [*handler.form_files, *schema.get("required", [])]
    return schema


def _operation(handler: Handler, method: str) -> dict[str, Any]:
    schema: dict[str, Any] = handler.args.json_schema() if handler.args is not None else {"type": "object"}
    op: dict[str, Any] = {
        "operationId": f"{handler.ns}_{handler.name}_{method}",
        "summary": handler.doc or handler.name,
        "description": f"Needs {_privilege_text(handler)}. {_kind_text(handler)}",
        "tags": [handler.ns],
        "security": _security(handler),
        "x-privilege": handler.privilege,
        "x-write": handler.write,
        "x-anywhere": handler.anywhere,
        "x-params": handler.params.value,
        "responses": {
            "200": {"description": "Success (`code` 0)", "content": {"application/json": {"schema": _OK}}},
            **{str(status): {"description": text, "content": {"application/json": {"schema": _ERROR}}}
               for status, text in sorted(_STATUS_TEXT.items())},
        },
    }  # fmt: skip
    if method == "post" and handler.own_body:
        op["requestBody"] = {"required": True, "content": {"multipart/form-data": {"schema": _form_schema(handler)}}}
    elif method == "post":
        op["requestBody"] = {"required": False, "content": {"application/json": {"schema": schema}}}
    else:
        required = set(schema.get("required", []))
        props: dict[str, Any] = schema.get("properties", {})
        op["parameters"] = [
            {"name": name, "in": "query", "required": name in required, "schema": _query_schema(prop)}
            for name, prop in props.items()
        ]
    return op


def _query_schema(prop: dict[str, Any]) -> dict[str, Any]:
    """A query string carries text: objects and arrays travel in a POST body instead."""
    if prop.get("type") in ("object", "array") or "x-max-bytes" in prop:
        return {"type": "string", "maxLength": 4096}
    return prop


def document(registry: Registry) -> dict[str, Any]:
    paths: dict[str, Any] = {}
    for handler in registry:
        ops: dict[str, Any] = {"post": _operation(handler, "post")}
        if handler.params is not Params.WRITE:  # body-only calls ignore the query: POST is their form
            ops["get"] = _operation(handler, "get")
        paths[f"/api/{handler.ns}/{handler.name}/v1"] = ops
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Podium API",
            "version": __version__,
            "description": "The xyOps-compatible REST API. Every reply is JSON with `code` (0 on success) and "
            "`description` on error. HTTP status by code: "
            + ", ".join(f"`{code}` {status}" for code, status in STATUS.items())
            + "; any other code 500.",
        },
        "paths": paths,
        "components": {
            "securitySchemes": {
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
                "session": {"type": "apiKey", "in": "header", "name": "X-Session-ID"},
            }
        },
    }


async def openapi_json(request: web.Request) -> web.StreamResponse:
    """`GET /api/openapi.json`: built on first use, once per app (the registry never changes at run time)."""
    holder = request.app[OPENAPI]
    if not holder:
        holder.append(encode(document(request.app[REGISTRY])))
    return bytes_reply(holder[0])


OPENAPI = web.AppKey("openapi", list[bytes])
