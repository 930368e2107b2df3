"""Liveness and diagnostics: ping, echo, error (digest 3.0)."""

from __future__ import annotations

import asyncio
from dataclasses import asdict

from ..call import Call
from ..errors import ApiError
from ..params import integer
from ..registry import HANDLERS, NONE, Reply

# Headers that carry credentials are never echoed back (they are scrubbed after auth in xyOps too).
_SECRET_HEADERS = frozenset({"cookie", "x-api-key", "x-session-id", "x-csrf-token", "authorization"})
_MAX_ECHO_SLEEP_MS = 60_000


@HANDLERS.add("ping", write=False, privilege=NONE, args=())
async def ping(call: Call) -> Reply:
    return {}


@HANDLERS.add("echo", write=False, privilege=NONE,
              args=(integer("sleep", ge=0, le=_MAX_ECHO_SLEEP_MS, doc="milliseconds to wait before answering"),))
async def echo(call: Call) -> Reply:
    """Echo the request back (method, url, query, headers without credentials, params, files)."""
    if "sleep" in call.params:
        await asyncio.sleep(call.params["sleep"] / 1000)
    req = call.request
    return {
        "method": req.method,
        "url": str(req.rel_url),
        "ips": [ip for ip in (req.remote, req.headers.get("X-Forwarded-For")) if ip],
        "query": call.query,
        "headers": {k.lower(): v for k, v in req.headers.items() if k.lower() not in _SECRET_HEADERS},
        "cookies": {k: v for k, v in req.cookies.items() if k != "session_id"},
        "params": call.params,
        "files": {k: asdict(v) for k, v in call.files.items()},
    }


@HANDLERS.add("error", write=False, privilege=NONE, args=())
async def error(call: Call) -> Reply:
    raise ApiError("test", "This is a test error message.")
