"""API replies whose status line, headers and body go to the socket in one write.

aiohttp prepares a reply through its general path: a connection header decided per request, chunking and
compression checks, a header block serialised from the multidict into the stream writer's buffer, then a
second call for the body. For the JSON replies of API calls (a known length, a handful of fixed headers, no
cookies, no compression) that path cost about a quarter of a `ping`. `Reply` writes the same bytes itself for
an HTTP/1.1 keep-alive request, and takes aiohttp's path for anything else (HTTP/1.0, `HEAD`, `Connection:
close`, a reply told to close the connection, cookies, compression).
"""

from __future__ import annotations

import time
from email.utils import formatdate

from aiohttp import hdrs, web
from aiohttp.abc import AbstractStreamWriter
from aiohttp.http import SERVER_SOFTWARE, HttpVersion11

# Headers Reply writes itself.
_OWN = frozenset(h.lower() for h in (hdrs.CONTENT_LENGTH, hdrs.DATE, hdrs.SERVER, hdrs.CONNECTION,
                                     hdrs.TRANSFER_ENCODING))  # fmt: skip


class _Date:
    """The Date header's value, formatted once a second (as aiohttp's own)."""

    second = -1
    value = ""

    @classmethod
    def now(cls) -> str:
        second = int(time.time())
        if second != cls.second:
            cls.second, cls.value = second, formatdate(second, usegmt=True)
        return cls.value


class Reply(web.Response):
    """A web.Response with bytes for a body, written in one piece when the request allows it."""

    async def prepare(self, request: web.BaseRequest) -> AbstractStreamWriter | None:
        transport = request.transport
        if self.prepared or transport is None or not self._plain(request):
            return await super().prepare(request)
        if getattr(request, "_match_info", None) is not None:  # a routed path: the app's response hook, as aiohttp
            await request._prepare_hook(self)
        body: bytes = self._body  # type: ignore[assignment]  # _plain checked it is bytes
        data = self._head(len(body)) + body
        transport.write(data)
        self._keep_alive = True
        self._eof_sent = True  # write_eof has nothing left to do
        self._body_length = len(data)  # as aiohttp counts it: the header block included
        await request.writer.drain()  # waits only while the socket's buffer is over its high-water mark
        return None

    def _plain(self, request: web.BaseRequest) -> bool:
        return (
            request.version == HttpVersion11
            and request.keep_alive
            and request.method != hdrs.METH_HEAD
            and self._keep_alive is not False
            and self.status >= 200
            and self.status not in (204, 304)
            and type(self._body) is bytes
            and not self._cookies
            and not self._compression
            and not self._chunked
        )

    def _head(self, length: int) -> bytes:
        """Status line and header block. Reply writes Content-Length, Date, Server and Connection itself (what it
        writes is what they describe), so a reply's own are left out. A line break in a header refuses the reply,
        as aiohttp's serialiser does (the connection is dropped, nothing is written)."""
        lines = [f"HTTP/1.1 {self.status} {self.reason}\r\n"]
        for name, value in self._headers.items():
            if name.lower() not in _OWN:
                lines.append(f"{name}: {value}\r\n")
        lines.append(f"Content-Length: {length}\r\nDate: {_Date.now()}\r\nServer: {SERVER_SOFTWARE}\r\n\r\n")
        head = "".join(lines)
        breaks = len(lines) + 3  # one per line, the blank line's included
        if head.count("\n") != breaks or head.count("\r") != breaks:
            raise ValueError("Forbidden control character detected in headers.")
        return head.encode()
