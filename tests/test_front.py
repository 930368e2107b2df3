"""The request front (api/front.py): API calls straight to the transport, the rest through the router, and a call
that takes the router's path (an `Expect: 100-continue` request) answered exactly as through the front."""

from __future__ import annotations

from typing import Any

import pytest

from api.transport import NODE_HEADER
from tests.test_transport import Edge

pytest_plugins = ["tests.test_transport"]  # its fixtures: edge, make_edge

pytestmark = pytest.mark.asyncio


async def _call(edge: Edge, path: str, expect: bool, **kwargs: Any) -> tuple[int, dict[str, Any], dict[str, str]]:
    headers = {"Expect": "100-continue"} if expect else {}
    method = "POST" if "json" in kwargs else "GET"
    async with edge.client.request(method, path, headers=headers, **kwargs) as resp:
        return resp.status, await resp.json(), dict(resp.headers)


@pytest.mark.parametrize(("path", "body"), [
    ("/api/app/ping/v1", None),
    ("/api/app/echo/v1?x=1", {"a": [1, 2]}),
    ("/api/app/echo/v1/some/tail%2Fpart", {"b": "c"}),
    ("/api/app/no_such_call/v1", None),
    ("/api/user/ping", None),
    ("/api/app/get_events/v1", None),  # refused: no credential
])  # fmt: skip
async def test_front_and_router_answer_alike(edge: Edge, path: str, body: dict[str, Any] | None) -> None:
    kwargs = {"json": body} if body is not None else {}
    fast = await _call(edge, path, False, **kwargs)
    routed = await _call(edge, path, True, **kwargs)
    assert fast[0] == routed[0]
    for reply in (fast[1], routed[1]):
        reply.pop("headers", None)  # echo lists the request's own headers, Expect among them
    assert fast[1] == routed[1]
    for _, _, headers in (fast, routed):
        assert headers[NODE_HEADER] == edge.node.node_id
        assert headers["X-Request-ID"]
        assert headers["Content-Type"].startswith("application/json")


async def test_tail_is_unquoted_as_by_the_router(edge: Edge) -> None:
    status, reply, _ = await _call(edge, "/api/app/echo/v1/a%2Fb%25c", False)
    assert status == 200, reply
    _, routed, _ = await _call(edge, "/api/app/echo/v1/a%2Fb%25c", True)
    assert reply["url"] == routed["url"]


async def test_other_routes_pass_through_the_router(edge: Edge) -> None:
    async with edge.client.get("/health") as resp:
        assert resp.status == 200
        assert resp.headers[NODE_HEADER] == edge.node.node_id  # named by the app's response hook
    async with edge.client.get("/api/nothing/here") as resp:
        assert resp.status == 404
        assert (await resp.json())["code"] == "notfound"
    async with edge.client.get("/api/app/") as resp:  # no name: not an API path
        assert resp.status == 404
