"""The aiohttp application factory: one route table, thin handlers, typed app state."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from cluster.node import NodeRuntime

from . import gateway, handlers, prometheus  # noqa: F401 - importing registers every handler
from .auth import Authenticator
from .files import ROUTE as FILES_ROUTE
from .files import serve_file
from .health import health
from .openapi import OPENAPI, openapi_json
from .registry import HANDLERS, TEST_HANDLERS
from .settings import Settings
from .transport import NODE_HEADER, dispatch, not_found
from .typedefs import AUTH, NODE, REGISTRY, SETTINGS

# `/api/app/NAME`, `/api/app/NAME/v1` and `/api/app/NAME/v1/<tail>` all reach NAME (digest 1.1).
API_PATH = r"/api/{ns:app|user}/{name:\w+}{tail:(/.*)?}"


# Options of the runner (and of test servers): bodies are never decompressed by aiohttp (see read_body).
RUNNER_OPTIONS: dict[str, Any] = {"auto_decompress": False}


__all__ = ["NODE_HEADER", "RUNNER_OPTIONS", "create_app"]


async def _name_node(request: web.Request, response: web.StreamResponse) -> None:
    response.headers[NODE_HEADER] = request.app[NODE].node_id


def create_app(settings: Settings, node: NodeRuntime) -> web.Application:
    app = web.Application(client_max_size=settings.max_body_bytes)
    app[SETTINGS] = settings
    app[NODE] = node
    auth = app[AUTH] = Authenticator(node.stores, use_csrf=settings.use_csrf)
    keys, principals = auth.key_counts, auth.principal_counts
    node.metrics.caches.update(api_keys=lambda: (keys[0], keys[1]), principals=lambda: (principals[0], principals[1]))
    app[REGISTRY] = HANDLERS.merged(TEST_HANDLERS) if settings.test_hooks else HANDLERS
    app.on_response_prepare.append(_name_node)
    app.router.add_route("*", API_PATH, dispatch)
    app[OPENAPI] = []
    app.router.add_get("/health", health)
    app.router.add_get("/api/openapi.json", openapi_json)
    app.router.add_get(FILES_ROUTE, serve_file)  # stored files at "/" + their key (a File object's `path`)
    app.router.add_route("*", "/api/{rest:.*}", not_found)
    prometheus.install(app)  # `/metrics`, unless --metrics off
    gateway.install(app)  # `/`: the agents' WebSocket
    return app
