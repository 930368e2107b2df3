"""The request front: API calls go straight to the transport, everything else through the app's router.

aiohttp's router, its per-request match info and the response-prepare signal cost more than the rest of a
`ping` (measured: about 16 us of a 40 us request). Every `/api/{app|user}/NAME[/tail]` call takes the same path
the router would give it, without them: `ApiRunner` puts `Front` in front of the application's own handler, and
the front hands what it does not recognise (or a request that expects `100-continue`) to that handler unchanged.
A call that arrives through the router (the test client's default runner, an `Expect` header) ends in the same
`answer`, so both paths give the same replies.
"""

from __future__ import annotations

import re

from aiohttp import hdrs, web

from .transport import answer
from .typedefs import Api

# The same paths as the router's API route (api/app.py API_PATH), matched on the same form of the path.
_API_PATH = re.compile(r"/api/(app|user)/(\w+)(/.*)?")


def _unquote_path_safe(value: str) -> str:
    """As the router unquotes a match: `path_safe` keeps %2F and %25 encoded."""
    return value.replace("%2F", "/").replace("%25", "%") if "%" in value else value


class Front:
    """The request handler of the node's HTTP server."""

    def __init__(self, app: web.Application, routed: web.Server) -> None:
        self.api = Api.of(app)  # the app is frozen by now: its keys no longer change
        self.routed = routed.request_handler

    async def __call__(self, request: web.BaseRequest) -> web.StreamResponse:
        match = _API_PATH.fullmatch(request.rel_url.path_safe)
        if match is None or hdrs.EXPECT in request.headers:
            return await self.routed(request)
        ns, name, tail = match.group(1, 2, 3)
        # The app's request factory makes every request a web.Request (the router's path needs one too).
        path_tail = _unquote_path_safe(tail or "")
        return await answer(request, self.api, ns, name, path_tail)  # type: ignore[arg-type]


class ApiRunner(web.AppRunner):
    """An AppRunner whose server answers through `Front`."""

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        server.request_handler = Front(self.app, server)
        return server
