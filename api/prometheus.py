"""GET /metrics: the node's Prometheus metrics (cluster/metrics.py) in the text exposition format.

Served by the node's own aiohttp app, no server thread of its own. `--metrics open` (the default) answers
anyone, as scrapers on a private network expect; `key` wants an API key or session (header, or `api_key` in the
query, which Prometheus' `params` can send); `off` leaves the route out.
"""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from .errors import ApiError
from .registry import AUTH as ANY_CALLER
from .transport import json_reply, split_reserved
from .typedefs import AUTH, FORWARD, NODE, SETTINGS

ROUTE = "/metrics"


async def metrics(request: web.Request) -> web.StreamResponse:
    app = request.app
    forward = app.get(FORWARD)
    if forward is not None:  # a worker: the node process answers with the counts of all its processes
        return await forward(request)
    if app[SETTINGS].metrics == "key":
        _, reserved = split_reserved(request.query.items())
        try:
            who = await app[AUTH].from_headers(request, reserved, ANY_CALLER, write=False)
        except ApiError as exc:
            return json_reply(exc.body(), exc.status)
        if who is None:
            return json_reply({"code": "session", "description": "Metrics need an API key (X-API-Key or api_key)."},
                              401)  # fmt: skip
    body = generate_latest(app[NODE].metrics.registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def install(app: web.Application) -> None:
    if app[SETTINGS].metrics != "off":
        app.router.add_get(ROUTE, metrics)
