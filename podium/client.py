"""AsyncClient: reads go round robin over the healthy nodes, writes go to the primary, found from /health or from
a node's `master` reply and cached until it stops answering as the primary."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import AsyncGenerator, AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from .calls import is_read, is_write
from .errors import AuthError, ConnectionFailed, NoPrimary, PodiumError, error_for

DEFAULT_TIMEOUT_S = 30.0
# How long a call keeps trying while no node answers or no primary is known: a primary's lease (3 s by default)
# runs out and a satellite takes over well within it.
FAILOVER_S = 20.0
DOWN_S = 2.0  # a node that refused a connection is left out this long, then asked for /health before use
PAUSE_S = 0.2  # between rounds while every node is down or no primary is known
HEALTH_TIMEOUT_S = 2.0
UPLOAD_REPLY_S = 3600.0  # how long an upload waits for its reply (admin_import_data works before answering)
NODE_HEADER = "X-Podium-Node"

_CUT_OFF = (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, TimeoutError)


def split_urls(urls: str | Sequence[str]) -> list[str]:
    """Node base URLs from a list and/or comma-separated strings, without trailing slashes or duplicates."""
    items = [urls] if isinstance(urls, str) else list(urls)
    found: list[str] = []
    for item in items:
        for url in item.split(","):
            url = url.strip().rstrip("/")
            if url and url not in found:
                if not url.startswith(("http://", "https://")):
                    raise ValueError(f"node URL {url!r}: must start with http:// or https://")
                found.append(url)
    return found


@dataclass(slots=True)
class _Node:
    url: str
    down_until: float = 0.0


@dataclass(frozen=True, slots=True)
class JobEvent:
    """One server-sent event of stream_job: `start`, `update` (progress, state, the final code), `log`, `end`."""

    event: str
    data: dict[str, Any]


class AsyncClient:
    """A Podium (xyOps API) client over several nodes.

    `call` raises PodiumError (a subclass per code) on any reply whose code is not 0. A read cut off midway
    is retried on another node; a write is retried only when it surely was not sent (connection refused) or
    with `retry=True` (for writes that may safely run twice).
    """

    def __init__(
        self,
        urls: str | Sequence[str],
        *,
        api_key: str | None = None,
        username: str | None = None,
        password: str | None = None,
        timeout: float = DEFAULT_TIMEOUT_S,
        failover_s: float = FAILOVER_S,
        discover: bool = False,
    ) -> None:
        self._nodes = [_Node(url) for url in split_urls(urls)]
        if not self._nodes:
            raise ValueError("at least one node URL is needed")
        self._api_key = api_key
        self._username = username
        self._password = password
        self._timeout = timeout
        self.failover_s = failover_s
        # Follow a primary the nodes name that is not in `urls` (same scheme only)? Off by default: a reply could
        # then send the credentials to any host.
        self.discover = discover
        self._turn = 0
        self.primary: str | None = None  # base URL of the primary, once known
        self.last_node = ""  # the node id that answered the last call (its X-Podium-Node header)
        self.session_id: str | None = None
        self._http: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:  # fmt: skip
        await self.close()

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None

    def _session(self) -> aiohttp.ClientSession:
        if self._http is None:  # made on first use, inside the running loop
            # No cookie jar: a session cookie would make every POST a cookie session that needs a CSRF token.
            self._http = aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar(),
                                               timeout=aiohttp.ClientTimeout(total=self._timeout))  # fmt: skip
        return self._http

    def _headers(self) -> dict[str, str]:
        if self.session_id:
            return {"X-Session-ID": self.session_id}
        if self._api_key:
            return {"X-API-Key": self._api_key}
        return {}

    # -- calls -------------------------------------------------------------------------------------------------

    async def call(self, name: str, params: Mapping[str, Any] | None = None, *, ns: str = "app",
                   retry: bool | None = None) -> dict[str, Any]:  # fmt: skip
        """Run API call `ns/name` with `params` as its JSON body; the reply (code 0) or a PodiumError."""
        if self._password is not None and self.session_id is None and ns == "app":
            await self.login()
        body = dict(params or {})
        try:
            return await self._route(ns, name, body, retry)
        except AuthError:
            if self._password is None or self.session_id is None or ns != "app":
                raise
            self.session_id = None  # the session ended (expired, logged out): one new login
            await self.login()
            return await self._route(ns, name, body, retry)

    async def login(self) -> None:
        """A new session from username and password (the primary answers logins)."""
        if self._username is None or self._password is None:
            raise AuthError("session", "a login needs a username and a password")
        self.session_id = None
        reply = await self._route("user", "login", {"username": self._username, "password": self._password}, None)
        sid = reply.get("session_id")
        if not isinstance(sid, str) or not sid:
            raise AuthError("login", "the login reply holds no session id")
        self.session_id = sid

    async def _route(self, ns: str, name: str, body: dict[str, Any], retry: bool | None) -> dict[str, Any]:
        write = is_write(ns, name)
        deadline = time.monotonic() + self.failover_s
        followed = False
        while True:
            base = await self._find_primary() if write else await self._pick()
            if base is None:
                await self._pause(deadline, NoPrimary("master", "no primary is known") if write else None)
                continue
            try:
                status, reply = await self._post(base, ns, name, body)
            except _CUT_OFF as exc:
                self._down(base)
                unsent = isinstance(exc, aiohttp.ClientConnectorError)
                if not (unsent or retry or (retry is None and is_read(ns, name))):
                    raise ConnectionFailed("connection", f"{base}: {exc!r}; the call may or may not have run") from exc
                if write:
                    self.primary = None
                    await self._pause(deadline, ConnectionFailed("connection", f"{base}: {exc!r}"))
                continue
            if reply.get("code") == 0:
                return reply
            if reply.get("code") != "master":
                raise error_for(reply, status)
            # Only the primary answers this call: go there once (only to a configured node: a reply must not be able
            # to send the credentials elsewhere), then look again after a pause.
            write = True
            url = self._configured(str(reply.get("url") or ""))
            if url and url != base and not followed:
                self.primary, followed = url, True
                continue
            self.primary, followed = None, False
            await self._pause(deadline, error_for(reply, status))

    async def _post(self, base: str, ns: str, name: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        # Redirects are not followed blindly (aiohttp would resend the credentials to any host): a node started with
        # --redirect-writes answers 307 to the primary, taken as its `master` reply.
        async with self._session().post(f"{base}/api/{ns}/{name}/v1", json=body, headers=self._headers(),
                                        allow_redirects=False) as resp:  # fmt: skip
            self.last_node = resp.headers.get(NODE_HEADER, "")
            if resp.status in (301, 302, 303, 307, 308):
                where = urlsplit(resp.headers.get("Location", ""))
                return resp.status, {"code": "master", "description": "redirected to the primary",
                                     "url": f"{where.scheme}://{where.netloc}" if where.netloc else ""}  # fmt: skip
            try:
                reply = await resp.json(content_type=None)
            except ValueError:
                reply = None
            if not isinstance(reply, dict):
                raise PodiumError("internal", f"{base}: HTTP {resp.status} without a JSON reply", status=resp.status)
            if name == "login" and not reply.get("session_id") and "session_id" in resp.cookies:
                reply["session_id"] = resp.cookies["session_id"].value  # the id may come as a cookie only
            return resp.status, reply

    async def _pause(self, deadline: float, error: PodiumError | None) -> None:
        if time.monotonic() + PAUSE_S > deadline:
            raise error or ConnectionFailed("connection", "no node answered: " + ", ".join(n.url for n in self._nodes))
        await asyncio.sleep(PAUSE_S)

    # -- nodes -------------------------------------------------------------------------------------------------

    def _configured(self, url: str) -> str:
        """The configured node a URL names (same scheme, host and port); with `discover`, also another node of the
        same scheme; else ''."""
        where = urlsplit(url.strip())
        for node in self._nodes:
            mine = urlsplit(node.url)
            if (mine.scheme, mine.netloc.lower()) == (where.scheme, where.netloc.lower()):
                return node.url
        schemes = {urlsplit(node.url).scheme for node in self._nodes}
        if self.discover and where.netloc and schemes == {where.scheme}:
            return f"{where.scheme}://{where.netloc}"
        return ""

    def _down(self, url: str) -> None:
        for node in self._nodes:
            if node.url == url:
                node.down_until = time.monotonic() + DOWN_S

    async def _pick(self) -> str | None:
        """The next healthy node in turn; one left out after a failure comes back once /health answers."""
        now = time.monotonic()
        for _ in range(len(self._nodes)):
            node = self._nodes[self._turn % len(self._nodes)]
            self._turn += 1
            if node.down_until == 0.0:
                return node.url
            if node.down_until <= now:
                if await self.health(node.url) is not None:
                    node.down_until = 0.0
                    return node.url
                node.down_until = now + DOWN_S
        return None

    async def health(self, url: str) -> dict[str, Any] | None:
        """A node's /health reply (200 on the primary, 503 on a satellite), or None when it does not answer."""
        try:
            async with self._session().get(f"{url}/health", timeout=aiohttp.ClientTimeout(total=HEALTH_TIMEOUT_S)) as r:
                reply = await r.json(content_type=None)
        except (*_CUT_OFF, ValueError):
            return None
        return reply if isinstance(reply, dict) and reply.get("node") else None

    async def _find_primary(self) -> str | None:
        """The cached primary, else the node whose /health says it is primary, else the primary a node names."""
        if self.primary:
            return self.primary
        replies = await asyncio.gather(*(self.health(node.url) for node in self._nodes))
        named = ""
        for node, reply in zip(self._nodes, replies, strict=True):
            if reply is None:
                continue
            if reply.get("master") is True:
                self.primary = node.url
                return node.url
            named = named or self._configured(str(reply.get("primary") or ""))
        self.primary = named or None
        return self.primary

    # -- files -------------------------------------------------------------------------------------------------

    async def download(self, name: str, params: Mapping[str, Any], dest: Path) -> int:
        """Run a call whose reply is a file (admin_export_data) on any node and stream it into `dest` chunk by chunk;
        answers the bytes written. PodiumError if the node answers JSON (an error) instead."""
        if self._password is not None and self.session_id is None:
            await self.login()
        base = await self._pick()
        if base is None:
            raise ConnectionFailed("connection", "no node answered: " + ", ".join(n.url for n in self._nodes))
        no_total = aiohttp.ClientTimeout(total=None, sock_connect=self._timeout, sock_read=self._timeout)
        async with self._session().post(f"{base}/api/app/{name}/v1", json=dict(params), headers=self._headers(),
                                        timeout=no_total, allow_redirects=False) as resp:  # fmt: skip
            if resp.content_type == "application/json" or resp.status != 200:
                reply = await resp.json(content_type=None)
                raise error_for(reply if isinstance(reply, dict) else {"code": "internal"}, resp.status)
            written = 0
            part = dest.with_name(dest.name + ".part")  # `dest` appears only once the download is complete
            fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                with os.fdopen(fd, "wb") as out:
                    async for chunk in resp.content.iter_chunked(1 << 16):
                        out.write(chunk)
                        written += len(chunk)
                os.replace(part, dest)
            except BaseException:
                part.unlink(missing_ok=True)
                raise
            return written

    async def upload(self, name: str, path: Path, fields: Mapping[str, str] | None = None) -> dict[str, Any]:
        """Send a file (multipart `file1`, streamed from disk) and form `fields` to a call on the primary; its reply
        (code 0) or a PodiumError. Not repeated on another node: an upload may change state."""
        if self._password is not None and self.session_id is None:
            await self.login()
        for _ in range(2):  # the primary we knew, then the one a `master` reply names
            base = await self._find_primary()
            if base is None:
                raise NoPrimary("master", "no primary is known")
            # The server applies the file before it answers: a big import may be silent for minutes.
            no_total = aiohttp.ClientTimeout(total=None, sock_connect=self._timeout, sock_read=UPLOAD_REPLY_S)
            with path.open("rb") as handle:
                form = aiohttp.FormData()
                for key, value in (fields or {}).items():
                    form.add_field(key, value)
                form.add_field("file1", handle, filename=path.name, content_type="application/octet-stream")
                async with self._session().post(f"{base}/api/app/{name}/v1", data=form, headers=self._headers(),
                                                timeout=no_total, allow_redirects=False) as resp:  # fmt: skip
                    reply = await resp.json(content_type=None)
                    status = resp.status
            if not isinstance(reply, dict):
                raise PodiumError("internal", f"{base}: HTTP {status} without a JSON reply", status=status)
            if reply.get("code") == 0:
                return reply
            url = self._configured(str(reply.get("url") or "")) if reply.get("code") == "master" else ""
            if not url or url == base:
                raise error_for(reply, status)
            self.primary = url
        raise error_for(reply, status)

    # -- job streams -------------------------------------------------------------------------------------------

    async def stream_job(self, job_id: str, offset: int = 0) -> AsyncGenerator[JobEvent, None]:
        """A job's events until `end`: progress `update`s and its output as `log` events ({offset, text}). A
        stream cut off resumes on another node from the last output offset."""
        deadline = time.monotonic() + self.failover_s
        while True:
            base = await self._pick()
            if base is None:
                await self._pause(deadline, None)
                continue
            try:
                async for item in self._events(base, job_id, offset):
                    deadline = time.monotonic() + self.failover_s
                    if item.event == "log":
                        offset = int(item.data.get("offset", offset)) + len(str(item.data.get("text", "")).encode())
                    yield item
                    if item.event == "end":
                        return
            except _CUT_OFF:
                self._down(base)
            await self._pause(deadline, None)

    async def _events(self, base: str, job_id: str, offset: int) -> AsyncIterator[JobEvent]:
        url = f"{base}/api/app/stream_job/v1"
        no_total = aiohttp.ClientTimeout(total=None, sock_connect=self._timeout, sock_read=self._timeout)
        async with self._session().get(url, params={"id": job_id, "offset": str(offset)}, headers=self._headers(),
                                       timeout=no_total) as resp:  # fmt: skip
            if not resp.content_type.startswith("text/event-stream"):
                reply = await resp.json(content_type=None)
                raise error_for(reply if isinstance(reply, dict) else {"code": "internal"}, resp.status)
            event, data = "message", ""
            async for raw in resp.content:
                line = raw.decode("utf-8", "replace").rstrip("\r\n")
                if line.startswith("event:"):
                    event = line[6:].strip()
                elif line.startswith("data:"):
                    data += line[5:].strip()
                elif not line and data:
                    yield JobEvent(event, _json_object(data))
                    event, data = "message", ""
        raise aiohttp.ClientPayloadError("the stream ended before its `end` event")


def _json_object(text: str) -> dict[str, Any]:
    value = json.loads(text)
    return value if isinstance(value, dict) else {"value": value}
