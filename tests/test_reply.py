"""Replies written in one piece (api/reply.py): on the wire they match what aiohttp's own path writes for the same
web.Response, for every kind of request (HTTP/1.1 keep-alive, HTTP/1.0, HEAD, Connection: close, pipelined), and
the ones Reply cannot write plainly (a forced close, cookies) take aiohttp's path; a header with a line break is
never written."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest
from aiohttp import web

from api.reply import Reply
from tests.servers import free_port

pytestmark = pytest.mark.asyncio

HEADERS = {"Content-Type": "application/json", "X-Request-ID": "r-1", "X-Podium-Node": "n1"}
BODY = b'{"code":0,"x":"\xc3\xa9"}'


def _reply(kind: type[web.Response], status: int = 200) -> web.Response:
    return kind(body=BODY, status=status, headers=HEADERS)


async def _fast(_: web.Request) -> web.StreamResponse:
    return _reply(Reply)


async def _plain(_: web.Request) -> web.StreamResponse:
    return _reply(web.Response)


async def _fast_404(_: web.Request) -> web.StreamResponse:
    return _reply(Reply, 404)


async def _plain_404(_: web.Request) -> web.StreamResponse:
    return _reply(web.Response, 404)


async def _closing(_: web.Request) -> web.StreamResponse:
    resp = _reply(Reply)
    resp.force_close()
    return resp


async def _cookie(_: web.Request) -> web.StreamResponse:
    resp = _reply(Reply)
    resp.set_cookie("a", "b")
    return resp


async def _bad_header(_: web.Request) -> web.StreamResponse:
    return Reply(body=BODY, headers={"X-Bad": "a\r\nX-Injected: 1"})


@pytest.fixture
async def port() -> AsyncIterator[int]:
    app = web.Application()
    for path, handler in (("/fast", _fast), ("/plain", _plain), ("/fast404", _fast_404), ("/plain404", _plain_404),
                          ("/closing", _closing), ("/cookie", _cookie), ("/bad", _bad_header)):  # fmt: skip
        app.router.add_route("*", path, handler)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield port
    await runner.cleanup()


async def _exchange(port: int, raw: bytes, replies: int = 1) -> tuple[list[tuple[str, dict[str, str], bytes]], bool]:
    """Send `raw`, read `replies` replies: (status line, headers without Date, body) each, and whether the server
    then closed the connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(raw)
    out: list[tuple[str, dict[str, str], bytes]] = []
    try:
        for _ in range(replies):
            try:
                head = (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)).decode()
            except asyncio.IncompleteReadError:  # closed before a whole reply
                return out, True
            status, *lines = head.rstrip("\r\n").split("\r\n")
            headers = dict(line.split(": ", 1) for line in lines)
            assert headers.pop("Date", "").endswith(" GMT")
            length = int(headers.get("Content-Length", "0"))
            body = await reader.readexactly(length) if length and not raw.startswith(b"HEAD") else b""
            out.append((status, headers, body))
        try:
            closed = await asyncio.wait_for(reader.read(1), 0.5) == b""
        except TimeoutError:  # still open
            closed = False
    finally:
        writer.close()
    return out, closed


def _request(method: str, path: str, version: str = "1.1", extra: str = "") -> bytes:
    return f"{method} {path} HTTP/{version}\r\nHost: x\r\n{extra}\r\n".encode()


FLAVOURS: list[tuple[str, Callable[[str], bytes], int]] = [
    ("keep-alive", lambda p: _request("GET", p), 1),
    ("pipelined", lambda p: _request("GET", p) + _request("POST", p, extra="Content-Length: 0\r\n"), 2),
    ("http/1.0", lambda p: _request("GET", p, "1.0"), 1),
    ("http/1.0 keep-alive", lambda p: _request("GET", p, "1.0", "Connection: keep-alive\r\n"), 1),
    ("head", lambda p: _request("HEAD", p), 1),
    ("connection close", lambda p: _request("GET", p, extra="Connection: close\r\n"), 1),
]


@pytest.mark.parametrize(("flavour", "raw", "count"), FLAVOURS, ids=[f[0] for f in FLAVOURS])
@pytest.mark.parametrize("status", ["", "404"])
async def test_reply_matches_aiohttp_on_the_wire(
    port: int, flavour: str, raw: Callable[[str], bytes], count: int, status: str
) -> None:
    fast, fast_closed = await _exchange(port, raw(f"/fast{status}"), count)
    plain, plain_closed = await _exchange(port, raw(f"/plain{status}"), count)
    assert len(fast) == count
    assert fast == plain
    assert fast_closed == plain_closed
    assert fast[0][0].endswith(("200 OK", "404 Not Found"))
    if not raw("").startswith(b"HEAD"):
        assert fast[-1][2] == BODY


async def test_keep_alive_serves_many_requests_on_one_connection(port: int) -> None:
    replies, closed = await _exchange(port, _request("GET", "/fast") * 5, 5)
    assert [r[2] for r in replies] == [BODY] * 5
    assert not closed


async def test_forced_close_and_cookies_take_aiohttps_path(port: int) -> None:
    replies, closed = await _exchange(port, _request("GET", "/closing"), 1)
    assert replies[0][1]["Connection"] == "close" and closed
    replies, _ = await _exchange(port, _request("GET", "/cookie"), 1)
    assert replies[0][1]["Set-Cookie"].startswith("a=b")
    assert replies[0][2] == BODY


async def test_a_header_with_a_line_break_is_never_written(port: int) -> None:
    assert await _exchange(port, _request("GET", "/bad"), 1) == ([], True)  # dropped, as aiohttp does
