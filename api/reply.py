"""API replies whose status line, headers and body go to the socket in one write.

aiohttp prepares a reply through its general path: a connection header decided per request, chunking and
compression checks, a header block serialised from the multidict into the stream writer's buffer, then a
second call for the body. For the JSON replies of API calls (a known length, a handful of fixed headers, no
cookies, no compression) that path cost about a quarter of a `ping`. `Reply` writes the same bytes itself for
an HTTP/1.1 keep-alive request, and takes aiohttp's path for anything else (HTTP/1.0, `HEAD`, `Connection:
close`, a reply told to close the connection, cookies, compression, a header that Reply sets itself).
"""

from __future__ import annotations

import time
from email.utils import formatdate
from typing import cast

from aiohttp import hdrs, web
from aiohttp.abc import AbstractStreamWriter
from aiohttp.http import SERVER_SOFTWARE, HttpVersion11

# Headers Reply writes itself; a reply that carries one of these by its own choice takes aiohttp's path.
_OWN = frozenset(h.lower() for h in (hdrs.CONTENT_LENGTH, hdrs.DATE, hdrs.SERVER, hdrs.CONNECTION,
                                     hdrs.TRANSFER_ENCODING))  # fmt: skip


class _Date:
    """The Date header's value, formatted once a second (as aiohttp's own)."""

    second = -1
    value = b""

    @classmethod
    def now(cls) -> bytes:
        second = int(time.time())
        if second != cls.second:
            cls.second, cls.value = second, formatdate(second, usegmt=True).encode()
        return cls.value


_SERVER = SERVER_SOFTWARE.encode()


class Reply(web.Response):
    """A web.Response with bytes for a body, written in one piece when the request allows it."""

    async def prepare(self, request: web.BaseRequest) -> AbstractStreamWriter | None:
        transport = request.transport
        if self.prepared or transport is None or not self._plain(request):
            return await super().prepare(request)
        await request._prepare_hook(self)  # the app's response hook, for a reply of a routed path (as aiohttp's)
        data = self._head() + cast(bytes, self._body)  # _plain checked it is bytes
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
            and not any(name.lower() in _OWN for name in self._headers)
        )

    def _head(self) -> bytes:
        """Status line and header block. A line break in a header refuses the reply, as aiohttp's serialiser
        does (the connection is dropped, nothing is written)."""
        lines: list[bytes] = [f"HTTP/1.1 {self.status} {self.reason}\r\n".encode()]
        for name, value in self._headers.items():
            if name.lower() in _OWN:  # set by a response hook: ours describe what is written
                continue
            if "\n" in value or "\r" in value or "\n" in name or "\r" in name:
                raise ValueError("Forbidden control character detected in headers.")
            lines.append(f"{name}: {value}\r\n".encode())
        length = len(cast(bytes, self._body))
        lines.append(b"Content-Length: %d\r\nDate: %b\r\nServer: %b\r\n\r\n" % (length, _Date.now(), _SERVER))
        return b"".join(lines)
