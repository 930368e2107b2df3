"""A scripted conductor for the few agent tests a real Podium node cannot stage.

Every other agent test runs against real `podium serve` nodes. This peer remains only for xySat protocol frames
the agent must obey but that a Podium node does not send to its own agent in these situations:

- `redirect`: the gateway redirects foreign agents (xySat) to the primary; Podium's agent says `info.podium` in
  its hello and is served by whichever node it reaches, so it is never redirected.
- `retry`: sent only to a foreign agent that reaches a satellite while no primary can be located.
- `updateConfig` (a rotated `auth_token`): no node sends it; a server's token is derived from the cluster secret.
- a conductor that goes silent without closing: a node echoes every connected agent every few seconds, so the
  agent's idle drop cannot be reached without a conductor that stops talking.
- a duplicate `launch_job` on demand: a node may redeliver a launch after a reconnect (its saved stream cursor
  can lag), but not at a moment a test chooses.

It keeps every frame it gets, stores job logs by offset (skipping bytes it already has, as a conductor must),
acknowledges them, and records finish_job calls.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web


@dataclass
class Peer:
    """One scripted node; `url` once started."""

    server_id: str = "s1"
    token: str = "tok-" + secrets.token_hex(4)
    redirect_to: str | None = None  # answer hello with redirect
    url: str = ""
    frames: list[tuple[str, Any]] = field(default_factory=list)
    logs: dict[str, bytearray] = field(default_factory=dict)
    finished: dict[str, Any] = field(default_factory=dict)
    joins: int = 0
    sockets: list[web.WebSocketResponse] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    _runner: web.AppRunner | None = None

    async def start(self) -> Peer:
        app = web.Application()
        app.router.add_get("/", self._ws)
        app.router.add_post("/api/app/finish_job", self._finish)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]
        return self

    async def stop(self) -> None:
        for ws in self.sockets:
            await ws.close()
        if self._runner is not None:
            await self._runner.cleanup()

    async def wait(self, what: Any, timeout: float = 30) -> None:
        """Until what() is true (checked each time something arrives, and every 50 ms)."""

        async def loop() -> None:
            while not what():
                self.changed.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.changed.wait(), 0.05)

        await asyncio.wait_for(loop(), timeout)

    def got(self, cmd: str) -> list[Any]:
        return [data for name, data in self.frames if name == cmd]

    async def send(self, cmd: str, data: Any) -> None:
        await self.sockets[-1].send_str(json.dumps({"cmd": cmd, "data": data}))

    async def _ws(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(max_msg_size=64 * 1024 * 1024)
        await ws.prepare(request)
        self.sockets.append(ws)
        async for msg in ws:
            if msg.type != WSMsgType.TEXT:
                continue
            frame = json.loads(msg.data)
            cmd, data = frame["cmd"], frame["data"]
            self.frames.append((cmd, data))
            self.changed.set()
            await self._reply(ws, cmd, data)
        return ws

    async def _reply(self, ws: web.WebSocketResponse, cmd: str, data: Any) -> None:
        send = ws.send_str
        if cmd == "hello":
            if self.redirect_to:
                await send(json.dumps({"cmd": "redirect", "data": {"host": "ignored", "url": self.redirect_to}}))
                return
            await send(json.dumps({"cmd": "hello", "data": {"nonce": "n" * 64, "id": self.server_id}}))
        elif cmd == "join":
            if data.get("token") != self.token:
                await send(json.dumps({"cmd": "auth_failure", "data": {"description": "bad token"}}))
                return
            self.joins += 1
            joined = {"config": {}, "masterData": {"masters": ["127.0.0.1"], "urls": [self.url]}, "groups": [],
                      "plugins": [], "commands": [], "numServers": 1, "features": {"api_finish_job": True}}
            await send(json.dumps({"cmd": "joined", "data": joined}))
        elif cmd == "job_log":
            stored = self.logs.setdefault(data["id"], bytearray())
            chunk = data["text"].encode()
            skip = len(stored) - data["offset"]
            assert skip >= 0, "a gap in the log"
            stored += chunk[skip:]
            await send(json.dumps({"cmd": "log_ack", "data": {data["id"]: len(stored)}}))

    async def _finish(self, request: web.Request) -> web.Response:
        body = await request.json()
        if body.get("auth") != self.token:
            return web.json_response({"code": "access", "description": "bad auth"})
        self.finished[body["id"]] = body
        self.changed.set()
        return web.json_response({"code": 0})
