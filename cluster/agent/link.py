"""The agent's WebSocket to a conductor: xySat's frames, the handshake, keep-alive, redirects and reconnects.

Frames are JSON text `{"cmd": str, "data": obj}` both ways. `hello` -> (`hello {nonce, id}`) -> `join {token}`
-> `joined`: from then on the link is authenticated and everything else is the handler's. URLs are tried
round-robin (the configured ones, then those `joined`/`masterData` taught); a failing link backs off 1 s
doubling to 30 s, reset by a successful join. `redirect` reconnects at once to the named node; `retry` backs
off; `auth_failure` ends the link for good (the agent exits 1). A conductor silent for 60 s is dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import urllib.parse
from collections.abc import Mapping
from typing import Any, Protocol

import aiohttp

from .state import State

log = logging.getLogger("podium.agent.link")

CONNECT_TIMEOUT = 5.0
IDLE_TIMEOUT = 60.0
MAX_MESSAGE = 64 * 1024 * 1024
BACKOFF_START, BACKOFF_MAX = 1.0, 30.0


class Handler(Protocol):
    """What the link hands on once authenticated."""

    async def joined(self, data: Mapping[str, Any]) -> None: ...

    def command(self, cmd: str, data: Any) -> None: ...

    def disconnected(self) -> None: ...


class AuthFailure(Exception):
    """The conductor refused this agent's credentials."""


def ws_url(base_url: str) -> str:
    parts = urllib.parse.urlsplit(base_url)
    scheme = "wss" if parts.scheme == "https" else "ws"
    return urllib.parse.urlunsplit((scheme, parts.netloc, "/", "", ""))


def with_host(base_url: str, host: str) -> str:
    """The same scheme and port on another host."""
    parts = urllib.parse.urlsplit(base_url)
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}"


class Link:
    """One agent's connection to the cluster, reconnecting until stopped or refused."""

    def __init__(self, urls: list[str], state: State, hostname: str, info: Mapping[str, Any], handler: Handler,
                 session: aiohttp.ClientSession, *, idle_timeout: float = IDLE_TIMEOUT,
                 backoff_max: float = BACKOFF_MAX, initial: Mapping[str, Any] | None = None) -> None:  # fmt: skip
        self.urls = urls
        self.state = state
        self.hostname = hostname
        self.info = dict(info)
        self.handler = handler
        self.session = session
        self.idle_timeout = idle_timeout
        self.backoff_max = backoff_max
        self.initial = dict(initial or {})  # enrolment's `initial` fields, merged into hello
        self.rejoin_delay = 0.25
        self.base_url: str | None = None  # of the node we are joined to
        self.authed = asyncio.Event()
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._next = 0
        self._target: str | None = None  # a redirect's node, tried next
        self._redirects = 0
        self._stopping = False
        self.connects = 0

    def candidates(self) -> list[str]:
        known = [u.rstrip("/") for u in (*self.urls, *self.state.urls)]
        if self.base_url:
            known += [with_host(self.base_url, h) for h in self.state.hosts]
        return list(dict.fromkeys(known))

    async def run(self) -> int:
        """Connect and serve until stop() (0) or an auth failure (1)."""
        backoff = BACKOFF_START
        while not self._stopping:
            url = self._pick()
            joined = False
            try:
                joined = await self._session(url)
            except AuthFailure as exc:
                log.error("auth_failure url=%s description=%s", url, exc)
                return 1
            except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:
                log.info("link_failed url=%s error=%s", url, str(exc) or type(exc).__name__)
            finally:
                self._closed()
            if self._stopping:
                break
            if self._target is not None:
                self._redirects += 1
                if self._redirects <= 3:
                    continue  # a redirect: go there at once (but two nodes sending each other back off)
            self._redirects = 0
            if joined:  # a link that joined and then dropped: reconnect soon, but never in a hot loop
                backoff = BACKOFF_START
                await asyncio.sleep(self.rejoin_delay)
            else:
                await asyncio.sleep(backoff)
                backoff = min(self.backoff_max, backoff * 2)
        return 0

    def _pick(self) -> str:
        if self._target is not None:
            url, self._target = self._target, None
            return url
        urls = self.candidates()
        url = urls[self._next % len(urls)]
        self._next += 1
        return url

    def _closed(self) -> None:
        was = self.authed.is_set()
        self.authed.clear()
        self._ws = None
        if was:
            self.handler.disconnected()

    async def _session(self, url: str) -> bool:
        """One connection; True when it got as far as `joined`."""
        ws = await asyncio.wait_for(self.session.ws_connect(ws_url(url), max_msg_size=MAX_MESSAGE, autoping=True),
                                    CONNECT_TIMEOUT)  # fmt: skip
        self.connects += 1
        joined = False
        async with ws:
            self._ws = ws
            hello = {**self.initial, "hostname": self.hostname, "id": self.state.server_id, "info": self.info}
            await self._raw("hello", hello)
            while not self._stopping:
                try:
                    msg = await asyncio.wait_for(ws.receive(), self.idle_timeout)
                except TimeoutError:
                    log.warning("link_idle url=%s seconds=%s", url, self.idle_timeout)
                    break
                if msg.type != aiohttp.WSMsgType.TEXT:
                    if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
                        break
                    continue
                try:
                    frame = json.loads(msg.data)
                    cmd, data = frame["cmd"], frame.get("data")
                except (ValueError, KeyError, TypeError):
                    log.debug("frame_ignored reason=malformed")
                    continue
                if not isinstance(cmd, str):
                    continue
                if await self._handle(url, cmd, data):
                    joined = True
                if cmd in ("redirect", "retry"):
                    break
        return joined or self.authed.is_set()

    async def _handle(self, url: str, cmd: str, data: Any) -> bool:
        """One frame; True when it was `joined`."""
        data = data if isinstance(data, dict) else {}
        if cmd == "echo":
            await self._raw("echoback", data)
        elif cmd == "hello":
            server_id = data.get("id")
            if isinstance(server_id, str) and server_id and server_id != self.state.server_id:
                self.state.server_id = server_id
                self.state.save()
            await self._raw("join", {"token": self.state.auth_token})
        elif cmd == "joined":
            self.base_url = url
            self.learn(data.get("masterData"))
            self.authed.set()
            log.info("joined url=%s server=%s", url, self.state.server_id)
            try:
                await self.handler.joined(data)
            except Exception:  # the link stays up: a bug in handling must not cost the connection
                log.exception("joined_handler_failed")
            return True
        elif cmd == "auth_failure":
            raise AuthFailure(str(data.get("description") or "authentication failed"))
        elif cmd == "redirect":
            target = data.get("url") if isinstance(data.get("url"), str) else None
            host = data.get("host")
            if target is None and isinstance(host, str) and host:
                target = with_host(url, host)
            self._target = target
            log.info("redirect to=%s", target)
        elif cmd == "retry":
            log.info("retry url=%s", url)
        elif cmd == "masterData":
            self.learn(data)
        elif self.authed.is_set():
            try:
                self.handler.command(cmd, data)
            except Exception:
                log.exception("command_failed cmd=%s", cmd)
        return False

    def learn(self, master_data: Any) -> None:
        """Save the cluster's nodes (`masters` hosts and, from Podium, full `urls`)."""
        if not isinstance(master_data, dict):
            return
        changed = False
        for key in ("masters", "urls"):
            values = master_data.get(key)
            if isinstance(values, list):
                values = [str(v).rstrip("/") for v in values if isinstance(v, str) and v][:100]
                attr = "hosts" if key == "masters" else "urls"
                if values != getattr(self.state, attr):
                    setattr(self.state, attr, values)
                    changed = True
        if changed:
            self.state.save()

    async def _raw(self, cmd: str, data: Any) -> bool:
        ws = self._ws
        if ws is None or ws.closed:
            return False
        try:
            await ws.send_str(json.dumps({"cmd": cmd, "data": data}, separators=(",", ":")))
        except (ConnectionError, RuntimeError, aiohttp.ClientError):
            return False
        return True

    async def send(self, cmd: str, data: Any) -> bool:
        """Send a frame on the authenticated link; False when there is none (nothing is queued)."""
        if not self.authed.is_set():
            return False
        return await self._raw(cmd, data)

    async def stop(self) -> None:
        self._stopping = True
        ws = self._ws
        if ws is not None:
            with contextlib.suppress(Exception):
                await ws.close()
